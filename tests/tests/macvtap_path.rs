//! The MacVTap path end to end: the demo topology's real devices, real
//! traffic, the real netprobe binary and BPF programs in the running kernel.

use std::{process::Command, time::Duration};

use netprobe_testbed::topology::{self as demo, Topology};
use netprobe_tests::{pair, require_root, RunningRecord};
use serde_json::Value;

fn assert_plausible(p: &Value, min_packets: u64, what: &str) {
    let n = p["packets"].as_u64().unwrap();
    assert!(n >= min_packets, "{what}: {n} packets, expected at least {min_packets}");
    let (p50, max) = (p["p50_ns"].as_u64().unwrap(), p["max_ns"].as_u64().unwrap());
    assert!(p50 > 0, "{what}: zero median latency");
    assert!(max < 1_000_000_000, "{what}: max latency {max} ns is not plausible");
    assert!(p["p99_ns"].as_u64().unwrap() <= max && p50 <= p["p99_ns"].as_u64().unwrap());
}

/// The generic-stack tracepoint hops, present on every kernel.
fn generic_tracepoints(r: &Value) -> Vec<&Value> {
    r["coverage"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["path"] == "generic" && c["site"].as_str().unwrap().starts_with("tracepoint"))
        .collect()
}

#[test]
fn macvtap_hops_in_both_directions_and_a_blackhole_drop() {
    if !require_root("macvtap_hops_in_both_directions_and_a_blackhole_drop") {
        return;
    }
    let t = Topology::create().unwrap();
    let (m, u, p) = (t.macvtap.clone(), t.uplink.clone(), t.peer_dev.clone());
    let ifaces = t.ifaces();
    // Softirqs timed by vector here (the default reads /proc/stat, whose
    // tick-sampled figure a few dozen packets may not reach).
    let rec = RunningRecord::start(&["--iface", &ifaces[0], "--iface", &ifaces[1], "--softirq-vectors"]);

    assert_eq!(t.ping(20, "0.02").unwrap(), 20, "ping through the demo topology failed");
    t.udp_burst(demo::BLACKHOLE_ADDR, 9, 50, Duration::from_millis(1)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = rec.interrupt();

    assert_eq!(r["interrupted"], true, "SIGINT should end the recording early, with its result");
    for c in generic_tracepoints(&r) {
        assert!(!c["backend"].is_null(), "hop {} not attached: {}", c["hop"], c["notes"]);
    }
    // Every other catalog hop says why it is not observed.
    for c in r["coverage"].as_array().unwrap() {
        assert!(!c["backend"].is_null() || !c["notes"].as_array().unwrap().is_empty(), "{c}");
    }
    let wrong = netprobe_tests::impossible_pairs(&r);
    assert!(wrong.is_empty(), "hop pairs no packet takes: {wrong:#?}");
    // Guest -> wire: 20 echo requests + 50 datagrams (plus ARP) leave by the macvtap.
    for (from, to) in [
        (format!("queue@{m}"), format!("xmit@{m}")),
        (format!("xmit@{m}"), format!("queue@{u}")),
        (format!("queue@{u}"), format!("xmit@{u}")),
        (format!("xmit@{u}"), format!("netif_rx@{p}")),
    ] {
        assert_plausible(pair(&r, "to-wire", &from, &to), 70, &format!("to-wire {from} -> {to}"));
    }
    // Wire -> guest: 20 echo replies come in on the uplink, wait in the
    // macvtap's tap queue until the guest stand-in reads them.
    for (from, to) in [
        (format!("netif_rx@{u}"), format!("receive@{u}")),
        (format!("receive@{u}"), format!("copy_out@{m}")),
        (format!("copy_out@{m}"), "consumed".to_owned()),
    ] {
        assert_plausible(pair(&r, "to-guest", &from, &to), 20, &format!("to-guest {from} -> {to}"));
    }
    // The 50 blackholed datagrams are dropped in the peer's input path,
    // with a named drop reason.
    let drops = r["drops"].as_array().unwrap();
    let at_peer: u64 = drops
        .iter()
        .filter(|d| d["direction"] == "to-wire" && d["last_dev"] == p.as_str() && d["last_hop"] == "receive")
        .map(|d| d["packets"].as_u64().unwrap())
        .sum();
    assert!(at_peer >= 50, "expected >= 50 drops after receive@{p}, got {at_peer}: {drops:#?}");
    assert!(
        drops.iter().all(|d| !d["reason"].as_str().unwrap().starts_with("reason ")),
        "drop reasons should be named: {drops:#?}"
    );
    // The interval series adds up to the whole recording.
    let total = pair(&r, "to-wire", &format!("queue@{m}"), &format!("xmit@{m}"))["packets"].as_u64().unwrap();
    let in_series: u64 = r["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|iv| iv["pairs"].as_array().unwrap())
        .filter(|p| p["direction"] == "to-wire" && p["from"] == format!("queue@{m}") && p["to"] == format!("xmit@{m}"))
        .map(|p| p["packets"].as_u64().unwrap())
        .sum();
    assert!(in_series <= total && in_series + 5 >= total, "series {in_series} vs total {total}");
    // One interval per whole second of the run, and the last one ends it.
    let ivs = r["intervals"].as_array().unwrap();
    let secs = r["duration_s"].as_f64().unwrap();
    let last = ivs.last().unwrap()["t_s"].as_f64().unwrap();
    assert!(
        ivs.len() as f64 >= secs.floor().max(1.0) && (last - secs).abs() < 0.5,
        "{} intervals up to {last} s for a {secs} s run",
        ivs.len()
    );
    // CPU: the softirq that received the packets, and the guest stand-in
    // (the relay threads of this test process) that moved them.
    let cpu = &r["cpu"];
    assert!(cpu["softirq_net_rx_ns"].as_u64().unwrap() > 0, "{cpu}");
    assert_eq!(cpu["softirq_source"], "bpf: NET_RX+NET_TX");
    assert_eq!(
        cpu["softirq_ns"].as_u64().unwrap(),
        cpu["softirq_net_rx_ns"].as_u64().unwrap() + cpu["softirq_net_tx_ns"].as_u64().unwrap()
    );
    // By role, not from the thread list, which keeps only the 20 busiest
    // threads (a busy machine's builds can push the relay out of it).
    let standin = cpu["by_role_ns"]["guest"].as_u64().unwrap_or(0);
    assert!(standin > 0, "no CPU attributed to the guest stand-in (its threads are named guest-relay-*): {cpu}");
    assert_eq!(r["tracking"]["pair_lost"], 0);
    assert_eq!(r["tracking"]["track_evicted"], 0);

    drop(t);
    let left = netprobe_tests::netprobe_programs();
    assert!(left.is_empty(), "netprobe programs still loaded after exit: {left:?}");
}

fn backend_measures_the_macvtap_path(backend: &str) {
    let t = Topology::create().unwrap();
    let ifaces = t.ifaces();
    let rec = RunningRecord::start(&["--backend", backend, "--iface", &ifaces[0], "--iface", &ifaces[1]]);
    assert_eq!(t.ping(10, "0.02").unwrap(), 10);
    std::thread::sleep(Duration::from_millis(200));
    let r = rec.interrupt();
    for c in generic_tracepoints(&r) {
        assert_eq!(c["backend"], backend, "hop {}: {}", c["hop"], c["notes"]);
    }
    // Classic tracepoints name devices but cannot tell their kind across
    // namespaces, so look in either direction.
    let (from, to) = (format!("queue@{}", t.macvtap), format!("xmit@{}", t.macvtap));
    let found = ["to-wire", "to-guest"]
        .iter()
        .flat_map(|d| netprobe_tests::pairs(&r, d))
        .find(|(f, tt, _)| *f == from && *tt == to)
        .map(|(_, _, p)| p.clone())
        .unwrap_or_else(|| panic!("{backend}: no pair {from} -> {to} in {r:#}"));
    assert_plausible(&found, 10, &format!("{backend}: {from} -> {to}"));
}

#[test]
fn raw_tp_backend_measures_the_macvtap_path() {
    if require_root("raw_tp_backend_measures_the_macvtap_path") {
        backend_measures_the_macvtap_path("raw_tp");
    }
}

#[test]
fn classic_tracepoint_backend_measures_the_macvtap_path() {
    if require_root("classic_tracepoint_backend_measures_the_macvtap_path") {
        backend_measures_the_macvtap_path("tracepoint");
    }
}

#[test]
fn hops_attaches_only_the_hops_named() {
    if !require_root("hops_attaches_only_the_hops_named") {
        return;
    }
    let t = Topology::create().unwrap();
    let ifaces = t.ifaces();
    let chosen = ["queue", "xmit", "consumed"];
    let rec = RunningRecord::start(&["--hops", &chosen.join(","), "--iface", &ifaces[0], "--iface", &ifaces[1]]);
    let programs = netprobe_tests::netprobe_programs_of(rec.pid());
    assert_eq!(t.ping(10, "0.02").unwrap(), 10);
    std::thread::sleep(Duration::from_millis(200));
    let r = rec.interrupt();
    for c in r["coverage"].as_array().unwrap() {
        let hop = c["hop"].as_str().unwrap();
        if chosen.contains(&hop) {
            assert!(!c["backend"].is_null(), "{hop} was asked for: {c}");
        } else {
            assert!(c["backend"].is_null(), "{hop} was not asked for: {c}");
            assert_eq!(c["notes"], serde_json::json!(["left out by --hops"]), "{c}");
        }
    }
    // Only the three hops' programs (and the CPU accounting's) ran.
    let hop_programs = programs.iter().filter(|p| !p.contains("sched") && !p.contains("softirq")).count();
    assert_eq!(hop_programs, chosen.len(), "{programs:?}");
    let mut seen = 0;
    for d in ["to-wire", "to-guest"] {
        for (from, to, p) in netprobe_tests::pairs(&r, d) {
            for end in [&from, &to] {
                let label = end.split('@').next().unwrap();
                assert!(chosen.contains(&label), "{d} {from} -> {to} crosses a hop left out");
            }
            seen += p["packets"].as_u64().unwrap();
        }
    }
    let (m, u) = (&t.macvtap, &t.uplink);
    assert_plausible(pair(&r, "to-wire", &format!("queue@{m}"), &format!("xmit@{m}")), 10, "queue -> xmit");
    assert_plausible(pair(&r, "to-wire", &format!("xmit@{m}"), &format!("queue@{u}")), 10, "xmit -> queue");
    assert!(seen >= 30, "{seen} packets measured between the chosen hops");
}

#[test]
fn hops_with_an_unknown_label_is_a_clear_error() {
    for (arg, says) in [("queue,xmitt", "no hop is called \"xmitt\""), ("consumed", "starts following a packet")] {
        let out = Command::new(netprobe_tests::netprobe_bin())
            .args(["record", "--duration", "1s", "--hops", arg])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says) && !err.contains("panicked"), "--hops {arg}: {err}");
    }
}

