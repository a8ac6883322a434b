//! Per-hop latency and CPU tied to the workload: real sockperf
//! (request/response) and iperf3 (stream) runs through the demo MacVTap
//! topology, recorded with `netprobe record -- CMD`, `--pid` and
//! `--cgroup`, and the in-kernel flow filter excluding a second flow.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use netprobe_testbed::{
    netns::{self, KillOnDrop},
    topology::{self as demo, Topology},
};
use netprobe_tests::{pair, pairs, require_root, RunningRecord};
use serde_json::Value;

/// A server in the peer namespace, killed when dropped (also on failure).
fn server(t: &Topology, args: &[&str]) -> KillOnDrop {
    let s = netns::spawn_in(&t.peer_ns, args)
        .unwrap_or_else(|e| panic!("cannot start {args:?} (Debian's sockperf/iperf3): {e:#}"));
    std::thread::sleep(Duration::from_millis(500));
    s
}

/// A file in the temporary directory, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        Scratch(std::env::temp_dir().join(format!("netprobe-test-{}-{name}", std::process::id())))
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Records the demo's devices while `tool_command` runs in the guest
/// namespace, its output also written to `own` (tee) to be held against
/// what netprobe read of it.
fn record_teed(t: &Topology, tool_command: &str, own: &Scratch) -> RunningRecord {
    let ifaces = t.ifaces();
    let shell = format!("ip netns exec {} {tool_command} | tee {}", t.guest_ns, own.path());
    RunningRecord::start(&["--iface", &ifaces[0], "--iface", &ifaces[1], "--", "sh", "-c", &shell])
}

fn role_ns(r: &Value, role: &str) -> u64 {
    r["cpu"]["by_role_ns"][role].as_u64().unwrap_or(0)
}

/// The interval series covers the run: about one interval per second,
/// from its start to its end, and adds up to the packets followed.
fn assert_series_covers(r: &Value, seconds: f64) {
    let ivs = r["intervals"].as_array().unwrap();
    let last = ivs.last().unwrap()["t_s"].as_f64().unwrap();
    assert!(ivs.len() as f64 >= seconds.floor(), "{} intervals for a {seconds} s run", ivs.len());
    assert!(ivs[0]["t_s"].as_f64().unwrap() <= 1.5 && last >= seconds - 0.5, "series {:?}..{last}", ivs[0]["t_s"]);
    let in_series: u64 = ivs.iter().map(|iv| iv["packets"].as_u64().unwrap()).sum();
    let total = r["tracking"]["track_started"].as_u64().unwrap();
    assert!(in_series <= total && in_series * 10 >= total * 9, "series {in_series} packets vs {total} followed");
    // Softirq time per interval: on a tick-accounted kernel /proc/stat
    // samples it (4 ms ticks at HZ=250, shown in 10 ms units), so an idle
    // or short interval may read 0; every interval that carried traffic
    // for most of a second must show some, and the series must add up to
    // the run's total.
    let mut prev_t = 0.0;
    let load: Vec<(f64, f64, u64, u64)> = ivs
        .iter()
        .map(|iv| {
            let t = iv["t_s"].as_f64().unwrap();
            let len = t - prev_t;
            prev_t = t;
            (t, len, iv["packets"].as_u64().unwrap(), iv["softirq_ns"].as_u64().unwrap())
        })
        .collect();
    eprintln!("intervals (t_s, length_s, packets, softirq_ns): {load:?}");
    let busy: Vec<_> = load.iter().filter(|&&(_, len, packets, _)| len >= 0.8 && packets >= 5_000).collect();
    assert!(!busy.is_empty(), "no interval carried the workload's traffic: {load:?}");
    assert!(busy.iter().all(|&&(.., softirq)| softirq > 0), "a busy interval without softirq CPU: {load:?}");
    let in_series: u64 = load.iter().map(|&(.., softirq)| softirq).sum();
    let total = r["cpu"]["softirq_ns"].as_u64().unwrap();
    assert!(in_series.abs_diff(total) <= 10_000_000, "series softirq {in_series} ns vs the run's {total} ns: {load:?}");
}

