//! Cleanup guarantees: a panicking test and a crashed test process leave nothing behind.

use ovn_testbed::{Central, Chassis, ChassisOpts, TestPod, pid_alive};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default, Debug)]
struct Trail {
    pids: Vec<i32>,
    netns: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Trail {
    fn record(&mut self, c: &Central, ch: &Chassis, pod: &TestPod) {
        self.pids.extend(c.pids());
        self.pids.extend(ch.pids());
        self.netns.push(ch.netns().to_string());
        self.netns.push(pod.netns().to_string());
        self.dirs.push(c.dir().to_path_buf());
        self.dirs.push(ch.rundir().to_path_buf());
    }

    fn assert_gone(&self) {
        assert_eq!(self.pids.len(), 6, "{self:?}");
        assert_eq!(self.netns.len(), 2, "{self:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.pids.iter().any(|p| pid_alive(*p)) {
            assert!(Instant::now() < deadline, "still alive: {:?}", self.pids);
            std::thread::sleep(Duration::from_millis(20));
        }
        for ns in &self.netns {
            assert!(
                !Path::new("/run/netns").join(ns).exists(),
                "netns {ns} left"
            );
        }
        for d in &self.dirs {
            assert!(!d.exists(), "dir {} left", d.display());
        }
    }
}

fn bring_up(trail: &mut Trail) -> (Central, Chassis, TestPod) {
    let c = Central::start().unwrap();
    let ch = Chassis::start(&c, "crash", ChassisOpts::default()).unwrap();
    let pod = TestPod::create(&ch, "p", "p", "0a:58:0a:00:09:0a", "10.0.9.10/24", "").unwrap();
    trail.record(&c, &ch, &pod);
    (c, ch, pod)
}

#[test]
fn panicking_test_leaves_nothing_behind() {
    let trail = Mutex::new(Trail::default());
    let child = Mutex::new(None);
    let res = std::panic::catch_unwind(|| {
        let mut t = trail.lock().unwrap();
        let (_c, _ch, pod) = bring_up(&mut t);
        // A child the test forgot to kill: the pod's Drop reaps it.
        *child.lock().unwrap() = Some(pod.spawn(&["sleep", "300"]).unwrap());
        drop(t);
        panic!("deliberate panic with a live test bed");
    });
    assert!(res.is_err());
    let t = trail.into_inner().unwrap_or_else(|p| p.into_inner());
    t.assert_gone();
    let mut sleeper = child.into_inner().unwrap().expect("sleeper spawned");
    // Already killed by the pod's Drop: wait() returns at once (and reaps the zombie).
    let st = sleeper.wait().unwrap();
    assert!(!st.success(), "sleeper was not killed: {st}");
}

/// Runs only when re-executed by `crashed_process_is_swept`: brings up a test bed, reports
/// what it made, and aborts without running any destructor.
#[test]
fn crash_child_helper() {
    if std::env::var_os("OTB_CRASH_CHILD").is_none() {
        return;
    }
    let mut t = Trail::default();
    let bed = bring_up(&mut t);
    let mut out = std::io::stdout().lock();
    // libtest has already printed "test crash_child_helper ... " without a newline.
    writeln!(out).unwrap();
    for p in &t.pids {
        writeln!(out, "PID {p}").unwrap();
    }
    for n in &t.netns {
        writeln!(out, "NS {n}").unwrap();
    }
    for d in &t.dirs {
        writeln!(out, "DIR {}", d.display()).unwrap();
    }
    out.flush().unwrap();
    std::mem::forget(bed);
    std::process::abort();
}

#[test]
fn crashed_process_is_swept() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("OTB_CRASH_CHILD", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "helper should abort");
    let mut t = Trail::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match line.split_once(' ') {
            Some(("PID", p)) => t.pids.push(p.parse().unwrap()),
            Some(("NS", n)) => t.netns.push(n.to_string()),
            Some(("DIR", d)) => t.dirs.push(d.into()),
            _ => {}
        }
    }
    assert_eq!(
        t.pids.len(),
        6,
        "helper output: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Orphaned daemons survive the crash until someone sweeps (possibly a parallel test).
    let c = Central::start().unwrap();
    t.assert_gone();
    drop(c);
}
