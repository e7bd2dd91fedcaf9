//! Kubernetes quantities (`20Gi`, `500m`, `1e3`, `1.5Ti`), read exactly as apimachinery's
//! `resource.ParseQuantity` reads them.
//!
//! The grammar:
//!
//! ```text
//! quantity  ::= [sign] number suffix
//! sign      ::= "+" | "-"
//! number    ::= digits | digits "." | digits "." digits | "." digits
//! suffix    ::= binary | decimal | exponent
//! binary    ::= "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
//! decimal   ::= "n" | "u" | "m" | "" | "k" | "M" | "G" | "T" | "P" | "E"
//! exponent  ::= ("e" | "E") [sign] digits
//! ```
//!
//! Nothing else is a quantity: no whitespace anywhere (Kubernetes trims it only when it
//! decodes a JSON field, and a CRD pattern refuses it), no `Gb`, no suffix without digits.
//!
//! The value is the one Kubernetes holds once it has parsed the text: exact down to `1n`,
//! anything finer rounded up away from zero (`0.1n` is `1n`, as Kubernetes rounds it).
//! NB: Kubernetes also caps a value at `2^63 - 1`; a [`Quantity`] does not, and its
//! conversions say `None` when the value does not fit what they return.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A quantity's exact value: `mantissa × 10^exponent`, with `exponent >= -9`.
///
/// Every suffix folds into that form: a decimal suffix or `e<int>` adds to the exponent,
/// a binary suffix multiplies the mantissa by its power of 1024 (still exact: `1.5Gi` is
/// `1610612736 × 10^0`). The mantissa carries no trailing zeros (zero is `0 × 10^0`), so
/// equal values have equal fields and the derived `==` compares values. An `i128`
/// mantissa holds 38 significant digits: more is [`QuantityError::OutOfRange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quantity {
    mantissa: i128,
    exponent: i32,
}

/// Why a text is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantityError {
    /// The text is empty.
    Empty,
    /// No digit before the suffix (`Gi`, `.`, `-`).
    NoDigits,
    /// What follows the number is no suffix (`Gb`, ` Gi`, `.3` in `1.5.3`).
    Suffix(String),
    /// More significant digits, or a larger exponent, than an `i128` mantissa and an
    /// `i32` exponent hold.
    OutOfRange,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("an empty text is not a quantity"),
            Self::NoDigits => f.write_str("a quantity needs digits before its suffix"),
            Self::Suffix(suffix) => write!(
                f,
                "{suffix:?} is not a quantity suffix (Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or e<exponent>)"
            ),
            Self::OutOfRange => {
                f.write_str("the quantity has too many digits or too large an exponent")
            }
        }
    }
}

impl std::error::Error for QuantityError {}

/// What a suffix multiplies the number by.
enum Scale {
    /// `10^exponent`.
    Decimal(i64),
    /// `1024^power`.
    Binary(u32),
}

impl Scale {
    fn of(suffix: &str) -> Result<Self, QuantityError> {
        let scale = match suffix {
            "Ki" => Self::Binary(1),
            "Mi" => Self::Binary(2),
            "Gi" => Self::Binary(3),
            "Ti" => Self::Binary(4),
            "Pi" => Self::Binary(5),
            "Ei" => Self::Binary(6),
            "n" => Self::Decimal(-9),
            "u" => Self::Decimal(-6),
            "m" => Self::Decimal(-3),
            "" => Self::Decimal(0),
            "k" => Self::Decimal(3),
            "M" => Self::Decimal(6),
            "G" => Self::Decimal(9),
            "T" => Self::Decimal(12),
            "P" => Self::Decimal(15),
            "E" => Self::Decimal(18),
            other => {
                let bad = || QuantityError::Suffix(other.to_owned());
                let exponent = other.strip_prefix(['e', 'E']).ok_or_else(bad)?;
                let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let exponent = exponent
                    .parse::<i32>()
                    .map_err(|_| QuantityError::OutOfRange)?;
                Self::Decimal(i64::from(exponent))
            }
        };
        Ok(scale)
    }
}

impl Quantity {
    /// Zero, as `0`, `0Gi` or `-0` all are.
    pub const ZERO: Self = Self {
        mantissa: 0,
        exponent: 0,
    };

    /// Parses a quantity as Kubernetes does (see the module's grammar).
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        if text.is_empty() {
            return Err(QuantityError::Empty);
        }
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (integer, rest) = split_digits(unsigned);
        let (fraction, suffix) = match rest.strip_prefix('.') {
            Some(after_point) => split_digits(after_point),
            None => ("", rest),
        };
        if integer.is_empty() && fraction.is_empty() {
            return Err(QuantityError::NoDigits);
        }
        let scale = Scale::of(suffix)?;

