//! Helpers for netprobe's privileged integration tests: root checks that
//! skip (with a reason) only outside CI, and running the real netprobe
//! binary that `cargo xtask test` built.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// True when the test may run; false (after printing why) when it must be
/// skipped. Under CI=true a missing privilege is a failure, never a skip.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test} needs root and CI=true: run the suite as root");
    eprintln!("SKIPPED {test}: needs root (BPF programs, network namespaces); run `sudo cargo xtask test`");
    false
}

/// True when a tool the test needs is `present`; false (after saying
/// which) when it is not. Under CI=true a missing tool is a failure:
/// `cargo xtask test` installs every one.
pub fn require_tool(present: bool, what: &str) -> bool {
    if present {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} missing under CI=true (cargo xtask test installs it)"
    );
    eprintln!("SKIPPED: needs {what} (cargo xtask test installs it)");
    false
}

/// The netprobe binary with its BPF object embedded.
pub fn netprobe_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NETPROBE_BIN") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/netprobe");
    assert!(p.exists(), "no netprobe binary: run the tests with `cargo xtask test`");
    p
}

/// A running `netprobe record`, started and confirmed attached.
pub struct RunningRecord {
    child: Child,
    stderr: Vec<String>,
}

impl RunningRecord {
    /// Starts `netprobe record --format json ARGS` and waits until it says
    /// it is recording (its probes are attached).
    pub fn start(args: &[&str]) -> RunningRecord {
        let mut child = Command::new(netprobe_bin())
            .arg("record")
            .args(["--format", "json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start netprobe");
        let mut reader = BufReader::new(child.stderr.take().unwrap());
        let mut stderr = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).unwrap();
            assert!(n > 0, "netprobe exited before recording: {stderr:?}");
            stderr.push(line.clone());
            if line.contains("recording") {
                break;
            }
            assert!(Instant::now() < deadline, "netprobe did not start: {stderr:?}");
        }
        // Keep draining stderr so netprobe never blocks on it.
        std::thread::spawn(move || for _ in reader.lines() {});
        RunningRecord { child, stderr }
    }

    /// Ends the recording with SIGINT (as Ctrl-C would) and returns its report.
    pub fn interrupt(self) -> Value {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.finish()
    }

    /// The netprobe process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ends the recording with SIGTERM (as a service manager would) and
    /// returns its report.
    pub fn terminate(self) -> Value {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.finish()
    }

    /// Waits for netprobe to exit on its own and returns its report.
    pub fn finish(self) -> Value {
        let out = self.child.wait_with_output().expect("wait for netprobe");
        assert!(out.status.success(), "netprobe failed: {:?} {:?}", out.status, self.stderr);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("netprobe printed no JSON report ({e}): {}", String::from_utf8_lossy(&out.stdout))
        })
    }
}

/// The hop pairs of one direction, as (from label, to label) -> pair JSON.
pub fn pairs<'a>(report: &'a Value, direction: &str) -> Vec<(String, String, &'a Value)> {
    let label = |hop: &Value, dev: &Value| {
        let (h, d) = (hop.as_str().unwrap(), dev.as_str().unwrap());
        if d.is_empty() {
            h.to_owned()
        } else {
            format!("{h}@{d}")
        }
    };
    report["directions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["direction"] == direction)
        .flat_map(|d| d["pairs"].as_array().unwrap())
        .map(|p| (label(&p["from_hop"], &p["from_dev"]), label(&p["to_hop"], &p["to_dev"]), p))
        .collect()
}

/// Hop pairs of a report that no packet can take (README, "Packet
/// identity"): after `queue` at a device, the next hop at a device is
/// `xmit` at that device; after `netif_rx` or `gro`, it is `receive`; and
/// nothing waits a millisecond between a transmit or receive and the next
/// hop where tracking could start. The steps where no skb exists (vhost's
/// kick, worker, send and signal: README, "Before the first skb and after
/// the last") are only those of [`CHAIN_STEPS`], each in its direction.
/// Each as "direction from -> to".
pub fn impossible_pairs(report: &Value) -> Vec<String> {
    let generic_at_device = ["queue", "xmit", "netif_rx", "receive", "gro"];
    let mut out = Vec::new();
    for d in report["directions"].as_array().unwrap() {
        for p in d["pairs"].as_array().unwrap() {
            let s = |k: &str| p[k].as_str().unwrap().to_owned();
            let (fh, fd, th, td) = (s("from_hop"), s("from_dev"), s("to_hop"), s("to_dev"));
            let at_device = generic_at_device.contains(&th.as_str()) && !td.is_empty();
            let chain = [&fh, &th].iter().any(|h| CHAIN_HOPS.contains(&h.as_str()));
            let chain_step = CHAIN_STEPS
                .iter()
                .any(|(f, to, dir)| *f == fh && to.contains(&th.as_str()) && d["direction"] == *dir)
                // (At the guest's device; `consumed` has none of its own.)
                && (td == fd || (fh == "consumed" && fd.is_empty()));
            let wrong = (chain && !chain_step)
                || at_device
                    && !chain
                    && ((fh == "queue" && !(th == "xmit" && td == fd))
                        || ((fh == "netif_rx" || fh == "gro") && th != "receive")
                        || ((fh == "xmit" || fh == "receive") && p["max_ns"].as_u64().unwrap() > 1_000_000));
            if wrong {
                out.push(format!(
                    "{} {fh}@{fd} -> {th}@{td} ({} packets, max {} ns)",
                    d["direction"], p["packets"], p["max_ns"]
                ));
            }
        }
    }
    out
}

/// The hops of thread chains: no skb, so they appear in pairs only as
/// steps of [`CHAIN_STEPS`].
pub const CHAIN_HOPS: &[&str] = &[
    "vhost_kick",
    "vhost_tx_kick",
    "vhost_rx_wake",
    "tap_sendmsg",
    "tun_sendmsg",
    "vhost_signal",
    "eventfd_signal",
    "irqfd_wakeup",
];

/// The steps a vhost-net frame takes where it has no skb, as (from, to,
/// direction), at one device (the guest's macvtap or tap): kicked, its
/// worker woken, sent into the tap, its skb's first hop; and toward the
/// guest, after its skb is freed, the used ring's signal and KVM's irqfd.
pub const CHAIN_STEPS: &[(&str, &[&str], &str)] = &[
    ("vhost_kick", &["vhost_tx_kick", "vhost_tx_wake"], "to-wire"),
    ("vhost_kick", &["vhost_rx_wake", "vhost_rx_kick"], "to-guest"),
    ("vhost_tx_kick", &["tap_sendmsg", "tun_sendmsg"], "to-wire"),
    ("vhost_tx_wake", &["tap_sendmsg", "tun_sendmsg"], "to-wire"),
    ("tap_sendmsg", &["queue"], "to-wire"),
    ("tun_sendmsg", &["netif_rx", "receive"], "to-wire"),
    ("consumed", &["vhost_signal", "eventfd_signal", "irqfd_wakeup"], "to-guest"),
    ("vhost_signal", &["eventfd_signal", "irqfd_wakeup"], "to-guest"),
    ("eventfd_signal", &["irqfd_wakeup"], "to-guest"),
];

/// The pair `from -> to` in `direction`; panics listing what there is.
pub fn pair<'a>(report: &'a Value, direction: &str, from: &str, to: &str) -> &'a Value {
    let all = pairs(report, direction);
    all.iter().find(|(f, t, _)| f == from && t == to).map(|(_, _, p)| *p).unwrap_or_else(|| {
        let have: Vec<String> = all.iter().map(|(f, t, p)| format!("{f} -> {t} ({})", p["packets"])).collect();
        panic!("no {direction} pair {from} -> {to}; have: {have:#?}")
    })
}

