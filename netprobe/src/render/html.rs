//! The HTML report: one self-contained page (inline CSS and SVG, no script,
//! nothing fetched) opening with the host's configuration, then per direction, the hop pairs' p50/p99 as bars and
//! their full percentile curves from the recording's histograms, the
//! interval series, the CPU breakdown, the guests (a guest's device named
//! with it: `macvtap0 [web1]`), the coverage and the drops. Every
//! figure comes from the report model or the recording's histograms; every
//! text is escaped.

use std::fmt::Write as _;

use anyhow::Result;

use super::svg::{self, esc, Axis, BarRow};
use crate::{
    analyze::{quantiles, Analysis, Journey},
    model::{
        fmt_ns,
        report::{DirectionReport, Report},
        Direction, GuestNames, PairName,
    },
};

/// Points of the percentile curves, as "nines": x = -log10(1 - q), so
/// 1 = p90, 2 = p99, 3 = p99.9, 4 = p99.99.
const NINES: [f64; 17] = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75, 4.0];

fn count(n: u64) -> String {
    n.to_string()
}

pub fn write(a: &Analysis, out: &mut dyn std::io::Write) -> Result<()> {
    let r = &a.report;
    let hists = a.pair_hists();
    let kept = a.journeys_kept;
    let mut h = String::new();
    svg::page_start(&mut h, &format!("netprobe report: Linux {}", r.kernel));
    let _ = writeln!(
        h,
        "<p class=\"meta\">netprobe {} on Linux {} ({} {} CPUs), {:.1} s recorded{}</p>",
        esc(&r.netprobe_version),
        esc(&r.kernel),
        esc(&a.host.arch),
        a.host.cpus,
        r.duration_s,
        if r.interrupted { " (interrupted)" } else { "" }
    );
    if !r.labels.is_empty() {
        let _ = writeln!(h, "<p class=\"meta labels\">labels: {}</p>", esc(&crate::model::labels::describe(&r.labels)));
    }
    if let Some(w) = &r.workload {
        let _ = writeln!(
            h,
            "<p class=\"meta\">workload: <code>{}</code>, {:.1} s, exit status {}</p>",
            esc(&w.command.join(" ")),
            w.ended_unix_s - w.started_unix_s,
            w.exit_status.map_or_else(|| "none".to_owned(), |c| c.to_string())
        );
        for line in super::context::workload_lines(w, r.host_share.as_ref()) {
            let _ = writeln!(h, "<p class=\"meta\">{}</p>", esc(&line));
        }
    }
    config(&mut h, r);
    cards(&mut h, r, kept);
    let names = r.guest_names();
    for d in &r.directions {
        direction(&mut h, d, &hists, &names);
    }
    journeys(&mut h, &a.journeys);
    intervals(&mut h, r);
    cpu(&mut h, r);
    guests(&mut h, r);
    drops(&mut h, r, &names);
    drop_stacks(&mut h, r);
    coverage(&mut h, r);
    tracking(&mut h, r);
    svg::page_end(&mut h);
    out.write_all(h.as_bytes())?;
    Ok(())
}

/// The host's configuration, as the table shows it.
fn config(h: &mut String, r: &Report) {
    h.push_str("<section id=\"config\"><h2>Host configuration</h2>\n");
    match &r.config {
        Some(c) => {
            h.push_str("<ul class=\"config\">\n");
            for (depth, line) in super::context::lines(c) {
                let _ = writeln!(h, "<li class=\"depth{depth}\">{}</li>", esc(&line));
            }
            h.push_str("</ul>\n");
        }
        None => {
            let _ = writeln!(h, "<p>{}</p>", esc(super::context::NOT_RECORDED));
        }
    }
    h.push_str("</section>\n");
}

fn cards(h: &mut String, r: &Report, journeys: usize) {
    let get = |k: &str| r.tracking.get(k).copied().unwrap_or(0);
    let attached = r.coverage.iter().filter(|c| c.backend.is_some()).count();
    let dropped: u64 = r.drops.iter().map(|d| d.packets).sum();
    h.push_str("<div class=\"cards\">");
    for (label, value) in [
        ("packets followed", get("track_started").to_string()),
        ("hop pairs", r.directions.iter().map(|d| d.pairs.len()).sum::<usize>().to_string()),
        ("hops attached", format!("{attached}/{}", r.coverage.len())),
        ("drops", dropped.to_string()),
        ("packet journeys kept", journeys.to_string()),
    ] {
        let _ = write!(h, "<div class=\"card\"><b>{}</b>{}</div>", esc(&value), esc(label));
    }
    h.push_str("</div>\n");
    if let Some(n) = r.sampled_one_in {
        let _ = writeln!(
            h,
            "<p class=\"note\">sampled: one packet in {n} followed (--sample {n}); packet counts are scaled by {n}, estimates</p>"
        );
    }
}