        let length = |part: usize| i64::try_from(part).map_err(|_| QuantityError::OutOfRange);
        // The value is `digits × 10^exponent`, one decimal digit per element.
        let mut digits: Vec<u8> = integer
            .bytes()
            .chain(fraction.bytes())
            .map(|b| b - b'0')
            .collect();
        let mut exponent = -length(fraction.len())?;
        match scale {
            Scale::Decimal(by) => exponent += by,
            // Exact in decimal: a power of two times a decimal fraction is one.
            Scale::Binary(power) => (0..power).for_each(|_| multiply(&mut digits, 1024)),
        }
        // Kubernetes keeps nothing finer than 1n: it rounds the rest up, away from zero.
        if exponent < NANO {
            let finer =
                usize::try_from(NANO - exponent).map_or(digits.len(), |n| n.min(digits.len()));
            let dropped = digits.split_off(digits.len() - finer);
            exponent = NANO;
            if dropped.iter().any(|&d| d != 0) {
                increment(&mut digits);
            }
        }
        let trailing_zeros = digits.iter().rev().take_while(|&&d| d == 0).count();
        digits.truncate(digits.len() - trailing_zeros);
        let mut mantissa: i128 = 0;
        for &digit in &digits {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(digit)))
                .ok_or(QuantityError::OutOfRange)?;
        }
        if mantissa == 0 {
            return Ok(Self::ZERO);
        }
        exponent += length(trailing_zeros)?;
        Ok(Self {
            mantissa: if negative { -mantissa } else { mantissa },
            exponent: i32::try_from(exponent).map_err(|_| QuantityError::OutOfRange)?,
        })
    }

    /// True below zero.
    pub fn is_negative(self) -> bool {
        self.mantissa < 0
    }

    /// The value in base units (bytes, cores), rounded up away from zero as Kubernetes'
    /// `Quantity.Value()` rounds: `500m` is 1, `-1.5` is -2. `None` past `i128`.
    pub fn value(self) -> Option<i128> {
        self.scaled(0)
    }

    /// The value in thousandths of the base unit (millicores for CPU), rounded up away
    /// from zero as Kubernetes' `Quantity.MilliValue()` rounds. `None` past `i128`.
    pub fn milli_value(self) -> Option<i128> {
        self.scaled(-3)
    }

    /// The value as a number of bytes, rounded up as Kubernetes rounds a size it turns into
    /// an integer; `None` for a negative quantity or one past `u128`.
    pub fn to_bytes(self) -> Option<u128> {
        if self.is_negative() {
            return None;
        }
        magnitude_at(self.mantissa.unsigned_abs(), i64::from(self.exponent))
    }

    /// The value as the nearest `f64`, for schedulers and load ratios that compare
    /// approximately (infinite for a quantity past `f64`).
    #[allow(
        clippy::cast_precision_loss,
        reason = "an approximation is what this conversion is for"
    )]
    pub fn as_f64(self) -> f64 {
        let mantissa = self.mantissa as f64;
        if self.exponent >= 0 {
            mantissa * 10f64.powi(self.exponent)
        } else {
            // Dividing by an exact power of ten is closer than multiplying by an inexact one.
            mantissa / 10f64.powi(self.exponent.saturating_neg())
        }
    }

    /// `self / 10^unit_exponent`, rounded away from zero.
    fn scaled(self, unit_exponent: i64) -> Option<i128> {
        let magnitude = magnitude_at(
            self.mantissa.unsigned_abs(),
            i64::from(self.exponent) - unit_exponent,
        )?;
        let magnitude = i128::try_from(magnitude).ok()?;
        Some(if self.is_negative() {
            -magnitude
        } else {
            magnitude
        })
    }
}

/// `magnitude × 10^exponent`, rounded up; `None` past `u128`.
fn magnitude_at(magnitude: u128, exponent: i64) -> Option<u128> {
    if magnitude == 0 {
        return Some(0);
    }
    let power = u32::try_from(exponent.unsigned_abs()).ok();
    if exponent >= 0 {
        10_u128.checked_pow(power?)?.checked_mul(magnitude)
    } else {
        // A divisor past u128 exceeds every mantissa: a non-zero fraction rounds up to 1.
        Some(match power.and_then(|p| 10_u128.checked_pow(p)) {
            Some(divisor) => magnitude.div_ceil(divisor),
            None => 1,
        })
    }
}

