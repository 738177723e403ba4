//! Typed `ovn-nbctl` and `ovs-vsctl` commands, rendered as one invocation per batch.
//!
//! Controllers build a [`Txn`] of typed operations (pure data, unit-testable) and hand it to an
//! [`Nb`] or [`Vs`] backend. The exec backends ([`Nbctl`], [`Vsctl`]) join every command of a
//! batch with `--`, so one Kubernetes event is one OVSDB transaction: all or nothing. A
//! persistent-connection backend can implement the same traits later without touching callers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::error::{NbError, TxnFailure};
use super::ovsdb::{DbOp, Query, Row, parse_tables};
use crate::exec::{BoxFuture, Cmd, Exec, ExecError};
use crate::ovn::schema::nb;

/// Router static-route policy (`--policy=src-ip` or the default dst-ip).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoutePolicy {
    DstIp,
    SrcIp,
}

/// `ovn-nbctl` commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NbOp {
    /// `--may-exist ls-add NAME`
    LsAdd { name: String },
    /// `--if-exists ls-del NAME`
    LsDel { name: String },
    /// `--may-exist lsp-add SWITCH PORT`
    LspAdd { switch: String, name: String },
    /// `--if-exists lsp-del PORT`
    LspDel { name: String },
    /// `lsp-set-addresses PORT ADDR...` (each address is one argv, e.g. `"0a:58:.. 10.1.0.5"`)
    LspSetAddresses {
        name: String,
        addresses: Vec<String>,
    },
    /// `--may-exist lr-add NAME`
    LrAdd { name: String },
    /// `--if-exists lr-del NAME`
    LrDel { name: String },
    /// `--may-exist lrp-add ROUTER PORT MAC NETWORK...`
    LrpAdd {
        router: String,
        name: String,
        mac: String,
        networks: Vec<String>,
    },
    /// `--if-exists lrp-del PORT`
    LrpDel { name: String },
    /// `--may-exist [--policy=src-ip] lr-route-add ROUTER PREFIX NEXTHOP [PORT]`
    LrRouteAdd {
        router: String,
        prefix: String,
        nexthop: String,
        port: Option<String>,
        policy: RoutePolicy,
    },
    /// `--if-exists [--policy=src-ip] lr-route-del ROUTER [PREFIX]`
    LrRouteDel {
        router: String,
        prefix: Option<String>,
        policy: RoutePolicy,
    },
    /// `--may-exist lr-nat-add ROUTER TYPE EXTERNAL_IP LOGICAL_IP`
    LrNatAdd {
        router: String,
        kind: String,
        external_ip: String,
        logical_ip: String,
    },
    /// `--if-exists lr-nat-del ROUTER [TYPE [IP]]`
    LrNatDel {
        router: String,
        kind: Option<String>,
        ip: Option<String>,
    },
    /// `--may-exist ls-lb-add SWITCH LB`
    LsLbAdd { switch: String, lb: String },
    /// `--if-exists ls-lb-del SWITCH LB`
    LsLbDel { switch: String, lb: String },
    /// `--may-exist lr-lb-add ROUTER LB`
    LrLbAdd { router: String, lb: String },
    /// `--if-exists lb-del LB`
    LbDel { lb: String },
    /// `pg-add NAME [PORT...]`
    PgAdd { name: String, ports: Vec<String> },
    /// `pg-set-ports NAME PORT...`
    PgSetPorts { name: String, ports: Vec<String> },
    /// `--if-exists destroy Port_Group NAME` (`pg-del` has no `--if-exists` in OVN 23.03)
    PgDel { name: String },
    /// A generic database command.
    Db(DbOp),
}

