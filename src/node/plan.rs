//! What node initialisation writes, as pure functions of the configuration and what was read
//! (unit-tested without OVS, OVN or the kernel).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::Ipv4Net;

use crate::config::{Config, OvnScheme};
use crate::ovn::addrs::NodeAddrs;
use crate::ovn::names::{
    BR_INT, EXT_ENCAP_IP, EXT_ENCAP_TYPE, EXT_K8S_API_SERVER, EXT_K8S_CA, EXT_K8S_TOKEN,
    EXT_K8S_TOKEN_FILE, EXT_OVN_NB, EXT_OVN_REMOTE, EXT_SYSTEM_ID, mgmt_iface, mgmt_port,
    node_switch,
};
use crate::ovn::schema::{col, vs};
use crate::ovn::{ColVal, DbOp, NbOp, NbTxn, Val, VsOp, VsTxn};

/// The CNI config file the node writes into `-cni-conf-dir`.
pub const CNI_CONF_FILE: &str = "10-ovn-kubernetes.conf";
/// The CNI network name.
pub const CNI_NETWORK: &str = "ovn-kubernetes";
/// The CNI spec version of the config we write (the plugin accepts older ones too).
pub const CNI_CONF_VERSION: &str = "1.1.0";

/// One `ovs-vsctl` transaction with every external_id ovn-controller and the CNI plugin need,
/// except the API token: a command line is readable by every local user
/// (`/proc/PID/cmdline`), so the token goes through [`token_ops`] on an OVSDB connection.
/// `existing` is the current `external_ids` map (system-id is only set when missing: OVS
/// packaging usually sets it and ovn-controller's chassis name must not change under it).
pub fn external_ids_txn(
    cfg: &Config,
    node: &str,
    encap_ip: IpAddr,
    api_server: &str,
    existing: &BTreeMap<String, String>,
) -> VsTxn {
    let mut txn = VsTxn::new();
    let south = &cfg.ovn_south.client;
    if south.scheme == OvnScheme::Ssl
        && let (Some(k), Some(c), Some(ca)) = (&south.privkey, &south.cert, &south.cacert)
    {
        // del-ssl first: OVS 2.9.1 hangs on set-ssl over an existing SSL row.
        txn.push(VsOp::DelSsl).push(VsOp::SetSsl {
            privkey: k.display().to_string(),
            cert: c.display().to_string(),
            cacert: ca.display().to_string(),
        });
    }
    let mut cols = Vec::new();
    let mut put = |k: &str, v: String| cols.push(ColVal::key(col::EXTERNAL_IDS, k, Val::str(v)));
    if let Some(t) = cfg.ovn_south.client.client_target() {
        put(EXT_OVN_REMOTE, t);
    }
    if let Some(t) = cfg.ovn_north.client.client_target() {
        put(EXT_OVN_NB, t);
    }
    put(EXT_ENCAP_TYPE, cfg.encap_type.clone());
    put(EXT_ENCAP_IP, encap_ip.to_string());
    put(EXT_K8S_API_SERVER, api_server.to_string());
    // With -cni-credentials-dir, the host copies (the plugin cannot see the agent's pod).
    if let Some(ca) = &cfg.kubernetes.cacert {
        let ca = super::credentials::published(cfg, ca);
        put(EXT_K8S_CA, ca.display().to_string());
    }
    if let Some(f) = &cfg.kubernetes.token_file {
        let f = super::credentials::published(cfg, f);
        put(EXT_K8S_TOKEN_FILE, f.display().to_string());
    }
    if existing.get(EXT_SYSTEM_ID).is_none_or(|s| s.is_empty()) {
        put(EXT_SYSTEM_ID, node.to_string());
    }
    txn.push(VsOp::Db(DbOp::Set {
        table: vs::OPEN_VSWITCH.into(),
        record: ".".into(),
        columns: cols,
        if_exists: false,
    }));
    txn
}

