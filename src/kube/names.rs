//! Kubernetes object name rules, for names that arrive from outside the API server (the CNI
//! environment) and end up in URL paths or OVN object names.

/// A DNS-1123 label (namespaces): 1–63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain as Kubernetes checks it (pod and node names): at most 253 of
/// `[a-z0-9.-]`, dot-separated parts that start and end alphanumeric. Unlike DNS, Kubernetes
/// sets no 63-character limit on each part.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    !s.is_empty() && s.len() <= 253 && s.split('.').all(part)
}

/// Why `ns`/`name` is not a valid namespaced object name, if it is not.
pub fn check_namespaced(ns: &str, name: &str) -> Result<(), String> {
    if !is_dns1123_label(ns) {
        return Err(format!(
            "namespace {ns:?} is not a valid Kubernetes namespace name (lower-case letters, \
             digits and '-', at most 63)"
        ));
    }
    if !is_dns1123_subdomain(name) {
        return Err(format!(
            "name {name:?} is not a valid Kubernetes object name (lower-case letters, digits, \
             '-' and '.', at most 253)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let cases: &[(&str, bool, bool)] = &[
            // (input, label, subdomain)
            ("default", true, true),
            ("a", true, true),
            ("web-1", true, true),
            ("web.v1", false, true),
            ("", false, false),
            ("-a", false, false),
            ("a-", false, false),
            ("A", false, false),
            ("..", false, false),
            ("../../pods/x", false, false),
            ("a/b", false, false),
            ("a..b", false, false),
            ("a%2f", false, false),
            ("a b", false, false),
            ("a\u{e9}", false, false),
        ];
        for &(s, label, sub) in cases {
            assert_eq!(is_dns1123_label(s), label, "label {s:?}");
            assert_eq!(is_dns1123_subdomain(s), sub, "subdomain {s:?}");
        }
        assert!(is_dns1123_label(&"a".repeat(63)));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        let long = vec!["a".repeat(63); 4].join(".");
        assert_eq!(long.len(), 255);
        assert!(!is_dns1123_subdomain(&long));
        assert!(is_dns1123_subdomain(&"p".repeat(253)));
        assert!(!is_dns1123_subdomain(&"p".repeat(254)));
        assert!(is_dns1123_subdomain(long[..253].trim_end_matches('.')));
        assert!(check_namespaced("default", "web").is_ok());
        assert!(
            check_namespaced("..", "web")
                .unwrap_err()
                .contains("namespace")
        );
        assert!(
            check_namespaced("default", "../x")
                .unwrap_err()
                .contains("\"../x\"")
        );
    }
}
