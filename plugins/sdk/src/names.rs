//! Names a plugin derives for the objects it makes: injective over (owner, item), so two
//! Wukongs never land on one object, and valid Kubernetes names.
//!
//! # The scheme
//! [`derived`]`(owner, item)` is a readable part `{owner}-{item}` (any character outside
//! `[a-z0-9-]`, such as the `.` of a Wukong named like a domain, becomes `-`), cut so the
//! whole fits 63 characters and without a trailing `-`, then `-` and ten characters of
//! lowercase RFC 4648 base32 (`a-z`, `2-7`): the first 50 bits of SHA-256 over
//! `owner`, a newline and `item`. The result is a DNS-1123 label (at most 63 characters
//! of `[a-z0-9-]`, starting and ending alphanumeric), so it serves any kind's name.
//!
//! # Guarantees
//! - The same pair always gives the same name (no clock, no randomness): a plugin finds
//!   its object again on every call.
//! - Distinct pairs give distinct names unless their 50-bit hashes collide. The readable
//!   part alone is not injective (`web` + `db-data` and `web-db` + `data` read alike, long
//!   names are cut alike): the hash tells such pairs apart, and two names can only meet
//!   when their readable parts are equal *and* their hashes collide, a chance of 2⁻⁵⁰
//!   (about one in 10¹⁵) for a pair. A newline cannot occur in a Kubernetes name, so the
//!   hashed text is unambiguous.
//! - A collision nevertheless is no shared disk: the object of the colliding name belongs
//!   to another Wukong, and the host's ownership rule refuses to touch it (the step fails
//!   with `NameTaken`, naming the object and its owner).
//!
//! # Caveats
//! - Names derived before this scheme (`{wukong}-{disk}`) stay in use for the objects that
//!   have them: see [`crate::disks`] for how a storage plugin finds them again. A plugin
//!   keeping its own names should do the same (the recorded name first, then a legacy
//!   name only when the object there is the Wukong's).
//! - The Python storage plugin (`plugins/python-storage`, `names.py`) implements the same
//!   function; the tests of both pin the same expected names.

use sha2::{Digest, Sha256};

/// The longest Kubernetes name that is also a DNS-1123 label.
pub const MAX_LEN: usize = 63;
/// Characters of the hash suffix.
pub const HASH_LEN: usize = 10;

/// The RFC 4648 base32 alphabet, lowercase.
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The name of `item` (a disk, a network) of `owner` (a Wukong; a namespace for a
/// cluster-scoped object): `{owner}-{item}` cut to fit, then a hash of the pair. See the
/// module documentation for the scheme and what it guarantees.
pub fn derived(owner: &str, item: &str) -> String {
    let digest = Sha256::new()
        .chain_update(owner.as_bytes())
        .chain_update(b"\n")
        .chain_update(item.as_bytes())
        .finalize();
    let readable: String = format!("{owner}-{item}")
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            _ => '-',
        })
        .take(MAX_LEN - 1 - HASH_LEN)
        .collect();
    let readable = readable.trim_matches('-');
    let hash = base32_prefix(&digest, HASH_LEN);
    if readable.is_empty() {
        return hash;
    }
    format!("{readable}-{hash}")
}

/// The first `chars` characters of the lowercase base32 encoding of `bytes` (five bits
/// each, most significant first, the last one padded with zero bits, as RFC 4648 encodes;
/// without the `=` padding).
fn base32_prefix(bytes: &[u8], chars: usize) -> String {
    (0..chars.min((bytes.len() * 8).div_ceil(5)))
        .map(|i| {
            let bit = i * 5;
            let (byte, shift) = (bit / 8, bit % 8);
            let pair =
                u16::from(bytes[byte]) << 8 | u16::from(bytes.get(byte + 1).copied().unwrap_or(0));
            let index = (pair >> (11 - shift)) & 0x1f;
            char::from(BASE32[usize::from(index)])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned, and asserted the same by `plugins/python-storage/tests/test_names.py` (and,
    /// inside the component, by the isolation cases `*-derived-names.yaml` of cdi-storage
    /// and python-storage): the Rust and Python plugins derive one name for one pair.
    const PINNED: &[(&str, &str, &str)] = &[
        ("web", "db-data", "web-db-data-7x5wfd44db"),
        ("web-db", "data", "web-db-data-sohhfprpg7"),
        ("vm1", "root", "vm1-root-egsh6yjvhj"),
        ("tenant-a", "vm1", "tenant-a-vm1-4ydc72xf2k"),
        ("Ünïcode", "Disk_1", "n-code--isk-1-syemzjbeby"),
        (
            "a.very.long.wukong.name.that.goes.on.and.on",
            "some-rather-long-disk-name",
            "a-very-long-wukong-name-that-goes-on-and-on-some-rat-pwcxnjpefe",
        ),
    ];

    fn is_dns_label(name: &str) -> bool {
        let bytes = name.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
    }

    #[test]
    fn pinned_names_match_the_python_plugin() {
        for (owner, item, expected) in PINNED {
            assert_eq!(derived(owner, item), *expected, "{owner} / {item}");
        }
    }

    #[test]
    fn pairs_that_read_alike_get_distinct_names() {
        assert_ne!(derived("web", "db-data"), derived("web-db", "data"));
        assert!(derived("web", "db-data").starts_with("web-db-data-"));
    }

    #[test]
    fn names_are_dns_labels_however_long_or_odd_the_input() {
        let long = "x".repeat(253);
        for (owner, item) in [
            ("vm1", "root"),
            (long.as_str(), "data"),
            ("a.b.c", long.as_str()),
            ("web", "d-".repeat(40).as_str()),
            ("..", "--"),
            ("Ünïcode", "Disk_1"),
        ] {
            let name = derived(owner, item);
            assert!(is_dns_label(&name), "{name:?} from {owner:?} / {item:?}");
            assert_eq!(derived(owner, item), name, "deterministic");
        }
        assert_eq!(derived(&long, "data").len(), MAX_LEN);
    }

    #[test]
    fn base32_is_rfc_4648() {
        // RFC 4648 §10: BASE32("foobar") = "MZXW6YTBOI======".
        assert_eq!(base32_prefix(b"foobar", 10), "mzxw6ytboi");
        assert_eq!(base32_prefix(b"fo", 10), "mzxq");
    }
}