/// The finest step Kubernetes keeps, `1n`, as a power of ten.
const NANO: i64 = -9;

/// Multiplies a decimal digit string (most significant first) by `factor`.
fn multiply(digits: &mut Vec<u8>, factor: u32) {
    let mut carry = 0_u32;
    for digit in digits.iter_mut().rev() {
        let product = u32::from(*digit) * factor + carry;
        *digit = (product % 10) as u8;
        carry = product / 10;
    }
    let mut head = Vec::new();
    while carry > 0 {
        head.push((carry % 10) as u8);
        carry /= 10;
    }
    digits.splice(0..0, head.into_iter().rev());
}

/// Adds one to a decimal digit string's last digit.
fn increment(digits: &mut Vec<u8>) {
    for digit in digits.iter_mut().rev() {
        if *digit < 9 {
            *digit += 1;
            return;
        }
        *digit = 0;
    }
    digits.insert(0, 1);
}

/// Splits off the leading ASCII digits.
fn split_digits(text: &str) -> (&str, &str) {
    let end = text.bytes().take_while(u8::is_ascii_digit).count();
    text.split_at(end)
}

/// `a × 10^by` when it fits in `u128`; past it, it exceeds every mantissa.
fn shifted(a: u128, by: u32) -> Option<u128> {
    10_u128.checked_pow(by)?.checked_mul(a)
}