fn direction(
    h: &mut String,
    d: &DirectionReport,
    hists: &std::collections::BTreeMap<PairName, netprobe_common::hist::Hist>,
    names: &GuestNames,
) {
    let label = |from: &str, to: &str| names.pair(from, to);
    let _ =
        writeln!(h, "<section class=\"direction\" id=\"{}\"><h2>{}</h2>", d.direction.slug(), esc(d.direction.title()));
    if d.pairs.is_empty() {
        h.push_str("<p class=\"note\">no packet was followed across two hops in this direction</p></section>\n");
        return;
    }
    let rows: Vec<BarRow> = d
        .pairs
        .iter()
        .map(|p| BarRow { label: label(&p.from_label(), &p.to_label()), values: vec![Some(p.p50_ns), Some(p.p99_ns)] })
        .collect();
    let lo = d.pairs.iter().map(|p| p.p50_ns.max(1)).min().unwrap_or(1) as f64;
    let hi = d.pairs.iter().map(|p| p.p99_ns).max().unwrap_or(1) as f64;
    h.push_str("<h3>Latency per hop pair, in path order (log scale)</h3>\n");
    h.push_str(&svg::hbars("latency-bars", &["p50", "p99"], &rows, &Axis::decades(lo, hi, fmt_ns), fmt_ns));
    h.push_str(
        "\n<table class=\"hops\"><tr><th>hop pair</th><th>packets</th><th>min</th><th>p50</th><th>p90</th>\
         <th>p99</th><th>p99.9</th><th>max</th><th>mean</th></tr>\n",
    );
    for p in &d.pairs {
        let _ = writeln!(
            h,
            "<tr class=\"hop-row\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&label(&p.from_label(), &p.to_label())),
            p.packets,
            fmt_ns(p.min_ns),
            fmt_ns(p.p50_ns),
            fmt_ns(p.p90_ns),
            fmt_ns(p.p99_ns),
            fmt_ns(p.p999_ns),
            fmt_ns(p.max_ns),
            fmt_ns(p.mean_ns)
        );
    }
    h.push_str("</table>\n");
    // Percentile curves from the full histograms.
    let qs: Vec<f64> = NINES.iter().map(|n| 1.0 - 10f64.powf(-n)).collect();
    let mut series = Vec::new();
    let (mut lo, mut hi) = (f64::MAX, 1.0f64);
    for p in &d.pairs {
        let key = (d.direction, p.from_label(), p.to_label());
        let Some(hist) = hists.get(&key) else { continue };
        let values = quantiles(hist, &qs);
        let pts: Vec<(f64, f64)> = NINES.iter().zip(&values).map(|(&x, &v)| (x, v.max(1) as f64)).collect();
        lo = lo.min(values.first().copied().unwrap_or(1).max(1) as f64);
        hi = hi.max(values.last().copied().unwrap_or(1) as f64);
        series.push((label(&key.1, &key.2), pts));
    }
    if !series.is_empty() {
        let x = Axis {
            log: false,
            min: 0.0,
            max: 4.0,
            ticks: ["p0", "p90", "p99", "p99.9", "p99.99"]
                .iter()
                .enumerate()
                .map(|(i, t)| (i as f64, (*t).to_owned()))
                .collect(),
        };
        h.push_str("<h3>Percentile curves per hop pair (latency, log scale, against percentile)</h3>\n");
        h.push_str(&svg::lines("percentile-curves", &series, &x, &Axis::decades(lo, hi, fmt_ns), "percentile"));
    }
    h.push_str("</section>\n");
}

/// Journeys shown per direction, at most.
const JOURNEYS_SHOWN: usize = 12;

