//! `ovn_k8s.conf`: a git-config style INI file (the reference used gcfg).
//!
//! Sections and keys are case-insensitive; `;`/`#` start a comment anywhere outside quotes;
//! values may be (partly) double-quoted with `\"` `\\` `\n` `\t` `\b` escapes and continued with a
//! trailing backslash. Unknown sections/keys and syntax errors are hard errors.

use std::path::Path;

use super::ConfigError;
use super::validate::{Layer, OvnLayer};

/// The file's text, capped at [`crate::util::files::MAX_INPUT_BYTES`] (`-config-file=/dev/zero`
/// fails at once instead of filling memory).
pub(crate) fn read_config_file(path: &Path) -> std::io::Result<String> {
    crate::util::files::read_text_capped(path)
}

/// The file's settings; `None` = absent or empty.
pub(crate) fn parse_file(path: &Path, text: &str) -> Result<Layer, ConfigError> {
    let err = |line: usize, msg: String| {
        ConfigError::new(format!(
            "config file {}: line {line}: {msg}",
            path.display()
        ))
    };
    let mut layer = Layer::default();
    let mut section: Option<String> = None;
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let lineno = i + 1;
        let line = lines[i].trim_start_matches('\u{feff}').trim();
        i += 1;
        if is_blank_or_comment(line) {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            section = Some(section_header(line, rest).map_err(|msg| err(lineno, msg))?);
            continue;
        }
        let (key, raw_value) =
            key_and_value(line, section.as_deref()).map_err(|msg| err(lineno, msg))?;
        let sec = section.as_deref().unwrap_or_default();
        let mut value_text = raw_value.to_string();
        let value = loop {
            match scan_value(&value_text) {
                Ok(Scan::Done(v)) => break v,
                Ok(Scan::Continue) => {
                    // Trailing backslash: the value continues on the next line.
                    let Some(next) = lines.get(i) else {
                        return Err(err(lineno, "line continuation at end of file".to_string()));
                    };
                    i += 1;
                    value_text.pop();
                    value_text.push_str(next);
                }
                Err(msg) => return Err(err(lineno, format!("key {key:?}: {msg}"))),
            }
        };
        assign(&mut layer, sec, key, value).map_err(|msg| err(lineno, msg))?;
    }
    Ok(layer)
}

/// Nothing to read: an empty line, or one that is all comment.
fn is_blank_or_comment(s: &str) -> bool {
    s.is_empty() || s.starts_with(';') || s.starts_with('#')
}

/// A `[section]` line (`rest` follows the `[`): the lower-cased name of a known section.
fn section_header(line: &str, rest: &str) -> Result<String, String> {
    let Some((inner, after)) = rest.split_once(']') else {
        return Err(format!("missing ']' in section header {line:?}"));
    };
    let after = after.trim();
    if !is_blank_or_comment(after) {
        return Err(format!("unexpected text {after:?} after section header"));
    }
    let name = inner.trim();
    if name.contains(char::is_whitespace) {
        return Err(format!("subsections are not supported: [{name}]"));
    }
    let lower = name.to_ascii_lowercase();
    if !SECTIONS.contains(&lower.as_str()) {
        return Err(format!(
            "unknown section [{name}] (valid sections: {})",
            SECTIONS.join(", ")
        ));
    }
    Ok(lower)
}

/// A `key = value` line inside `section`: the key and the raw text after `=`.
fn key_and_value<'a>(line: &'a str, section: Option<&str>) -> Result<(&'a str, &'a str), String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or(line.len());
    let key = &line[..name_end];
    if key.is_empty() || !key.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!("invalid key name in {line:?}"));
    }
    let Some(sec) = section else {
        return Err(format!("key {key:?} appears before any [section] header"));
    };
    let rest = line[name_end..].trim_start();
    let Some(raw_value) = rest.strip_prefix('=') else {
        if is_blank_or_comment(rest) {
            return Err(format!(
                "missing '=' and value for key {key:?} in section [{sec}]"
            ));
        }
        return Err(format!("expected '=' after key {key:?} in section [{sec}]"));
    };
    Ok((key, raw_value))
}

