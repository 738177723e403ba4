//! Clustered (raft) databases on the native connection: a comma-separated list of members, of
//! which only the one that is connected to the cluster and its leader is used.
//!
//! Deciding lives here and is pure: which member to try next ([`Members`]) and whether a member
//! may be used, from the rows of its `_Server` database ([`Leadership`]). The connection task in
//! `jsonrpc` does the I/O: it asks each member for a monitor on `_Server.Database` before it
//! serves any request there, and drops the member as soon as an update says it is no longer
//! usable, so a change of leader is noticed without waiting for a write to fail.
//!
//! Writes on a follower would be forwarded to the leader by the server, but a follower that is
//! cut off from the cluster accepts reads of stale data and fails writes; like `ovn-nbctl`
//! (`--leader-only`, its default) we only use the leader.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::jsonrpc::Remote;
use crate::util::retry;

/// The database every OVSDB server has that describes the databases it serves.
pub const SERVER_DB: &str = "_Server";
const DATABASE_TABLE: &str = "Database";
/// The monitor id of the leadership watch (the server repeats it in every `update`).
pub const LEADERSHIP_MONITOR: &str = "ovnkube-leadership";
const CLUSTERED: &str = "clustered";

/// A comma-separated list of members, each as [`Remote::parse`] reads it; `None` when it is
/// not a list or a member has no native form, which leaves the target to the exec backend.
pub fn parse_members(target: &str) -> Option<Vec<Remote>> {
    if !target.contains(',') {
        return None;
    }
    target
        .split(',')
        .map(|m| Remote::parse(m.trim()))
        .collect::<Option<Vec<_>>>()
        .filter(|m| m.len() > 1)
}

/// The members to connect to, in a random order that changes every round (so clients that
/// lost the same leader do not all try the same member next), and whether each must prove it
/// is the leader of `db` first.
#[derive(Debug, Clone)]
pub struct Members {
    remotes: Vec<Remote>,
    /// `Some(db)`: a cluster; check `_Server` for `db` before using a member.
    db: Option<String>,
    order: Vec<usize>,
    pos: usize,
}

impl Members {
    /// One server, used as it is (no leadership check).
    pub fn single(remote: Remote) -> Members {
        Members {
            remotes: vec![remote],
            db: None,
            order: vec![0],
            pos: 0,
        }
    }

    /// Cluster members serving `db`; `remotes` must not be empty.
    pub fn cluster(remotes: Vec<Remote>, db: &str) -> Members {
        Members {
            order: (0..remotes.len()).collect(),
            pos: remotes.len(),
            remotes,
            db: Some(db.to_string()),
        }
    }

    /// The database whose leader must be found, for a cluster.
    pub fn db(&self) -> Option<&str> {
        self.db.as_deref()
    }

    /// The first member as listed (for error messages of the handle).
    pub fn first(&self) -> &Remote {
        &self.remotes[0]
    }

