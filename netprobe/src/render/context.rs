//! What a report opens with, as lines of text shared by the table and the
//! HTML page: the host's configuration (kernel, CPUs, SMT, THP, then one
//! line per device on the measured paths with its offloads, IRQs and qeth
//! settings, OVS datapaths and guests' vCPU pinning), and the workload
//! tool's own figures with the host's share of its round trip.

use crate::model::{
    fmt_ns,
    host::{smt_word, HostConfig, KEY_FEATURES},
    report::HostShare,
    Workload,
};

/// What a recording without a configuration says instead.
pub(super) const NOT_RECORDED: &str = "not in this recording (made before netprobe recorded the host's configuration)";

/// (indent level, text) lines describing `c`.
pub(super) fn lines(c: &HostConfig) -> Vec<(usize, String)> {
    let mut out = vec![
        (
            0,
            format!(
                "Linux {}; CPU {}, online {}; SMT {}; THP {}",
                c.kernel_release,
                if c.cpu_model.is_empty() { "unknown" } else { &c.cpu_model },
                c.cpus_online,
                smt_word(c.smt_control.as_deref(), c.smt_active),
                c.thp.as_deref().unwrap_or("unknown")
            ),
        ),
        (0, format!("kernel command line: {}", c.kernel_cmdline)),
    ];
    for d in &c.devices {
        let mut what = vec![d.kind.clone().unwrap_or_else(|| "device".to_owned())];
        what.extend(d.mode.as_ref().map(|m| format!("mode {m}")));
        what.extend(d.driver.as_ref().map(|v| format!("driver {v}")));
        what.extend(d.mtu.map(|v| format!("MTU {v}")));
        what.extend(d.txqueuelen.map(|v| format!("txqueuelen {v}")));
        if let (Some(tx), Some(rx)) = (d.tx_queues, d.rx_queues) {
            what.push(format!("queues tx {tx} rx {rx}"));
        }
        out.push((1, format!("{} (netns {}): {}", d.name, d.netns, what.join(", "))));
        if !d.features.is_empty() {
            let state = |on: bool| -> Vec<&str> {
                KEY_FEATURES.iter().copied().filter(|f| d.features.get(*f) == Some(&on)).collect()
            };
            let on_total = d.features.values().filter(|v| **v).count();
            out.push((
                2,
                format!(
                    "offloads on: {}; off: {} ({on_total} of {} features on)",
                    or_none(&state(true)),
                    or_none(&state(false)),
                    d.features.len()
                ),
            ));
        }
        if !d.irqs.is_empty() {
            let irqs: Vec<String> =
                d.irqs.iter().map(|i| format!("{} {} -> CPUs {}", i.irq, i.name, i.affinity)).collect();
            out.push((2, format!("IRQs: {}", irqs.join("; "))));
        }
        if !d.qeth.is_empty() {
            let q: Vec<String> = d.qeth.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out.push((2, format!("qeth: {}", q.join(", "))));
        }
    }
    for dp in &c.ovs_datapaths {
        out.push((
            1,
            format!(
                "OVS datapath {} (netns {}): {} flows; hit {}, missed {}, lost {}",
                dp.name, dp.netns, dp.flows, dp.hit, dp.missed, dp.lost
            ),
        ));
    }
    for g in &c.guests {
        out.push((
            1,
            format!("guest {} (pid {}): {} vCPUs, pinned to {}", g.name, g.pid, g.vcpus, g.vcpu_affinity.join(" | ")),
        ));
    }
    for n in &c.notes {
        out.push((1, format!("not read: {n}")));
    }
    out
}

fn or_none(v: &[&str]) -> String {
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.join(" ")
    }
}

/// The workload tool's own latency and throughput, what of its output
/// could not be read, and the host's share of its round trip (marked an
/// estimate).
pub(super) fn workload_lines(w: &Workload, share: Option<&HostShare>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(l) = &w.latency {
        let figures: Vec<String> = [
            ("mean", l.mean_ns),
            ("min", l.min_ns),
            ("p50", l.p50_ns),
            ("p90", l.p90_ns),
            ("p99", l.p99_ns),
            ("p99.9", l.p999_ns),
            ("max", l.max_ns),
        ]
        .iter()
        .filter_map(|(name, v)| v.map(|ns| format!("{name} {}", fmt_ns(ns))))
        .collect();
        out.push(format!("workload's own latency: {} ({})", figures.join(", "), l.from));
    }
    if let Some(t) = &w.throughput {
        let bytes = t.bytes.map_or(String::new(), |b| format!(", {b} bytes"));
        let secs = t.seconds.map_or(String::new(), |s| format!(" in {s:.2} s"));
        out.push(format!("workload's own throughput: {:.2} Mbit/s{bytes}{secs} ({})", t.bits_per_second / 1e6, t.from));
    }
    for n in w.notes.iter().filter(|n| w.transactions_from.as_deref() != Some(&format!("unreadable: {n}"))) {
        out.push(format!("workload output unreadable: {n}"));
    }
    if let Some(s) = share {
        let dirs: Vec<String> = s
            .paths
            .iter()
            .map(|p| format!("{} {} ({} hop pairs)", p.direction.slug(), fmt_ns(p.p50_sum_ns), p.pairs.len()))
            .collect();
        let ratio = s.share.map_or(String::new(), |x| format!(" = {:.0}% of", x * 100.0));
        out.push(format!(
            "host's share of the round trip (estimate): sum of hop-pair medians {}: {}{ratio} the workload's {} {}; {}",
            dirs.join(", "),
            fmt_ns(s.host_p50_sum_ns),
            fmt_ns(s.workload_round_trip_ns),
            s.workload_figure,
            s.note
        ));
    }
    out
}
