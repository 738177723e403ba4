//! Process helpers: commands with deadlines, detached daemons, PID-checked kills.

use anyhow::{Context, Result, anyhow, bail};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Default deadline for short control commands (ovs-vsctl, ip, ethtool, ...).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// Human-readable command line for error messages.
pub fn cmdline(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&quote(a));
    }
    s
}

fn quote(a: &OsStr) -> String {
    let a = a.to_string_lossy();
    if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "\"'$&|;<>()*?".contains(c)) {
        format!("'{}'", a.replace('\'', r"'\''"))
    } else {
        a.into_owned()
    }
}

/// Runs `cmd` to completion, killing it after `timeout`. Never hangs.
pub fn run_output(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let line = cmdline(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning `{line}`"))?;
    // Drain both pipes on threads so a chatty child can't block on a full pipe.
    let out_t = child.stdout.take().map(|mut r| {
        thread::spawn(move || {
            let mut b = Vec::new();
            let _ = r.read_to_end(&mut b);
            b
        })
    });
    let err_t = child.stderr.take().map(|mut r| {
        thread::spawn(move || {
            let mut b = Vec::new();
            let _ = r.read_to_end(&mut b);
            b
        })
    });
    let status = match wait_deadline(&mut child, timeout)? {
        Some(st) => st,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            // Readers may block forever if a grandchild inherited the pipe; don't join them.
            bail!("`{line}` timed out after {timeout:?}");
        }
    };
    let stdout = out_t.and_then(|t| t.join().ok()).unwrap_or_default();
    let stderr = err_t.and_then(|t| t.join().ok()).unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Like [`run_output`] but fails on a non-zero exit, returning stdout.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let line = cmdline(cmd);
    let out = run_output(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Convenience: run argv[0] with argv[1..].
pub fn run_argv(argv: &[&str], timeout: Duration) -> Result<String> {
    let (prog, args) = argv.split_first().ok_or_else(|| anyhow!("empty argv"))?;
    run(Command::new(prog).args(args), timeout)
}

fn wait_deadline(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_millis(2);
    loop {
        if let Some(st) = child.try_wait().context("waiting for child")? {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(50));
    }
}

/// Starts an OVS-style daemon with `--detach` and waits for the launcher to exit.
/// stdout/stderr go to files (a detached daemon must not hold our pipes open).
/// On failure the error carries the command line, its stderr and the log tail.
pub fn start_daemon(cmd: &mut Command, dir: &Path, name: &str, log: &Path) -> Result<()> {
    let line = cmdline(cmd);
    let errf = dir.join(format!("{name}.stderr"));
    let err = fs::File::create(&errf).with_context(|| format!("creating {}", errf.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .with_context(|| format!("spawning `{line}`"))?;
    let st = wait_deadline(&mut child, Duration::from_secs(30))?;
    let fail = |why: String| {
        anyhow!(
            "{name} failed to start ({why}): `{line}`\nstderr: {}\nlog tail ({}):\n{}",
            fs::read_to_string(&errf).unwrap_or_default().trim(),
            log.display(),
            log_tail(log, 20)
        )
    };
    match st {
        Some(st) if st.success() => Ok(()),
        Some(st) => Err(fail(st.to_string())),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(fail("timed out".into()))
        }
    }
}

/// Last `n` lines of a log file (empty if unreadable).
pub fn log_tail(path: &Path, n: usize) -> String {
    let s = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Reads a pidfile.
pub fn read_pid(pidfile: &Path) -> Option<i32> {
    fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// True if the PID exists and is not a zombie (PID 1 here reaps orphans lazily, and
/// `kill -0` succeeds on zombies).
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => !s
            .lines()
            .any(|l| l.starts_with("State:") && l[6..].trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The process's command line with NULs replaced by spaces.
pub fn pid_cmdline(pid: i32) -> Option<String> {
    let b = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&b).replace('\0', " "))
}

/// Start time (clock ticks since boot) to detect PID reuse for processes we spawned.
pub fn pid_starttime(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces; fields after the closing paren are well-formed.
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a PID we have verified belongs to us.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Waits until `pid` is gone (or a zombie); returns whether it went away in time.
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while pid_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

/// SIGKILL (a crash: no cleanup, no goodbye to raft peers), then wait until it is gone.
/// The caller has verified ownership.
pub fn kill9(pid: i32) {
    if pid_alive(pid) {
        signal(pid, libc::SIGKILL);
        wait_gone(pid, Duration::from_secs(5));
    }
}

/// SIGTERM, wait up to 5 s, then SIGKILL. The caller has verified ownership.
pub fn terminate(pid: i32) {
    if !pid_alive(pid) {
        return;
    }
    signal(pid, libc::SIGTERM);
    if !wait_gone(pid, Duration::from_secs(5)) {
        signal(pid, libc::SIGKILL);
        wait_gone(pid, Duration::from_secs(2));
    }
}

/// Stops the daemon named in `pidfile`, but only if its cmdline mentions `owner_dir`
/// (guards against a stale pidfile whose PID was reused by someone else's process).
pub fn kill_pidfile(pidfile: &Path, owner_dir: &Path) {
    let Some(pid) = read_pid(pidfile) else { return };
    if owns(pid, owner_dir) {
        terminate(pid);
    }
    let _ = fs::remove_file(pidfile);
}

/// True if `pid` is alive and its cmdline contains `dir`.
pub fn owns(pid: i32, dir: &Path) -> bool {
    let needle = format!("{}/", dir.display());
    pid_alive(pid) && pid_cmdline(pid).is_some_and(|c| c.contains(&needle))
}

/// A child we spawned on behalf of a caller, remembered so Drop can reap it even if
/// the caller panicked without killing it. The start time guards against PID reuse.
#[derive(Debug, Clone, Copy)]
pub struct Spawned {
    pid: i32,
    start: Option<u64>,
}

impl Spawned {
    pub fn new(pid: u32) -> Self {
        let pid = pid as i32;
        Spawned {
            pid,
            start: pid_starttime(pid),
        }
    }

    pub fn kill(&self) {
        if self.start.is_some() && pid_starttime(self.pid) == self.start {
            terminate(self.pid);
        }
    }
}
