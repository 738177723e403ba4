//! Property tests for the parsers outside `config/`: the pod `ovn` annotation (both the
//! controller's and the CNI plugin's reader), the CNI environment, network config and
//! results, the OVSDB JSON output and the ctl-syntax values. Arbitrary input never panics;
//! what we write, we read back. `PROPTEST_CASES` sets the number of cases (1,000 by default).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::cni::types::{AddResult, CniEnv, Command, NetConf, PrevResult};
use crate::kube::annotations::PodNetwork;
use crate::ovn::addrs::NodeAddrs;
use crate::ovn::ovsdb::{ColVal, Val, parse_tables, quote};

fn config() -> ProptestConfig {
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

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![Just("set"), Just("map"), Just("uuid"), Just("named-uuid")]
            .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON-ish text: fragments of what the parsers expect plus noise.
fn jsonish() -> impl Strategy<Value = String> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        prop::collection::vec(
            prop_oneof![
                Just("{".to_string()),
                Just("}".to_string()),
                Just("\"ip_address\":".to_string()),
                Just("\"mac_address\":".to_string()),
                Just("\"gateway_ip\":".to_string()),
                Just("\"10.1.0.5/24\"".to_string()),
                Just("\"0a:58:0a:01:00:05\"".to_string()),
                Just(",".to_string()),
                "\"[ -~]{0,10}\"",
                ".{0,4}",
            ],
            0..12
        )
        .prop_map(|v| v.concat()),
    ]
}