/// netprobe's programs loaded in the kernel right now (bpftool), as (id,
/// name): tracepoint programs (`btf_`, `raw_`, `tp_` + a net/skb
/// tracepoint) and function slots (`fentry_N`, `fexit_N`, `kprobe_N`,
/// `kretprobe_N`).
fn loaded_programs() -> Vec<(u64, String)> {
    let out = Command::new("bpftool").args(["-j", "prog", "show"]).output().expect("bpftool (Debian's bpftool)");
    let progs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    progs
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| Some((p["id"].as_u64()?, p["name"].as_str()?.to_owned())))
        .filter(|(_, n)| {
            let tracepoint = ["btf_", "raw_", "tp_"].iter().any(|p| n.starts_with(p))
                && ["net", "skb", "sched", "softirq", "ovs"].iter().any(|w| n.contains(w));
            let slot = ["fentry_", "fexit_", "kprobe_", "kretprobe_"].iter().any(|p| {
                n.strip_prefix(p).is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()))
            });
            tracepoint || slot
        })
        .collect()
}

/// Ids of the BPF programs process `pid` holds a file descriptor of (the
/// program's own, or a link's: fdinfo `prog_id:`), sorted.
pub fn program_ids_of(pid: u32) -> Vec<u32> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return Vec::new() };
    let mut ids: Vec<u32> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix("prog_id:")).and_then(|v| v.trim().parse().ok()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// (pid, program id) for every program a live process holds.
fn held_programs() -> Vec<(u32, u64)> {
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<u32>().ok())
        .flat_map(|pid| program_ids_of(pid).into_iter().map(move |id| (pid, u64::from(id))))
        .collect()
}

/// netprobe's programs still in the kernel that no live process holds:
/// what a netprobe that exited (however it ended) left behind. Programs
/// of another netprobe running at the same time are held by it, so they
/// do not count. The kernel frees a program after its last link is gone
/// and a grace period has passed, a moment after the process exits (seen:
/// three of a trace-mode netprobe's programs still listed right after it
/// was reaped), so this waits up to 3 s for them to go.
pub fn netprobe_programs() -> Vec<String> {
    let unheld = || {
        let held = held_programs();
        loaded_programs()
            .into_iter()
            .filter(|(id, _)| !held.iter().any(|(_, h)| h == id))
            .map(|(_, n)| n)
            .collect::<Vec<_>>()
    };
    let mut left = unheld();
    for _ in 0..30 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = unheld();
    }
    left
}

/// netprobe's programs that process `pid` holds.
pub fn netprobe_programs_of(pid: u32) -> Vec<String> {
    let ids = program_ids_of(pid);
    loaded_programs().into_iter().filter(|(id, _)| ids.iter().any(|&i| u64::from(i) == *id)).map(|(_, n)| n).collect()
}

/// Those of `ids` still loaded in the kernel (bpftool), after waiting up
/// to 3 s for them to go: as in `netprobe_programs`, the kernel frees a
/// program a grace period after its process exits (seen: two of a serve's
/// programs still listed right after it was reaped).
pub fn still_loaded(ids: &[u32]) -> Vec<u32> {
    let loaded = |ids: &[u32]| -> Vec<u32> {
        ids.iter()
            .copied()
            .filter(|id| {
                Command::new("bpftool")
                    .args(["prog", "show", "id", &id.to_string()])
                    .output()
                    .expect("bpftool (Debian's bpftool)")
                    .status
                    .success()
            })
            .collect()
    };
    let mut left = loaded(ids);
    for _ in 0..30 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = loaded(&left);
    }
    left
}
