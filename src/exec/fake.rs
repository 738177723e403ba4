//! [`FakeExec`]: records every command and answers from a script (unit tests only).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::{BoxFuture, Cmd, CmdOutput, Exec, ExecError};

/// A scripted reply for [`FakeExec`].
#[derive(Clone, Debug)]
pub enum FakeReply {
    Ok(String),
    Fail { stderr: String },
}

/// Records every command and answers from a queue of expectations. An expectation matches on
/// the full command line (program + args); commands with no expectation left get `Ok("")` when
/// the fake is lenient, or a failure when strict.
#[derive(Default)]
pub struct FakeExec {
    inner: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    expected: VecDeque<(String, FakeReply)>,
    calls: Vec<Cmd>,
    strict: bool,
}

impl FakeExec {
    pub fn new() -> Arc<Self> {
        Arc::new(FakeExec::default())
    }

    pub fn strict() -> Arc<Self> {
        let f = FakeExec::default();
        if let Ok(mut s) = f.inner.lock() {
            s.strict = true;
        }
        Arc::new(f)
    }

    /// Expect `cmdline` (as [`Cmd::cmdline`] renders it) next, answering `reply`.
    pub fn expect(&self, cmdline: &str, reply: FakeReply) {
        if let Ok(mut s) = self.inner.lock() {
            s.expected.push_back((cmdline.to_string(), reply));
        }
    }

    pub fn calls(&self) -> Vec<Cmd> {
        self.inner
            .lock()
            .map(|s| s.calls.clone())
            .unwrap_or_default()
    }

    /// True when every expectation was consumed.
    pub fn all_called(&self) -> bool {
        self.inner
            .lock()
            .map(|s| s.expected.is_empty())
            .unwrap_or(false)
    }
}

impl Exec for FakeExec {
    fn run<'a>(&'a self, cmd: &'a Cmd) -> BoxFuture<'a, Result<CmdOutput, ExecError>> {
        Box::pin(async move {
            let cmdline = cmd.cmdline();
            let mut s = self.inner.lock().map_err(|_| ExecError::Io {
                cmdline: cmdline.clone(),
                source: std::io::Error::other("fake exec poisoned"),
            })?;
            s.calls.push(cmd.clone());
            let reply = match s.expected.front() {
                Some((want, _)) if *want == cmdline => s.expected.pop_front().map(|(_, r)| r),
                Some((want, _)) if s.strict => Some(FakeReply::Fail {
                    stderr: format!("unexpected command; wanted `{want}`"),
                }),
                None if s.strict => Some(FakeReply::Fail {
                    stderr: "unexpected command".to_string(),
                }),
                _ => None,
            };
            match reply.unwrap_or(FakeReply::Ok(String::new())) {
                FakeReply::Ok(stdout) => Ok(CmdOutput {
                    stdout,
                    stderr: String::new(),
                }),
                FakeReply::Fail { stderr } => Err(ExecError::Failed {
                    cmdline,
                    status: "exit status 1".into(),
                    stdout: String::new(),
                    stderr,
                }),
            }
        })
    }
}