#[test]
fn sockperf_ping_pong_cpu_per_transaction() {
    if !require_root("sockperf_ping_pong_cpu_per_transaction") {
        return;
    }
    let t = Topology::create().unwrap();
    let _server = server(&t, &["sockperf", "server", "-i", demo::PEER_ADDR, "-p", "11111"]);
    // sockperf's own output is also kept (tee), to hold netprobe's reading
    // of it against what sockperf printed.
    let own = Scratch::new("sockperf.txt");
    let rec = record_teed(&t, &format!("sockperf ping-pong -i {} -p 11111 -t 3", demo::PEER_ADDR), &own);
    let r = rec.finish();
    let wrong = netprobe_tests::impossible_pairs(&r);
    assert!(wrong.is_empty(), "hop pairs no packet takes: {wrong:#?}\ntracking: {}", r["tracking"]);
    eprintln!(
        "restarted journeys: reused {}, impossible step {}, late {}, stale {}, evicted {}",
        r["tracking"]["track_reused"],
        r["tracking"]["track_impossible"],
        r["tracking"]["track_late"],
        r["tracking"]["track_stale"],
        r["tracking"]["track_evicted"]
    );

    let w = &r["workload"];
    assert_eq!(w["exit_status"], 0, "sockperf failed: {w}");
    let tx = w["transactions"].as_u64().expect("sockperf's transaction count");
    assert!(w["transactions_from"].as_str().unwrap().contains("sockperf"), "{w}");
    assert!(tx > 500, "only {tx} transactions in 3 s");
    // The same figures sockperf printed: ReceivedMessages, and its
    // percentiles (us, 3 decimals) as ns.
    let printed = std::fs::read_to_string(own.path()).unwrap();
    let field = |line_has: &str, after: &str| -> f64 {
        let line = printed.lines().find(|l| l.contains(line_has)).unwrap_or_else(|| panic!("{line_has}: {printed}"));
        let v = line.split(after).nth(1).unwrap().trim();
        v.split(|c: char| c == ';' || c.is_whitespace()).next().unwrap().parse().unwrap()
    };
    assert_eq!(tx as f64, field("[Total Run]", "ReceivedMessages="));
    let lat = &w["latency"];
    for (selector, key) in [("percentile 50.000", "p50_ns"), ("percentile 99.000", "p99_ns")] {
        let us = field(selector, "=");
        assert_eq!(lat[key].as_u64(), Some((us * 1000.0).round() as u64), "{key} vs sockperf's {us} us: {lat}");
    }
    assert_eq!(lat["round_trip"], false, "sockperf without --full-rtt reports RTT/2: {lat}");
    eprintln!("sockperf: netprobe read {tx} transactions, latency {lat}");
    // The host's share: both directions' medians summed, next to
    // sockperf's round trip (its RTT/2 p50 doubled), marked an estimate.
    let share = &r["host_share"];
    eprintln!("host's share: {share}");
    assert!(share["note"].as_str().unwrap().contains("estimate"), "{share}");
    assert_eq!(share["workload_round_trip_ns"], lat["p50_ns"].as_u64().unwrap() * 2, "{share}");
    assert_eq!(share["paths"].as_array().unwrap().len(), 2, "both directions: {share}");
    let host = share["host_p50_sum_ns"].as_u64().unwrap();
    assert!(host > 0 && share["share"].as_f64().unwrap() > 0.0, "{share}");
    // Every transaction is a request toward the wire and a reply toward
    // the guest, each measured hop by hop.
    let (m, u) = (&t.macvtap, &t.uplink);
    let req = pair(&r, "to-wire", &format!("queue@{m}"), &format!("xmit@{m}"));
    assert!(req["packets"].as_u64().unwrap() >= tx, "{req} for {tx} transactions");
    let reply = pair(&r, "to-guest", &format!("receive@{u}"), &format!("copy_out@{m}"));
    assert!(reply["p50_ns"].as_u64().unwrap() > 0);
    let replies: u64 = pairs(&r, "to-guest")
        .iter()
        .filter(|(_, to, _)| *to == format!("copy_out@{m}"))
        .map(|(_, _, p)| p["packets"].as_u64().unwrap())
        .sum();
    eprintln!("sockperf: {tx} transactions, {replies} replies measured into the tap queue; {}", r["tracking"]);
    assert!(replies >= tx, "{replies} replies measured for {tx} transactions: {:#}", r["directions"]);

    // CPU by role: sockperf itself, the guest stand-in moving its frames
    // through /dev/tapN, and the softirqs.
    let cpu = &r["cpu"];
    assert!(role_ns(&r, "workload") > 0, "no CPU for the workload: {cpu}");
    assert!(role_ns(&r, "guest") > 0, "no CPU for the guest stand-in: {cpu}");
    // Softirq time by default from /proc/stat (all vectors, no program).
    assert_eq!(cpu["softirq_source"], "/proc/stat: all vectors");
    assert_eq!(cpu["softirq_net_rx_ns"], 0, "no NET_RX program without --softirq-vectors");
    let softirq = cpu["softirq_ns"].as_u64().unwrap();
    assert!(softirq > 0, "{cpu}");
    assert_eq!(cpu["transactions"], tx);
    let per_tx = &cpu["per_transaction_ns"];
    let softirq_per_tx = per_tx["softirq"].as_f64().unwrap();
    assert!((softirq_per_tx - softirq as f64 / tx as f64).abs() < 1.0, "{per_tx}");
    assert!(per_tx["workload"].as_f64().unwrap() > 0.0 && per_tx["guest"].as_f64().unwrap() > 0.0, "{per_tx}");
    // Per packet is per transaction spread over (at least) two packets.
    assert!(cpu["per_packet_ns"]["softirq"].as_f64().unwrap() * 1.9 <= softirq_per_tx, "{cpu}");
    assert_series_covers(&r, 3.0);
}