impl NbOp {
    /// The `ovn-nbctl` arguments of this command. Long because it is one flat table, an arm per
    /// command with its words in order; splitting it would only scatter the table.
    fn render(&self, out: &mut Vec<String>) {
        use NbOp::*;
        let s = |x: &str| x.to_string();
        match self {
            LsAdd { name } => out.extend([s("--may-exist"), s("ls-add"), name.clone()]),
            LsDel { name } => out.extend([s("--if-exists"), s("ls-del"), name.clone()]),
            LspAdd { switch, name } => {
                out.extend([s("--may-exist"), s("lsp-add"), switch.clone(), name.clone()])
            }
            LspDel { name } => out.extend([s("--if-exists"), s("lsp-del"), name.clone()]),
            LspSetAddresses { name, addresses } => {
                out.extend([s("lsp-set-addresses"), name.clone()]);
                out.extend(addresses.iter().cloned());
            }
            LrAdd { name } => out.extend([s("--may-exist"), s("lr-add"), name.clone()]),
            LrDel { name } => out.extend([s("--if-exists"), s("lr-del"), name.clone()]),
            LrpAdd {
                router,
                name,
                mac,
                networks,
            } => {
                out.extend([
                    s("--may-exist"),
                    s("lrp-add"),
                    router.clone(),
                    name.clone(),
                    mac.clone(),
                ]);
                out.extend(networks.iter().cloned());
            }
            LrpDel { name } => out.extend([s("--if-exists"), s("lrp-del"), name.clone()]),
            LrRouteAdd {
                router,
                prefix,
                nexthop,
                port,
                policy,
            } => {
                out.push(s("--may-exist"));
                if *policy == RoutePolicy::SrcIp {
                    out.push(s("--policy=src-ip"));
                }
                out.extend([
                    s("lr-route-add"),
                    router.clone(),
                    prefix.clone(),
                    nexthop.clone(),
                ]);
                out.extend(port.iter().cloned());
            }
            LrRouteDel {
                router,
                prefix,
                policy,
            } => {
                out.push(s("--if-exists"));
                if *policy == RoutePolicy::SrcIp {
                    out.push(s("--policy=src-ip"));
                }
                out.extend([s("lr-route-del"), router.clone()]);
                out.extend(prefix.iter().cloned());
            }
            LrNatAdd {
                router,
                kind,
                external_ip,
                logical_ip,
            } => out.extend([
                s("--may-exist"),
                s("lr-nat-add"),
                router.clone(),
                kind.clone(),
                external_ip.clone(),
                logical_ip.clone(),
            ]),
            LrNatDel { router, kind, ip } => {
                out.extend([s("--if-exists"), s("lr-nat-del"), router.clone()]);
                out.extend(kind.iter().cloned());
                out.extend(ip.iter().cloned());
            }
            LsLbAdd { switch, lb } => {
                out.extend([s("--may-exist"), s("ls-lb-add"), switch.clone(), lb.clone()])
            }
            LsLbDel { switch, lb } => {
                out.extend([s("--if-exists"), s("ls-lb-del"), switch.clone(), lb.clone()])
            }
            LrLbAdd { router, lb } => {
                out.extend([s("--may-exist"), s("lr-lb-add"), router.clone(), lb.clone()])
            }
            LbDel { lb } => out.extend([s("--if-exists"), s("lb-del"), lb.clone()]),
            PgAdd { name, ports } => {
                out.extend([s("pg-add"), name.clone()]);
                out.extend(ports.iter().cloned());
            }
            PgSetPorts { name, ports } => {
                out.extend([s("pg-set-ports"), name.clone()]);
                out.extend(ports.iter().cloned());
            }
            PgDel { name } => out.extend([
                s("--if-exists"),
                s("destroy"),
                s(nb::PORT_GROUP),
                name.clone(),
            ]),
            Db(op) => op.render(out),
        }
    }

    /// Positional record names this command passes unquoted; they are validated before running.
    fn names(&self) -> Vec<&str> {
        use NbOp::*;
        match self {
            LsAdd { name } | LsDel { name } | LspDel { name } | LrAdd { name } | LrDel { name } => {
                vec![name]
            }
            LrpDel { name } | PgDel { name } => vec![name],
            LspAdd { switch, name } => vec![switch, name],
            LspSetAddresses { name, .. } => vec![name],
            LrpAdd { router, name, .. } => vec![router, name],
            LrRouteAdd { router, port, .. } => {
                let mut v = vec![router.as_str()];
                v.extend(port.as_deref());
                v
            }
            LrRouteDel { router, .. } | LrNatAdd { router, .. } | LrNatDel { router, .. } => {
                vec![router]
            }
            LsLbAdd { switch, lb } | LsLbDel { switch, lb } => vec![switch, lb],
            LrLbAdd { router, lb } => vec![router, lb],
            LbDel { lb } => vec![lb],
            PgAdd { name, ports } | PgSetPorts { name, ports } => {
                let mut v = vec![name.as_str()];
                v.extend(ports.iter().map(String::as_str));
                v
            }
            Db(op) => db_op_names(op),
        }
    }
}