const SECTIONS: [&str; 7] = [
    "default",
    "logging",
    "cni",
    "kubernetes",
    "ovnnorth",
    "ovnsouth",
    "masterha",
];

enum Scan {
    Done(String),
    Continue,
}

/// Decodes a value: whitespace-trimmed outside quotes, comments cut, escapes resolved.
fn scan_value(s: &str) -> Result<Scan, String> {
    let mut out = String::new();
    // Length of `out` that must survive trailing-whitespace trimming (quoted text).
    let mut keep = 0;
    let mut in_quote = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_quote = !in_quote;
                keep = out.len();
            }
            '\\' => match chars.next() {
                None if !in_quote => return Ok(Scan::Continue),
                None => return Err("unterminated quoted value".to_string()),
                Some(e) => {
                    out.push(match e {
                        '"' => '"',
                        '\\' => '\\',
                        'n' => '\n',
                        't' => '\t',
                        'b' => '\u{8}',
                        other => return Err(format!("invalid escape sequence \"\\{other}\"")),
                    });
                    keep = out.len();
                }
            },
            ';' | '#' if !in_quote => break,
            c if c.is_whitespace() && !in_quote && out.len() == keep && out.is_empty() => {}
            c => {
                out.push(c);
                if in_quote {
                    keep = out.len();
                }
            }
        }
    }
    if in_quote {
        return Err("unterminated quoted value".to_string());
    }
    let trimmed_len = out.trim_end().len().max(keep);
    out.truncate(trimmed_len);
    Ok(Scan::Done(out))
}

/// gcfg integers: decimal or `0x` hex, optional sign.
fn parse_file_int(v: &str) -> Option<i64> {
    let (neg, body) = match v.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    let n = match body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
            i64::from_str_radix(hex, 16).ok()?
        }
        Some(_) => return None,
        None if !body.is_empty() && body.chars().all(|c| c.is_ascii_digit()) => {
            body.parse::<i64>().ok()?
        }
        None => return None,
    };
    Some(if neg { -n } else { n })
}

fn assign(layer: &mut Layer, section: &str, key: &str, value: String) -> Result<(), String> {
    let lkey = key.to_ascii_lowercase();
    // Empty values never override anything (same as absent).
    let val = (!value.is_empty()).then_some(value);
    let int = |v: Option<String>| -> Result<Option<i64>, String> {
        match v {
            None => Ok(None),
            Some(s) => parse_file_int(&s).map(Some).ok_or_else(|| {
                format!(
                    "invalid value {} for key {lkey:?} in section [{section}]: must be a decimal or 0x hex integer",
                    super::shown(&s)
                )
            }),
        }
    };
    let slot: &mut Option<String> = match (section, lkey.as_str()) {
        ("default", "mtu") => {
            layer.mtu = int(val)?.or(layer.mtu);
            return Ok(());
        }
        ("default", "conntrack-zone") => {
            layer.conntrack_zone = int(val)?.or(layer.conntrack_zone);
            return Ok(());
        }
        ("masterha", "election-lease-duration") => {
            layer.ha.lease_duration = int(val)?.or(layer.ha.lease_duration);
            return Ok(());
        }
        ("masterha", "election-renew-deadline") => {
            layer.ha.renew_deadline = int(val)?.or(layer.ha.renew_deadline);
            return Ok(());
        }
        ("masterha", "election-retry-period") => {
            layer.ha.retry_period = int(val)?.or(layer.ha.retry_period);
            return Ok(());
        }
        ("masterha", "election-lease-namespace") => &mut layer.ha.lease_namespace,
        ("masterha", "election-lease-name") => &mut layer.ha.lease_name,
        ("logging", "loglevel") => {
            layer.loglevel = int(val)?.or(layer.loglevel);
            return Ok(());
        }
        ("default", "encap-type") => &mut layer.encap_type,
        ("default", "encap-ip") => &mut layer.encap_ip,
        ("logging", "logfile") => &mut layer.logfile,
        ("cni", "conf-dir") => &mut layer.cni_conf_dir,
        ("cni", "plugin") => &mut layer.cni_plugin,
        ("cni", "win-hnsnetwork-id") => &mut layer.win_hnsnetwork_id,
        ("kubernetes", "kubeconfig") => &mut layer.k8s_kubeconfig,
        ("kubernetes", "apiserver") => &mut layer.k8s_apiserver,
        ("kubernetes", "cacert") => &mut layer.k8s_cacert,
        ("kubernetes", "token") => &mut layer.k8s_token,
        ("kubernetes", "token-file") => &mut layer.k8s_token_file,
        ("default", "metrics-bind-address") => &mut layer.metrics_bind_address,
        ("ovnnorth", k) => ovn_slot(&mut layer.nb, k).ok_or_else(|| unknown(section, key))?,
        ("ovnsouth", k) => ovn_slot(&mut layer.sb, k).ok_or_else(|| unknown(section, key))?,
        _ => return Err(unknown(section, key)),
    };
    if val.is_some() {
        *slot = val;
    }
    Ok(())
}

