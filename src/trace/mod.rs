//! `ovn-kube-util trace --src NS/POD --dst NS/POD|NS/SERVICE|IP --tcp|--udp PORT [--json]`:
//! where would the first packet of this connection go? Resolves the names through the
//! Kubernetes API and the NB, runs `ovn-trace` (per load-balancer backend for a service) and
//! prints a verdict: delivered, or dropped and by which ACL (named by its NetworkPolicy), or
//! which object is missing.
//!
//! `plan` and `facts` decide (pure, unit-tested); this module only reads and runs.

pub mod facts;
pub mod plan;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::ListParams;

use crate::config::{self, Config, Invocation};
use crate::controller::services::read_targets;
use crate::exec::{Cmd, Exec, RealExec};
use crate::ovn::{self, Nb, Nbctl, Proto};
use facts::Facts;
use plan::{Report, Target};

/// Exit status when the connection is not delivered (dropped, or an object is missing).
pub const EXIT_NOT_DELIVERED: u8 = 2;

pub const USAGE: &str = "USAGE:\n   ovn-kube-util trace --src NS/POD --dst NS/POD|NS/SERVICE|IP (--tcp PORT | --udp PORT) [--json] [ovnkube flags]\n\n\
The ovnkube flags say where the API and the databases are, as for the daemon:\n   \
-k8s-kubeconfig, -k8s-apiserver, -k8s-token, -k8s-cacert, -nb-address, -sb-address, the\n   \
-nb-client-*/-sb-client-* certificates and -config-file.\n\
Exit status: 0 delivered, 2 dropped or an object is missing, 1 the trace could not run.\n";

/// What was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub src: String,
    pub dst: String,
    pub proto: Proto,
    pub port: u16,
    pub json: bool,
    /// Everything else: ovnkube's own flags.
    pub rest: Vec<String>,
}

/// Parse the trace flags (`--flag VALUE` or `--flag=VALUE`, one or two dashes); the other
/// arguments are left for ovnkube's configuration parser. `Ok(None)` asks for the usage text.
pub fn parse_request(args: &[String]) -> Result<Option<Request>, String> {
    let mut src = None;
    let mut dst = None;
    let mut l4: Option<(Proto, u16)> = None;
    let mut json = false;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let bare = a.trim_start_matches('-');
        let (name, inline) = match bare.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (bare, None),
        };
        let dashed = a.starts_with('-');
        match (dashed, name) {
            (true, "help" | "h") => return Ok(None),
            (true, "json") => json = true,
            (true, "src" | "dst" | "tcp" | "udp") => {
                let v = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| format!("--{name} needs a value"))?,
                };
                match name {
                    "src" => src = Some(v),
                    "dst" => dst = Some(v),
                    _ => {
                        let proto = if name == "tcp" {
                            Proto::Tcp
                        } else {
                            Proto::Udp
                        };
                        let port: u16 = v.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                            format!("--{name} {v:?} is not a port number (1-65535)")
                        })?;
                        if l4.replace((proto, port)).is_some() {
                            return Err("give one of --tcp PORT or --udp PORT, once".into());
                        }
                    }
                }
            }
            _ => rest.push(a.clone()),
        }
    }
    let src = src.ok_or("--src NS/POD is required")?;
    if !src.contains('/') {
        return Err(format!("--src {src:?} is not NAMESPACE/POD"));
    }
    let dst = dst.ok_or("--dst NS/POD, NS/SERVICE or IP is required")?;
    if !dst.contains('/') && dst.parse::<Ipv4Addr>().is_err() {
        return Err(format!(
            "--dst {dst:?} is neither NAMESPACE/NAME nor an IPv4 address"
        ));
    }
    let (proto, port) = l4.ok_or("one of --tcp PORT or --udp PORT is required")?;
    Ok(Some(Request {
        src,
        dst,
        proto,
        port,
        json,
        rest,
    }))
}