    /// How the list reads in logs and errors.
    pub fn describe(&self) -> String {
        self.remotes
            .iter()
            .map(Remote::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether every member has been tried since the last shuffle. The connection backs off
    /// only then: a member that is not the leader is no reason to wait before asking the
    /// next one, and right after an election the leader is one of the others.
    pub fn round_done(&self) -> bool {
        self.pos >= self.order.len()
    }

    /// The member to try next.
    pub fn next_member(&mut self) -> Remote {
        if self.pos >= self.order.len() {
            shuffle(&mut self.order, retry::random_u64);
            self.pos = 0;
        }
        let r = self.remotes[self.order[self.pos]].clone();
        self.pos += 1;
        r
    }
}

/// Fisher-Yates with the given randomness.
fn shuffle(order: &mut [usize], mut rand: impl FnMut() -> u64) {
    for i in (1..order.len()).rev() {
        let j = (rand() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
}

/// What a server's `_Server.Database` row says about one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDb {
    pub name: String,
    pub model: String,
    pub connected: bool,
    pub leader: bool,
    /// The raft log index the member has applied (clustered databases only).
    pub index: Option<u64>,
    /// The cluster's id (clustered databases only): a cluster created afresh has a new one.
    pub cid: Option<String>,
}

impl ServerDb {
    fn from_row(row: &Value) -> Option<ServerDb> {
        Some(ServerDb {
            name: row.get("name")?.as_str()?.to_string(),
            model: row.get("model")?.as_str()?.to_string(),
            connected: row.get("connected")?.as_bool()?,
            leader: row.get("leader")?.as_bool()?,
            // An optional integer: a bare number, or `["set", []]` when absent.
            index: row.get("index").and_then(Value::as_u64),
            // `["uuid", "…"]`, or `["set", []]` when absent.
            cid: row
                .get("cid")
                .filter(|c| c.get(0).and_then(Value::as_str) == Some("uuid"))
                .and_then(|c| c.get(1))
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

/// Whether a member may be used for `db`, given its `_Server` row for it and the highest raft
/// index seen on any member so far; `Err` says why not (in the words of the log).
/// A member behind an index already seen holds older data than a previous leader did (it
/// was cut off and has not caught up), so it is not used even if it claims leadership.
pub fn usable(db: &str, row: Option<&ServerDb>, min_index: u64) -> Result<(), String> {
    let Some(row) = row else {
        return Err(format!("the server does not serve {db}"));
    };
    if !row.connected {
        return Err(format!(
            "{db} on this member is not connected to its cluster"
        ));
    }
    if row.model != CLUSTERED {
        return Ok(());
    }
    if !row.leader {
        return Err(format!("this member is not the {db} cluster leader"));
    }
    match row.index {
        Some(i) if i < min_index => Err(format!(
            "this member's {db} is behind (raft index {i} < {min_index} seen before)"
        )),
        _ => Ok(()),
    }
}

/// The leadership watch of one connection: the `_Server.Database` rows as the monitor reports
/// them, and the highest raft index seen (kept across connections).
#[derive(Debug, Clone)]
pub struct Leadership {
    db: String,
    rows: HashMap<String, ServerDb>,
    min_index: u64,
    /// The cluster `min_index` belongs to: the raft index of a different (re-created)
    /// cluster says nothing about this one.
    cid: Option<String>,
}

impl Leadership {
    pub fn new(db: &str) -> Leadership {
        Leadership {
            db: db.to_string(),
            rows: HashMap::new(),
            min_index: 0,
            cid: None,
        }
    }

    /// A fresh connection: forget the previous member's rows, keep the index.
    pub fn reset(&mut self) {
        self.rows.clear();
    }

    /// The params of the `monitor` request (the reply carries the initial rows).
    pub fn monitor_params() -> Value {
        json!([SERVER_DB, LEADERSHIP_MONITOR, {DATABASE_TABLE: {
            "columns": ["name", "model", "connected", "leader", "index", "cid"]
        }}])
    }

    /// Whether a notification is an update of this watch; returns its table updates.
    pub fn update_of(msg: &Value) -> Option<&Value> {
        if msg.get("method").and_then(Value::as_str) != Some("update") {
            return None;
        }
        let params = msg.get("params")?;
        (params.get(0)? == LEADERSHIP_MONITOR)
            .then(|| params.get(1))
            .flatten()
    }

    /// Apply the monitor reply or an update (`{"Database": {uuid: {"new": row}|{"old": row}}}`),
    /// then decide whether the member is still usable.
    pub fn apply(&mut self, updates: &Value) -> Result<(), String> {
        let rows = updates
            .get(DATABASE_TABLE)
            .and_then(Value::as_object)
            .into_iter()
            .flatten();
        for (uuid, change) in rows {
            match change.get("new") {
                Some(new) => {
                    let row = ServerDb::from_row(new)
                        .ok_or_else(|| format!("unreadable _Server.Database row {uuid}: {new}"))?;
                    self.rows.insert(uuid.clone(), row);
                }
                None => {
                    self.rows.remove(uuid);
                }
            }
        }
        let row = self.rows.values().find(|r| r.name == self.db);
        if let Some(cid) = row.and_then(|r| r.cid.as_ref())
            && self.cid.as_ref() != Some(cid)
        {
            self.cid = Some(cid.clone());
            self.min_index = 0;
        }
        usable(&self.db, row, self.min_index)?;
        if let Some(i) = row.and_then(|r| r.index) {
            self.min_index = self.min_index.max(i);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, connected: bool, leader: bool, index: Option<u64>) -> ServerDb {
        ServerDb {
            name: "OVN_Northbound".into(),
            model: model.into(),
            connected,
            leader,
            index,
            cid: None,
        }
    }

    #[test]
    fn which_members_are_usable() {
        let nb = "OVN_Northbound";
        let cases = [
            (None, 0, Some("does not serve")),
            (Some(row("standalone", true, true, None)), 0, None),
            // A standalone or relay database has no leader to check.
            (Some(row("relay", true, false, None)), 0, None),
            (Some(row("clustered", true, true, Some(7))), 0, None),
            (
                Some(row("clustered", true, false, Some(7))),
                0,
                Some("not the"),
            ),
            (
                Some(row("clustered", false, true, Some(7))),
                0,
                Some("not connected"),
            ),
            (
                Some(row("clustered", false, false, None)),
                0,
                Some("not connected"),
            ),
            (Some(row("clustered", true, true, Some(7))), 7, None),
            (
                Some(row("clustered", true, true, Some(6))),
                7,
                Some("behind"),
            ),
        ];
        for (i, (r, min, want)) in cases.iter().enumerate() {
            let got = usable(nb, r.as_ref(), *min);
            match want {
                None => assert_eq!(got, Ok(()), "case {i}"),
                Some(w) => assert!(
                    got.as_ref().is_err_and(|e| e.contains(w)),
                    "case {i}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn member_lists_parse_only_when_every_member_is_native() {
        let cases: [(&str, Option<usize>); 6] = [
            ("tcp:127.0.0.1:1,tcp:127.0.0.2:1,tcp:127.0.0.3:1", Some(3)),
            ("tcp:127.0.0.1:1, tcp:[::1]:2", Some(2)),
            ("tcp:127.0.0.1:1", None),
            ("tcp:127.0.0.1:1,ptcp:6641", None),
            ("tcp:127.0.0.1:1,", None),
            ("unix:/a,unix:/b", Some(2)),
        ];
        for (t, want) in cases {
            assert_eq!(parse_members(t).map(|m| m.len()), want, "{t}");
        }
    }

    #[test]
    fn every_round_tries_every_member_once() {
        let remotes = parse_members("tcp:127.0.0.1:1,tcp:127.0.0.1:2,tcp:127.0.0.1:3").unwrap();
        let mut m = Members::cluster(remotes.clone(), "OVN_Northbound");
        let mut orders = std::collections::HashSet::new();
        for _ in 0..30 {
            let mut round = Vec::new();
            for i in 0..3 {
                assert_eq!(m.round_done(), i == 0, "before member {i}");
                round.push(m.next_member().to_string());
            }
            assert!(m.round_done());
            orders.insert(round.clone());
            round.sort();
            let mut all: Vec<String> = remotes.iter().map(Remote::to_string).collect();
            all.sort();
            assert_eq!(round, all);
        }
        // 30 rounds of 3! = 6 orders: all the same would mean no shuffling.
        assert!(orders.len() > 1, "{orders:?}");
        let mut one = Members::single(remotes[0].clone());
        for _ in 0..2 {
            assert_eq!(one.next_member(), remotes[0]);
            assert!(one.round_done(), "one server: every attempt ends a round");
        }
        assert_eq!(one.db(), None);
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut seq = [5u64, 1, 9, 2, 7].into_iter().cycle();
        let mut o: Vec<usize> = (0..5).collect();
        shuffle(&mut o, || seq.next().unwrap_or(0));
        let mut sorted = o.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2, 3, 4]);
        assert_ne!(o, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn the_watch_follows_leadership_and_the_index() {
        let db_row = |leader: bool, index: u64| {
            json!({"name": "OVN_Northbound", "model": "clustered", "connected": true,
                   "leader": leader, "index": index, "cid": ["uuid", "c1"]})
        };
        let server_row = json!({"name": "_Server", "model": "standalone", "connected": true,
                                "leader": true, "index": ["set", []]});
        let mut l = Leadership::new("OVN_Northbound");
        // (update, usable?) in order: the initial rows of a leader, an index bump, the member
        // losing leadership, a new connection to a member that is behind, one that caught up.
        let steps = [
            (
                json!({"Database": {"s": {"new": server_row}, "n": {"new": db_row(true, 10)}}}),
                true,
            ),
            (
                json!({"Database": {"n": {"new": db_row(true, 12), "old": {"index": 10}}}}),
                true,
            ),
            (
                json!({"Database": {"n": {"new": db_row(false, 12)}}}),
                false,
            ),
            (json!({"Database": {"m": {"new": db_row(true, 11)}}}), false),
            (json!({"Database": {"m": {"new": db_row(true, 12)}}}), true),
            (json!({"Database": {"m": {"old": db_row(true, 12)}}}), false),
        ];
        for (i, (u, want)) in steps.iter().enumerate() {
            if i == 3 {
                l.reset();
            }
            assert_eq!(l.apply(u).is_ok(), *want, "step {i}: {:?}", l.apply(u));
        }
        // A re-created cluster (new cid) starts its raft log over: a low index is fine there.
        let mut fresh = db_row(true, 3);
        fresh["cid"] = json!(["uuid", "c2"]);
        assert_eq!(l.apply(&json!({"Database": {"m": {"new": fresh}}})), Ok(()));
        let bad = json!({"Database": {"x": {"new": {"name": 1}}}});
        assert!(l.apply(&bad).unwrap_err().contains("unreadable"));
    }

    #[test]
    fn only_this_watch_updates_are_recognised() {
        let ours = json!({"method": "update", "params": [LEADERSHIP_MONITOR, {"Database": {}}]});
        assert_eq!(Leadership::update_of(&ours), Some(&json!({"Database": {}})));
        for other in [
            json!({"method": "update2", "params": [LEADERSHIP_MONITOR, {}]}),
            json!({"method": "update", "params": ["replica", {}]}),
            json!({"method": "update"}),
        ] {
            assert_eq!(Leadership::update_of(&other), None, "{other}");
        }
    }
}
