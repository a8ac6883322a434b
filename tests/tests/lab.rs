//! The QEMU lab's results: Debian's stock amd64 kernel, booted by `cargo
//! xtask lab` (which `cargo xtask test` runs first), ran the demo
//! scenarios with the netprobe of this build. These tests read the JSON
//! reports it brought back and check what only such a kernel can show:
//! fentry and kprobe hops, the OVS datapath and its upcall, the macvtap's
//! tap queue.

use std::path::PathBuf;

use serde_json::Value;

fn lab_result(name: &str) -> Option<Value> {
    arch_result("amd64", name)
}

fn arch_result(arch: &str, name: &str) -> Option<Value> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/lab").join(arch).join(format!("{name}.json"));
    match std::fs::read_to_string(&p) {
        Ok(text) => Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))),
        Err(_) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{} missing: `cargo xtask test` runs the lab first; run `cargo xtask lab`",
                p.display()
            );
            eprintln!("SKIPPED: no lab result {} (run `cargo xtask lab`)", p.display());
            None
        }
    }
}

/// The first pair `from_hop -> to_hop` in `direction`, whatever the devices.
fn pair<'a>(r: &'a Value, direction: &str, from: &str, to: &str) -> &'a Value {
    let dirs = r["directions"].as_array().unwrap();
    let pairs: Vec<&Value> =
        dirs.iter().filter(|d| d["direction"] == direction).flat_map(|d| d["pairs"].as_array().unwrap()).collect();
    pairs
        .iter()
        .copied()
        .filter(|p| p["from_hop"] == from && p["to_hop"] == to)
        .max_by_key(|p| p["packets"].as_u64())
        .unwrap_or_else(|| {
            let have: Vec<String> =
                pairs.iter().map(|p| format!("{} -> {} ({})", p["from_hop"], p["to_hop"], p["packets"])).collect();
            panic!("no {direction} pair {from} -> {to}; have {have:#?}")
        })
}

fn assert_measured(p: &Value, min: u64, what: &str) {
    let n = p["packets"].as_u64().unwrap();
    assert!(n >= min, "{what}: {n} packets, expected >= {min}");
    let (p50, max) = (p["p50_ns"].as_u64().unwrap(), p["max_ns"].as_u64().unwrap());
    assert!(p50 > 0 && max < 5_000_000_000 && p50 <= max, "{what}: p50 {p50} max {max}");
}

fn backend<'a>(coverage: &'a Value, hop: &str) -> &'a Value {
    let c = coverage.as_array().unwrap().iter().find(|c| c["hop"] == hop).unwrap_or_else(|| panic!("no hop {hop}"));
    &c["backend"]
}

#[test]
fn function_hops_use_fentry_or_kprobe_on_debians_kernel() {
    let Some(p) = lab_result("probes") else { return };
    let hops = &p["hops"];
    // ip_rcv is in vmlinux, whose BTF has it: fentry.
    assert_eq!(backend(hops, "ip_rcv"), "fentry", "{hops:#}");
    // Module functions: fentry where the loader can resolve them, else kprobe.
    for h in [
        "tap_enqueue",
        "macvlan_rx",
        "macvlan_xmit",
        "tun_xmit",
        "ovs_flow_lookup",
        "ovs_upcall",
        "br_forward",
        "vhost_tx",
    ] {
        let b = backend(hops, h);
        assert!(b == "fentry" || b == "kprobe", "{h}: {b}");
    }
    // Entry/exit pairs: time inside is measured for function hops.
    for c in hops.as_array().unwrap().iter().filter(|c| c["site"].as_str().unwrap().starts_with("function")) {
        if !c["backend"].is_null() {
            assert_eq!(c["time_inside"], true, "{c}");
        }
    }
    // qeth is s390-only: absent here, with the reason.
    let qeth = hops.as_array().unwrap().iter().find(|c| c["hop"] == "qeth_l2_xmit").unwrap();
    assert!(qeth["backend"].is_null() && qeth["notes"].to_string().contains("qeth_l2"), "{qeth}");
}

#[test]
fn macvtap_tap_queue_and_macvlan_hops_are_measured_in_both_directions() {
    let Some(r) = lab_result("macvtap") else { return };
    assert_measured(pair(&r, "to-wire", "queue", "xmit"), 20, "to-wire queue -> xmit");
    assert_measured(pair(&r, "to-wire", "xmit", "macvlan_xmit"), 20, "to-wire xmit -> macvlan_xmit");
    assert_measured(pair(&r, "to-guest", "receive", "macvlan_rx"), 20, "to-guest receive -> macvlan_rx");
    // The tap queue: enqueued by macvtap's rx_handler until QEMU reads it.
    assert_measured(pair(&r, "to-guest", "tap_enqueue", "copy_out"), 20, "to-guest tap_enqueue -> copy_out");
}