/// `ovn-kube-util trace ...`.
pub fn main(args: &[String]) -> ExitCode {
    let req = match parse_request(args) {
        Ok(Some(r)) => r,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ovn-kube-util trace: {e}\n\n{USAGE}");
            return ExitCode::from(1);
        }
    };
    let cfg = match config::parse_args(req.rest.iter().cloned()) {
        Ok(Invocation::Run(cfg)) => *cfg,
        Ok(_) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ovn-kube-util trace: {e}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ovn-kube-util trace: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(&req, &cfg)) {
        Ok(report) => {
            if req.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("ovn-kube-util trace: {e}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                print!("{}", report.text());
            }
            if report.delivered() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_NOT_DELIVERED)
            }
        }
        Err(e) => {
            eprintln!("ovn-kube-util trace: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Resolve, trace every leg, judge.
pub async fn run(req: &Request, cfg: &Config) -> Result<Report> {
    let exec: Arc<dyn Exec> = Arc::new(RealExec::new(4));
    let nb = Nbctl(ovn::db_ctl(
        exec.clone(),
        "ovn-nbctl",
        &cfg.ovn_north.client,
    ));
    let client = crate::kube::client::build(&cfg.kubernetes).await?;
    let facts = read_facts(&nb).await?;
    let src_pod = pod(&client, &req.src).await?;
    let missing = |what: String| Report::missing(&req.src, &req.dst, req.proto, req.port, what);

    let src = match facts::pod_endpoint(&req.src, src_pod.as_ref(), &facts) {
        Ok(e) => e,
        Err(m) => return Ok(missing(m)),
    };
    let target = match resolve_target(&client, req, &facts).await? {
        Ok(t) => t,
        Err(m) => return Ok(missing(m)),
    };
    if let Target::Vip { backends, .. } = &target
        && backends.is_empty()
    {
        return Ok(missing("the load-balancer VIP has no backends".into()));
    }
    let router_mac = match facts.router_mac(&src.switch) {
        Ok(m) => m,
        Err(m) => return Ok(missing(m)),
    };
    // A default deny is explained by the policies isolating the pod: those of the namespaces
    // of the pods at either end.
    let mut policies: Vec<NetworkPolicy> = Vec::new();
    for ns in facts::namespaces(&src, &target) {
        let l = Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .with_context(|| format!("listing the network policies of namespace {ns}"))?;
        policies.extend(l.items);
    }
    let iso = facts::isolation(&policies, &facts);

    let sb_args = plan::trace_db_args(
        &ovn::db_ctl(exec.clone(), "ovn-trace", &cfg.ovn_south.client)
            .target()
            .db_args,
    );
    let mut paths = Vec::new();
    for leg in plan::legs(&src, &target, &router_mac, req.proto, req.port) {
        let text = ovn_trace(exec.as_ref(), &plan::trace_args(&sb_args, &leg)).await?;
        let traced = plan::parse_trace(&text);
        tracing::debug!(microflow = %leg.microflow, "{text}");
        paths.push(plan::judge(&leg, &traced, &facts.acls, &iso, &src.port));
    }
    let vip = match &target {
        Target::Vip { vip, .. } => Some(*vip),
        _ => None,
    };
    Ok(Report::from_paths(
        &req.src, &req.dst, req.proto, req.port, vip, paths,
    ))
}

/// `--dst` as a pod, a service (a pod of that name wins) or an IP; `Ok(Err(..))` names what
/// is missing.
async fn resolve_target(
    client: &kube::Client,
    req: &Request,
    facts: &Facts,
) -> Result<Result<Target, String>> {
    if let Ok(ip) = req.dst.parse::<Ipv4Addr>() {
        return Ok(Ok(facts::ip_target(ip, req.proto, req.port, facts)));
    }
    if let Some(p) = pod(client, &req.dst).await? {
        return Ok(facts::pod_endpoint(&req.dst, Some(&p), facts).map(Target::Pod));
    }
    Ok(match service(client, &req.dst).await? {
        Some(s) => facts::service_target(&req.dst, &s, req.proto, req.port, facts),
        None => Err(format!(
            "no pod or service {} in the Kubernetes API",
            req.dst
        )),
    })
}

async fn read_facts(nb: &dyn Nb) -> Result<Facts> {
    let tables = nb
        .query(&facts::queries())
        .await
        .context("reading logical ports, router ports, ACLs and port groups from the NB")?;
    let st = read_targets(nb, true).await?;
    let mut vips: BTreeMap<(Proto, SocketAddrV4), Vec<SocketAddrV4>> = BTreeMap::new();
    // The cluster-wide load balancers of every flavor (plain, session affinity) sit on every
    // node switch, so they decide a pod-to-service packet.
    for ((proto, _flavor), uuid) in &st.targets.cluster {
        for ((lb, vip), backends) in &st.actual {
            if lb == uuid
                && let Ok(v) = vip.parse::<SocketAddrV4>()
            {
                vips.insert((*proto, v), facts::parse_backends(backends));
            }
        }
    }
    Ok(Facts::from_tables(&tables, vips))
}

async fn pod(client: &kube::Client, id: &str) -> Result<Option<Pod>> {
    let (ns, name) = id
        .split_once('/')
        .ok_or_else(|| anyhow!("{id:?} is not NAMESPACE/NAME"))?;
    Api::<Pod>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .with_context(|| format!("reading pod {id}"))
}

async fn service(client: &kube::Client, id: &str) -> Result<Option<Service>> {
    let (ns, name) = id
        .split_once('/')
        .ok_or_else(|| anyhow!("{id:?} is not NAMESPACE/NAME"))?;
    Api::<Service>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .with_context(|| format!("reading service {id}"))
}

/// ovn-trace reports bad datapaths and microflows on stdout with exit status 0; a real trace
/// starts with the `# <flow>` header, so anything else is an error.
async fn ovn_trace(exec: &dyn Exec, args: &[String]) -> Result<String> {
    let cmd = Cmd::new("ovn-trace").args(args.iter().cloned());
    let out = exec.run(&cmd).await?;
    let first = out
        .stdout
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    if !first.starts_with('#') {
        return Err(anyhow!(
            "`{}` did not trace: {} {}",
            cmd.cmdline(),
            out.stdout.trim(),
            out.stderr.trim()
        ));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn trace_flags_and_the_rest() {
        let r = parse_request(&v(&[
            "--src",
            "x/a",
            "-k8s-kubeconfig=/k",
            "--dst=y/web",
            "--tcp",
            "80",
            "-nb-address",
            "unix:/nb",
            "--json",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((r.src.as_str(), r.dst.as_str()), ("x/a", "y/web"));
        assert_eq!((r.proto, r.port, r.json), (Proto::Tcp, 80, true));
        assert_eq!(
            r.rest,
            v(&["-k8s-kubeconfig=/k", "-nb-address", "unix:/nb"])
        );
        let r = parse_request(&v(&["-src=x/a", "-dst", "10.1.1.1", "-udp=53"]))
            .unwrap()
            .unwrap();
        assert_eq!((r.proto, r.port, r.json), (Proto::Udp, 53, false));
        assert_eq!(parse_request(&v(&["--help"])).unwrap(), None);
        let errors = [
            (
                v(&["--dst", "x/b", "--tcp", "80"]),
                "--src NS/POD is required",
            ),
            (
                v(&["--src", "a", "--dst", "x/b", "--tcp", "80"]),
                "not NAMESPACE/POD",
            ),
            (v(&["--src", "x/a", "--tcp", "80"]), "--dst"),
            (
                v(&["--src", "x/a", "--dst", "web", "--tcp", "80"]),
                "neither NAMESPACE/NAME nor",
            ),
            (
                v(&["--src", "x/a", "--dst", "x/b"]),
                "--tcp PORT or --udp PORT is required",
            ),
            (
                v(&["--src", "x/a", "--dst", "x/b", "--tcp", "80", "--udp", "80"]),
                "once",
            ),
            (
                v(&["--src", "x/a", "--dst", "x/b", "--tcp", "0"]),
                "not a port number",
            ),
            (
                v(&["--src", "x/a", "--dst", "x/b", "--tcp"]),
                "--tcp needs a value",
            ),
        ];
        for (args, want) in errors {
            let e = parse_request(&args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