#[test]
fn iperf3_stream_by_pid_and_the_series_spans_it() {
    if !require_root("iperf3_stream_by_pid_and_the_series_spans_it") {
        return;
    }
    let t = Topology::create().unwrap();
    let _server = server(&t, &["iperf3", "-s", "-B", demo::PEER_ADDR]);
    // A benchmark already running: netprobe follows it by PID and stops
    // when it exits. (It waits for a line on stdin to start its 3 s run,
    // so attaching, slow on a loaded machine, takes none of it.)
    let mut client = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "read go; exec ip netns exec {} iperf3 -c {} -t 3 -l 1400 >/dev/null",
            t.guest_ns,
            demo::PEER_ADDR
        ))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let ifaces = t.ifaces();
    let rec = RunningRecord::start(&["--pid", &client.id().to_string(), "--iface", &ifaces[0], "--iface", &ifaces[1]]);
    std::io::Write::write_all(client.stdin.as_mut().unwrap(), b"go\n").unwrap();
    let r = rec.finish();
    assert!(client.wait().unwrap().success());
    assert_eq!(r["interrupted"], false);
    let w = &r["workload"];
    assert!(w["command"].to_string().contains("iperf3"), "{w}");
    assert!(w["tgids"].as_array().unwrap().iter().any(|p| p.as_u64() == Some(u64::from(client.id()))), "{w}");
    // Ended by the client's exit, soon after its 3 s run (connecting and
    // ending take a moment more on a loaded machine; a recording that did
    // not end with it would run on to Ctrl-C).
    let secs = r["duration_s"].as_f64().unwrap();
    assert!((2.9..6.0).contains(&secs), "recorded {secs} s of a 3 s run");
    assert!(role_ns(&r, "workload") > 10_000_000, "iperf3 used no CPU? {}", r["cpu"]);
    assert!(role_ns(&r, "guest") > 0, "{}", r["cpu"]);
    assert!(r["cpu"]["per_packet_ns"]["softirq"].as_f64().unwrap() > 0.0);
    assert!(r["cpu"]["transactions"].is_null(), "a stream has no transactions");
    assert_series_covers(&r, secs.floor());
}

