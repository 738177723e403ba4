//! The one seam for external commands (`ovn-nbctl`, `ovs-vsctl`, `ip`, ...).
//!
//! Every command is an argument vector (never a shell string), runs with a timeout, has its
//! stdout and stderr captured, and fails with a typed error that shows the command line and
//! stderr. Controllers never call `tokio::process` directly: they get an `Arc<dyn Exec>`, so unit
//! tests can swap in [`FakeExec`], which records every command and answers from a script.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use tokio::sync::Semaphore;

/// The recording fake: test builds only, so it is not in the shipped binary.
#[cfg(test)]
mod fake;
#[cfg(test)]
pub use fake::{FakeExec, FakeReply};

/// Default backstop timeout for a command that does not set its own.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A command to run: program, argv and extra environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// Secrets that appear in the arguments; [`Cmd::cmdline`] (logs, errors) masks them.
    pub redact: Vec<String>,
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            redact: Vec::new(),
        }
    }

    /// Mask `secret` wherever it appears in the displayed command line.
    pub fn redact(mut self, secret: impl Into<String>) -> Self {
        let s = secret.into();
        if !s.is_empty() {
            self.redact.push(s);
        }
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// A human-readable command line for logs and errors (display only, never executed).
    pub fn cmdline(&self) -> String {
        let mut s = display_word(&self.program);
        for a in &self.args {
            s.push(' ');
            let mut a = a.clone();
            for secret in &self.redact {
                a = a.replace(secret.as_str(), "<redacted>");
            }
            s.push_str(&display_word(&a));
        }
        s
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cmdline())
    }
}

/// Quote a word for display the way a shell user would read it.
fn display_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '-' | '_' | '.' | '/' | ':' | '=' | ',' | '@' | '+')
        });
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CmdOutput {
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("`{program}` not found in PATH: install it (see `make deps`)")]
    NotFound { program: String },
    #[error("`{cmdline}` timed out after {timeout:?}")]
    Timeout { cmdline: String, timeout: Duration },
    #[error("`{cmdline}` failed ({status}): {}", stderr.trim())]
    Failed {
        cmdline: String,
        status: String,
        stdout: String,
        stderr: String,
    },
    #[error("`{cmdline}` could not run: {source}")]
    Io {
        cmdline: String,
        #[source]
        source: std::io::Error,
    },
}

impl ExecError {
    /// stderr of a command that ran and failed; empty otherwise.
    pub fn stderr(&self) -> &str {
        match self {
            ExecError::Failed { stderr, .. } => stderr,
            _ => "",
        }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Exec: Send + Sync {
    fn run<'a>(&'a self, cmd: &'a Cmd) -> BoxFuture<'a, Result<CmdOutput, ExecError>>;
}

/// Runs commands with `tokio::process`, at most `max_parallel` at a time.
pub struct RealExec {
    permits: Semaphore,
}

impl RealExec {
    pub fn new(max_parallel: usize) -> Self {
        RealExec {
            permits: Semaphore::new(max_parallel.max(1)),
        }
    }

    async fn run_inner(&self, cmd: &Cmd) -> Result<CmdOutput, ExecError> {
        let cmdline = cmd.cmdline();
        // A closed semaphore is impossible here (we never close it); run unthrottled if it were.
        let _permit = self.permits.acquire().await.ok();
        tracing::debug!(cmd = %cmdline, "exec");
        let mut c = tokio::process::Command::new(&cmd.program);
        c.args(&cmd.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LC_ALL", "C")
            // Dropping the future on timeout or shutdown must not leave the child running.
            .kill_on_drop(true);
        for (k, v) in &cmd.env {
            c.env(k, v);
        }
        let child = c.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ExecError::NotFound {
                    program: cmd.program.clone(),
                }
            } else {
                ExecError::Io {
                    cmdline: cmdline.clone(),
                    source: e,
                }
            }
        })?;
        let out = match tokio::time::timeout(cmd.timeout, child.wait_with_output()).await {
            Err(_) => {
                return Err(ExecError::Timeout {
                    cmdline,
                    timeout: cmd.timeout,
                });
            }
            Ok(Err(e)) => return Err(ExecError::Io { cmdline, source: e }),
            Ok(Ok(o)) => o,
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            let status = match out.status.code() {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".to_string(),
            };
            tracing::debug!(cmd = %cmdline, %status, stderr = %stderr.trim(), "exec failed");
            return Err(ExecError::Failed {
                cmdline,
                status,
                stdout,
                stderr,
            });
        }
        Ok(CmdOutput { stdout, stderr })
    }
}

