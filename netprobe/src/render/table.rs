//! The terminal table: the host's configuration, then per direction each
//! hop pair in path order with its packet count and latency percentiles (a
//! guest's device named with the guest: `macvtap0 [web1]`); the guests with
//! their CPU; then drops by reason (and by kernel stack, `--drop-stacks`),
//! coverage and the kernel side's loss accounting.

use std::io::Write;

use anyhow::Result;

use crate::model::report::{CoverageEntry, Detachment, GuestReport, Report};
use crate::model::{fmt_ns, labels};

pub fn write(r: &Report, out: &mut dyn Write) -> Result<()> {
    writeln!(
        out,
        "netprobe {} on Linux {}: {:.1} s recorded{}",
        r.netprobe_version,
        r.kernel,
        r.duration_s,
        if r.interrupted { " (interrupted)" } else { "" }
    )?;
    if !r.labels.is_empty() {
        writeln!(out, "labels: {}", labels::describe(&r.labels))?;
    }
    match &r.config {
        Some(c) => {
            writeln!(out, "host configuration:")?;
            for (depth, line) in super::context::lines(c) {
                writeln!(out, "{:indent$}{line}", "", indent = 2 * (depth + 1))?;
            }
        }
        None => writeln!(out, "host configuration: {}", super::context::NOT_RECORDED)?,
    }
    if let Some(w) = &r.workload {
        let end = match (w.exit_status, w.signal) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "still running when the recording ended".to_owned(),
        };
        let what = match &w.cgroup {
            Some(c) => format!("cgroup {c} ({} processes)", w.tgids.len()),
            None => format!("`{}`", w.command.join(" ")),
        };
        let tx = match (w.transactions, &w.transactions_from) {
            (Some(n), Some(from)) => format!(", {n} transactions ({from})"),
            (None, Some(why)) => format!(", transactions {why}"),
            _ => String::new(),
        };
        writeln!(out, "workload: {what}, {:.1} s, {end}{tx}", w.ended_unix_s - w.started_unix_s)?;
        for line in super::context::workload_lines(w, r.host_share.as_ref()) {
            writeln!(out, "  {line}")?;
        }
    }
    if let Some(f) = &r.filter {
        writeln!(out, "flow filter (in the kernel): {f}")?;
    }
    if let Some(n) = r.sampled_one_in {
        writeln!(
            out,
            "sampled: one packet in {n} followed (--sample {n}); packet counts are scaled by {n}, estimates"
        )?;
    }
    write_coverage(r, out)?;
    if r.directions.iter().all(|d| d.pairs.is_empty()) {
        writeln!(out, "\nno packet was followed across two hops")?;
    }
    let names = r.guest_names();
    for d in &r.directions {
        if d.pairs.is_empty() {
            continue;
        }
        writeln!(out, "\n{}", d.direction.title())?;
        let labels: Vec<String> = d.pairs.iter().map(|p| names.pair(&p.from_label(), &p.to_label())).collect();
        let w = labels.iter().map(String::len).max().unwrap_or(0).max(8);
        writeln!(
            out,
            "  {:<w$} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "hop pair", "packets", "p50", "p90", "p99", "p99.9", "max"
        )?;
        for (p, pair) in d.pairs.iter().zip(labels) {
            writeln!(
                out,
                "  {:<w$} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                pair,
                p.packets,
                fmt_ns(p.p50_ns),
                fmt_ns(p.p90_ns),
                fmt_ns(p.p99_ns),
                fmt_ns(p.p999_ns),
                fmt_ns(p.max_ns)
            )?;
        }
    }
    if !r.functions.is_empty() {
        writeln!(out, "\ntime inside hop functions (entry to return)")?;
        writeln!(
            out,
            "  {:<24} {:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "function hop", "path", "calls", "p50", "p90", "p99", "max", "total"
        )?;
        for f in &r.functions {
            writeln!(
                out,
                "  {:<24} {:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
                f.hop,
                f.path,
                f.calls,
                fmt_ns(f.p50_ns),
                fmt_ns(f.p90_ns),
                fmt_ns(f.p99_ns),
                fmt_ns(f.max_ns),
                fmt_ns(f.total_ns)
            )?;
        }
    }
    if !r.intervals.is_empty() {
        // The busiest hop pair of each interval, to spot a moment that
        // stands out; the whole series is in the JSON and the recording.
        writeln!(out, "\ninterval series ({} intervals): busiest hop pair per interval", r.intervals.len())?;
        for iv in &r.intervals {
            if let Some(p) = iv.pairs.iter().max_by_key(|p| p.packets) {
                let threads: u64 =
                    iv.load.cpu_ns_by_role.iter().filter(|(r, _)| *r != "netprobe").map(|(_, v)| v).sum();
                // Recordings before the CPU series have neither.
                let cpu = if iv.load.softirq_ns > 0 || threads > 0 {
                    format!("  (softirq {}, threads {})", fmt_ns(iv.load.softirq_ns), fmt_ns(threads))
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    "  t={:>6.1}s {:>9} pkts  p50 {:>9}  p99 {:>9}  {}{}",
                    iv.t_s,
                    p.packets,
                    fmt_ns(p.p50_ns),
                    fmt_ns(p.p99_ns),
                    names.pair(&p.from, &p.to),
                    cpu
                )?;
            }
        }
    }
    write_guests(&r.guests, out)?;
    if let Some(c) = &r.cpu {
        let soft: Vec<String> = c.softirq_rows().iter().map(|(l, ns)| format!("{l} {}", fmt_ns(*ns))).collect();
        let from = if c.softirq_source.is_empty() { String::new() } else { format!(", {}", c.softirq_source) };
        writeln!(
            out,
            "\nCPU: softirq {} ({:.0} ns per packet followed{from})",
            soft.join(", "),
            c.softirq_ns_per_packet
        )?;
        let roles: Vec<String> = c.by_role_ns.iter().map(|(r, ns)| format!("{r} {}", fmt_ns(*ns))).collect();
        writeln!(out, "  on-CPU by role: {}", roles.join(", "))?;
        let per = |m: &std::collections::BTreeMap<String, f64>| {
            m.iter().filter(|(_, v)| **v >= 1.0).map(|(r, v)| format!("{r} {}", fmt_ns(*v as u64))).collect::<Vec<_>>()
        };
        if !c.per_packet_ns.is_empty() {
            writeln!(out, "  per packet followed: {}", per(&c.per_packet_ns).join(", "))?;
        }
        if let Some(n) = c.transactions {
            writeln!(out, "  per transaction ({n}): {}", per(&c.per_transaction_ns).join(", "))?;
        }
        for t in c.threads.iter().take(5) {
            writeln!(out, "  {:>10}  {} [{}/{}] ({})", fmt_ns(t.ns), t.comm, t.tgid, t.tid, t.role)?;
        }
    }
    writeln!(out, "\ndrops by reason")?;
    if r.drops.is_empty() {
        writeln!(out, "  none")?;
    }
    for d in &r.drops {
        let dir = d.direction.slug();
        writeln!(
            out,
            "  {:<28} {:>9}  {:<8}  after {}{}",
            d.reason,
            d.packets,
            dir,
            d.last_hop,
            if d.last_dev.is_empty() { String::new() } else { format!("@{}", names.dev(&d.last_dev)) }
        )?;
    }
    let t = &r.tracking;
    let get = |k: &str| t.get(k).copied().unwrap_or(0);
    let stack_misses = ["drop_stack_collision", "drop_stack_failed", "drop_stack_lost"].map(get);
    if !r.drop_stacks.is_empty() || stack_misses.iter().any(|&n| n > 0) {
        writeln!(
            out,
            "\ndrop stacks (top {} per reason; folded root first, as `stack packets` for flame-graph tools)",
            crate::analyze::TOP_STACKS_PER_REASON
        )?;
        let mut last = None;
        for (i, d) in r.drop_stacks.iter().enumerate() {
            if last != Some(d.reason_code) {
                writeln!(out, "  {}", d.reason)?;
                last = Some(d.reason_code);
            }
            writeln!(out, "    {:>9}  freed by {}", d.packets, d.freed_by)?;
            writeln!(out, "      {} {}", d.stack, d.packets)?;
            if let Some(l) = r.drop_stacks_left_out_after(i) {
                writeln!(out, "    {:>9}  {}", l.packets, l.describe())?;
            }
        }
        writeln!(
            out,
            "  drops without a stack: {} stack-map collisions, {} other stack failures, {} not counted (map full)",
            stack_misses[0], stack_misses[1], stack_misses[2]
        )?;
    }
    writeln!(
        out,
        "\ntracking: {} packets followed, {} ended; journeys cut short: {} skb reused unseen, {} stale; \
         lost: {} evicted from the tracking table, {} samples, {} drops not counted by reason{}",
        get("track_started"),
        get("track_ended"),
        get("track_reused"),
        get("track_stale"),
        get("track_evicted"),
        get("pair_lost"),
        get("drop_lost"),
        if r.filter.is_some() {
            format!("; {} sightings excluded by the flow filter", get("flow_excluded"))
        } else {
            String::new()
        },
    )?;
    // Thread chains (vhost-net's steps where no skb exists): shown where
    // any step was lost, so a recording without them reads as before.
    let (missed, lost, empty) = (get("chain_kick_missed"), get("chain_lost"), get("chain_empty"));
    if missed + lost + empty > 0 {
        writeln!(
            out,
            "thread chains (before the first skb, after the last): {missed} worker runs whose kick was not on \
             record, {empty} kicked runs that moved no frame; lost: {lost} sent frames whose skb was not met"
        )?;
    }
    Ok(())
}