fn db_op_names(op: &DbOp) -> Vec<&str> {
    match op {
        DbOp::Create { .. } => vec![],
        DbOp::Set { record, .. }
        | DbOp::Add { record, .. }
        | DbOp::Remove { record, .. }
        | DbOp::Clear { record, .. }
        | DbOp::Destroy { record, .. }
        | DbOp::WaitUntil { record, .. } => vec![record],
    }
}

/// `ovs-vsctl` commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VsOp {
    /// `--may-exist add-br BRIDGE`
    AddBr {
        name: String,
    },
    /// `--if-exists del-br BRIDGE`
    DelBr {
        name: String,
    },
    /// `--may-exist add-port BRIDGE PORT`
    AddPort {
        bridge: String,
        port: String,
    },
    /// `--if-exists del-port [BRIDGE] PORT`
    DelPort {
        bridge: Option<String>,
        port: String,
    },
    /// `br-set-external-id BRIDGE KEY VALUE`
    BrSetExternalId {
        bridge: String,
        key: String,
        value: String,
    },
    /// `del-ssl` / `set-ssl KEY CERT CA`
    SetSsl {
        privkey: String,
        cert: String,
        cacert: String,
    },
    DelSsl,
    Db(DbOp),
}

impl VsOp {
    fn render(&self, out: &mut Vec<String>) {
        let s = |x: &str| x.to_string();
        match self {
            VsOp::AddBr { name } => out.extend([s("--may-exist"), s("add-br"), name.clone()]),
            VsOp::DelBr { name } => out.extend([s("--if-exists"), s("del-br"), name.clone()]),
            VsOp::AddPort { bridge, port } => out.extend([
                s("--may-exist"),
                s("add-port"),
                bridge.clone(),
                port.clone(),
            ]),
            VsOp::DelPort { bridge, port } => {
                out.extend([s("--if-exists"), s("del-port")]);
                out.extend(bridge.iter().cloned());
                out.push(port.clone());
            }
            VsOp::BrSetExternalId { bridge, key, value } => out.extend([
                s("br-set-external-id"),
                bridge.clone(),
                key.clone(),
                value.clone(),
            ]),
            VsOp::SetSsl {
                privkey,
                cert,
                cacert,
            } => out.extend([s("set-ssl"), privkey.clone(), cert.clone(), cacert.clone()]),
            VsOp::DelSsl => out.push(s("del-ssl")),
            VsOp::Db(op) => op.render(out),
        }
    }

    fn names(&self) -> Vec<&str> {
        match self {
            VsOp::AddBr { name } | VsOp::DelBr { name } => vec![name],
            VsOp::AddPort { bridge, port } => vec![bridge, port],
            VsOp::DelPort { bridge, port } => {
                let mut v: Vec<&str> = bridge.iter().map(String::as_str).collect();
                v.push(port);
                v
            }
            VsOp::BrSetExternalId { bridge, .. } => vec![bridge],
            VsOp::SetSsl { .. } | VsOp::DelSsl => vec![],
            VsOp::Db(op) => db_op_names(op),
        }
    }
}

/// Something that renders to one command of a batch.
pub trait CtlOp {
    fn render_into(&self, out: &mut Vec<String>);
    fn record_names(&self) -> Vec<&str>;
}

impl CtlOp for NbOp {
    fn render_into(&self, out: &mut Vec<String>) {
        self.render(out)
    }
    fn record_names(&self) -> Vec<&str> {
        self.names()
    }
}

impl CtlOp for VsOp {
    fn render_into(&self, out: &mut Vec<String>) {
        self.render(out)
    }
    fn record_names(&self) -> Vec<&str> {
        self.names()
    }
}

/// A batch of commands that runs as one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn<O> {
    pub ops: Vec<O>,
}

impl<O> Default for Txn<O> {
    fn default() -> Self {
        Txn { ops: Vec::new() }
    }
}

/// `ops.into_iter().collect::<NbTxn>()`: one transaction of the operations, in order.
impl<O: CtlOp> FromIterator<O> for Txn<O> {
    fn from_iter<I: IntoIterator<Item = O>>(ops: I) -> Self {
        Txn {
            ops: ops.into_iter().collect(),
        }
    }
}

impl<O: CtlOp> Txn<O> {
    pub fn new() -> Self {
        Txn { ops: Vec::new() }
    }

