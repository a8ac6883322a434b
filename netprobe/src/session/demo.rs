//! `netprobe demo`: builds a demo topology (`netprobe_testbed`), records
//! while real traffic runs through it (ping, iperf3 TCP and UDP where
//! iperf3 is installed, UDP datagrams to a blackholed address for the drop
//! path), and tears it down on every way out.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};
use netprobe_testbed::topology::{self, Kind, Topology};

use super::{
    record::{RecordOptions, Recorder},
    signals::{self, Stop},
    spool_dir,
};
use crate::recording::Recording;

/// Runs the demo on topology `kind` and returns its recording (also
/// written to `output`, if given).
pub fn run(kind: Kind, output: Option<&Path>, opts: &RecordOptions) -> Result<Recording> {
    if let Some(path) = output {
        super::check_writable(path)?;
    }
    crate::say!("netprobe demo: building the {kind:?} topology in network namespaces");
    let topo = std::sync::Arc::new(Topology::create_kind(kind)?);
    let stop = Stop::install();
    let mut rec =
        Recorder::start(&RecordOptions { ifaces: topo.ifaces(), spool_dir: Some(spool_dir(output)), ..opts.clone() })?;
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
    let interrupted = signals::wait_for(
        stop,
        None,
        Some(rx),
        Some(&mut || {
            if let Err(e) = rec.sample() {
                crate::say!("netprobe: {e:#}");
            }
        }),
    );
    stop.second_interrupt_ends_at_once();
    let recording = rec.recording(interrupted)?;
    drop(rec);
    if let Some(path) = output {
        recording.write(path)?;
        crate::say!("netprobe demo: recording written to {}", path.display());
    }
    if !interrupted {
        traffic.join().map_err(|_| anyhow::anyhow!("traffic thread panicked"))??;
    }
    drop(topo);
    Ok(recording)
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