fn ovn_slot<'a>(o: &'a mut OvnLayer, key: &str) -> Option<&'a mut Option<String>> {
    Some(match key {
        "address" => &mut o.address,
        "client-privkey" => &mut o.client_privkey,
        "client-cert" => &mut o.client_cert,
        "client-cacert" => &mut o.client_cacert,
        "server-privkey" => &mut o.server_privkey,
        "server-cert" => &mut o.server_cert,
        "server-cacert" => &mut o.server_cacert,
        _ => return None,
    })
}

fn unknown(section: &str, key: &str) -> String {
    let valid: &[&str] = match section {
        "default" => &[
            "mtu",
            "conntrack-zone",
            "encap-type",
            "encap-ip",
            "metrics-bind-address",
        ],
        "logging" => &["loglevel", "logfile"],
        "cni" => &["conf-dir", "plugin", "win-hnsnetwork-id"],
        "kubernetes" => &["kubeconfig", "apiserver", "cacert", "token", "token-file"],
        "masterha" => &[
            "election-lease-duration",
            "election-renew-deadline",
            "election-retry-period",
            "election-lease-namespace",
            "election-lease-name",
        ],
        _ => &[
            "address",
            "client-privkey",
            "client-cert",
            "client-cacert",
            "server-privkey",
            "server-cert",
            "server-cacert",
        ],
    };
    format!(
        "unknown key {key:?} in section [{section}] (valid keys: {})",
        valid.join(", ")
    )
}

#[cfg(test)]
mod size_cap_tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    #[test]
    fn an_endless_or_huge_config_file_fails_fast_with_its_name() {
        let big = std::env::temp_dir().join(format!("ovnkube-bigconf-{}", std::process::id()));
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(crate::util::files::MAX_INPUT_BYTES + 1).unwrap();
        for (arg, default) in [
            (
                "-config-file=/dev/zero".to_string(),
                Path::new("/nonexistent"),
            ),
            (
                format!("-config-file={}", big.display()),
                Path::new("/nonexistent"),
            ),
            // The default file is capped the same way.
            ("-init-master=m".to_string(), Path::new("/dev/zero")),
        ] {
            let t = Instant::now();
            let e = crate::config::parse_args_with([arg.clone()], default, None).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("larger than 1048576 bytes"), "{arg}: {msg}");
            assert!(msg.contains("config file"), "{arg}: {msg}");
            assert!(t.elapsed() < Duration::from_secs(5), "{arg}");
        }
        let _ = std::fs::remove_file(&big);
    }
}