impl Default for RealExec {
    fn default() -> Self {
        RealExec::new(8)
    }
}

impl Exec for RealExec {
    fn run<'a>(&'a self, cmd: &'a Cmd) -> BoxFuture<'a, Result<CmdOutput, ExecError>> {
        Box::pin(self.run_inner(cmd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn real_exec_passes_argv_verbatim_without_a_shell() {
        let e = RealExec::default();
        let out = e
            .run(
                &Cmd::new("echo")
                    .arg("x; touch /tmp/ovnkube-pwned")
                    .arg("$HOME"),
            )
            .await
            .unwrap();
        assert_eq!(out.stdout, "x; touch /tmp/ovnkube-pwned $HOME\n");
        assert!(!std::path::Path::new("/tmp/ovnkube-pwned").exists());
    }

    #[tokio::test]
    async fn real_exec_reports_failure_with_cmdline_and_stderr() {
        let e = RealExec::default();
        let err = e
            .run(&Cmd::new("sh").args(["-c", "echo oops >&2; exit 3"]))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("exit status 3"), "{msg}");
        assert!(msg.contains("oops"), "{msg}");
        assert!(msg.contains("sh -c"), "{msg}");
        assert_eq!(err.stderr().trim(), "oops");
    }

    #[tokio::test]
    async fn real_exec_times_out_and_kills() {
        let e = RealExec::default();
        let start = std::time::Instant::now();
        let err = e
            .run(
                &Cmd::new("sleep")
                    .arg("5")
                    .timeout(Duration::from_millis(200)),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn real_exec_missing_binary() {
        let e = RealExec::default();
        let err = e.run(&Cmd::new("no-such-binary-xyz")).await.unwrap_err();
        assert!(matches!(err, ExecError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("no-such-binary-xyz"));
    }

    #[tokio::test]
    async fn fake_exec_records_and_scripts() {
        let f = FakeExec::strict();
        f.expect("ovn-nbctl ls-list", FakeReply::Ok("sw1\n".into()));
        let out = f.run(&Cmd::new("ovn-nbctl").arg("ls-list")).await.unwrap();
        assert_eq!(out.stdout, "sw1\n");
        assert!(f.all_called());
        assert!(f.run(&Cmd::new("ovn-nbctl").arg("show")).await.is_err());
        assert_eq!(f.calls().len(), 2);
    }

    #[tokio::test]
    async fn secrets_never_reach_the_displayed_command_line() {
        let c = Cmd::new("ovs-vsctl")
            .arg("external_ids:k8s-api-token=\"s3cr3t\"")
            .redact("s3cr3t");
        assert_eq!(
            c.cmdline(),
            "ovs-vsctl 'external_ids:k8s-api-token=\"<redacted>\"'"
        );
        let err = RealExec::default()
            .run(
                &Cmd::new("sh")
                    .args(["-c", "exit 1", "s3cr3t"])
                    .redact("s3cr3t"),
            )
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }

    #[test]
    fn cmdline_quotes_for_display() {
        let c = Cmd::new("ovn-nbctl").args(["set", "x", "addresses=\"a b\""]);
        assert_eq!(c.cmdline(), "ovn-nbctl set x 'addresses=\"a b\"'");
    }
}