/// The OVSDB operations (database `Open_vSwitch`) that set `external_ids:k8s-api-token` to
/// `token`: a map `insert` keeps an existing key's old value, so the key is deleted first, in
/// the same transaction. `None` when no token is configured (an existing one is left alone,
/// as with every other key).
pub fn token_ops(token: Option<&str>) -> Option<Vec<serde_json::Value>> {
    let tok = token.filter(|t| !t.is_empty())?;
    Some(vec![serde_json::json!({
        "op": "mutate",
        "table": vs::OPEN_VSWITCH,
        "where": [],
        "mutations": [
            [col::EXTERNAL_IDS, "delete", ["set", [EXT_K8S_TOKEN]]],
            [col::EXTERNAL_IDS, "insert", ["map", [[EXT_K8S_TOKEN, tok]]]],
        ],
    })])
}

/// The management port in OVS: br-int (created with `datapath_type` only when it does not
/// exist yet) and the internal interface `k8s-<node[:11]>` bound to LSP `k8s-<node>`.
pub fn mgmt_vs_txn(
    node: &str,
    mtu: u32,
    mac: &str,
    br_int_exists: bool,
    datapath_type: Option<&str>,
) -> VsTxn {
    let iface = mgmt_iface(node);
    let mut txn = VsTxn::new();
    txn.push(VsOp::AddBr {
        name: BR_INT.into(),
    });
    if !br_int_exists && let Some(dp) = datapath_type.filter(|d| !d.is_empty()) {
        txn.push(VsOp::Db(DbOp::Set {
            table: vs::BRIDGE.into(),
            record: BR_INT.into(),
            columns: vec![ColVal::set(col::DATAPATH_TYPE, Val::str(dp))],
            if_exists: false,
        }));
    }
    txn.push(VsOp::AddPort {
        bridge: BR_INT.into(),
        port: iface.clone(),
    })
    .push(VsOp::Db(DbOp::Set {
        table: vs::INTERFACE.into(),
        record: iface,
        columns: vec![
            ColVal::set(col::TYPE, Val::str("internal")),
            ColVal::set(col::MTU_REQUEST, Val::Int(i64::from(mtu))),
            ColVal::set(col::MAC, Val::str(mac)),
            ColVal::key(col::EXTERNAL_IDS, "iface-id", Val::str(mgmt_port(node))),
        ],
        if_exists: false,
    }));
    txn
}

/// The management port's logical switch port on the node switch (created by the master).
pub fn mgmt_nb_txn(node: &str, mac: &str, addrs: &NodeAddrs) -> NbTxn {
    let port = mgmt_port(node);
    let mut txn = NbTxn::new();
    txn.push(NbOp::LspAdd {
        switch: node_switch(node),
        name: port.clone(),
    })
    .push(NbOp::LspSetAddresses {
        name: port,
        addresses: vec![mgmt_lsp_address(mac, addrs)],
    });
    txn
}

/// The address the management port's logical port carries (`<mac> <ip>`).
pub fn mgmt_lsp_address(mac: &str, addrs: &NodeAddrs) -> String {
    format!("{mac} {}", addrs.mgmt.addr())
}

/// Whether the management port's logical port is as `mgmt_nb_txn` makes it: `lsp` is its
/// (uuid, addresses) when it exists, `switch_ports` the node switch's ports.
pub fn mgmt_lsp_current(
    lsp: Option<(&str, &[String])>,
    switch_ports: &[String],
    want: &str,
) -> bool {
    lsp.is_some_and(|(uuid, addrs)| {
        addrs.len() == 1 && addrs[0] == want && switch_ports.iter().any(|p| p == uuid)
    })
}

/// Destinations routed through the management port via the node's gateway (`.1`): every
/// cluster subnet and the service CIDR.
pub fn mgmt_routes(cfg: &Config) -> Vec<Ipv4Net> {
    let mut v: Vec<Ipv4Net> = cfg.cluster_subnets.iter().map(|c| c.cidr).collect();
    v.extend(cfg.service_cidr);
    v
}