#[test]
fn unknown_interface_is_a_clear_error() {
    let out = Command::new(netprobe_tests::netprobe_bin())
        .args(["record", "--duration", "1s", "--iface", "nosuchif0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no network interface nosuchif0"), "unclear error: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `demo --vhost` where there is no /dev/vhost-net (this development
/// kernel has no vhost_net; the lab's Debian kernel has, see lab.rs) says
/// how to get it, and on another topology that it is macvtap only; both
/// before any namespace is made.
#[test]
fn demo_vhost_without_vhost_net_or_on_another_topology_is_a_clear_error() {
    let run = |args: &[&str]| {
        let out = Command::new(netprobe_tests::netprobe_bin()).args(args).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    let err = run(&["demo", "--vhost", "--topology", "bridge"]);
    assert!(err.contains("macvtap topology only"), "unclear error: {err}");
    if !std::path::Path::new("/dev/vhost-net").exists() {
        let err = run(&["demo", "--vhost"]);
        assert!(err.contains("/dev/vhost-net") && err.contains("modprobe vhost_net"), "unclear error: {err}");
    }
}

#[test]
fn probes_lists_every_catalog_hop_with_a_backend_or_a_reason() {
    if !require_root("probes_lists_every_catalog_hop_with_a_backend_or_a_reason") {
        return;
    }
    let out = Command::new(netprobe_tests::netprobe_bin()).args(["probes", "--format", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hops = v["hops"].as_array().unwrap();
    assert_eq!(hops.len(), netprobe::probe::catalog::HOPS.len());
    for h in hops {
        let notes = h["notes"].as_array().unwrap();
        assert!(!h["backend"].is_null() || !notes.is_empty(), "hop without backend or reason: {h}");
    }
    // This kernel's refusals are reported as such (see ../shared/datapath.md):
    // where fentry is refused and kprobes are absent, function hops say so.
    let facts = netprobe::probe::facts::KernelFacts::live().unwrap();
    let tap = hops.iter().find(|h| h["hop"] == "tap_enqueue").unwrap();
    let notes = tap["notes"].to_string();
    if !facts.kprobes {
        assert!(notes.contains("no kprobes"), "{notes}");
    }
    if tap["backend"].is_null() && facts.btf {
        assert!(notes.contains("fentry"), "{notes}");
    }
    let left = netprobe_tests::netprobe_programs();
    assert!(left.is_empty(), "programs left after probes: {left:?}");
}

#[test]
fn compare_macvtap_and_bridge_recordings_side_by_side() {
    if !require_root("compare_macvtap_and_bridge_recordings_side_by_side") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("netprobe-cmp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for topo in ["macvtap", "bridge"] {
        let out = Command::new(netprobe_tests::netprobe_bin())
            .args(["demo", "--topology", topo, "--format", "json", "-o"])
            .arg(dir.join(format!("{topo}.rec")))
            .output()
            .unwrap();
        assert!(out.status.success(), "{topo}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = Command::new(netprobe_tests::netprobe_bin())
        .args(["compare", "--format", "json"])
        .arg(dir.join("macvtap.rec"))
        .arg(dir.join("bridge.rec"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = c["rows"].as_array().unwrap();
    let find = |dir: &str, stage: &str, from: &str, to: &str| {
        rows.iter().find(|r| r["direction"] == dir && r["stage"] == stage && r["from_hop"] == from && r["to_hop"] == to)
    };
    // The uplink veth's transmit exists in both configurations: both sides
    // and a difference.
    let both = find("to-wire", "uplink", "xmit", "netif_rx").expect("uplink xmit -> netif_rx in both");
    assert!(both["a"]["packets"].as_u64().unwrap() > 0 && both["b"]["packets"].as_u64().unwrap() > 0, "{both}");
    assert!(both["p50_diff_ns"].is_i64());
    // macvtap hands off straight to the uplink; the bridge forwards from the
    // tap's receive: each configuration's own hops, kept with their stage
    // (the other side has none, or a stray packet).
    let pkts = |r: &Value, side: &str| r[side]["packets"].as_u64().unwrap_or(0);
    let own_a = find("to-wire", "uplink", "xmit", "queue").expect("macvtap's xmit -> queue");
    assert!(pkts(own_a, "a") >= 100 && pkts(own_a, "b") * 100 < pkts(own_a, "a"), "{own_a}");
    let own_b = find("to-wire", "uplink", "receive", "queue").expect("the bridge's receive -> queue");
    assert!(pkts(own_b, "b") >= 100 && pkts(own_b, "a") * 100 < pkts(own_b, "b"), "{own_b}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--sample 4`: about one packet in four is followed, each from its first
/// hop (the decision is the same at every hop where tracking could start,
/// so no journey begins mid-path), and the report scales its counts by 4
/// and says so.
#[test]
fn sample_follows_one_packet_in_n_and_scales_the_counts() {
    if !require_root("sample_follows_one_packet_in_n_and_scales_the_counts") {
        return;
    }
    let t = Topology::create().unwrap();
    let (m, u) = (t.macvtap.clone(), t.uplink.clone());
    let ifaces = t.ifaces();
    let rec = RunningRecord::start(&["--iface", &ifaces[0], "--iface", &ifaces[1], "--sample", "4"]);
    // 2000 datagrams, blackholed at the peer: one journey each, no reply.
    let sent = 2000;
    t.udp_burst(demo::BLACKHOLE_ADDR, 9, sent, Duration::from_micros(200)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = rec.interrupt();

    assert_eq!(r["sampled_one_in"], 4, "the report must say it is sampled");
    let followed = r["tracking"]["track_started"].as_u64().unwrap();
    assert!(
        (350..=650).contains(&followed),
        "{followed} packets followed of {sent} sent at --sample 4 (expected about 500)"
    );
    // Scaled counts: the guest's first pair and the uplink's carry about
    // what was sent; the uplink, later on the path, no more than the first.
    let first = pair(&r, "to-wire", &format!("queue@{m}"), &format!("xmit@{m}"))["packets"].as_u64().unwrap();
    let later = pair(&r, "to-wire", &format!("queue@{u}"), &format!("xmit@{u}"))["packets"].as_u64().unwrap();
    assert!((1400..=2600).contains(&first), "queue -> xmit at the macvtap: {first} (scaled) of {sent} sent");
    assert!(
        later <= first + 8,
        "a later pair has more packets ({later}) than the first ({first}): journeys began mid-path"
    );
    assert_eq!(first % 4, 0, "scaled counts are multiples of 4");
    let wrong = netprobe_tests::impossible_pairs(&r);
    assert!(wrong.is_empty(), "hop pairs no packet takes: {wrong:#?}");
    // Sampling attaches every hop with the backend an unsampled run gets:
    // the verifier once refused the sample's hash in tp_btf programs, and
    // every device hop fell back to a costlier raw_tp.
    let out = Command::new(netprobe_tests::netprobe_bin()).args(["probes", "--format", "json"]).output().unwrap();
    assert!(out.status.success(), "netprobe probes: {}", String::from_utf8_lossy(&out.stderr));
    let probes: Value = serde_json::from_slice(&out.stdout).unwrap();
    let unsampled: std::collections::BTreeMap<String, Value> = probes["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (format!("{}/{}", h["path"], h["hop"]), h["backend"].clone()))
        .collect();
    for c in r["coverage"].as_array().unwrap() {
        let key = format!("{}/{}", c["path"], c["hop"]);
        assert_eq!(
            Some(&c["backend"]),
            unsampled.get(&key),
            "{key} attached with another backend under --sample 4: {:?}",
            c["notes"]
        );
    }
}

/// `--sample 8` between two full runs on the same steady traffic (UDP
/// paced at 4 kpps through the MacVTap path): per hop pair, the sample's
/// p50 and p90 against the full runs' mean. A sample that leaned toward
/// some packets (the first of a batch, one skb address, a recycled
/// buffer), or a measure that changed with sampling, would move them
/// all: before hops were measured from the end of netprobe's own work,
/// the sample's pairs came out up to 2.6 times the full runs'. The
/// median over pairs is what is asserted, since one pair's latency can
/// flip between two levels from run to run on this VM (the guest side's
/// queue -> xmit: 280, 392 or 720 ns at p50, in full runs alike).
/// (Two recordings at once would share the packets but not the cost:
/// each one's gaps include the other's programs, which differ by hop.)
#[test]
fn sampled_percentiles_match_full_runs_on_a_steady_load() {
    if !require_root("sampled_percentiles_match_full_runs_on_a_steady_load") {
        return;
    }
    let t = Topology::create().unwrap();
    let ifaces = t.ifaces();
    let run = |extra: &[&str]| {
        let mut args = vec!["--iface", &ifaces[0], "--iface", &ifaces[1]];
        args.extend_from_slice(extra);
        let rec = RunningRecord::start(&args);
        t.udp_burst(demo::BLACKHOLE_ADDR, 9, 4000, Duration::from_micros(250)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        rec.interrupt()
    };
    let full1 = run(&[]);
    let s = run(&["--sample", "8"]);
    let full2 = run(&[]);
    assert_eq!(s["sampled_one_in"], 8);
    let ns = |v: &Value, k: &str| v[k].as_f64().unwrap();
    let mut ratios = Vec::new();
    for (from, to, a) in netprobe_tests::pairs(&full1, "to-wire") {
        if a["packets"].as_u64().unwrap() < 3000 {
            continue;
        }
        let b = pair(&full2, "to-wire", &from, &to);
        let sp = pair(&s, "to-wire", &from, &to);
        for k in ["p50_ns", "p90_ns"] {
            let r = ns(sp, k) / ((ns(a, k) + ns(b, k)) / 2.0);
            eprintln!(
                "{from} -> {to}: {k} sampled {} ns, full runs {} and {} ns: {r:.2}",
                ns(sp, k),
                ns(a, k),
                ns(b, k)
            );
            // Only gross errors per pair: one pair's level can flip
            // between runs (280 or 720 ns), which the median absorbs.
            assert!((0.25..=4.0).contains(&r), "{from} -> {to}: sampled {k} {r:.2} times the full runs'");
            ratios.push(r);
        }
    }
    assert!(
        ratios.len() >= 8,
        "only {} to-wire pairs carried 3000 packets: {:#}",
        ratios.len() / 2,
        full1["directions"]
    );
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    // Measured on this VM: about 1.16 (some +16% remains with sampling:
    // README, "Sampling"); the old measure gave medians 1.40 and 1.59.
    assert!(
        (0.8..=1.35).contains(&median),
        "sampled percentiles are {median:.2} times the full runs' (median over pairs): {ratios:.2?}"
    );
}
