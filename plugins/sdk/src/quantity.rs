//! Kubernetes quantities (`20Gi`, `500M`, `1.5Ti`) as bytes, to compare disk sizes.

/// Parses a quantity into bytes; `None` when it is not a valid quantity.
pub fn to_bytes(quantity: &str) -> Option<u128> {
    let quantity = quantity.trim();
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut bytes = whole.checked_mul(multiplier)?;
    if !fraction.is_empty() {
        let digits: u128 = fraction
            .parse()
            .ok()
            .filter(|_| fraction.chars().all(|c| c.is_ascii_digit()))?;
        let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
        bytes = bytes.checked_add(digits.checked_mul(multiplier)? / scale)?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::to_bytes;

    #[test]
    fn binary_decimal_and_fractional_suffixes() {
        assert_eq!(to_bytes("20Gi"), Some(20 << 30));
        assert_eq!(to_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(to_bytes("500M"), Some(500_000_000));
        assert_eq!(to_bytes("1024"), Some(1024));
        assert_eq!(to_bytes("10Gb"), None);
        assert_eq!(to_bytes("-1Gi"), None);
        assert_eq!(to_bytes(""), None);
    }
}