/// The QEMU guests found: name, process, devices, the CPU time of their
/// vCPU and vhost threads, and that CPU per packet of theirs.
fn write_guests(guests: &[GuestReport], out: &mut dyn Write) -> Result<()> {
    if guests.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nguests")?;
    writeln!(
        out,
        "  {:<16} {:>8} {:<20} {:>10} {:>10} {:>9} {:>14}",
        "name", "pid", "devices", "vCPU", "vhost", "packets", "CPU per packet"
    )?;
    for g in guests {
        let gone = g.guest.gone_after_s.map_or(String::new(), |t| format!("  (gone after {t:.1} s)"));
        let per = if g.packets > 0 { fmt_ns(g.cpu_ns_per_packet as u64) } else { "-".to_owned() };
        writeln!(
            out,
            "  {:<16} {:>8} {:<20} {:>10} {:>10} {:>9} {:>14}{gone}",
            g.guest.name,
            g.guest.pid,
            if g.guest.devices.is_empty() { "-".to_owned() } else { g.guest.devices.join(",") },
            fmt_ns(g.vcpu_ns),
            fmt_ns(g.vhost_ns),
            g.packets,
            per
        )?;
    }
    Ok(())
}

/// Coverage header: what is attached, with which backend, and per path how
/// many hops are not and the first reason why, so no number is read without
/// knowing what was not observed.
pub fn write_coverage(r: &Report, out: &mut dyn Write) -> Result<()> {
    let attached: Vec<String> =
        r.coverage.iter().filter_map(|c| c.backend.as_ref().map(|b| format!("{} ({b})", c.hop))).collect();
    writeln!(out, "hops attached ({}/{}): {}", attached.len(), r.coverage.len(), attached.join(", "))?;
    let mut paths: Vec<&str> = Vec::new();
    for c in &r.coverage {
        if !paths.contains(&c.path.as_str()) {
            paths.push(&c.path);
        }
    }
    for path in paths {
        let missing: Vec<&CoverageEntry> =
            r.coverage.iter().filter(|c| c.path == path && c.backend.is_none()).collect();
        if let Some(first) = missing.first() {
            writeln!(
                out,
                "  not observed on {path}: {} hop(s), e.g. {}: {}",
                missing.len(),
                first.hop,
                first.notes.join("; ")
            )?;
        }
    }
    write_detachments(r, out)
}