#[test]
fn ovs_datapath_hops_and_the_upcall_on_a_flow_miss() {
    let Some(r) = lab_result("ovs") else { return };
    for dir in ["to-wire", "to-guest"] {
        for (from, to) in [
            ("ovs_rx_hook", "ovs_vport_rx"),
            ("ovs_vport_rx", "ovs_flow_lookup"),
            ("ovs_flow_lookup", "ovs_execute"),
            ("ovs_output", "ovs_vport_send"),
        ] {
            assert_measured(pair(&r, dir, from, to), 20, &format!("{dir} {from} -> {to}"));
        }
    }
    // The pings sent before any flow existed missed and went up to userspace.
    let upcall = pair(&r, "to-wire", "ovs_flow_lookup", "ovs_upcall");
    assert!(upcall["packets"].as_u64().unwrap() >= 1, "{upcall}");
    let f = r["functions"].as_array().unwrap().iter().find(|f| f["hop"] == "ovs_upcall").expect("ovs_upcall timed");
    assert!(f["calls"].as_u64().unwrap() >= 1);
}

/// `--drop-stacks` on Debian's kernel, where tap and veth are modules: the
/// demo's blackholed datagrams are freed by ip_error, and the frame of the
/// guest stand-in's write (tap_get_user, in the tap module) is named with
/// its module, as `name [module]`.
#[test]
fn drop_stacks_name_module_frames() {
    let Some(r) = lab_result("macvtap") else { return };
    let stacks = r["drop_stacks"].as_array().expect("no drop_stacks in the lab's macvtap report");
    let blackholed = stacks
        .iter()
        .filter(|d| d["freed_by"] == "ip_error")
        .max_by_key(|d| d["packets"].as_u64())
        .unwrap_or_else(|| panic!("no stack freed by ip_error: {stacks:#?}"));
    assert!(blackholed["packets"].as_u64().unwrap() >= 20, "{blackholed}");
    let frames: Vec<&str> = blackholed["stack"].as_str().unwrap().split(';').collect();
    assert!(frames.contains(&"tap_get_user [tap]"), "no module frame tap_get_user [tap] in {frames:?}");
    assert_eq!(frames.last(), Some(&"kfree_skb_reason"), "{frames:?}");
}

#[test]
fn bridge_hops_are_measured() {
    let Some(r) = lab_result("bridge") else { return };
    assert_measured(pair(&r, "to-wire", "br_rx", "br_forward"), 20, "to-wire br_rx -> br_forward");
    assert_measured(pair(&r, "to-guest", "br_forward", "br_xmit"), 20, "to-guest br_forward -> br_xmit");
}

fn s390x_result(name: &str) -> Option<Value> {
    arch_result("s390x", name)
}

#[test]
fn s390x_without_btf_uses_classic_tracepoints_and_kprobes_with_qeth_attached() {
    let Some(p) = s390x_result("probes") else { return };
    let hops = &p["hops"];
    for tp in ["queue", "xmit", "netif_rx", "receive", "copy_out", "consumed", "dropped"] {
        assert_eq!(backend(hops, tp), "tracepoint", "{tp} on a kernel without BTF");
    }
    // The qeth driver's hops attach (QEMU emulates no OSA/HiperSockets
    // device, so they carry no traffic): l2/l3 transmit, HiperSockets queue
    // selection, NAPI receive poll, transmit completion poll.
    for h in ["qeth_l2_xmit", "qeth_l3_xmit", "qeth_xmit", "qeth_iqd_select_queue", "qeth_rx_poll", "qeth_tx_poll"] {
        assert_eq!(backend(hops, h), "kprobe", "{h}");
    }
    let fentry_note =
        hops.as_array().unwrap().iter().find(|c| c["hop"] == "qeth_l2_xmit").unwrap()["notes"].to_string();
    assert!(fentry_note.contains("no BTF"), "{fentry_note}");
}

#[test]
fn s390x_macvtap_hops_carry_counts_and_latencies() {
    let Some(r) = s390x_result("macvtap") else { return };
    assert_measured(pair(&r, "to-wire", "queue", "xmit"), 20, "s390x to-wire queue -> xmit");
    assert_measured(pair(&r, "to-wire", "xmit", "macvlan_xmit"), 20, "s390x to-wire xmit -> macvlan_xmit");
    assert_measured(pair(&r, "to-guest", "macvlan_rx", "tap_enqueue"), 20, "s390x to-guest macvlan_rx -> tap_enqueue");
    assert_measured(pair(&r, "to-guest", "tap_enqueue", "copy_out"), 20, "s390x to-guest tap_enqueue -> copy_out");
    assert!(r["kernel"].as_str().unwrap().ends_with("-s390x"), "{}", r["kernel"]);
}