    pub fn push(&mut self, op: O) -> &mut Self {
        self.ops.push(op);
        self
    }

    pub fn extend(&mut self, ops: impl IntoIterator<Item = O>) -> &mut Self {
        self.ops.extend(ops);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The argv of the commands (global options not included): `-- cmd1 ... -- cmd2 ...`.
    pub fn render(&self) -> Vec<String> {
        let mut out = Vec::new();
        for op in &self.ops {
            out.push("--".to_string());
            op.render_into(&mut out);
        }
        out
    }

    /// Reject record names that the command line would misread (they are positional, unquoted).
    pub fn validate(&self) -> Result<()> {
        for op in &self.ops {
            for n in op.record_names() {
                check_record_name(n)?;
            }
        }
        Ok(())
    }
}

pub type NbTxn = Txn<NbOp>;
pub type VsTxn = Txn<VsOp>;

/// A record name passed positionally must be non-empty, must not look like an option and must
/// not hold whitespace, quotes or control characters.
pub fn check_record_name(n: &str) -> Result<()> {
    if n.is_empty() {
        bail!("empty OVSDB record name");
    }
    if n.starts_with('-') {
        bail!("OVSDB record name {n:?} must not start with '-'");
    }
    if let Some(c) = n
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\\' | '\''))
    {
        bail!("OVSDB record name {n:?} contains the invalid character {c:?}");
    }
    Ok(())
}

/// How to reach a database: the program and its global options.
#[derive(Clone, Debug)]
pub struct CtlTarget {
    pub program: String,
    /// `--db=...`, ssl options; empty for the tool's default local socket.
    pub db_args: Vec<String>,
    /// Extra environment (OVS_RUNDIR / OVN_RUNDIR when the default socket lives elsewhere).
    pub env: Vec<(String, String)>,
    /// The tool's own `--timeout` for each invocation.
    pub timeout: Duration,
}

impl CtlTarget {
    pub fn new(program: &str) -> Self {
        CtlTarget {
            program: program.into(),
            db_args: Vec::new(),
            env: Vec::new(),
            timeout: Duration::from_secs(15),
        }
    }

    fn base_cmd(&self) -> Cmd {
        let mut c = Cmd::new(self.program.clone())
            .args(self.db_args.iter().cloned())
            .arg(format!("--timeout={}", self.timeout.as_secs().max(1)))
            // Our own backstop, a little longer than the tool's.
            .timeout(self.timeout + Duration::from_secs(5));
        for (k, v) in &self.env {
            c = c.env(k.clone(), v.clone());
        }
        c
    }
}

/// Runs batches and queries through the exec seam.
#[derive(Clone)]
pub struct Ctl {
    exec: Arc<dyn Exec>,
    target: CtlTarget,
}

impl Ctl {
    pub fn new(exec: Arc<dyn Exec>, target: CtlTarget) -> Self {
        Ctl { exec, target }
    }

    pub fn target(&self) -> &CtlTarget {
        &self.target
    }

    /// Run one batch as one invocation; returns stdout.
    pub async fn run_txn<O: CtlOp>(&self, txn: &Txn<O>) -> Result<String> {
        if txn.is_empty() {
            return Ok(String::new());
        }
        txn.validate()?;
        let cmd = self.target.base_cmd().args(txn.render());
        let out = self.exec.run(&cmd).await.with_context(|| {
            format!(
                "{} transaction of {} commands",
                self.target.program,
                txn.len()
            )
        })?;
        Ok(out.stdout)
    }

    /// Run several reads in one invocation; one row list per query.
    pub async fn run_queries(&self, queries: &[Query]) -> Result<Vec<Vec<Row>>> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["--format=json".to_string()];
        for q in queries {
            q.render(&mut args);
        }
        let cmd = self.target.base_cmd().args(args);
        let out = self
            .exec
            .run(&cmd)
            .await
            .with_context(|| format!("{} query", self.target.program))?;
        let tables = parse_tables(&out.stdout)?;
        if tables.len() != queries.len() {
            bail!(
                "{} returned {} tables for {} queries",
                self.target.program,
                tables.len(),
                queries.len()
            );
        }
        Ok(tables)
    }

    /// Run raw arguments (for commands without a typed form, e.g. `set-connection`).
    pub async fn run_raw(&self, args: &[&str]) -> Result<String> {
        let cmd = self.target.base_cmd().args(args.iter().copied());
        Ok(self.exec.run(&cmd).await?.stdout)
    }
}