/// A few packets' journeys (trace mode), each as one bar split by where its
/// time went, hop pair by hop pair.
fn journeys(h: &mut String, journeys: &[Journey]) {
    if journeys.is_empty() {
        return;
    }
    let _ = writeln!(
        h,
        "<section id=\"journeys\"><h2>Packet journeys ({} kept)</h2>\n<p class=\"note\">Single packets, first to last hop: \
         each bar is one packet's whole time (total on the left), split by hop pair.</p>",
        journeys.len()
    );
    for dir in [Direction::ToWire, Direction::ToGuest] {
        let shown: Vec<&Journey> = journeys.iter().filter(|j| j.direction == dir).take(JOURNEYS_SHOWN).collect();
        if shown.is_empty() {
            continue;
        }
        let mut series: Vec<String> = Vec::new();
        let rows: Vec<svg::StackRow> = shown
            .iter()
            .map(|j| {
                let segments = j
                    .hops
                    .windows(2)
                    .map(|w| {
                        let name = format!("{} -> {}", w[0].at, w[1].at);
                        let idx = series.iter().position(|s| *s == name).unwrap_or_else(|| {
                            series.push(name.clone());
                            series.len() - 1
                        });
                        let ns = w[1].t_ns.saturating_sub(w[0].t_ns);
                        (idx, ns as f64, format!("{name}: {}", fmt_ns(ns)))
                    })
                    .collect();
                let total = j.hops.last().map_or(0, |l| l.t_ns) - j.hops.first().map_or(0, |f| f.t_ns);
                svg::StackRow {
                    label: format!("{} from {}", fmt_ns(total), j.hops.first().map_or("", |f| f.at.as_str())),
                    segments,
                }
            })
            .collect();
        let _ = writeln!(h, "<h3>{}</h3>", esc(dir.title()));
        h.push_str(&svg::stacked("journey-bars", &series, &rows));
    }
    h.push_str("</section>\n");
}

fn intervals(h: &mut String, r: &Report) {
    if r.intervals.is_empty() {
        return;
    }
    h.push_str("<section id=\"intervals\"><h2>Over time</h2>\n<h3>Packets per interval, by direction (hop-pair samples)</h3>\n");
    let mut series = Vec::new();
    let mut hi = 1.0f64;
    for dir in [Direction::ToWire, Direction::ToGuest] {
        let pts: Vec<(f64, f64)> = r
            .intervals
            .iter()
            .map(|iv| {
                // The busiest pair stands for the packets of the interval.
                let n = iv.pairs.iter().filter(|p| p.direction == dir).map(|p| p.packets).max().unwrap_or(0);
                hi = hi.max(n as f64);
                (iv.t_s, n as f64)
            })
            .collect();
        series.push((dir.title().to_owned(), pts));
    }
    let end = r.intervals.last().map_or(1.0, |iv| iv.t_s);
    let x = Axis::linear(end, |v| format!("{v} s"));
    h.push_str(&svg::lines("interval-series", &series, &x, &Axis::linear(hi, count), "seconds since the start"));
    h.push_str("</section>\n");
}

fn cpu(h: &mut String, r: &Report) {
    let Some(c) = &r.cpu else { return };
    h.push_str("<section id=\"cpu\"><h2>CPU time</h2>\n");
    let mut rows: Vec<BarRow> = c
        .by_role_ns
        .iter()
        .map(|(role, ns)| BarRow { label: format!("on-CPU: {role}"), values: vec![Some(*ns)] })
        .collect();
    for (l, ns) in c.softirq_rows() {
        rows.push(BarRow { label: format!("softirq {l}"), values: vec![Some(ns)] });
    }
    let hi = rows.iter().filter_map(|r| r.values[0]).max().unwrap_or(1) as f64;
    h.push_str(&svg::hbars("cpu-bars", &["CPU time"], &rows, &Axis::linear(hi, fmt_ns), fmt_ns));
    let _ = writeln!(
        h,
        "<p class=\"note\">{:.0} ns of softirq ({}) per packet followed; thread times include the softirqs that ran in their context.</p>",
        c.softirq_ns_per_packet,
        esc(if c.softirq_source.is_empty() { "NET_RX + NET_TX" } else { &c.softirq_source })
    );
    h.push_str("<table class=\"threads\"><tr><th>thread</th><th class=\"text\">role</th><th>pid/tid</th><th>on-CPU</th></tr>\n");
    for t in c.threads.iter().take(10) {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"text\">{}</td><td>{}/{}</td><td>{}</td></tr>",
            esc(&t.comm),
            esc(&t.role),
            t.tgid,
            t.tid,
            fmt_ns(t.ns)
        );
    }
    h.push_str("</table></section>\n");
}

/// The QEMU guests found, with the CPU time of their vCPU and vhost
/// threads and that CPU per packet of theirs.
fn guests(h: &mut String, r: &Report) {
    if r.guests.is_empty() {
        return;
    }
    h.push_str(
        "<section id=\"guests\"><h2>Guests</h2>\n<table class=\"guests\"><tr><th class=\"text\">guest</th>\
         <th>pid</th><th class=\"text\">devices</th><th>vCPU</th><th>vhost</th><th>packets</th>\
         <th>CPU per packet</th></tr>\n",
    );
    for g in &r.guests {
        let gone = g.guest.gone_after_s.map_or(String::new(), |t| format!(" (gone after {t:.1} s)"));
        let _ = writeln!(
            h,
            "<tr><td class=\"text\">{}{}</td><td>{}</td><td class=\"text\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&g.guest.name),
            esc(&gone),
            g.guest.pid,
            esc(&g.guest.devices.join(", ")),
            fmt_ns(g.vcpu_ns),
            fmt_ns(g.vhost_ns),
            g.packets,
            if g.packets > 0 { fmt_ns(g.cpu_ns_per_packet as u64) } else { "-".to_owned() }
        );
    }
    h.push_str("</table></section>\n");
}

