//! The hostile-input corpus (`tests/corpus/*.json`): every entry is an input with its
//! asserted outcome, either a clear error that names the offending thing (each `contains`
//! string must appear) or documented acceptance. Flags, the config file, the CNI
//! environment and stdin, and annotations go through the same code the binary runs; the API
//! objects go through kube-sandbox to a running master + net-controller, which must still
//! serve a normal pod afterwards.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use ovnkube::config::{Invocation, parse_args_with};

#[derive(Debug, Deserialize)]
struct Expect {
    outcome: String,
    /// Why an accepted input is fine: acceptance is documented, never silent.
    #[serde(default)]
    why: Option<String>,
    #[serde(default)]
    contains: Vec<String>,
    #[serde(default)]
    code: Option<u32>,
}

fn load<T: for<'de> Deserialize<'de>>(file: &str) -> Vec<T> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(file);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Compare one outcome with its expectation; a mismatch is described for the report.
fn check(what: &str, exp: &Expect, got: Result<(), (Option<u32>, String)>) -> Option<String> {
    match (exp.outcome.as_str(), got) {
        ("ok", _) if exp.why.as_deref().is_none_or(str::is_empty) => Some(format!(
            "{what}: an accepted input needs a \"why\" in the corpus"
        )),
        ("ok", Ok(())) => None,
        ("ok", Err((_, e))) => Some(format!("{what}: expected acceptance, got error: {e}")),
        ("error", Ok(())) => Some(format!("{what}: expected an error, was accepted")),
        ("error", Err((code, e))) => {
            let missing: Vec<&String> = exp.contains.iter().filter(|c| !e.contains(*c)).collect();
            if !missing.is_empty() {
                return Some(format!("{what}: the error does not name {missing:?}: {e}"));
            }
            if exp.code.is_some() && exp.code != code {
                return Some(format!(
                    "{what}: code {code:?}, expected {:?}: {e}",
                    exp.code
                ));
            }
            if e.len() > 2000 {
                return Some(format!("{what}: a {}-byte error is not clear", e.len()));
            }
            None
        }
        (other, _) => Some(format!("{what}: unknown outcome {other:?} in the corpus")),
    }
}

#[derive(Deserialize)]
struct FlagCase {
    name: String,
    args: Vec<String>,
    expect: Expect,
}

#[derive(Deserialize)]
struct ConfigCase {
    name: String,
    text: Option<String>,
    #[serde(default)]
    hex: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    check_mtu: Option<u32>,
    expect: Expect,
}

#[derive(Deserialize)]
struct CniCase {
    name: String,
    env: BTreeMap<String, String>,
    stdin: String,
    #[serde(default)]
    stdin_pad: usize,
    expect: Expect,
}

#[derive(Deserialize)]
struct AnnotationCase {
    name: String,
    kind: String,
    value: String,
    expect: Expect,
}

const NO_DEFAULT_FILE: &str = "/nonexistent/ovn_k8s.conf";

fn run_flags(c: &FlagCase) -> Result<(), (Option<u32>, String)> {
    parse_args_with(c.args.clone(), Path::new(NO_DEFAULT_FILE), None)
        .map(|_| ())
        .map_err(|e| (None, e.to_string()))
}

fn run_config(c: &ConfigCase, dir: &Path, i: usize) -> Result<(), (Option<u32>, String)> {
    let p = dir.join(format!("c{i}.conf"));
    let bytes = match (&c.text, &c.hex) {
        (_, Some(h)) => (0..h.len())
            .step_by(2)
            .map(|k| u8::from_str_radix(&h[k..k + 2], 16).unwrap())
            .collect(),
        (Some(t), None) => t.as_bytes().to_vec(),
        (None, None) => panic!("{}: neither text nor hex", c.name),
    };
    std::fs::write(&p, bytes).unwrap();
    let mut args = vec![
        format!("-config-file={}", p.display()),
        "-init-master=m".into(),
    ];
    args.extend(c.args.iter().cloned());
    match parse_args_with(args, Path::new(NO_DEFAULT_FILE), None) {
        Ok(Invocation::Run(cfg)) => match c.check_mtu {
            Some(m) if cfg.mtu != m => {
                Err((None, format!("accepted with mtu {}, not {m}", cfg.mtu)))
            }
            _ => Ok(()),
        },
        Ok(_) => Err((None, "not a run invocation".into())),
        Err(e) => Err((None, e.to_string())),
    }
}

fn run_cni(c: &CniCase) -> Result<(), (Option<u32>, String)> {
    let mut stdin = c.stdin.clone().into_bytes();
    stdin.extend(std::iter::repeat_n(b' ', c.stdin_pad));
    ovnkube::cni::prepare(|k| c.env.get(k).cloned(), &stdin[..])
        .map(|_| ())
        .map_err(|(e, _)| (Some(e.code), format!("{} {}", e.msg, e.details)))
}

fn run_annotation(c: &AnnotationCase) -> Result<(), (Option<u32>, String)> {
    let addrs = ovnkube::ovn::addrs::NodeAddrs::new("10.1.0.0/24".parse().unwrap());
    match c.kind.as_str() {
        "pod" => {
            let r = ovnkube::kube::annotations::PodNetwork::parse_for_node(&c.value, &addrs)
                .map(|_| ());
            // Whatever the controller accepts, the CNI plugin reads too.
            if r.is_ok()
                && let Err(e) = ovnkube::kube::annotations::PodNetwork::parse(&c.value)
            {
                return Err((
                    None,
                    format!("the CNI plugin refuses what the controller accepts: {e}"),
                ));
            }
            r.map_err(|e| (None, e))
        }
        "host_subnet" => ovnkube::kube::annotations::parse_host_subnet(&c.value)
            .map(|_| ())
            .map_err(|e| (None, e)),
        "mgmt_port_mac" => {
            match ovnkube::master::topology::mgmt_mac(Some(&c.value), addrs.subnet) {
                Some(r) => r.map(|_| ()).map_err(|e| (None, e)),
                None => Err((None, "no value".into())),
            }
        }
        k => Err((None, format!("unknown annotation kind {k}"))),
    }
}

