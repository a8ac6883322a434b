//! `--drop-stacks`: packets dropped on purpose in network namespaces this
//! test makes (a blackhole route, a netfilter DROP rule, a tc action that
//! fails, a full qdisc), with real traffic, the real netprobe binary and
//! its BPF programs in the running kernel. Each drop must come with its
//! reason and a kernel stack naming the function that freed it.

use std::{net::UdpSocket, time::Duration};

use netprobe_testbed::{
    netns::{self, ip, sh},
    topology::{self as demo, Topology},
};
use netprobe_tests::{require_root, require_tool, RunningRecord};
use serde_json::Value;

/// Two namespaces joined by a veth pair (`va` in A, 198.18.N.1; `vb` in
/// B, 198.18.N.2), deleted (with their devices, rules and qdiscs) when
/// dropped, also when the test fails.
struct Pair {
    a: String,
    b: String,
}

impl Pair {
    fn create(tag: &str, subnet: u8) -> Pair {
        let id = std::process::id();
        let p = Pair { a: format!("npds-{tag}-a-{id}"), b: format!("npds-{tag}-b-{id}") };
        ip(&["netns", "add", &p.a]).unwrap();
        ip(&["netns", "add", &p.b]).unwrap();
        ip(&["-n", &p.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &p.b]).unwrap();
        ip(&["-n", &p.a, "addr", "add", &format!("198.18.{subnet}.1/24"), "dev", "va"]).unwrap();
        ip(&["-n", &p.b, "addr", "add", &format!("198.18.{subnet}.2/24"), "dev", "vb"]).unwrap();
        ip(&["-n", &p.a, "link", "set", "va", "up"]).unwrap();
        ip(&["-n", &p.b, "link", "set", "vb", "up"]).unwrap();
        p
    }

    /// `netprobe record` following the packets first seen on either end.
    fn record(&self) -> RunningRecord {
        RunningRecord::start(&[
            "--drop-stacks",
            "--iface",
            &format!("{}/va", self.a),
            "--iface",
            &format!("{}/vb", self.b),
        ])
    }

    fn in_ns(&self, ns: &str, args: &[&str]) {
        let mut a = vec!["netns", "exec", ns];
        a.extend_from_slice(args);
        sh("ip", &a).unwrap();
    }