/// The northbound database as controllers see it.
pub trait Nb: Send + Sync {
    /// Run `txn` as one transaction. Nothing reads what a transaction prints, so success
    /// carries no value; a failure says what kind it is ([`TxnFailure`]).
    fn transact<'a>(&'a self, txn: &'a NbTxn) -> BoxFuture<'a, Result<(), NbError>>;
    fn query<'a>(&'a self, queries: &'a [Query]) -> BoxFuture<'a, Result<Vec<Vec<Row>>>>;
    /// Reconnections and database replacements, for backends that can see them (see
    /// [`super::signals`]). Wrappers must pass this through.
    fn signals(&self) -> super::signals::NbSignals {
        super::signals::constant()
    }
}

/// The local Open vSwitch database as node code sees it.
pub trait Vs: Send + Sync {
    fn transact<'a>(&'a self, txn: &'a VsTxn) -> BoxFuture<'a, Result<String>>;
    fn query<'a>(&'a self, queries: &'a [Query]) -> BoxFuture<'a, Result<Vec<Vec<Row>>>>;
}

/// `ovn-nbctl` through the exec seam.
#[derive(Clone)]
pub struct Nbctl(pub Ctl);

impl Nb for Nbctl {
    fn transact<'a>(&'a self, txn: &'a NbTxn) -> BoxFuture<'a, Result<(), NbError>> {
        Box::pin(async move {
            txn.validate().map_err(NbError::invalid)?;
            self.0
                .run_txn(txn)
                .await
                .map(drop)
                .map_err(|e| NbError::new(ctl_failure(&e), e))
        })
    }
    fn query<'a>(&'a self, queries: &'a [Query]) -> BoxFuture<'a, Result<Vec<Vec<Row>>>> {
        Box::pin(self.0.run_queries(queries))
    }
}

/// What a failed `ovn-nbctl` run means. The tool reports everything as text on stderr, so
/// its messages are read here, once, for every caller.
fn ctl_failure(e: &anyhow::Error) -> TxnFailure {
    match e.chain().find_map(|c| c.downcast_ref::<ExecError>()) {
        Some(ExecError::Timeout { .. } | ExecError::Io { .. }) => TxnFailure::Unavailable,
        Some(ExecError::NotFound { .. }) | None => TxnFailure::Invalid,
        Some(ExecError::Failed { status, stderr, .. }) => nbctl_failure(status, stderr),
    }
}

/// What `ovn-nbctl`'s exit `status` and `stderr` say: no database (unreachable, its own
/// `--timeout`, which ends it by a signal), a command it cannot parse, or else a refusal of
/// what the database holds (no such row, a duplicate address, a constraint, an abort).
fn nbctl_failure(status: &str, stderr: &str) -> TxnFailure {
    const UNAVAILABLE: [&str; 6] = [
        "database connection failed",
        "Connection refused",
        "No such file or directory",
        "connection closed",
        "timeout",
        "timed out",
    ];
    const INVALID: [&str; 5] = [
        "unknown command",
        "requires at least",
        "unrecognized option",
        "syntax error",
        "invalid",
    ];
    if status.contains("signal") || UNAVAILABLE.iter().any(|m| stderr.contains(m)) {
        TxnFailure::Unavailable
    } else if INVALID.iter().any(|m| stderr.contains(m)) {
        TxnFailure::Invalid
    } else {
        TxnFailure::Conflict
    }
}

/// `ovs-vsctl` through the exec seam.
#[derive(Clone)]
pub struct Vsctl(pub Ctl);