#[test]
fn corpus_of_flags_config_cni_and_annotations() {
    let dir: PathBuf = std::env::temp_dir().join(format!("ovnkube-corpus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut bad = Vec::new();
    let mut n = 0;
    for c in load::<FlagCase>("flags.json") {
        n += 1;
        bad.extend(check(
            &format!("flags: {}", c.name),
            &c.expect,
            run_flags(&c),
        ));
    }
    for (i, c) in load::<ConfigCase>("config.json").iter().enumerate() {
        n += 1;
        bad.extend(check(
            &format!("config: {}", c.name),
            &c.expect,
            run_config(c, &dir, i),
        ));
    }
    for c in load::<CniCase>("cni.json") {
        n += 1;
        bad.extend(check(&format!("cni: {}", c.name), &c.expect, run_cni(&c)));
    }
    for c in load::<AnnotationCase>("annotations.json") {
        n += 1;
        bad.extend(check(
            &format!("annotation: {}", c.name),
            &c.expect,
            run_annotation(&c),
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{n} local corpus inputs, {} mismatches", bad.len());
    assert!(
        bad.is_empty(),
        "{} of {n} corpus entries failed:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[derive(Deserialize)]
struct ApiCase {
    name: String,
    object: serde_json::Value,
    /// What the API server does with it: `accepted` or `rejected`.
    api: String,
    #[serde(default)]
    why: String,
}

/// The collection URL of an object (`/api/v1/namespaces/default/pods`, ...).
fn collection_path(obj: &serde_json::Value) -> String {
    let api_version = obj["apiVersion"].as_str().unwrap_or("v1");
    let kind = obj["kind"].as_str().unwrap_or_default();
    let plural = match kind {
        "Endpoints" => "endpoints".to_string(),
        "NetworkPolicy" => "networkpolicies".to_string(),
        k => format!("{}s", k.to_ascii_lowercase()),
    };
    let root = if api_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{api_version}")
    };
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{root}/namespaces/{ns}/{plural}"),
        None => format!("{root}/{plural}"),
    }
}

/// POST the raw object (typed structs could not even express some of them).
async fn create_raw(client: &kube::Client, obj: &serde_json::Value) -> Result<(), String> {
    let req = http::Request::post(collection_path(obj))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(obj).unwrap())
        .unwrap();
    client
        .request::<serde_json::Value>(req)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// One master + net-controller on a real OVN central; a stream of hostile API objects, each
/// accepted or rejected by the API as the corpus says; afterwards the daemon is still running,
/// logged no panic, and a normal pod on a normal node gets its `ovn` annotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_of_api_objects_leaves_the_controller_serving() {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::{Api, ResourceExt};

    let env = common::Env::start("corpus-api").await;
    let args: Vec<String> = env
        .master_args("10.128.0.0/16")
        .into_iter()
        .map(|a| {
            if a.starts_with("-nb-address=") {
                format!("-nb-address={}", env.central.nb_db())
            } else if a.starts_with("-sb-address=") {
                format!("-sb-address={}", env.central.sb_db())
            } else {
                a
            }
        })
        .collect();
    let mut master = env.spawn("master", &args);
    let normal_node =
        serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
    create_raw(&env.client, &normal_node).await.unwrap();
    let nodes: Api<Node> = Api::all(env.client.clone());
    common::eventually("n1 gets its subnet", Duration::from_secs(60), || async {
        nodes
            .get("n1")
            .await
            .ok()?
            .annotations()
            .get("ovn_host_subnet")
            .cloned()
    })
    .await;

    let cases = load::<ApiCase>("api.json");
    let mut bad = Vec::new();
    for c in &cases {
        let got = create_raw(&env.client, &c.object).await;
        let outcome = if got.is_ok() { "accepted" } else { "rejected" };
        if outcome != c.api {
            bad.push(format!(
                "{}: the API {outcome} it ({got:?}), the corpus says {}",
                c.name, c.api
            ));
        }
        if c.api == "accepted" && c.why.is_empty() {
            bad.push(format!(
                "{}: an accepted object needs a \"why\" (what the controller does)",
                c.name
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} API corpus entries failed:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );

    // The daemon survived all of it and still serves a normal pod.
    let normal = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "normal", "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "pause"}]},
    });
    create_raw(&env.client, &normal).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let ann = common::eventually(
        "the normal pod is annotated",
        Duration::from_secs(90),
        || async {
            pods.get("normal")
                .await
                .ok()?
                .annotations()
                .get("ovn")
                .cloned()
        },
    )
    .await;
    let addrs = ovnkube::ovn::addrs::NodeAddrs::new(
        nodes.get("n1").await.unwrap().annotations()["ovn_host_subnet"]
            .parse()
            .unwrap(),
    );
    ovnkube::kube::annotations::PodNetwork::parse_for_node(&ann, &addrs)
        .unwrap_or_else(|e| panic!("the normal pod's annotation {ann:?} is invalid: {e}"));
    assert!(
        matches!(master.child.try_wait(), Ok(None)),
        "the master exited during the corpus:\n{}",
        master.log_text()
    );
    let log = master.log_text();
    assert!(!log.contains("panicked"), "the master panicked:\n{log}");
    eprintln!(
        "{} hostile API objects streamed; the normal pod got {ann}",
        cases.len()
    );
    master.terminate();
}