impl Ord for Quantity {
    /// Exact: `1Ki` equals `1024`, `1G` is less than `1Gi`, `-1` less than `500m`.
    fn cmp(&self, other: &Self) -> Ordering {
        let by_sign = self.mantissa.signum().cmp(&other.mantissa.signum());
        if by_sign != Ordering::Equal || self.mantissa == 0 {
            return by_sign;
        }
        let (a, b) = (self.mantissa.unsigned_abs(), other.mantissa.unsigned_abs());
        let by_magnitude = match self.exponent.cmp(&other.exponent) {
            Ordering::Equal => a.cmp(&b),
            Ordering::Greater => shifted(a, self.exponent.abs_diff(other.exponent))
                .map_or(Ordering::Greater, |a| a.cmp(&b)),
            Ordering::Less => shifted(b, self.exponent.abs_diff(other.exponent))
                .map_or(Ordering::Less, |b| a.cmp(&b)),
        };
        if self.is_negative() {
            by_magnitude.reverse()
        } else {
            by_magnitude
        }
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// A quantity (`20Gi`, `500M`, `1.5Ti`) in bytes, rounded up; `None` when the text is no
/// quantity, is negative, or is past `u128`.
pub fn to_bytes(quantity: &str) -> Option<u128> {
    Quantity::parse(quantity).ok()?.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn every_binary_suffix() {
        for (suffix, power) in [
            ("Ki", 1),
            ("Mi", 2),
            ("Gi", 3),
            ("Ti", 4),
            ("Pi", 5),
            ("Ei", 6),
        ] {
            assert_eq!(
                to_bytes(&format!("3{suffix}")),
                Some(3 << (10 * power)),
                "{suffix}"
            );
        }
        assert_eq!(to_bytes("2Ei"), Some(2 << 60));
        assert_eq!(to_bytes("0.5Gi"), Some(1 << 29));
        assert_eq!(to_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(to_bytes(".5Ki"), Some(512));
        assert_eq!(q("1Ki"), q("1024"));
    }

    #[test]
    fn every_decimal_suffix() {
        let cases = [
            ("n", -9),
            ("u", -6),
            ("m", -3),
            ("", 0),
            ("k", 3),
            ("M", 6),
            ("G", 9),
            ("T", 12),
            ("P", 15),
            ("E", 18),
        ];
        for (suffix, exponent) in cases {
            assert_eq!(
                q(&format!("7{suffix}")),
                q(&format!("7e{exponent}")),
                "{suffix}"
            );
        }
        assert_eq!(q("5n").as_f64(), 5e-9);
        assert_eq!(to_bytes("500M"), Some(500_000_000));
        assert_eq!(to_bytes("1E"), Some(1_000_000_000_000_000_000));
        assert_eq!(to_bytes("1024"), Some(1024));
    }

    #[test]
    fn exponents_in_either_case_and_sign() {
        assert_eq!(to_bytes("1e3"), Some(1000));
        assert_eq!(to_bytes("1E3"), Some(1000));
        assert_eq!(to_bytes("1e+3"), Some(1000));
        assert_eq!(q("25e-1").as_f64(), 2.5);
        assert_eq!(q("1.5e3"), q("1500"));
    }

    #[test]
    fn milli_units_and_rounding_away_from_zero() {
        assert_eq!(q("500m").milli_value(), Some(500));
        assert_eq!(q("500m").value(), Some(1));
        assert_eq!(q("500m").as_f64(), 0.5);
        assert_eq!(q("2").milli_value(), Some(2000));
        assert_eq!(q("1.5").milli_value(), Some(1500));
        assert_eq!(q("0.0001").milli_value(), Some(1));
        assert_eq!(q("-1.5").value(), Some(-2));
        assert_eq!(to_bytes("1.3Ki"), Some(1332));
        assert_eq!(to_bytes("1n"), Some(1));
    }

    #[test]
    fn nothing_finer_than_a_nano() {
        assert_eq!(q("0.1n"), q("1n"));
        assert_eq!(q("1e-30"), q("1n"));
        assert_eq!(q("-0.1n"), q("-1n"));
        assert_eq!(q("1.0000000001"), q("1000000001n"));
        assert_eq!(q("0.0000000000"), Quantity::ZERO);
        // Kubernetes' Value() of this is 1073741825: 2^30 and 1n, rounded up.
        assert_eq!(
            to_bytes("1.000000000000000000000000000001Gi"),
            Some((1 << 30) + 1)
        );
        assert_eq!(q("0.999999999999n"), q("1n"));
        assert_eq!(q("9.9999999999"), q("10"));
    }

    #[test]
    fn signs() {
        assert_eq!(q("-1").value(), Some(-1));
        assert!(q("-1").is_negative());
        assert_eq!(to_bytes("-1"), None);
        assert_eq!(to_bytes("-1Gi"), None);
        assert_eq!(to_bytes("+1k"), Some(1000));
        assert_eq!(q("-0"), Quantity::ZERO);
        assert_eq!(to_bytes("-0"), Some(0));
        assert_eq!(q("0Gi"), Quantity::ZERO);
    }

    #[test]
    fn fractions_without_one_side() {
        assert_eq!(q("1."), q("1"));
        assert_eq!(q(".5"), q("500m"));
        assert_eq!(q("007.50"), q("7.5"));
    }

    #[test]
    fn comparison_is_exact() {
        assert!(q("1.5G") < q("1.5Gi"));
        assert!(q("-1") < q("500m"));
        assert!(q("-2") < q("-1"));
        assert!(q("10Gi") < q("15Gi"));
        assert!(q("1e30") > q("999999999999999999999999999999"));
        assert!(q("1n") < q("2n"));
        assert_eq!(q("1000m").cmp(&q("1")), Ordering::Equal);
    }

    #[test]
    fn what_kubernetes_refuses() {
        for text in [
            "", "10Gb", "1.5.3", "Gi", ".", "-", "+", "1 Gi", " 1", "1 ", "1K", "1e", "1e+",
            "1e1.5", "1Gi ", "--1", "1,5", "0x10", "1ki", "ten",
        ] {
            assert!(Quantity::parse(text).is_err(), "{text:?} parsed");
            assert_eq!(to_bytes(text), None, "{text:?}");
        }
        assert_eq!(Quantity::parse(""), Err(QuantityError::Empty));
        assert_eq!(Quantity::parse("Gi"), Err(QuantityError::NoDigits));
        assert_eq!(
            Quantity::parse("10Gb"),
            Err(QuantityError::Suffix("Gb".into()))
        );
    }

    #[test]
    fn overflow_is_none() {
        let huge = "1".repeat(40);
        assert_eq!(Quantity::parse(&huge), Err(QuantityError::OutOfRange));
        assert_eq!(
            Quantity::parse("999999999999999999999Ei"),
            Err(QuantityError::OutOfRange)
        );
        assert_eq!(
            Quantity::parse("1e99999999999"),
            Err(QuantityError::OutOfRange)
        );
        assert_eq!(to_bytes("1e39"), None);
        assert_eq!(q("1e39").value(), None);
        assert_eq!(to_bytes("3e38"), Some(3 * 10_u128.pow(38)));
        assert_eq!(q("1e-40").value(), Some(1));
        assert_eq!(q("1e400").as_f64(), f64::INFINITY);
        // Trailing zeros are no significant digits: this is 1 × 10^45.
        assert_eq!(q(&format!("1{}", "0".repeat(45))), q("1e45"));
    }
}