/// iperf3 run with -J: the throughput and byte count netprobe reports
/// are those of iperf3's own JSON report.
#[test]
fn iperf3_json_throughput_is_read() {
    if !require_root("iperf3_json_throughput_is_read") {
        return;
    }
    let t = Topology::create().unwrap();
    let _server = server(&t, &["iperf3", "-s", "-B", demo::PEER_ADDR]);
    let own = Scratch::new("iperf3.json");
    let rec = record_teed(&t, &format!("iperf3 -c {} -t 2 -J", demo::PEER_ADDR), &own);
    let r = rec.finish();
    let json: Value = serde_json::from_str(&std::fs::read_to_string(own.path()).unwrap()).unwrap();
    let received = &json["end"]["sum_received"];
    let tp = &r["workload"]["throughput"];
    eprintln!("iperf3 -J end.sum_received: {received}; netprobe: {tp}");
    assert!(received["bytes"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(tp["bytes"], received["bytes"], "{tp}");
    assert_eq!(tp["bytes_sent"], json["end"]["sum_sent"]["bytes"], "{tp}");
    assert_eq!(tp["bits_per_second"].as_f64(), received["bits_per_second"].as_f64(), "{tp}");
    assert!(r["workload"]["transactions"].is_null() && r["workload"]["notes"] == serde_json::json!([]));
    // The stream went through the measured path.
    let m = &t.macvtap;
    assert!(pair(&r, "to-wire", &format!("queue@{m}"), &format!("xmit@{m}"))["packets"].as_u64().unwrap() > 100);
}

#[test]
fn cgroup_processes_are_the_workload() {
    if !require_root("cgroup_processes_are_the_workload") {
        return;
    }
    // A cgroup of our own (v2, or the v1 cpu hierarchy on hybrid hosts).
    let base = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup"]
        .iter()
        .find(|b| std::path::Path::new(b).join("cgroup.procs").exists())
        .expect("a cgroup hierarchy");
    let dir = std::path::Path::new(base).join(format!("netprobe-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let procs = dir.join("cgroup.procs");
    // A busy process that moves itself into the cgroup (at most 30 s;
    // stopped, and the cgroup removed, as soon as the recording is done).
    let mut busy = Command::new("sh")
        .arg("-c")
        .arg(format!("echo $$ > {}; exec timeout 30 sh -c 'while :; do :; done'", procs.display()))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let rec = RunningRecord::start(&["--cgroup", dir.to_str().unwrap(), "--duration", "1500ms"]);
    let r = rec.finish();
    // SAFETY: kill on our own child's pid (timeout passes SIGTERM on).
    unsafe { libc::kill(busy.id() as i32, libc::SIGTERM) };
    let _ = busy.wait();
    for _ in 0..50 {
        if std::fs::remove_dir(&dir).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(r["workload"]["cgroup"], dir.to_str().unwrap());
    let ns = role_ns(&r, "workload");
    assert!(ns > 500_000_000, "a busy loop in the cgroup for 1.5 s got {ns} ns: {}", r["cpu"]);
}

#[test]
fn flow_filter_in_the_kernel_excludes_the_other_flows() {
    if !require_root("flow_filter_in_the_kernel_excludes_the_other_flows") {
        return;
    }
    let t = Topology::create().unwrap();
    let ifaces = t.ifaces();
    let rec =
        RunningRecord::start(&["--filter", "udp and dst port 5001", "--iface", &ifaces[0], "--iface", &ifaces[1]]);
    // Two flows at once, and pings: only the first flow is followed.
    let t2 = std::sync::Arc::new(t);
    let other = {
        let t = t2.clone();
        std::thread::spawn(move || t.udp_burst(demo::PEER_ADDR, 5002, 300, Duration::from_millis(1)).unwrap())
    };
    t2.udp_burst(demo::PEER_ADDR, 5001, 100, Duration::from_millis(2)).unwrap();
    assert_eq!(t2.ping(10, "0.02").unwrap(), 10);
    other.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = rec.interrupt();

    assert_eq!(r["filter"], "udp and dst port 5001");
    let m = &t2.macvtap;
    let followed = pair(&r, "to-wire", &format!("queue@{m}"), &format!("xmit@{m}"))["packets"].as_u64().unwrap();
    assert!((100..=102).contains(&followed), "{followed} packets followed; 100 match the filter, 310 do not");
    // Nothing toward the guest matches (ICMP replies and port unreachables).
    let back: u64 = pairs(&r, "to-guest").iter().map(|(_, _, p)| p["packets"].as_u64().unwrap()).sum();
    assert_eq!(back, 0, "to-guest traffic passed the filter: {:#}", r["directions"]);
    assert!(r["tracking"]["flow_excluded"].as_u64().unwrap() >= 300, "{}", r["tracking"]);
}

#[test]
fn malformed_filter_is_a_clear_error_before_attaching() {
    let out = Command::new(netprobe_tests::netprobe_bin())
        .args(["record", "--duration", "1s", "--filter", "udp and dst prot 53"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected host, net or port after dst"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = Command::new(netprobe_tests::netprobe_bin()).args(["record", "--pid", "4000000000"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no such process"), "{err}");
}

/// A real QEMU (software emulation, paused at reset) with a tap device in
/// a namespace of its own; killed and the namespace deleted when dropped.
struct Qemu {
    child: Child,
    ns: String,
}

impl Qemu {
    fn start(name: &str, tap: &str) -> Qemu {
        let ns = format!("npq{}-{tap}", std::process::id());
        assert!(Command::new("ip").args(["netns", "add", &ns]).status().unwrap().success());
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "qemu-system-x86_64", "-name"])
            .arg(format!("guest={name},debug-threads=on"))
            .args(["-machine", "pc", "-accel", "tcg", "-m", "64", "-display", "none", "-nodefaults", "-S"])
            .args(["-netdev", &format!("tap,id=n0,ifname={tap},script=no,downscript=no")])
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 (Debian's qemu-system-x86)");
        let q = Qemu { child, ns };
        for _ in 0..100 {
            let up = Command::new("ip").args(["-n", &q.ns, "link", "show", tap]).output().unwrap();
            if up.status.success() {
                return q;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("QEMU did not open its tap device {tap}");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn qemu_guests_are_found_by_name_and_a_killed_one_is_reported_gone() {
    if !require_root("qemu_guests_are_found_by_name_and_a_killed_one_is_reported_gone") {
        return;
    }
    let mut q = Qemu::start("np-test-guest", "npqtap0");
    let rec = RunningRecord::start(&["--duration", "4s"]);
    std::thread::sleep(Duration::from_millis(1500));
    q.kill(); // the guest goes away mid-run; the recording goes on
    let r = rec.finish();
    assert_eq!(r["interrupted"], false);
    let guests = r["guests"].as_array().unwrap();
    let g =
        guests.iter().find(|g| g["name"] == "np-test-guest").unwrap_or_else(|| panic!("guest not found: {guests:#?}"));
    assert_eq!(g["pid"].as_u64(), Some(u64::from(q.child.id())), "{g}");
    assert!(!g["vcpu_tids"].as_array().unwrap().is_empty(), "no vCPU thread (CPU 0/TCG): {g}");
    assert_eq!(g["devices"], serde_json::json!(["npqtap0"]), "{g}");
    let gone = g["gone_after_s"].as_f64().expect("the killed guest is reported gone");
    assert!((0.5..4.0).contains(&gone), "gone after {gone} s");
    assert!(r["duration_s"].as_f64().unwrap() >= 3.9, "the recording went on after the guest died");
}

/// The recording's host configuration has each guest's vCPUs and where
/// their threads may run: a QEMU guest whose vCPU thread is pinned.
#[test]
fn guest_vcpu_pinning_is_in_the_configuration() {
    if !require_root("guest_vcpu_pinning_is_in_the_configuration") {
        return;
    }
    let q = Qemu::start("np-pinned-guest", "npqtap1");
    let pid = q.child.id();
    // QEMU's vCPU thread (`CPU 0/TCG`), pinned to CPU 0 as libvirt's
    // <vcpupin> would.
    let mut vcpu = None;
    for _ in 0..50 {
        vcpu = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten().find_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            comm.starts_with("CPU 0/").then(|| t.file_name().to_string_lossy().into_owned())
        });
        if vcpu.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let tid = vcpu.expect("QEMU's vCPU thread");
    assert!(Command::new("taskset").args(["-p", "-c", "0", &tid]).output().unwrap().status.success());
    let r = RunningRecord::start(&["--duration", "1500ms"]).finish();
    let guests = r["config"]["guests"].as_array().unwrap_or_else(|| panic!("{:#}", r["config"]));
    let g = guests.iter().find(|g| g["name"] == "np-pinned-guest").unwrap_or_else(|| panic!("{guests:#?}"));
    assert_eq!(g["pid"].as_u64(), Some(u64::from(pid)), "{g}");
    assert_eq!(g["vcpus"], 1, "{g}");
    assert_eq!(g["vcpu_affinity"], serde_json::json!(["0"]), "{g}");
}

/// Packet identity's header fingerprint checked at every hop (a gap of
/// 1 ns): sockperf's UDP ping-pong, then an iperf3 TCP stream and a ping
/// through the demo MacVTap path. A hop that rewrote a fingerprinted field
/// (IP ID, TCP sequence, ICMP sequence, UDP length or payload) would
/// restart its packets as `track_fingerprint`; none may, and no hop pair
/// may fall outside the path's steps.
#[test]
fn header_fingerprints_hold_along_the_path_when_checked_at_every_hop() {
    if !require_root("header_fingerprints_hold_along_the_path_when_checked_at_every_hop") {
        return;
    }
    let t = Topology::create().unwrap();
    let _sockperf = server(&t, &["sockperf", "server", "-i", demo::PEER_ADDR, "-p", "11112"]);
    let _iperf = server(&t, &["iperf3", "-s", "-B", demo::PEER_ADDR, "-p", "5299"]);
    let ifaces = t.ifaces();
    let script = format!(
        "ip netns exec {g} sockperf ping-pong -i {p} -p 11112 -t 2 >/dev/null && \
         ip netns exec {g} iperf3 -c {p} -p 5299 -t 2 >/dev/null && \
         ip netns exec {g} ping -c 20 -i 0.02 -q {p} >/dev/null",
        g = t.guest_ns,
        p = demo::PEER_ADDR
    );
    let rec = RunningRecord::start(&[
        "--fingerprint-gap",
        "0.001us",
        "--iface",
        &ifaces[0],
        "--iface",
        &ifaces[1],
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let r = rec.finish();
    assert_eq!(r["workload"]["exit_status"], 0, "the traffic failed: {}", r["workload"]);
    let tr = &r["tracking"];
    eprintln!("tracking with every hop's fingerprint checked: {tr}");
    let started = tr["track_started"].as_u64().unwrap();
    assert!(started > 20_000, "only {started} packets followed");
    assert_eq!(tr["track_fingerprint"], 0, "fingerprints changed along the path: {tr}");
    let wrong = netprobe_tests::impossible_pairs(&r);
    assert!(wrong.is_empty(), "hop pairs no packet takes: {wrong:#?}\ntracking: {tr}");
}