impl Vs for Vsctl {
    fn transact<'a>(&'a self, txn: &'a VsTxn) -> BoxFuture<'a, Result<String>> {
        Box::pin(self.0.run_txn(txn))
    }
    fn query<'a>(&'a self, queries: &'a [Query]) -> BoxFuture<'a, Result<Vec<Vec<Row>>>> {
        Box::pin(self.0.run_queries(queries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{FakeExec, FakeReply};
    use crate::ovn::ovsdb::{ColVal, Val};
    use crate::ovn::schema::col;

    fn node_txn() -> NbTxn {
        let mut t = NbTxn::new();
        t.push(NbOp::LsAdd {
            name: "node1".into(),
        })
        .push(NbOp::Db(DbOp::Set {
            table: nb::LOGICAL_SWITCH.into(),
            record: "node1".into(),
            columns: vec![ColVal::key(col::OTHER_CONFIG, "subnet", "10.1.0.0/24")],
            if_exists: false,
        }))
        .push(NbOp::LspAdd {
            switch: "node1".into(),
            name: "default_web".into(),
        })
        .push(NbOp::LspSetAddresses {
            name: "default_web".into(),
            addresses: vec!["0a:58:0a:01:00:05 10.1.0.5".into()],
        });
        t
    }

    #[test]
    fn batch_renders_as_one_argv_joined_with_separators() {
        assert_eq!(
            node_txn().render(),
            [
                "--",
                "--may-exist",
                "ls-add",
                "node1",
                "--",
                "set",
                nb::LOGICAL_SWITCH,
                "node1",
                "other_config:\"subnet\"=\"10.1.0.0/24\"",
                "--",
                "--may-exist",
                "lsp-add",
                "node1",
                "default_web",
                "--",
                "lsp-set-addresses",
                "default_web",
                "0a:58:0a:01:00:05 10.1.0.5",
            ]
        );
    }

    #[test]
    fn route_and_nat_forms() {
        let mut t = NbTxn::new();
        t.push(NbOp::LrRouteAdd {
            router: "r".into(),
            prefix: "10.1.0.0/24".into(),
            nexthop: "100.64.0.2".into(),
            port: None,
            policy: RoutePolicy::SrcIp,
        })
        .push(NbOp::LrNatDel {
            router: "GR_n".into(),
            kind: Some("snat".into()),
            ip: Some("10.0.0.0/16".into()),
        });
        assert_eq!(
            t.render().join(" "),
            "-- --may-exist --policy=src-ip lr-route-add r 10.1.0.0/24 100.64.0.2 \
             -- --if-exists lr-nat-del GR_n snat 10.0.0.0/16"
        );
    }

    #[test]
    fn rejects_names_that_would_be_misread() {
        for bad in ["", "-x", "a b", "a\"b", "a\\b", "a\nb"] {
            let mut t = NbTxn::new();
            t.push(NbOp::LsAdd { name: bad.into() });
            assert!(t.validate().is_err(), "{bad:?} accepted");
        }
        assert!(node_txn().validate().is_ok());
    }

    #[tokio::test]
    async fn exec_backend_runs_one_invocation_per_batch() {
        let fake = FakeExec::strict();
        let mut target = CtlTarget::new("ovn-nbctl");
        target.db_args = vec!["--db=tcp:127.0.0.1:6641".into()];
        let cmdline = format!(
            "ovn-nbctl --db=tcp:127.0.0.1:6641 --timeout=15 {}",
            crate::exec::Cmd::new("x")
                .args(node_txn().render())
                .cmdline()
                .trim_start_matches("x ")
        );
        fake.expect(&cmdline, FakeReply::Ok(String::new()));
        let nb = Nbctl(Ctl::new(fake.clone(), target));
        nb.transact(&node_txn()).await.unwrap();
        assert!(fake.all_called());
        assert_eq!(fake.calls().len(), 1);
    }

    #[tokio::test]
    async fn queries_share_one_invocation() {
        let fake = FakeExec::strict();
        fake.expect(
            "ovn-nbctl --timeout=15 --format=json -- --columns=_uuid,name list Logical_Switch -- --columns=_uuid,name find Logical_Router 'external_ids:\"k8s-cluster-router\"=\"yes\"'",
            FakeReply::Ok(
                r#"{"data":[[["uuid","a"],"n1"]],"headings":["_uuid","name"]}
{"data":[],"headings":["_uuid","name"]}"#
                    .into(),
            ),
        );
        let nb = Nbctl(Ctl::new(fake.clone(), CtlTarget::new("ovn-nbctl")));
        let res = nb
            .query(&[
                Query::list(nb::LOGICAL_SWITCH, &[col::NAME]),
                Query::find(
                    nb::LOGICAL_ROUTER,
                    &[col::NAME],
                    vec![ColVal::key(
                        col::EXTERNAL_IDS,
                        "k8s-cluster-router",
                        Val::str("yes"),
                    )],
                ),
            ])
            .await
            .unwrap();
        assert_eq!(res[0][0].str(col::NAME), "n1");
        assert!(res[1].is_empty());
    }
}
