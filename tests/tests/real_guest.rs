//! A real guest: QEMU (TCG) boots Debian's stock kernel with virtio-net on
//! a macvtap in bridge mode, attached as libvirt does it, and QEMU is
//! started without `debug-threads=on`, as people starting it by hand do.
//! The guest itself pings, streams TCP and runs UDP request-response to a
//! peer namespace while the real netprobe binary records. netprobe must
//! count at least what the guest says it sent and received on each
//! MacVTap hop pair, and find the guest by name with its macvtap and the
//! CPU time of its vCPU threads.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use netprobe_testbed::{
    guest::{GuestImage, GuestLink, QemuGuest},
    topology::PEER_ADDR,
};
use netprobe_tests::{pair, require_root, require_tool, RunningRecord};
use serde_json::Value;

/// The image `cargo xtask test` builds (`cargo xtask guest-image`).
fn guest_image() -> Option<GuestImage> {
    let dir = std::env::var_os("NETPROBE_GUEST_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/guest-image"));
    GuestImage::in_dir(&dir)
}

/// The guest's eth0 packet counters (tx, rx).
fn counters(g: &mut QemuGuest) -> (u64, u64) {
    let out =
        g.run("cat /sys/class/net/eth0/statistics/tx_packets /sys/class/net/eth0/statistics/rx_packets", T).unwrap();
    let n: Vec<u64> = out.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(n.len(), 2, "eth0 counters: {out:?}");
    (n[0], n[1])
}

