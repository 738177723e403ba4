//! Property tests for the configuration parsers: the INI file, the Go-flag normaliser and
//! `CIDR/hostLen`. Arbitrary input never panics, and well-formed input means what it says.
//! `PROPTEST_CASES` sets the number of cases (1,000 by default; `make fuzz` runs 100,000).

use std::path::Path;

use proptest::prelude::*;

use super::file::parse_file;
use super::flags::parse_command_line;
use super::validate::parse_cluster_subnets;

pub(crate) fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text made of the INI file's own syntax, so the parser's branches are actually reached.
fn ini_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("[default]".to_string()),
        Just("[kubernetes]".to_string()),
        Just("[OvnNorth]".to_string()),
        Just("[logging".to_string()),
        Just("[a b]".to_string()),
        Just("mtu = 1400".to_string()),
        Just("token = \"a;b\\\" c\"".to_string()),
        Just("logfile = /x \\".to_string()),
        Just("\\".to_string()),
        Just("\"".to_string()),
        Just(";c".to_string()),
        Just("#c".to_string()),
        Just("=".to_string()),
        Just("\u{feff}".to_string()),
        "[ -~]{0,12}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.join("\n"))
}

/// A value the file can carry quoted: anything printable and tab, escaped as the file wants.
fn quoted(v: &str) -> String {
    let mut s = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\t' => s.push_str("\\t"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ini_never_panics(text in ini_text()) {
        let _ = parse_file(Path::new("/p"), &text);
    }

    #[test]
    fn ini_quoted_values_round_trip(v in "[ -~\t]{0,40}", pad in " {0,3}") {
        let text = format!("[kubernetes]\n{pad}token{pad}={pad}{}{pad} ; comment\n", quoted(&v));
        let layer = parse_file(Path::new("/p"), &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want = (!v.is_empty()).then(|| v.clone());
        prop_assert_eq!(layer.k8s_token, want);
    }

    #[test]
    fn ini_errors_name_the_file_and_line(junk in "[a-z]{1,8}", line in 0usize..5) {
        let text = format!("{}[nosuch{junk}]\n", "\n".repeat(line));
        let e = parse_file(Path::new("/etc/x.conf"), &text).unwrap_err().to_string();
        let needle = format!("line {}", line + 1);
        prop_assert!(e.contains("/etc/x.conf") && e.contains(&needle), "{}", e);
    }

    #[test]
    fn flags_never_panic(args in prop::collection::vec(
        prop_oneof![
            Just("-mtu".to_string()), Just("--mtu=".to_string()), Just("-".to_string()),
            Just("--".to_string()), Just("-init-master".to_string()), Just("-h".to_string()),
            Just("-loglevel=x".to_string()), Just("-k8s-token".to_string()),
            "-{1,2}[a-z-]{1,20}(=[ -~]{0,10})?",
            any::<String>(),
        ],
        0..8,
    )) {
        let _ = parse_command_line(args);
    }

    #[test]
    fn flag_values_survive_both_go_spellings(v in "[ -~]{1,30}", dashes in 1usize..3) {
        let d = "-".repeat(dashes);
        let joined = parse_command_line([format!("{d}k8s-token={v}")])
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(joined.flags.k8s_token.as_deref(), Some(v.as_str()));
        // Go takes the next argument as the value, whatever it looks like.
        let split = parse_command_line([format!("{d}k8s-token"), v.clone()])
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(split.flags.k8s_token.as_deref(), Some(v.as_str()));
    }

    #[test]
    fn cluster_subnets_never_panic(v in "[0-9./,: a-f-]{0,40}") {
        let _ = parse_cluster_subnets(&v);
    }

    #[test]
    fn cluster_subnet_with_host_len_round_trips(a in any::<u32>(), len in 1u8..=30, extra in 0u8..=8) {
        let host = (len + extra).min(32);
        let net = ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(a), len).unwrap().trunc();
        let r = parse_cluster_subnets(&format!("{net}/{host}"));
        if host > len && host <= 30 {
            let v = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(v.len(), 1);
            prop_assert_eq!(v[0].cidr, net);
            prop_assert_eq!(v[0].host_prefix_len, host);
        } else if let Err(e) = r {
            prop_assert!(e.to_string().contains("-cluster-subnet"), "{}", e);
        }
    }
}