    /// Sends `count` UDP datagrams of `size` bytes from A to `dst:port`.
    fn udp(&self, dst: &str, port: u16, count: u32, size: usize, gap: Duration) {
        let dst = format!("{dst}:{port}");
        netns::run_in(Some(&self.a), move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            let payload = vec![b'n'; size];
            for _ in 0..count {
                // A full queue may refuse a datagram (ENOBUFS): that is the point.
                let _ = s.send_to(&payload, &dst);
                std::thread::sleep(gap);
            }
        })
        .unwrap();
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// The report's drop stacks of `reason`: (packets, freed_by, frames root first).
fn stacks_of<'a>(r: &'a Value, reason: &str) -> Vec<(u64, &'a str, Vec<&'a str>)> {
    r["drop_stacks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|d| d["reason"] == reason)
        .map(|d| {
            let frames = d["stack"].as_str().unwrap().split(';').collect();
            (d["packets"].as_u64().unwrap(), d["freed_by"].as_str().unwrap(), frames)
        })
        .collect()
}

/// Asserts at least `min` drops of `reason`, all of them with a stack,
/// and the stack with the most of them naming `function`.
fn assert_stack(r: &Value, reason: &str, min: u64, function: &str) {
    let stacks = stacks_of(r, reason);
    let reasons: Vec<&Value> =
        r["drop_stacks"].as_array().map(|a| a.iter().map(|d| &d["reason"]).collect()).unwrap_or_default();
    assert!(
        !stacks.is_empty(),
        "no drop stack of reason {reason}; reasons with stacks: {reasons:?}; drops: {:#}",
        r["drops"]
    );
    let with_stack: u64 = stacks.iter().map(|s| s.0).sum();
    let counted: u64 = r["drops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["reason"] == reason)
        .map(|d| d["packets"].as_u64().unwrap())
        .sum();
    assert!(
        with_stack >= min,
        "{with_stack} drops of {reason} with a stack, expected at least {min}: {:#}",
        r["drop_stacks"]
    );
    // Every drop counted by reason has its stack, shown or in the
    // report's count of stacks beyond the top rows, or is counted as a miss.
    let left_out: u64 = r["drop_stacks_left_out"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|l| l["reason"] == reason)
        .map(|l| l["packets"].as_u64().unwrap())
        .sum();
    let t = &r["tracking"];
    let missed = ["drop_stack_collision", "drop_stack_failed", "drop_stack_lost"].map(|k| t[k].as_u64().unwrap());
    assert!(
        with_stack + left_out + missed.iter().sum::<u64>() >= counted,
        "{counted} drops of {reason}, {with_stack} with a stack shown, {left_out} in stacks left out, misses {missed:?}"
    );
    let (n, freed_by, frames) = stacks.iter().max_by_key(|s| s.0).unwrap();
    // A frame is a function's name, with the compiler's suffix of a
    // specialised copy (`.constprop.0`, `.isra.0`, `.part.0`) if it has one.
    let named = |f: &&str| *f == function || f.strip_prefix(function).is_some_and(|rest| rest.starts_with('.'));
    assert!(
        frames.iter().any(named),
        "the stack of {n} {reason} drops does not name {function} (freed by {freed_by}): {}",
        frames.join(";")
    );
    // The tracing machinery's own frames (the BPF program, the tracepoint's
    // glue) are cut: the stack ends where the kernel freed the packet.
    let glue = ["[bpf]", "bpf_trace_run", "__traceiter_", "__bpf_trace_", "perf_trace_", "trace_call_bpf"];
    assert!(!frames.iter().any(|f| glue.iter().any(|g| f.contains(g))), "tracing frames left in {}", frames.join(";"));
    // Folded root first: the innermost frame is the last, and the function
    // that freed the packets is in the stack.
    assert!(frames.contains(freed_by), "freed_by {freed_by} is not in its stack {}", frames.join(";"));
    eprintln!("{reason}: {n} drops, freed by {freed_by}: {} {n}", frames.join(";"));
}

#[test]
fn blackhole_route_drops_with_their_stack() {
    if !require_root("blackhole_route_drops_with_their_stack") {
        return;
    }
    let t = Topology::create().unwrap();
    let ifaces = t.ifaces();
    let rec = RunningRecord::start(&["--drop-stacks", "--iface", &ifaces[0], "--iface", &ifaces[1]]);
    t.udp_burst(demo::BLACKHOLE_ADDR, 9, 50, Duration::from_millis(1)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = rec.interrupt();
    // A blackhole route's dst_entry has ip_error as its input function: it
    // frees the packet with no specific reason (Linux 6.18: kfree_skb,
    // NOT_SPECIFIED), called from the peer's receive path.
    assert_stack(&r, "NOT_SPECIFIED", 50, "ip_error");
}

#[test]
fn netfilter_drop_with_nf_hook_slow_on_its_stack() {
    if !require_root("netfilter_drop_with_nf_hook_slow_on_its_stack") {
        return;
    }
    if !require_tool(std::path::Path::new("/usr/sbin/nft").exists(), "nft (Debian package nftables)") {
        return;
    }
    let p = Pair::create("nf", 81);
    p.in_ns(&p.b, &["nft", "add table ip npds"]);
    p.in_ns(&p.b, &["nft", "add chain ip npds in { type filter hook input priority 0; policy accept; }"]);
    p.in_ns(&p.b, &["nft", "add rule ip npds in udp dport 9 drop"]);
    let rec = p.record();
    p.udp("198.18.81.2", 9, 40, 64, Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(300));
    let r = rec.interrupt();
    assert_stack(&r, "NETFILTER_DROP", 40, "nf_hook_slow");
}

#[test]
fn tc_action_drop_with_its_stack() {
    if !require_root("tc_action_drop_with_its_stack") {
        return;
    }
    let p = Pair::create("tc", 82);
    // This kernel has no gact (`action drop`); a mirred redirect to a
    // device that is down is a tc action that fails, and the packet is
    // shot (TC_ACT_SHOT) on ingress all the same.
    ip(&["-n", &p.b, "link", "add", "vd0", "type", "veth", "peer", "name", "vd1"]).unwrap();
    p.in_ns(&p.b, &["tc", "qdisc", "add", "dev", "vb", "ingress"]);
    p.in_ns(
        &p.b,
        &[
            "tc", "filter", "add", "dev", "vb", "parent", "ffff:", "protocol", "ip", "u32", "match", "ip", "dport",
            "10", "0xffff", "action", "mirred", "egress", "redirect", "dev", "vd0",
        ],
    );
    let rec = p.record();
    p.udp("198.18.82.2", 10, 40, 64, Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(300));
    let r = rec.interrupt();
    // The ingress hook (sch_handle_ingress, inlined) frees the packet the
    // action shot, in __netif_receive_skb_core (a `.constprop` copy here).
    assert_stack(&r, "TC_INGRESS", 40, "__netif_receive_skb_core");
}

#[test]
fn full_queue_drops_with_their_stack() {
    if !require_root("full_queue_drops_with_their_stack") {
        return;
    }
    let p = Pair::create("q", 83);
    // A token bucket of 1 Mbit/s holding 3000 bytes: a burst of 1000-byte
    // datagrams overflows it at once.
    p.in_ns(
        &p.a,
        &["tc", "qdisc", "add", "dev", "va", "root", "tbf", "rate", "1mbit", "burst", "1600", "limit", "3000"],
    );
    let rec = p.record();
    p.udp("198.18.83.2", 9, 300, 1000, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(300));
    let r = rec.interrupt();
    // The qdisc refuses the packet at enqueue; __dev_queue_xmit frees the
    // refused ones (kfree_skb_list_reason).
    assert_stack(&r, "QDISC_DROP", 100, "__dev_queue_xmit");
}
