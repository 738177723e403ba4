//! Small, honest stand-ins for the parts of Kubernetes the sandbox does not run: a scheduler
//! (round-robin `spec.nodeName`), an endpoints controller (an EndpointSlice of the pods
//! matching a service's selector), and a kubelet per node that runs the real CNI plugin for each pod scheduled to
//! it (ADD on create, DEL on delete) and starts a tiny web server in the pod's namespace.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use ovn_testbed::Chassis;
use tokio::sync::Mutex;

const TICK: Duration = Duration::from_millis(300);

/// Assigns unscheduled pods to nodes, round-robin.
pub async fn scheduler(client: kube::Client, nodes: Vec<String>) {
    let api: Api<Pod> = Api::all(client.clone());
    let mut next = 0usize;
    loop {
        if let Ok(list) = api.list(&ListParams::default()).await {
            for p in list.items {
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                    continue;
                }
                let node = &nodes[next % nodes.len()];
                next += 1;
                let ns = p.namespace().unwrap_or_else(|| "default".into());
                let patch = serde_json::json!({"spec": {"nodeName": node}});
                let _ = Api::<Pod>::namespaced(client.clone(), &ns)
                    .patch(
                        &p.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await;
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

fn ready_ip(p: &Pod) -> Option<String> {
    let st = p.status.as_ref()?;
    let ready = st
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if ready { st.pod_ip.clone() } else { None }
}

fn selects(sel: &BTreeMap<String, String>, p: &Pod) -> bool {
    !sel.is_empty() && sel.iter().all(|(k, v)| p.labels().get(k) == Some(v))
}

/// Label of the service an EndpointSlice belongs to, and who manages it.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGER: &str = "ovnkube-demo-endpoints-standin";

/// The container port a service port targets on pod `p`.
fn target_port(sp: &ServicePort, p: &Pod) -> i32 {
    match &sp.target_port {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(name)) => p
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .map(|cp| cp.container_port)
            .unwrap_or(sp.port),
        None => sp.port,
    }
}

/// The EndpointSlice a service should have, from the pods it selects (as Kubernetes'
/// endpointslice controller writes it: ready pods ready, terminating ones still listed with
/// `terminating`, so consumers can fall back to them).
fn slice_for(svc: &Service, pods: &[Pod]) -> Option<EndpointSlice> {
    let spec = svc.spec.as_ref()?;
    let sel = spec.selector.clone()?;
    let mut endpoints = Vec::new();
    let mut ports: Vec<EndpointPort> = Vec::new();
    for p in pods
        .iter()
        .filter(|p| selects(&sel, p) && p.namespace() == svc.namespace())
    {
        let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
            continue;
        };
        let ready = ready_ip(p).is_some();
        let terminating = p.metadata.deletion_timestamp.is_some();
        endpoints.push(Endpoint {
            addresses: vec![ip],
            node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
            conditions: Some(EndpointConditions {
                ready: Some(ready && !terminating),
                serving: Some(ready),
                terminating: Some(terminating),
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some(p.name_any()),
                namespace: p.namespace(),
                uid: p.uid(),
                ..Default::default()
            }),
            ..Default::default()
        });
        if ports.is_empty() {
            ports = spec
                .ports
                .iter()
                .flatten()
                .map(|sp| EndpointPort {
                    name: sp.name.clone(),
                    port: Some(target_port(sp, p)),
                    protocol: sp.protocol.clone(),
                    ..Default::default()
                })
                .collect();
        }
    }
    endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
    Some(EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{}-standin", svc.name_any())),
            namespace: svc.namespace(),
            labels: Some(
                [
                    (SERVICE_NAME_LABEL.to_string(), svc.name_any()),
                    (MANAGED_BY_LABEL.to_string(), MANAGER.to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(endpoints),
        ports: Some(ports),
    })
}

/// Keeps one EndpointSlice per selector service in line with its pods (and writes no
/// core/v1 Endpoints: today's clusters publish slices).
pub async fn endpoints_controller(client: kube::Client) {
    loop {
        let svcs = Api::<Service>::all(client.clone())
            .list(&ListParams::default())
            .await;
        let pods = Api::<Pod>::all(client.clone())
            .list(&ListParams::default())
            .await;
        if let (Ok(svcs), Ok(pods)) = (svcs, pods) {
            for svc in &svcs.items {
                let Some(want) = slice_for(svc, &pods.items) else {
                    continue;
                };
                let ns = svc.namespace().unwrap_or_else(|| "default".into());
                let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
                let name = want.name_any();
                match api.get_opt(&name).await {
                    Ok(Some(mut have)) => {
                        if have.endpoints != want.endpoints || have.ports != want.ports {
                            have.endpoints = want.endpoints;
                            have.ports = want.ports;
                            let _ = api.replace(&name, &PostParams::default(), &have).await;
                        }
                    }
                    Ok(None) => {
                        let _ = api.create(&PostParams::default(), &want).await;
                    }
                    Err(_) => {}
                }
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

const SERVER: &str = r#"
import http.server, socketserver, sys
name = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
        self.wfile.write(("hello from %s\n" % name).encode())
    def log_message(self, *a): pass
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"#;

/// A pod sandbox: its network namespace and the server running in it.
pub struct Sandbox {
    pub netns: String,
    pub ip: String,
    pub node: String,
    container_id: String,
    server: Option<Child>,
}

/// Runs the CNI plugin for the pods of one node.
pub struct Kubelet {
    pub node: String,
    pub chassis: Arc<Chassis>,
    pub plugin: PathBuf,
    pub cni_conf: PathBuf,
    pub client: kube::Client,
    pub sandboxes: Arc<Mutex<HashMap<String, Sandbox>>>,
    pub prefix: String,
}

impl Kubelet {
    fn clone_for_blocking(&self) -> Kubelet {
        Kubelet {
            node: self.node.clone(),
            chassis: self.chassis.clone(),
            plugin: self.plugin.clone(),
            cni_conf: self.cni_conf.clone(),
            client: self.client.clone(),
            sandboxes: self.sandboxes.clone(),
            prefix: self.prefix.clone(),
        }
    }

    fn cni(
        &self,
        command: &str,
        pod: &Pod,
        container_id: &str,
        netns: &str,
    ) -> Result<serde_json::Value> {
        let conf = std::fs::read_to_string(&self.cni_conf)
            .with_context(|| format!("reading {}", self.cni_conf.display()))?;
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={container_id}",
            pod.namespace().unwrap_or_default(),
            pod.name_any()
        );
        let plugin = self.plugin.display().to_string();
        let mut cmd = self.chassis.command(&[plugin.as_str()])?;
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", format!("/var/run/netns/{netns}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin")
            .env("CNI_ARGS", args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting the CNI plugin")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(conf.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            bail!(
                "CNI {command} for {} failed: {} {}",
                pod.name_any(),
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(if stdout.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&stdout).context("CNI result is not JSON")?
        })
    }

    async fn add(&self, pod: &Pod) -> Result<Sandbox> {
        let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        let netns = format!("{}-{}", self.prefix, pod.name_any());
        run(&["ip", "netns", "add", &netns])?;
        let container_id = pod.uid().unwrap_or_else(|| key.replace('/', "-"));
        // The plugin can wait tens of seconds (for the annotation): keep it off the runtime's
        // worker threads, which also serve the in-process API server.
        let result = {
            let me = self.clone_for_blocking();
            let (p, c, n) = (pod.clone(), container_id.clone(), netns.clone());
            tokio::task::spawn_blocking(move || me.cni("ADD", &p, &c, &n))
                .await
                .context("CNI ADD task")?
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = run(&["ip", "netns", "del", &netns]);
                return Err(e);
            }
        };
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .context("CNI result without an address")?
            .to_string();
        let port = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .map(|p| p.container_port)
            .next()
            .unwrap_or(80);
        let server = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "python3",
                "-c",
                SERVER,
                &port.to_string(),
                &pod.name_any(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the pod's web server")?;
        let status = serde_json::json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        }});
        Api::<Pod>::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default())
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .context("reporting pod status")?;
        Ok(Sandbox {
            netns,
            ip,
            node: self.node.clone(),
            container_id,
            server: Some(server),
        })
    }

    fn del(&self, key: &str, mut sb: Sandbox) {
        if let Some(mut s) = sb.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        if let Err(e) = self.cni("DEL", &pod, &sb.container_id, &sb.netns) {
            eprintln!("   warning: {e:#}");
        }
        let _ = run(&["ip", "netns", "del", &sb.netns]);
    }

    /// Reconcile forever: sandboxes for this node's pods, none for pods that are gone.
    pub async fn run(self: Arc<Self>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        loop {
            if self.cni_conf.exists()
                && let Ok(list) = api
                    .list(&ListParams::default().fields(&format!("spec.nodeName={}", self.node)))
                    .await
            {
                let mut want = HashMap::new();
                for p in list.items {
                    want.insert(
                        format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
                        p,
                    );
                }
                let have: Vec<String> = self
                    .sandboxes
                    .lock()
                    .await
                    .iter()
                    .filter(|(_, s)| s.node == self.node)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in have {
                    if !want.contains_key(&k)
                        && let Some(sb) = self.sandboxes.lock().await.remove(&k)
                    {
                        tokio::task::block_in_place(|| self.del(&k, sb));
                    }
                }
                for (k, p) in want {
                    if self.sandboxes.lock().await.contains_key(&k) {
                        continue;
                    }
                    match self.add(&p).await {
                        Ok(sb) => {
                            self.sandboxes.lock().await.insert(k, sb);
                        }
                        Err(e) => eprintln!("   kubelet {}: {k}: {e:#} (will retry)", self.node),
                    }
                }
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// DEL every sandbox of this node (teardown).
    pub async fn teardown(&self) {
        let keys: Vec<String> = self
            .sandboxes
            .lock()
            .await
            .iter()
            .filter(|(_, s)| s.node == self.node)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(sb) = self.sandboxes.lock().await.remove(&k) {
                tokio::task::block_in_place(|| self.del(&k, sb));
            }
        }
    }
}

pub fn run(argv: &[&str]) -> Result<String> {
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", argv.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}