/// `key=N` (sockperf) or `N key` (ping) in `text`.
fn count_after(text: &str, key: &str) -> u64 {
    text.split([';', ',', '\n'])
        .find_map(|part| {
            let part = part.trim();
            part.strip_prefix(&format!("{key}="))
                .or_else(|| part.strip_suffix(&format!(" {key}")))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {key} count in {text}"))
}

/// Each thread of `pid`: id, name, the system call it waits in, user and
/// guest time (ticks): the evidence netprobe's vCPU rule reads.
fn threads_of(pid: u32) -> String {
    let mut out = String::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default().trim().to_owned();
        let stat = read("stat");
        let rest: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
        let syscall = read("syscall");
        let call = syscall.split_whitespace().next().unwrap_or("");
        out += &format!(
            "  {} {} syscall {call} utime {} guest_time {}\n",
            t.file_name().to_string_lossy(),
            read("comm"),
            rest.get(11).unwrap_or(&"?"),
            rest.get(40).unwrap_or(&"?")
        );
    }
    out
}

const T: Duration = Duration::from_secs(60);

#[test]
fn a_real_guest_on_a_macvtap_is_measured_and_found_without_debug_threads() {
    if !require_root("a_real_guest_on_a_macvtap_is_measured_and_found_without_debug_threads") {
        return;
    }
    let image = guest_image();
    if !require_tool(image.is_some(), "the guest image (cargo xtask guest-image, NETPROBE_GUEST_IMAGE)")
        || !require_tool(std::path::Path::new("/usr/bin/qemu-system-x86_64").exists(), "qemu-system-x86")
        || !require_tool(std::path::Path::new("/usr/bin/sockperf").exists(), "sockperf")
    {
        return;
    }
    let started = Instant::now();
    let prefix = format!("npg{:04x}", std::process::id() & 0xffff);
    let link = GuestLink::create(&prefix).unwrap();
    let name = format!("{prefix}-vm");
    let mut g = QemuGuest::boot(&image.unwrap(), &name, &link, 2).unwrap();
    eprintln!("real guest {name}: booted in {:.1} s (TCG, 2 vCPUs)", g.boot_s);
    // The peer's servers, and the neighbours learnt before recording.
    let _iperf = link.spawn_in_peer(&["iperf3", "-s", "-B", PEER_ADDR]).unwrap();
    let _sockperf = link.spawn_in_peer(&["sockperf", "server", "-i", PEER_ADDR, "-p", "11111"]).unwrap();
    g.run(&format!("/usr/bin/ping -c 1 -W 5 {PEER_ADDR}"), T).unwrap();

    let (m, u) = (link.macvtap.clone(), link.uplink.clone());
    // NETPROBE_GUEST_RECORDING=FILE keeps the recording (the source of
    // netprobe/test_data/recordings/guest.rec, see make_fixtures.py).
    let keep = std::env::var("NETPROBE_GUEST_RECORDING").ok();
    let mut args = vec!["--iface", &m, "--iface", &u];
    if let Some(path) = &keep {
        args.extend(["-o", path]);
    }
    let rec = RunningRecord::start(&args);
    let (tx0, rx0) = counters(&mut g);
    let ping = g.run(&format!("/usr/bin/ping -q -c 300 -i 0.01 {PEER_ADDR}"), T).unwrap();
    let stream = g.run(&format!("/usr/bin/iperf3 -c {PEER_ADDR} -t 2 -i 0"), T).unwrap();
    let rr = g.run(&format!("/usr/bin/sockperf ping-pong -i {PEER_ADDR} -p 11111 -t 2 --mps 200"), T).unwrap();
    let (tx1, rx1) = counters(&mut g);
    std::thread::sleep(Duration::from_millis(300));
    let r = rec.interrupt();
    let qemu_pid = g.pid();
    eprintln!("QEMU {qemu_pid}'s threads as the kernel shows them:\n{}", threads_of(qemu_pid));

    let (ping_tx, ping_rx) = (count_after(&ping, "packets transmitted"), count_after(&ping, "received"));
    let (rr_tx, rr_rx) = (count_after(&rr, "SentMessages"), count_after(&rr, "ReceivedMessages"));
    let (sent, received) = (tx1 - tx0, rx1 - rx0);
    eprintln!(
        "guest counts: eth0 sent {sent}, received {received}; ping {ping_tx}/{ping_rx}; sockperf {rr_tx}/{rr_rx}; \
         iperf3: {}",
        stream.lines().find(|l| l.contains("sender")).unwrap_or("?").trim()
    );
    assert_eq!(ping_rx, ping_tx, "the guest's pings were not all answered:\n{ping}");
    assert!(rr_rx > 0 && sent > ping_tx + rr_tx, "too little traffic: {rr}");

    // Every frame the guest sent leaves through the macvtap and the
    // uplink; every frame it received waited in the macvtap's queue until
    // QEMU read it.
    let to_wire = [(format!("queue@{m}"), format!("xmit@{m}")), (format!("xmit@{m}"), format!("queue@{u}"))];
    let to_guest = [(format!("receive@{u}"), format!("copy_out@{m}")), (format!("copy_out@{m}"), "consumed".into())];
    for (dir, pairs, want) in [("to-wire", &to_wire, sent), ("to-guest", &to_guest, received)] {
        for (from, to) in pairs {
            let p = pair(&r, dir, from, to);
            let n = p["packets"].as_u64().unwrap();
            eprintln!("{dir} {from} -> {to}: {n} packets (guest: {want}), p50 {} ns", p["p50_ns"]);
            assert!(n >= want, "{dir} {from} -> {to}: {n} packets, the guest counted {want}");
        }
    }

    // The guest, by QEMU's -name, with its macvtap and vCPU time, though
    // its threads all carry QEMU's program name.
    let guests = r["guests"].as_array().unwrap();
    let found: &Value = guests.iter().find(|x| x["pid"] == qemu_pid).unwrap_or_else(|| panic!("{guests:#?}"));
    eprintln!("netprobe's guest: {found}");
    assert_eq!(found["name"], name.as_str());
    assert!(found["devices"].as_array().unwrap().iter().any(|d| d == m.as_str()), "{found}");
    assert!(found["vcpu_ns"].as_u64().unwrap() > 0, "no vCPU time without debug-threads: {found}");
    assert!(found["packets"].as_u64().unwrap() >= sent + received, "{found}");
    assert!(!found["vcpu_tids"].as_array().unwrap().iter().any(|t| *t == qemu_pid), "main loop is no vCPU: {found}");
    let by_role = &r["cpu"]["by_role_ns"];
    assert!(by_role["vcpu"].as_u64().unwrap_or(0) > 0, "no vcpu role in {by_role}");

    g.poweroff().unwrap();
    eprintln!("real guest test took {:.1} s", started.elapsed().as_secs_f64());
}
