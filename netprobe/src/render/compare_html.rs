//! `compare --format html`: two recordings side by side on one offline
//! page. The configuration differences first, then per direction,
//! grouped bars of both sides' p50 and p99 for every aligned hop pair (from `compare`'s alignment by path stage), the table
//! with the relative change, and both sides' CPU time by role and drops.

use std::{collections::BTreeSet, fmt::Write as _};

use anyhow::Result;

use super::svg::{self, esc, Axis, BarRow};
use crate::{
    analyze::compare::{Comparison, Side},
    model::{fmt_ns, report::Report, Direction},
};

pub fn write(c: &Comparison, out: &mut dyn std::io::Write) -> Result<()> {
    let [a, b] = &c.reports;
    let mut h = String::new();
    svg::page_start(&mut h, "netprobe comparison");
    h.push_str("<table class=\"sides\"><tr><th></th><th class=\"text\">recording</th><th class=\"text\">kernel</th><th>duration</th><th>packets followed</th><th>drops</th><th>hops attached</th><th class=\"text\">guests</th></tr>\n");
    for (name, file, r, guests) in [("A", &c.a, a, &c.guests[0]), ("B", &c.b, b, &c.guests[1])] {
        let _ = writeln!(
            h,
            "<tr><td><b>{name}</b></td><td class=\"text\">{}</td><td class=\"text\">{}</td><td>{:.1} s</td><td>{}</td><td>{}</td><td>{}/{}</td><td class=\"text guests\">{}</td></tr>",
            esc(file),
            esc(&r.kernel),
            r.duration_s,
            r.tracking.get("track_started").copied().unwrap_or(0),
            r.drops.iter().map(|d| d.packets).sum::<u64>(),
            r.coverage.iter().filter(|c| c.backend.is_some()).count(),
            r.coverage.len(),
            esc(guests)
        );
    }
    h.push_str("</table>\n");
    h.push_str("<section id=\"config\"><h2>Configuration differences</h2>\n");
    match &c.config_missing {
        Some(why) => {
            let _ = writeln!(h, "<p>not compared: {}</p>", esc(why));
        }
        None if c.config_differences.is_empty() => h.push_str("<p>none</p>\n"),
        None => {
            h.push_str("<table class=\"config\"><tr><th class=\"text\">setting</th><th class=\"text\">A</th><th class=\"text\">B</th></tr>\n");
            for d in &c.config_differences {
                let side = |v: &Option<String>| esc(v.as_deref().unwrap_or("absent"));
                let _ = writeln!(
                    h,
                    "<tr><td class=\"text\">{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td></tr>",
                    esc(&d.setting),
                    side(&d.a),
                    side(&d.b)
                );
            }
            h.push_str("</table>\n");
        }
    }
    h.push_str("</section>\n");
    for dir in [Direction::ToWire, Direction::ToGuest] {
        let rows: Vec<_> = c.rows.iter().filter(|r| r.direction == dir).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(h, "<section class=\"direction\" id=\"{}\"><h2>{}</h2>", dir.slug(), esc(dir.title()));
        let bars: Vec<BarRow> = rows
            .iter()
            .map(|r| BarRow {
                label: format!("{:?}: {} -> {}", r.stage, r.from_hop, r.to_hop),
                values: vec![p50(&r.a), p50(&r.b), p99(&r.a), p99(&r.b)],
            })
            .collect();
        let values = || bars.iter().flat_map(|r| r.values.iter().flatten().copied());
        let (lo, hi) = (values().min().unwrap_or(1).max(1), values().max().unwrap_or(1));
        h.push_str("<h3>Latency per hop pair, A against B (log scale)</h3>\n");
        h.push_str(&svg::hbars(
            "compare-bars",
            &["A p50", "B p50", "A p99", "B p99"],
            &bars,
            &Axis::decades(lo as f64, hi as f64, fmt_ns),
            fmt_ns,
        ));
        h.push_str(
            "<table class=\"compare\"><tr><th>stage</th><th class=\"text\">hop pair</th><th>A packets</th><th>A p50</th><th>A p99</th>\
             <th>B packets</th><th>B p50</th><th>B p99</th><th>p50 B/A</th></tr>\n",
        );
        for r in rows {
            let cells = |s: &Option<Side>| match s {
                Some(s) => format!("<td>{}</td><td>{}</td><td>{}</td>", s.packets, fmt_ns(s.p50_ns), fmt_ns(s.p99_ns)),
                None => "<td>-</td><td>-</td><td>-</td>".to_owned(),
            };
            let rel = r.p50_rel.map_or("only one".to_owned(), |x| format!("{:+.0}%", x * 100.0));
            let _ = writeln!(
                h,
                "<tr class=\"hop-row\"><td>{}</td><td class=\"text\">{} -&gt; {}</td>{}{}<td>{}</td></tr>",
                esc(&format!("{:?}", r.stage)),
                esc(&r.from_hop),
                esc(&r.to_hop),
                cells(&r.a),
                cells(&r.b),
                esc(&rel)
            );
        }
        h.push_str("</table></section>\n");
    }
    cpu(&mut h, a, b);
    cpu_per_packet(&mut h, c);
    drops(&mut h, a, b);
    svg::page_end(&mut h);
    out.write_all(h.as_bytes())?;
    Ok(())
}

