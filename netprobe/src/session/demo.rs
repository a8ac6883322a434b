//! `netprobe demo`: builds a demo topology (`netprobe_testbed`), records
//! while real traffic runs through it (ping, iperf3 TCP and UDP where
//! iperf3 is installed, UDP datagrams to a blackholed address for the drop
//! path), and tears it down on every way out. With `--guest`, a real QEMU
//! guest on a macvtap takes the guest stand-in's place and sends its own
//! traffic. With `--vhost`, the guest stand-in drives vhost-net. With
//! `--hold`, the topology alone, kept for one's own runs.

use std::{io::Write as _, path::Path, time::Duration};

use anyhow::{Context, Result};
use netprobe_testbed::{
    guest::{self, GuestImage, GuestLink, QemuGuest},
    topology::{self, Kind, Topology},
};

use super::{
    record::{RecordOptions, Recorder},
    signals::{self, Stop},
    spool_dir,
};
use crate::recording::Recording;

/// Runs the demo on topology `kind` (with `vhost`, the guest stand-in
/// drives vhost-net) and returns its recording (also written to `output`,
/// if given).
pub fn run(kind: Kind, vhost: bool, output: Option<&Path>, opts: &RecordOptions) -> Result<Recording> {
    if let Some(path) = output {
        super::check_writable(path)?;
    }
    let standin = if vhost { ", guest stand-in on vhost-net" } else { "" };
    crate::say!("netprobe demo: building the {kind:?} topology in network namespaces{standin}");
    let topo = std::sync::Arc::new(Topology::create_with(kind, vhost)?);
    let stop = Stop::install();
    let mut rec =
        Recorder::start(&RecordOptions { ifaces: topo.ifaces(), spool_dir: Some(spool_dir(output)), ..opts.clone() })?;
    // The stand-in's counts while every hop is attached, to hold the
    // recording's against (the lab's vhost scenario does).
    let attached = topo.stats.counts();
    crate::say!(
        "netprobe demo: guest {} <-> {kind:?} {} / {} <-> peer {}; sending ICMP, TCP, UDP (Ctrl-C stops early)",
        topology::GUEST_ADDR,
        topo.macvtap,
        topo.uplink,
        topology::PEER_ADDR
    );
    // Traffic runs on its own thread so Ctrl-C/SIGTERM still reach the
    // recorder and the topology is torn down (by its Drop) either way.
    let (tx, rx) = std::sync::mpsc::channel();
    let t = topo.clone();
    let traffic = std::thread::spawn(move || -> Result<()> {
        traffic(&t)?;
        drop(tx);
        Ok(())
    });
    let interrupted = record_while(stop, rx, &mut rec);
    let recorded = topo.stats.counts().since(attached);
    let recording = rec.recording(interrupted)?;
    drop(rec);
    if let Some(path) = output {
        recording.write(path)?;
        crate::say!("netprobe demo: recording written to {}", path.display());
    }
    if !interrupted {
        traffic.join().map_err(|_| anyhow::anyhow!("traffic thread panicked"))??;
    }
    crate::say!("netprobe demo: guest stand-in while recording: {recorded}");
    crate::say!("netprobe demo: guest stand-in in all: {}", topo.stats.counts());
    drop(topo);
    Ok(recording)
}

/// `netprobe demo --guest DIR`: boots the guest image in DIR (`cargo xtask
/// guest-image`) under QEMU (TCG, started without debug-threads) on a
/// macvtap, records while the guest pings, streams TCP and runs UDP
/// request-response to a peer namespace, and removes it all on every way
/// out. Returns the recording (also written to `output`, if given).
pub fn run_guest(image_dir: &Path, output: Option<&Path>, opts: &RecordOptions) -> Result<Recording> {
    if let Some(path) = output {
        super::check_writable(path)?;
    }
    let image = GuestImage::in_dir(image_dir).with_context(|| {
        format!("no guest image (vmlinuz, initrd.gz) in {}: `cargo xtask guest-image` makes one", image_dir.display())
    })?;
    // Ctrl-C during the boot too ends the demo through the clean-up below.
    let stop = Stop::install();
    let link = std::sync::Arc::new(GuestLink::create(&format!("npd{:04x}", std::process::id() & 0xffff))?);
    crate::say!("netprobe demo: booting a real guest under QEMU (TCG) on macvtap {} / {}", link.macvtap, link.uplink);
    let mut g = QemuGuest::boot(&image, "netprobe-demo", &link, 2, &|| stop.is_set())?;
    let qemu = g.pid();
    crate::say!(
        "netprobe demo: guest netprobe-demo (pid {qemu}) up in {:.1} s; {} -> peer {}: ICMP, TCP, UDP (Ctrl-C stops early)",
        g.boot_s,
        topology::GUEST_ADDR,
        topology::PEER_ADDR
    );
    let ifaces = vec![link.macvtap.clone(), link.uplink.clone()];
    let mut rec = Recorder::start(&RecordOptions { ifaces, spool_dir: Some(spool_dir(output)), ..opts.clone() })?;
    let (tx, rx) = std::sync::mpsc::channel();
    let l = link.clone();
    let traffic = std::thread::spawn(move || -> Result<()> {
        let t = guest::traffic(&mut g, &l)?;
        drop(tx);
        crate::say!(
            "  the guest counted: eth0 {} sent, {} received; ping {}/{}; UDP request-response {}/{}; TCP {}",
            t.sent,
            t.received,
            t.ping.0,
            t.ping.1,
            t.udp_rr.0,
            t.udp_rr.1,
            t.tcp_stream
        );
        g.poweroff()
    });
    let interrupted = record_while(stop, rx, &mut rec);
    let recording = rec.recording(interrupted);
    drop(rec);
    if interrupted {
        // The guest would go on with its traffic: end QEMU (our child), so
        // the traffic thread returns at once.
        // SAFETY: kill(2) on the QEMU process this demo started.
        unsafe { libc::kill(qemu as i32, libc::SIGKILL) };
    }
    let traffic = traffic.join().map_err(|_| anyhow::anyhow!("traffic thread panicked"))?;
    drop(link);
    let recording = recording?;
    if let Some(path) = output {
        recording.write(path)?;
        crate::say!("netprobe demo: recording written to {}", path.display());
    }
    if !interrupted {
        traffic?;
    }
    Ok(recording)
}

