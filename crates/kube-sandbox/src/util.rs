//! Small helpers: time formatting, randomness, name validation, hex, CIDRs.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Current time as RFC 3339 UTC with second precision (`2024-01-02T03:04:05Z`).
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_rfc3339(secs)
}

pub fn format_rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A non-cryptographic random u64 (std's per-process random hash keys plus a counter).
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// A random version-4 UUID string.
pub fn new_uid() -> String {
    let a = random_u64();
    let b = random_u64();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// Five random characters from the alphabet the apiserver uses for `generateName`.
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut r = random_u64();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(r % ALPHABET.len() as u64) as usize] as char;
            r /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

fn is_label_1123(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Validates a DNS-1123 subdomain; returns the apiserver's message on failure.
pub fn check_subdomain(s: &str) -> Result<(), String> {
    if s.len() <= 253 && s.split('.').all(is_label_1123) {
        Ok(())
    } else {
        Err(format!(
            "Invalid value: \"{s}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
             characters, '-' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

pub fn check_label_1123(s: &str) -> Result<(), String> {
    if is_label_1123(s) {
        Ok(())
    } else {
        Err(format!(
            "Invalid value: \"{s}\": a lowercase RFC 1123 label must consist of lower case alphanumeric \
             characters or '-', and must start and end with an alphanumeric character"
        ))
    }
}

pub fn check_label_1035(s: &str) -> Result<(), String> {
    if is_label_1123(s) && s.as_bytes()[0].is_ascii_lowercase() {
        Ok(())
    } else {
        Err(format!(
            "Invalid value: \"{s}\": a DNS-1035 label must consist of lower case alphanumeric characters \
             or '-', start with an alphabetic character, and end with an alphanumeric character"
        ))
    }
}

pub fn hex_encode(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

pub fn hex_decode(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

/// An IPv4 or IPv6 CIDR used for service cluster IPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u128,
    prefix: u8,
    v6: bool,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid CIDR {s:?}: missing /prefix"))?;
        let ip: IpAddr = ip.parse().map_err(|e| format!("invalid CIDR {s:?}: {e}"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|e| format!("invalid CIDR {s:?}: {e}"))?;
        let (raw, bits, v6) = match ip {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32u8, false),
            IpAddr::V6(a) => (u128::from(a), 128u8, true),
        };
        if prefix > bits || bits - prefix < 2 {
            return Err(format!("invalid CIDR {s:?}: prefix too long"));
        }
        let host_bits = u32::from(bits - prefix);
        let mask = if host_bits >= 128 {
            0
        } else {
            !((1u128 << host_bits) - 1)
        };
        Ok(Cidr {
            base: raw & mask,
            prefix,
            v6,
        })
    }

    pub fn is_v6(&self) -> bool {
        self.v6
    }

    fn bits(&self) -> u8 {
        if self.v6 { 128 } else { 32 }
    }

    /// Number of usable offsets (excluding the network address and, for IPv4, broadcast).
    pub fn size(&self) -> u128 {
        let host_bits = u32::from(self.bits() - self.prefix).min(64);
        (1u128 << host_bits) - 2
    }

    /// The address at `offset` (1-based from the network address).
    pub fn nth(&self, offset: u128) -> String {
        let raw = self.base + offset;
        if self.v6 {
            std::net::Ipv6Addr::from(raw).to_string()
        } else {
            std::net::Ipv4Addr::from(raw as u32).to_string()
        }
    }

    pub fn contains(&self, ip: &str) -> bool {
        let Ok(ip) = ip.parse::<IpAddr>() else {
            return false;
        };
        let raw = match (ip, self.v6) {
            (IpAddr::V4(a), false) => u128::from(u32::from(a)),
            (IpAddr::V6(a), true) => u128::from(a),
            _ => return false,
        };
        let host_bits = u32::from(self.bits() - self.prefix);
        host_bits >= 128 || (raw >> host_bits) == (self.base >> host_bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn names() {
        assert!(check_subdomain("a.b-c").is_ok());
        assert!(check_subdomain("A").is_err());
        assert!(check_subdomain("-a").is_err());
        assert!(check_label_1123("a.b").is_err());
        assert!(check_label_1035("1a").is_err());
        assert!(check_label_1035("a1").is_ok());
        assert_eq!(name_suffix().len(), 5);
        assert_eq!(new_uid().len(), 36);
    }

    #[test]
    fn hex_roundtrip() {
        assert_eq!(hex_decode(&hex_encode("a|b/c")).as_deref(), Some("a|b/c"));
        assert_eq!(hex_decode("zz"), None);
    }

    #[test]
    fn cidr() {
        let c = Cidr::parse("10.96.0.0/16").unwrap();
        assert_eq!(c.nth(1), "10.96.0.1");
        assert!(c.contains("10.96.255.3"));
        assert!(!c.contains("10.97.0.1"));
        assert_eq!(c.size(), 65534);
        let c6 = Cidr::parse("fd00:10:96::/112").unwrap();
        assert_eq!(c6.nth(10), "fd00:10:96::a");
        assert!(Cidr::parse("10.0.0.0/31").is_err());
    }
}
