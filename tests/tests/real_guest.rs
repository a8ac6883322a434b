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

use netprobe_testbed::guest::{traffic, GuestImage, GuestLink, QemuGuest};
use netprobe_tests::{pair, require_root, require_tool, RunningRecord};
use serde_json::Value;

/// The image `cargo xtask test` builds (`cargo xtask guest-image`).
fn guest_image() -> Option<GuestImage> {
    let dir = std::env::var_os("NETPROBE_GUEST_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/guest-image"));
    GuestImage::in_dir(&dir)
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

#[test]
fn a_real_guest_on_a_macvtap_is_measured_and_found_without_debug_threads() {
    if !require_root("a_real_guest_on_a_macvtap_is_measured_and_found_without_debug_threads") {
        return;
    }
    let image = guest_image();
    if !require_tool(image.is_some(), "the guest image (cargo xtask guest-image, NETPROBE_GUEST_IMAGE)")
        || !require_tool(std::path::Path::new("/usr/bin/qemu-system-x86_64").exists(), "qemu-system-x86")
        || !require_tool(std::path::Path::new("/usr/bin/sockperf").exists(), "sockperf")
        || !require_tool(std::path::Path::new("/usr/bin/iperf3").exists(), "iperf3")
    {
        return;
    }
    let started = Instant::now();
    let prefix = format!("npg{:04x}", std::process::id() & 0xffff);
    let link = GuestLink::create(&prefix).unwrap();
    let name = format!("{prefix}-vm");
    let mut g = QemuGuest::boot(&image.unwrap(), &name, &link, 2, &|| false).unwrap();
    eprintln!("real guest {name}: booted in {:.1} s (TCG, 2 vCPUs)", g.boot_s);
    let (m, u) = (link.macvtap.clone(), link.uplink.clone());
    // NETPROBE_GUEST_RECORDING=FILE keeps the recording (the source of
    // netprobe/test_data/recordings/guest.rec, see make_fixtures.py).
    let keep = std::env::var("NETPROBE_GUEST_RECORDING").ok();
    let mut args = vec!["--iface", &m, "--iface", &u];
    if let Some(path) = &keep {
        args.extend(["-o", path]);
    }
    let rec = RunningRecord::start(&args);
    let t = traffic(&mut g, &link).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = rec.interrupt();
    let qemu_pid = g.pid();
    eprintln!("QEMU {qemu_pid}'s threads as the kernel shows them:\n{}", threads_of(qemu_pid));

    let (sent, received) = (t.sent, t.received);
    eprintln!(
        "guest counts: eth0 sent {sent}, received {received}; ping {}/{}; sockperf {}/{}; iperf3: {}",
        t.ping.0, t.ping.1, t.udp_rr.0, t.udp_rr.1, t.tcp_stream
    );
    assert_eq!(t.ping.1, t.ping.0, "the guest's pings were not all answered");
    // No hop pair that no packet takes: a recycled skb (struct and data
    // buffer both back) once joined a ping to the previous one's journey.
    let tr = &r["tracking"];
    eprintln!(
        "restarted journeys: reused {}, impossible step {}, late {}, stale {}, evicted {}",
        tr["track_reused"], tr["track_impossible"], tr["track_late"], tr["track_stale"], tr["track_evicted"]
    );
    let wrong = netprobe_tests::impossible_pairs(&r);
    assert!(wrong.is_empty(), "hop pairs no packet takes: {wrong:#?}");
    assert!(t.udp_rr.1 > 0 && sent > t.ping.0 + t.udp_rr.0, "too little traffic: {t:?}");

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