/// `netprobe demo --hold`: builds the topology, prints where it is as
/// shell assignments on standard output (namespaces, the devices to
/// `record --iface`, the peer's address), and keeps it, guest stand-in
/// relaying, until Ctrl-C or SIGTERM; then removes it. For runs of one's
/// own through the topology, such as a benchmark sweep (README).
pub fn hold(kind: Kind, vhost: bool) -> Result<()> {
    let stop = Stop::install();
    let topo = Topology::create_with(kind, vhost)?;
    if kind == Kind::Ovs {
        topo.add_ovs_flows()?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "NETPROBE_GUEST_NS={}", topo.guest_ns)?;
    writeln!(out, "NETPROBE_PEER_NS={}", topo.peer_ns)?;
    writeln!(out, "NETPROBE_PEER_ADDR={}", topology::PEER_ADDR)?;
    writeln!(out, "NETPROBE_IFACES={}", topo.ifaces().join(","))?;
    out.flush()?;
    drop(out);
    crate::say!("netprobe demo: {kind:?} topology up; Ctrl-C or SIGTERM removes it");
    signals::wait_for(stop, None, None, None);
    drop(topo);
    crate::say!("netprobe demo: topology removed");
    Ok(())
}

/// Records, a sample a second, until the traffic is over (`done` closes)
/// or Ctrl-C/SIGTERM; returns whether a signal ended it.
fn record_while(stop: &Stop, done: std::sync::mpsc::Receiver<()>, rec: &mut Recorder) -> bool {
    let interrupted = signals::wait_for(
        stop,
        None,
        Some(done),
        Some(&mut || {
            if let Err(e) = rec.sample() {
                crate::say!("netprobe: {e:#}");
            }
        }),
    );
    stop.second_interrupt_ends_at_once();
    interrupted
}

/// The demo's traffic script.
fn traffic(t: &Topology) -> Result<()> {
    if t.kind == Kind::Ovs {
        // No flows yet: these miss in the datapath and are upcalled (no
        // ovs-vswitchd answers, so they are dropped).
        let replies = t.ping(3, "0.1").context("ping")?;
        crate::say!("  ping before any OVS flow: {replies}/3 replies (flow misses, upcalls)");
        t.add_ovs_flows()?;
    }
    let replies = t.ping(20, "0.05").context("ping")?;
    crate::say!("  ping: {replies}/20 replies");
    if std::process::Command::new("iperf3").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let tcp = t.iperf3(2, false).context("iperf3 TCP")?;
        crate::say!("  iperf3 TCP: {}", last_summary(&tcp));
        let udp = t.iperf3(2, true).context("iperf3 UDP")?;
        crate::say!("  iperf3 UDP: {}", last_summary(&udp));
    } else {
        // Minimal hosts (the s390x lab): UDP without a bulk tool.
        t.udp_burst(topology::PEER_ADDR, 9, 200, Duration::from_millis(1))?;
        crate::say!("  iperf3 not installed: 200 UDP datagrams to the peer instead of TCP/UDP bulk runs");
    }
    t.udp_burst(topology::BLACKHOLE_ADDR, 9, 50, Duration::from_millis(2))?;
    crate::say!("  50 UDP datagrams to {} (blackholed in the peer)", topology::BLACKHOLE_ADDR);
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

/// iperf3's summary line (receiver, else sender), spaces folded.
fn last_summary(iperf: &str) -> String {
    iperf
        .lines()
        .rev()
        .find(|l| l.contains("receiver") || l.contains("sender"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