fn drops(h: &mut String, r: &Report, names: &GuestNames) {
    h.push_str("<section id=\"drops\"><h2>Drops by reason</h2>\n");
    if r.drops.is_empty() {
        h.push_str("<p>none</p></section>\n");
        return;
    }
    let rows: Vec<BarRow> = r
        .drops
        .iter()
        .map(|d| BarRow { label: format!("{} ({})", d.reason, d.direction.slug()), values: vec![Some(d.packets)] })
        .collect();
    let hi = r.drops.iter().map(|d| d.packets).max().unwrap_or(1) as f64;
    h.push_str(&svg::hbars("drop-bars", &["packets"], &rows, &Axis::linear(hi, count), count));
    h.push_str("<table class=\"drops\"><tr><th>reason</th><th>packets</th><th class=\"text\">direction</th><th class=\"text\">after</th></tr>\n");
    for d in &r.drops {
        let after = if d.last_dev.is_empty() {
            d.last_hop.clone()
        } else {
            format!("{}@{}", d.last_hop, names.dev(&d.last_dev))
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td></tr>",
            esc(&d.reason),
            d.packets,
            d.direction.slug(),
            esc(&after)
        );
    }
    h.push_str("</table></section>\n");
}

/// `--drop-stacks`: each reason's top kernel stacks, folded root first
/// (one `stack packets` line each, as flame-graph tools read them).
fn drop_stacks(h: &mut String, r: &Report) {
    if r.drop_stacks.is_empty() {
        return;
    }
    let _ = writeln!(
        h,
        "<section id=\"drop-stacks\"><h2>Drop stacks</h2>\n<p class=\"meta\">The top {} kernel stacks of each \
         drop reason, folded root first as <code>stackcollapse-perf.pl</code> folds them.</p>\n<table \
         class=\"drop-stacks\"><tr><th class=\"text\">reason</th><th>packets</th><th class=\"text\">freed \
         by</th><th class=\"text\">stack (root first)</th></tr>",
        crate::analyze::TOP_STACKS_PER_REASON
    );
    for (i, d) in r.drop_stacks.iter().enumerate() {
        let _ = writeln!(
            h,
            "<tr><td class=\"text\">{}</td><td>{}</td><td class=\"text\"><code>{}</code></td><td \
             class=\"text\"><code style=\"overflow-wrap:anywhere\">{} {}</code></td></tr>",
            esc(&d.reason),
            d.packets,
            esc(&d.freed_by),
            esc(&d.stack),
            d.packets
        );
        if let Some(l) = r.drop_stacks_left_out_after(i) {
            let _ = writeln!(
                h,
                "<tr><td class=\"text\">{}</td><td>{}</td><td class=\"text\"></td><td class=\"text\">{}</td></tr>",
                esc(&l.reason),
                l.packets,
                l.describe()
            );
        }
    }
    h.push_str("</table></section>\n");
}

fn coverage(h: &mut String, r: &Report) {
    let attached = r.coverage.iter().filter(|c| c.backend.is_some()).count();
    let _ = writeln!(
        h,
        "<section id=\"coverage\"><h2>Coverage: {attached} of {} catalog hops observed</h2>\n<table class=\"coverage\">\
         <tr><th>hop</th><th class=\"text\">path</th><th class=\"text\">site</th><th class=\"text\">backend</th><th class=\"text\">why not (better)</th></tr>",
        r.coverage.len()
    );
    for c in &r.coverage {
        let (class, backend) = match &c.backend {
            Some(b) => {
                ("", format!("<span class=\"ok\">{}{}</span>", esc(b), if c.time_inside { "+exit" } else { "" }))
            }
            None => (" class=\"missing\"", "<span class=\"no\">not observed</span>".to_owned()),
        };
        let _ = writeln!(
            h,
            "<tr{class}><td>{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td><td class=\"text\">{backend}</td><td class=\"text\">{}</td></tr>",
            esc(&c.hop),
            esc(&c.path),
            esc(&c.site),
            esc(&c.notes.join("; "))
        );
    }
    h.push_str("</table></section>\n");
}

fn tracking(h: &mut String, r: &Report) {
    h.push_str("<section id=\"tracking\"><h2>Tracking and losses (kernel side)</h2>\n<table class=\"tracking\">");
    for (k, v) in &r.tracking {
        let _ = write!(h, "<tr><td>{}</td><td>{v}</td></tr>", esc(k));
    }
    h.push_str("</table></section>\n");
}