fn p50(s: &Option<Side>) -> Option<u64> {
    s.as_ref().map(|s| s.p50_ns)
}

fn p99(s: &Option<Side>) -> Option<u64> {
    s.as_ref().map(|s| s.p99_ns)
}

fn cpu(h: &mut String, a: &Report, b: &Report) {
    let (Some(ca), Some(cb)) = (&a.cpu, &b.cpu) else { return };
    let roles: BTreeSet<&String> = ca.by_role_ns.keys().chain(cb.by_role_ns.keys()).collect();
    let mut rows: Vec<BarRow> = roles
        .into_iter()
        .map(|role| BarRow {
            label: format!("on-CPU: {role}"),
            values: vec![ca.by_role_ns.get(role).copied(), cb.by_role_ns.get(role).copied()],
        })
        .collect();
    // Softirq rows by label; A and B may have timed softirqs differently.
    let (sa, sb) = (ca.softirq_rows(), cb.softirq_rows());
    let mut labels: Vec<&str> = sa.iter().chain(&sb).map(|(l, _)| *l).collect();
    labels.dedup();
    labels.sort_unstable();
    labels.dedup();
    for l in labels {
        let of = |rows: &[(&str, u64)]| rows.iter().find(|(x, _)| *x == l).map(|(_, ns)| *ns);
        rows.push(BarRow { label: format!("softirq {l}"), values: vec![of(&sa), of(&sb)] });
    }
    let hi = rows.iter().flat_map(|r| r.values.iter().flatten()).max().copied().unwrap_or(1);
    h.push_str("<section id=\"cpu\"><h2>CPU time, A against B</h2>\n");
    h.push_str(&svg::hbars("cpu-bars", &["A", "B"], &rows, &Axis::linear(hi as f64, fmt_ns), fmt_ns));
    h.push_str("</section>\n");
}

/// Host CPU per packet followed (and per transaction) by role.
fn cpu_per_packet(h: &mut String, c: &Comparison) {
    if c.cpu.is_empty() {
        return;
    }
    let ns = |v: Option<f64>| v.map_or("-".to_owned(), |x| fmt_ns(x.round() as u64));
    h.push_str("<section id=\"cpu-per-packet\"><h2>Host CPU per packet followed and per transaction</h2>\n");
    h.push_str(
        "<table class=\"cpu-per-packet\"><tr><th class=\"text\">role</th><th>A per packet</th><th>B per packet</th>\
         <th>B/A</th><th>A per transaction</th><th>B per transaction</th></tr>\n",
    );
    for r in &c.cpu {
        let ratio = match (r.a_ns_per_packet, r.b_ns_per_packet) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:.2}x", b / a),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            h,
            "<tr class=\"cpu-row\"><td class=\"text\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.role),
            ns(r.a_ns_per_packet),
            ns(r.b_ns_per_packet),
            ratio,
            ns(r.a_ns_per_transaction),
            ns(r.b_ns_per_transaction)
        );
    }
    h.push_str("</table></section>\n");
}

fn drops(h: &mut String, a: &Report, b: &Report) {
    let reasons: BTreeSet<&String> = a.drops.iter().chain(&b.drops).map(|d| &d.reason).collect();
    h.push_str("<section id=\"drops\"><h2>Drops by reason</h2>\n");
    if reasons.is_empty() {
        h.push_str("<p>none on either side</p></section>\n");
        return;
    }
    h.push_str("<table class=\"drops\"><tr><th>reason</th><th>A packets</th><th>B packets</th></tr>\n");
    for reason in reasons {
        let n = |r: &Report| r.drops.iter().filter(|d| &d.reason == reason).map(|d| d.packets).sum::<u64>();
        let _ = writeln!(h, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", esc(reason), n(a), n(b));
    }
    h.push_str("</table></section>\n");
}