/// Hops detached mid-run because their module was unloaded: one line per
/// module and time, with when they came back (or that they did not) and
/// the gap; what they measured before is in the rows below.
fn write_detachments(r: &Report, out: &mut dyn Write) -> Result<()> {
    let mut stretches: Vec<(&Detachment, Vec<&str>)> = Vec::new();
    for c in &r.coverage {
        for d in &c.detached {
            match stretches.iter_mut().find(|(s, _)| *s == d) {
                Some((_, hops)) => hops.push(&c.hop),
                None => stretches.push((d, vec![&c.hop])),
            }
        }
    }
    stretches.sort_by(|a, b| a.0.detached_at_s.total_cmp(&b.0.detached_at_s));
    for (d, hops) in stretches {
        let back = match d.reattached_at_s {
            Some(t) => format!("re-attached at +{t:.1} s"),
            None => "not attached again".to_owned(),
        };
        writeln!(
            out,
            "  module {} unloaded: {} hop(s) detached at +{:.1} s, {back}: {:.1} s without them ({}); \
             what they measured before is kept",
            d.module,
            hops.len(),
            d.detached_at_s,
            d.gap_s(r.duration_s),
            hops.join(", ")
        )?;
    }
    Ok(())
}

/// `netprobe probes`: one line per catalog hop.
pub fn write_probes(r: &Report, out: &mut dyn Write) -> Result<()> {
    writeln!(out, "netprobe {} on Linux {}", r.netprobe_version, r.kernel)?;
    writeln!(out, "{:<22} {:<24} {:<44} {:<11} why not better / why none", "hop", "path", "site", "backend")?;
    for c in &r.coverage {
        let backend = match (&c.backend, c.time_inside) {
            (Some(b), true) => format!("{b}+exit"),
            (Some(b), false) => b.clone(),
            (None, _) => "-".to_owned(),
        };
        writeln!(out, "{:<22} {:<24} {:<44} {:<11} {}", c.hop, c.path, c.site, backend, c.notes.join("; "))?;
    }
    Ok(())
}