/// The CNI network configuration (one line of JSON). `mtu` and `configFilePath` let the
/// plugin use the node's MTU and config file (without them it would fall back to built-in
/// defaults that need not match the node's).
pub fn cni_conf(cfg: &Config) -> String {
    let mut v = serde_json::json!({
        "cniVersion": CNI_CONF_VERSION,
        "name": CNI_NETWORK,
        "type": cfg.cni.plugin,
        "mtu": cfg.mtu,
    });
    if let Some(f) = &cfg.config_file {
        v["configFilePath"] = serde_json::Value::String(f.display().to_string());
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Invocation, parse_args_with};
    use std::path::Path;

    fn cfg(args: &[&str]) -> Config {
        match parse_args_with(args.iter().copied(), Path::new("/nonexistent"), None).unwrap() {
            Invocation::Run(c) => *c,
            other => panic!("{other:?}"),
        }
    }

    fn render(t: &VsTxn) -> String {
        t.render().join(" ")
    }

    #[test]
    fn external_ids_in_one_transaction() {
        let c = cfg(&[
            "-init-node=n1",
            "-sb-address=tcp://10.0.0.1:6642",
            "-nb-address=tcp://10.0.0.1:6641",
            "-k8s-apiserver=http://10.0.0.1:8080",
            "-k8s-token=secret",
        ]);
        let t = external_ids_txn(
            &c,
            "n1",
            "10.0.0.7".parse().unwrap(),
            "http://10.0.0.1:8080",
            &BTreeMap::new(),
        );
        assert_eq!(t.len(), 1);
        assert_eq!(
            render(&t),
            "-- set Open_vSwitch . external_ids:\"ovn-remote\"=\"tcp:10.0.0.1:6642\" \
             external_ids:\"ovn-nb\"=\"tcp:10.0.0.1:6641\" \
             external_ids:\"ovn-encap-type\"=\"geneve\" \
             external_ids:\"ovn-encap-ip\"=\"10.0.0.7\" \
             external_ids:\"k8s-api-server\"=\"http://10.0.0.1:8080\" \
             external_ids:\"system-id\"=\"n1\""
        );
    }

    #[test]
    fn the_token_never_reaches_the_command_line_but_the_ovsdb_ops() {
        let c = cfg(&["-init-node=n1", "-k8s-token=s3cr3t-tok"]);
        let t = external_ids_txn(
            &c,
            "n1",
            "10.0.0.7".parse().unwrap(),
            "http://localhost:8080",
            &BTreeMap::new(),
        );
        let argv = t.render();
        assert!(argv.iter().all(|a| !a.contains("s3cr3t")), "{argv:?}");
        assert!(argv.iter().all(|a| !a.contains(EXT_K8S_TOKEN)), "{argv:?}");
        let ops = token_ops(c.kubernetes.token.as_deref()).unwrap();
        assert_eq!(
            serde_json::Value::Array(ops),
            serde_json::json!([{
                "op": "mutate", "table": vs::OPEN_VSWITCH, "where": [],
                "mutations": [
                    [col::EXTERNAL_IDS, "delete", ["set", ["k8s-api-token"]]],
                    [col::EXTERNAL_IDS, "insert", ["map", [["k8s-api-token", "s3cr3t-tok"]]]],
                ],
            }])
        );
        assert!(token_ops(None).is_none());
        assert!(token_ops(Some("")).is_none());
    }

    #[test]
    fn keeps_system_id_and_remote_when_not_configured() {
        let c = cfg(&["-init-node=n1"]);
        let existing = [("system-id".to_string(), "chassis-7".to_string())].into();
        let s = render(&external_ids_txn(
            &c,
            "n1",
            "10.0.0.7".parse().unwrap(),
            "http://localhost:8080",
            &existing,
        ));
        assert!(!s.contains("system-id"), "{s}");
        assert!(!s.contains("ovn-remote"), "{s}");
        assert!(!s.contains("ovn-nb"), "{s}");
        assert!(!s.contains("k8s-api-token"), "{s}");
    }

    #[test]
    fn the_token_file_path_is_published_for_the_cni_plugin() {
        let dir = std::env::temp_dir().join(format!("ovnkube-plan-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tok = dir.join("token");
        std::fs::write(&tok, "t").unwrap();
        let c = cfg(&[
            "-init-node=n1",
            &format!("-k8s-token-file={}", tok.display()),
        ]);
        let s = render(&external_ids_txn(
            &c,
            "n1",
            "10.0.0.7".parse().unwrap(),
            "http://localhost:8080",
            &BTreeMap::new(),
        ));
        assert!(
            s.contains(&format!(
                "external_ids:\"k8s-api-token-file\"=\"{}\"",
                tok.display()
            )),
            "{s}"
        );
        // The path only: the token itself is not copied into OVS.
        assert!(!s.contains("\"k8s-api-token\"="), "{s}");
        // With -cni-credentials-dir the plugin is pointed at the host copies.
        let mut c = c;
        c.cni_credentials_dir = Some("/var/run/ovn-kubernetes/credentials".into());
        c.kubernetes.cacert = Some(dir.join("ca.crt"));
        let s = render(&external_ids_txn(
            &c,
            "n1",
            "10.0.0.7".parse().unwrap(),
            "https://10.0.0.1:6443",
            &BTreeMap::new(),
        ));
        for (key, want) in [
            (
                "k8s-api-token-file",
                "/var/run/ovn-kubernetes/credentials/token",
            ),
            (
                "k8s-ca-certificate",
                "/var/run/ovn-kubernetes/credentials/ca.crt",
            ),
        ] {
            assert!(
                s.contains(&format!("external_ids:\"{key}\"=\"{want}\"")),
                "{key}: {s}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn management_port_commands() {
        let s = render(&mgmt_vs_txn(
            "kube-worker-node-1",
            1400,
            "0a:58:0a:01:00:02",
            false,
            Some("netdev"),
        ));
        assert_eq!(
            s,
            "-- --may-exist add-br br-int -- set Bridge br-int datapath_type=\"netdev\" \
             -- --may-exist add-port br-int k8s-kube-worker \
             -- set Interface k8s-kube-worker type=\"internal\" mtu_request=1400 \
             mac=\"0a:58:0a:01:00:02\" external_ids:\"iface-id\"=\"k8s-kube-worker-node-1\""
        );
        // An existing br-int keeps its datapath type.
        let s = render(&mgmt_vs_txn("n1", 1400, "m", true, Some("netdev")));
        assert!(!s.contains(col::DATAPATH_TYPE), "{s}");
        let addrs = NodeAddrs::new("10.1.3.0/24".parse().unwrap());
        assert_eq!(
            mgmt_nb_txn("n1", "0a:58:0a:01:03:02", &addrs)
                .render()
                .join(" "),
            "-- --may-exist lsp-add n1 k8s-n1 -- lsp-set-addresses k8s-n1 0a:58:0a:01:03:02 10.1.3.2"
        );
    }

    #[test]
    fn management_lsp_check() {
        let want = "0a:58:0a:01:03:02 10.1.3.2";
        let ok = [want.to_string()];
        let ports = ["u1".to_string(), "u2".to_string()];
        assert!(mgmt_lsp_current(Some(("u2", &ok)), &ports, want));
        assert!(!mgmt_lsp_current(None, &ports, want));
        assert!(!mgmt_lsp_current(Some(("u3", &ok)), &ports, want));
        let stale = ["0a:58:0a:01:04:02 10.1.4.2".to_string()];
        assert!(!mgmt_lsp_current(Some(("u2", &stale)), &ports, want));
        assert!(!mgmt_lsp_current(Some(("u2", &[])), &ports, want));
    }

    #[test]
    fn routes_and_cni_config() {
        let c = cfg(&[
            "-init-node=n1",
            "-cluster-subnet=10.128.0.0/14,10.200.0.0/16",
            "-service-cluster-ip-range=172.30.0.0/16",
            "-mtu=1300",
        ]);
        let r: Vec<String> = mgmt_routes(&c).iter().map(|n| n.to_string()).collect();
        assert_eq!(r, ["10.128.0.0/14", "10.200.0.0/16", "172.30.0.0/16"]);
        let v: serde_json::Value = serde_json::from_str(&cni_conf(&c)).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["name"], "ovn-kubernetes");
        assert_eq!(v["type"], "ovn-k8s-cni-overlay");
        assert_eq!(v["mtu"], 1300);
        assert!(v.get("configFilePath").is_none());
    }
}