fn node_addrs() -> NodeAddrs {
    NodeAddrs::new("10.1.0.0/24".parse().unwrap())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pod_annotation_readers_never_panic(s in jsonish()) {
        let _ = PodNetwork::parse_for_node(&s, &node_addrs());
        let _ = PodNetwork::parse(&s);
    }

    #[test]
    fn pod_annotation_round_trips(host in 2u32..255, mac in prop::array::uniform6(any::<u8>())) {
        let addrs = node_addrs();
        let ip = Ipv4Addr::from(u32::from(addrs.subnet.network()) + host);
        // A unicast MAC: the I/G bit clear.
        let mac = format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            mac[0] & 0xfe, mac[1], mac[2], mac[3], mac[4], mac[5]
        );
        let net = PodNetwork { ip, prefix_len: 24, mac: mac.clone(), gateway: addrs.gateway.addr() };
        let text = net.to_annotation();
        let back = PodNetwork::parse_for_node(&text, &addrs).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&back, &net);
        // The CNI plugin reads the same annotation to the same address.
        let cni = PodNetwork::parse(&text).map_err(TestCaseError::fail)?;
        prop_assert_eq!(cni.cidr().to_string(), format!("{ip}/24"));
        prop_assert_eq!(cni.mac, mac);
        prop_assert_eq!(cni.gateway, addrs.gateway.addr());
    }

    #[test]
    fn cni_environment_never_panics(
        vars in prop::collection::btree_map(
            prop_oneof![
                Just("CNI_COMMAND".to_string()), Just("CNI_CONTAINERID".to_string()),
                Just("CNI_NETNS".to_string()), Just("CNI_IFNAME".to_string()),
                Just("CNI_ARGS".to_string()),
            ],
            prop_oneof![
                Just("ADD".to_string()), Just("DEL".to_string()), Just("CHECK".to_string()),
                Just("K8S_POD_NAMESPACE=default;K8S_POD_NAME=x".to_string()),
                "([A-Z_]{1,8}=[ -~]{0,10};){0,3}",
                ".{0,20}",
            ],
            0..6,
        )
    ) {
        if let Ok(env) = CniEnv::from_vars(|k| vars.get(k).cloned()) {
            if let Ok((ns, name)) = env.pod() {
                // Whatever is accepted is a Kubernetes name: nothing that changes a URL path.
                prop_assert!(crate::kube::names::check_namespaced(&ns, &name).is_ok());
                prop_assert!(!ns.contains('/') && !name.contains('/'));
            }
            let id = &env.container_id;
            if !id.is_empty() {
                let h = crate::cni::host_ifname(id, &env.ifname);
                prop_assert!(h.len() <= 15 && h.starts_with("ovn"));
            }
        }
    }

    #[test]
    fn cni_config_never_panics(s in jsonish(), cmd in prop_oneof![
        Just(Command::Add), Just(Command::Del), Just(Command::Check),
        Just(Command::Gc), Just(Command::Status),
    ]) {
        if let Ok((conf, _)) = NetConf::parse(s.as_bytes(), cmd)
            && let Some(prev) = &conf.prev_result
        {
            let _ = PrevResult::parse(prev, "eth0");
        }
    }

    #[test]
    fn cni_prev_result_never_panics(v in json_value()) {
        let _ = PrevResult::parse(&v, "eth0");
        let _ = PrevResult::parse(&json!({"interfaces": v.clone(), "ips": v}), "eth0");
    }

    #[test]
    fn cni_results_read_back_in_every_version(
        ip in any::<u32>(), len in 8u8..=30, gw in any::<u32>(), mtu in 576u32..9000,
        v in prop_oneof![Just("0.3.0"), Just("0.3.1"), Just("0.4.0"), Just("1.0.0"), Just("1.1.0")],
    ) {
        let net = ipnet::Ipv4Net::new(Ipv4Addr::from(ip), len).unwrap();
        let r = AddResult {
            host_if: "ovn0123456789ab".into(),
            host_mac: "02:00:00:00:00:01".into(),
            pod_if: "eth0".into(),
            pod_mac: "0a:58:0a:01:00:05".into(),
            sandbox: "/var/run/netns/p".into(),
            ip: net,
            gateway: Ipv4Addr::from(gw),
            mtu,
        };
        let out = r.to_json(v);
        prop_assert_eq!(&out["cniVersion"], v);
        let prev = PrevResult::parse(&out, "eth0").map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(prev.ips, vec![(net, Some(Ipv4Addr::from(gw)))]);
        prop_assert_eq!(prev.pod_mac.as_deref(), Some("0a:58:0a:01:00:05"));
    }

    #[test]
    fn ovsdb_json_never_panics(headings in json_value(), data in json_value(), raw in jsonish()) {
        let _ = parse_tables(&json!({"headings": headings, "data": data}).to_string());
        let _ = parse_tables(&json!({"headings": ["_uuid", "a"], "data": [[data.clone(), data]]}).to_string());
        let _ = parse_tables(&raw);
    }

    #[test]
    fn ovsdb_json_tables_read_back(
        rows in prop::collection::vec(
            (".{0,12}", any::<i64>(), prop::collection::btree_map(".{0,6}", ".{0,6}", 0..4),
             prop::collection::btree_set(".{0,6}", 0..4)),
            0..5,
        )
    ) {
        let data: Vec<Value> = rows.iter().map(|(s, i, m, set)| {
            let pairs: Vec<Value> = m.iter().map(|(k, v)| json!([k, v])).collect();
            let members: Vec<Value> = set.iter().map(|x| json!(x)).collect();
            json!([["uuid", "u"], s, i, ["map", pairs], ["set", members]])
        }).collect();
        let text = json!({"headings": ["_uuid", "s", "i", "m", "set"], "data": data}).to_string();
        let tables = parse_tables(&text).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
        prop_assert_eq!(tables.len(), 1);
        for (row, (s, i, m, set)) in tables[0].iter().zip(&rows) {
            prop_assert_eq!(&row.uuid, "u");
            prop_assert_eq!(&row.str("s"), s);
            prop_assert_eq!(row.get("i").and_then(|d| d.as_int()), Some(*i));
            prop_assert_eq!(&row.map("m"), m);
            let got: std::collections::BTreeSet<String> = row.set("set").into_iter().collect();
            prop_assert_eq!(&got, set);
        }
    }

    #[test]
    fn ctl_values_are_one_quoted_atom(s in any::<String>(), k in any::<String>()) {
        let q = quote(&s);
        // One argv word ovs-vsctl reads as a single string atom: JSON quoting, no raw
        // control characters, and it decodes to exactly the input.
        prop_assert!(q.starts_with('"') && q.ends_with('"'));
        prop_assert!(!q.chars().any(|c| c.is_control()));
        prop_assert_eq!(serde_json::from_str::<String>(&q).ok(), Some(s.clone()));
        let rendered = ColVal::key("external_ids", &k, Val::str(s.as_str())).render();
        prop_assert_eq!(rendered, format!("external_ids:{}={}", quote(&k), q));
        let m: BTreeMap<String, String> = [(k.clone(), s.clone())].into();
        prop_assert_eq!(Val::str_map(&m).render(), format!("{{{}={}}}", quote(&k), q));
    }

    #[test]
    fn record_names_are_checked_without_panicking(s in any::<String>()) {
        if crate::ovn::ctl::check_record_name(&s).is_ok() {
            prop_assert!(!s.is_empty() && !s.starts_with('-'));
            prop_assert!(!s.chars().any(|c| c.is_whitespace() || c == '"'));
        }
    }
}
