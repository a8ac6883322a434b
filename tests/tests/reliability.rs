//! Failure modes: missing privileges, bad arguments, SIGKILL mid-run,
//! devices vanishing mid-run. Each must end cleanly and leave nothing of
//! netprobe in the kernel.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use netprobe_testbed::topology::Topology;
use netprobe_tests::{netprobe_bin, require_root, RunningRecord};

#[test]
fn sigkill_mid_run_leaves_no_program_attached() {
    if !require_root("sigkill_mid_run_leaves_no_program_attached") {
        return;
    }
    let mut child = Command::new(netprobe_bin())
        .args(["record", "--trace"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is attached.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(line.contains("recording"), "{line}");
    assert!(
        !netprobe_tests::netprobe_programs_of(child.id()).is_empty(),
        "netprobe's programs should be loaded while it runs"
    );
    child.kill().unwrap(); // SIGKILL: no chance to clean up by itself
    child.wait().unwrap();
    // Links and programs die with their last file descriptor.
    let left = netprobe_tests::netprobe_programs();
    assert!(left.is_empty(), "programs left after SIGKILL: {left:?}");
}

#[test]
fn without_privileges_the_error_names_the_capabilities() {
    if !require_root("without_privileges_the_error_names_the_capabilities") {
        return; // needs root to drop to an unprivileged user
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(netprobe_bin())
        .args(["record", "--duration", "1s"])
        .output()
        .expect("setpriv (util-linux)");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CAP_BPF") && err.contains("CAP_PERFMON"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
}

#[test]
fn malformed_duration_is_a_clear_error() {
    let out = Command::new(netprobe_bin()).args(["record", "--duration", "ten"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a duration") && err.contains("10s"), "{err}");
}

#[test]
fn devices_vanishing_mid_run_end_their_part_and_the_report_still_comes() {
    if !require_root("devices_vanishing_mid_run_end_their_part_and_the_report_still_comes") {
        return;
    }
    let t = Topology::create().unwrap();
    let ifaces = t.ifaces();
    let rec = RunningRecord::start(&["--iface", &ifaces[0], "--iface", &ifaces[1]]);
    assert_eq!(t.ping(10, "0.02").unwrap(), 10);
    let macvtap = t.macvtap.clone();
    drop(t); // the namespaces, the macvtap and the veths disappear mid-run
    std::thread::sleep(Duration::from_millis(300));
    let r = rec.interrupt();
    let to_wire = netprobe_tests::pairs(&r, "to-wire");
    let p = to_wire
        .iter()
        .find(|(f, t, _)| *f == format!("queue@{macvtap}") && *t == format!("xmit@{macvtap}"))
        .unwrap_or_else(|| panic!("what was measured before the devices vanished is kept: {r:#}"));
    assert!(p.2["packets"].as_u64().unwrap() >= 10);
}

#[test]
fn recording_written_on_sigint_reads_back_and_damaged_copies_are_rejected() {
    if !require_root("recording_written_on_sigint_reads_back_and_damaged_copies_are_rejected") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("netprobe-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("run.rec");
    let t = Topology::create().unwrap();
    let ifaces = t.ifaces();
    let f = file.to_str().unwrap();
    let rec = RunningRecord::start(&["--iface", &ifaces[0], "--iface", &ifaces[1], "-o", f]);
    assert_eq!(t.ping(10, "0.02").unwrap(), 10);
    let live = rec.interrupt(); // SIGINT: the recording is still written whole
    drop(t);
    let report = |path: &std::path::Path| {
        Command::new(netprobe_bin()).args(["report", "--format", "json"]).arg(path).output().unwrap()
    };
    let out = report(&file);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["directions"], live["directions"], "report FILE must equal the live report");

    let bytes = std::fs::read(&file).unwrap();
    let damaged = [
        ("truncated", bytes[..bytes.len() * 2 / 3].to_vec()),
        ("flipped", {
            let mut b = bytes.clone();
            let i = b.len() / 2;
            b[i] ^= 0x10;
            b
        }),
    ];
    for (what, data) in damaged {
        let p = dir.join(format!("{what}.rec"));
        std::fs::write(&p, data).unwrap();
        let out = report(&p);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what} recording accepted");
        assert!(err.contains("truncated") || err.contains("corrupted"), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_workload_bounds_the_recording_and_tags_it() {
    if !require_root("a_workload_bounds_the_recording_and_tags_it") {
        return;
    }
    let started = std::time::Instant::now();
    let out = Command::new(netprobe_bin())
        .args(["record", "--format", "json", "--duration", "30s", "--", "sh", "-c", "sleep 1; exit 3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the recording should end with the workload, not at --duration"
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = &r["workload"];
    assert_eq!(w["command"], serde_json::json!(["sh", "-c", "sleep 1; exit 3"]));
    assert_eq!(w["exit_status"], 3);
    let ran = w["ended_unix_s"].as_f64().unwrap() - w["started_unix_s"].as_f64().unwrap();
    assert!((0.9..10.0).contains(&ran), "workload ran {ran} s");
    assert_eq!(r["interrupted"], false);
}

#[test]
fn live_status_line_on_a_terminal_only() {
    if !require_root("live_status_line_on_a_terminal_only") {
        return;
    }
    // On a terminal (script(1) gives it one): the status line.
    let cmd = format!("{} record --duration 2500ms", netprobe_bin().display());
    let tty = Command::new("script").args(["-qc", &cmd, "/dev/null"]).output().expect("script (bsdutils)");
    let text = String::from_utf8_lossy(&tty.stdout);
    assert!(text.contains("[netprobe]") && text.contains("hops active") && text.contains("s left"), "{text}");
    // Not a terminal, or --quiet: none.
    let piped = Command::new(netprobe_bin()).args(["record", "--duration", "1500ms"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&piped.stderr).contains("[netprobe]"));
    let cmd = format!("{} record --quiet --duration 1500ms", netprobe_bin().display());
    let quiet = Command::new("script").args(["-qc", &cmd, "/dev/null"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&quiet.stdout).contains("[netprobe]"));
}

#[test]
fn two_netprobes_at_once_both_measure_and_neither_leaves_anything() {
    if !require_root("two_netprobes_at_once_both_measure_and_neither_leaves_anything") {
        return;
    }
    let t = Topology::create().unwrap();
    let ifaces = t.ifaces();
    let first = RunningRecord::start(&["--iface", &ifaces[0], "--iface", &ifaces[1]]);
    let second = RunningRecord::start(&["--iface", &ifaces[0], "--iface", &ifaces[1], "--filter", "icmp"]);
    assert_eq!(t.ping(15, "0.02").unwrap(), 15);
    t.udp_burst(netprobe_testbed::topology::PEER_ADDR, 9, 20, Duration::from_millis(1)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (a, b) = (first.interrupt(), second.interrupt());
    let m = &t.macvtap;
    let count = |r: &serde_json::Value| {
        netprobe_tests::pair(r, "to-wire", &format!("queue@{m}"), &format!("xmit@{m}"))["packets"].as_u64().unwrap()
    };
    // Each has maps and programs of its own: the first sees everything,
    // the second (ICMP only) the 15 echo requests and not the datagrams.
    assert!(count(&a) >= 35, "first netprobe: {}", count(&a));
    assert!((15..=16).contains(&count(&b)), "second netprobe (icmp): {}", count(&b));
    drop(t);
    let left = netprobe_tests::netprobe_programs();
    assert!(left.is_empty(), "programs left: {left:?}");
}

#[test]
fn sigterm_writes_the_whole_recording() {
    if !require_root("sigterm_writes_the_whole_recording") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("netprobe-term-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("run.rec");
    let t = Topology::create().unwrap();
    let ifaces = t.ifaces();
    let rec = RunningRecord::start(&["--iface", &ifaces[0], "-o", file.to_str().unwrap()]);
    assert_eq!(t.ping(10, "0.02").unwrap(), 10);
    let r = rec.terminate();
    assert_eq!(r["interrupted"], true);
    let out = Command::new(netprobe_bin()).args(["report", "--format", "json"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let back: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(back["directions"], r["directions"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_output_that_cannot_be_written_is_refused_before_recording() {
    let dir = std::env::temp_dir().join(format!("netprobe-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("link.rec");
    std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
    for (path, expect) in [(dir.join("no/such/dir/run.rec"), "not writable"), (link.clone(), "symbolic link")] {
        let out = Command::new(netprobe_bin()).args(["record", "--duration", "1s", "-o"]).arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(expect), "{}: {err}", path.display());
        assert!(!err.contains("recording for") && !err.contains("panicked"), "refused only after attaching: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Trace mode's ring made to overflow on purpose: one page of ring and a
/// reader that starts two seconds late, under 2000 datagrams, and a
/// trickle that goes on while the recording ends. Every
/// hop-pair event is delivered, counted lost (the kernel could not
/// reserve it in the ring) or still being gathered when the recording
/// stopped; the report shows the loss; and the per-hop aggregates, which
/// never go through the ring, count every datagram.
#[test]
fn a_forced_ring_overflow_is_counted_and_the_aggregates_stay_complete() {
    if !require_root("a_forced_ring_overflow_is_counted_and_the_aggregates_stay_complete") {
        return;
    }
    let t = Topology::create().unwrap();
    let ifaces = t.ifaces();
    let rec = RunningRecord::start(&[
        "--trace",
        "--bench-ring-bytes",
        "4096",
        "--bench-pause-reader",
        "2s",
        "--iface",
        &ifaces[0],
        "--iface",
        &ifaces[1],
    ]);
    let sent = 2000;
    t.udp_burst(netprobe_testbed::topology::PEER_ADDR, 9, sent, Duration::from_micros(200)).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    // A trickle goes on while the recording ends: the cut between the
    // aggregates, the ring and the journeys in flight must still add up.
    let r = std::thread::scope(|s| {
        let trickle = s.spawn(|| t.udp_burst(netprobe_testbed::topology::PEER_ADDR, 9, 1000, Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(300));
        let r = rec.interrupt();
        trickle.join().unwrap().unwrap();
        r
    });
    let m = t.macvtap.clone();
    drop(t);
    let count = |k: &str| r["tracking"][k].as_u64().unwrap_or_else(|| panic!("no {k} in {}", r["tracking"]));
    let (received, lost, in_flight) = (count("events_received"), count("events_lost"), count("events_in_flight"));
    let samples: u64 = r["directions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["pairs"].as_array().unwrap())
        .map(|p| p["packets"].as_u64().unwrap())
        .sum();
    let pair_lost = count("pair_lost");
    eprintln!(
        "forced overflow: {samples} hop-pair samples aggregated (+{pair_lost} not), {received} events received, \
         {lost} lost, {in_flight} in flight"
    );
    assert!(lost > 1000, "a one-page ring with a paused reader lost only {lost} events");
    assert!(received > 0, "the reader drained nothing after its pause");
    assert_eq!(
        received + lost + in_flight,
        samples + pair_lost,
        "every hop-pair event is delivered, lost or in flight (received {received}, lost {lost}, in flight {in_flight})"
    );
    // The aggregates never go through the ring: every datagram is counted
    // at the guest's macvtap.
    let q = netprobe_tests::pair(&r, "to-wire", &format!("queue@{m}"), &format!("xmit@{m}"));
    assert!(q["packets"].as_u64().unwrap() >= sent as u64, "queue -> xmit at {m}: {q}");
}
