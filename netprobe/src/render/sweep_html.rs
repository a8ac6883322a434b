//! `compare --format html` of a sweep: one offline page (inline SVG, no
//! script). The recordings in label order; per direction one chart per
//! aligned hop pair of latency against the swept label (p50 solid, p99
//! dashed), one colour per `--group-by` value, and the table with one
//! column per recording; then CPU per transaction by role, column for
//! column.

use std::fmt::Write as _;

use anyhow::Result;

use super::svg::{self, esc, Axis, Series};
use crate::{
    analyze::sweep::{Row, Sweep},
    model::{fmt_ns, labels, Direction},
};

pub fn write(s: &Sweep, out: &mut dyn std::io::Write) -> Result<()> {
    let mut h = String::new();
    svg::page_start(&mut h, "netprobe sweep");
    let along = match (&s.swept, &s.group_by) {
        (Some(x), Some(g)) => format!(" along {x}, one line per {g}"),
        (Some(x), None) => format!(" along {x}"),
        (None, Some(g)) => format!(", one line per {g}"),
        (None, None) => String::new(),
    };
    let _ = writeln!(h, "<p class=\"meta\">{} recordings{}</p>", s.points.len(), esc(&along));
    h.push_str(
        "<table class=\"points\"><tr><th>#</th><th class=\"text\">column</th><th class=\"text\">labels</th>\
         <th class=\"text\">recording</th><th class=\"text\">kernel</th><th>duration</th><th>packets followed</th>\
         <th>transactions</th></tr>\n",
    );
    for (i, p) in s.points.iter().enumerate() {
        let _ = writeln!(
            h,
            "<tr class=\"point\"><td>{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td>\
             <td class=\"text\">{}</td><td>{:.1} s</td><td>{}</td><td>{}</td></tr>",
            i + 1,
            esc(&s.heading(p)),
            esc(&labels::describe(&p.labels)),
            esc(&p.name),
            esc(&p.kernel),
            p.duration_s,
            p.packets_followed,
            p.transactions.map_or("-".to_owned(), |n| n.to_string())
        );
    }
    h.push_str("</table>\n");
    let xs: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for p in &s.points {
            let x = p.x.clone().unwrap_or_else(|| p.name.clone());
            if !v.contains(&x) {
                v.push(x);
            }
        }
        v.sort_by(|a, b| labels::cmp_values(a, b));
        v
    };
    let (x_axis, x_pos) = Axis::values(&xs);
    let x_of = |v: &str| xs.iter().position(|x| x == v).map_or(0.0, |i| x_pos[i]);
    let x_title = s.swept.clone().unwrap_or_else(|| "recording".to_owned());
    let groups = s.groups();
    for dir in [Direction::ToWire, Direction::ToGuest] {
        let rows: Vec<&Row> = s.rows.iter().filter(|r| r.direction == dir).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(h, "<section class=\"direction\" id=\"{}\"><h2>{}</h2>", dir.slug(), esc(dir.title()));
        for r in &rows {
            let lines = s.lines(r);
            let mut series = Vec::new();
            for l in &lines {
                let colour = groups.iter().position(|g| *g == l.group).unwrap_or(0);
                let name = l.group.clone().unwrap_or_default();
                for (what, dashed) in [("p50", false), ("p99", true)] {
                    series.push(Series {
                        name: if name.is_empty() { what.to_owned() } else { format!("{name} {what}") },
                        class: if dashed { "line p99" } else { "line p50" },
                        colour,
                        dashed,
                        points: l
                            .points
                            .iter()
                            .map(|(x, p50, p99)| (x_of(x), if dashed { *p99 } else { *p50 } as f64))
                            .collect(),
                    });
                }
            }
            let ys = || series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
            let (lo, hi) = (ys().fold(f64::MAX, f64::min).max(1.0), ys().fold(1.0, f64::max));
            let _ = writeln!(
                h,
                "<figure class=\"sweep-chart\"><figcaption>{:?}: {} -&gt; {}</figcaption>",
                r.stage,
                esc(&r.from_hop),
                esc(&r.to_hop)
            );
            h.push_str(&svg::xy(
                "sweep-latency",
                &series,
                &x_axis,
                &Axis::decades(lo, hi, fmt_ns),
                (&x_title, "latency (log)"),
                fmt_ns,
            ));
            h.push_str("</figure>\n");
        }
        table_head(&mut h, s, "sweep", "hop pair (p50 / p99)");
        for r in rows {
            let _ = write!(
                h,
                "<tr class=\"hop-row\"><td>{}</td><td class=\"text\">{} -&gt; {}</td>",
                esc(&format!("{:?}", r.stage)),
                esc(&r.from_hop),
                esc(&r.to_hop)
            );
            for c in &r.cells {
                let v = c.as_ref().map_or("-".to_owned(), |c| format!("{} / {}", fmt_ns(c.p50_ns), fmt_ns(c.p99_ns)));
                let _ = write!(h, "<td>{}</td>", esc(&v));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table></section>\n");
    }
    h.push_str("<section id=\"cpu\"><h2>CPU per transaction</h2>\n");
    if s.cpu_roles.is_empty() {
        h.push_str(
            "<p>none: no recording's workload reported its transactions (sockperf, uperf, netperf, or \
             --transactions)</p>\n",
        );
    } else {
        table_head(&mut h, s, "cpu-per-transaction", "role");
        h.push_str("<tr><td></td><td class=\"text\">transactions</td>");
        for p in &s.points {
            let _ = write!(h, "<td>{}</td>", p.transactions.map_or("-".to_owned(), |n| n.to_string()));
        }
        h.push_str("</tr>\n");
        for role in &s.cpu_roles {
            let _ = write!(h, "<tr class=\"cpu-row\"><td></td><td class=\"text\">{}</td>", esc(role));
            for p in &s.points {
                let v = p.cpu_per_transaction_ns.get(role).map_or("-".to_owned(), |ns| fmt_ns(ns.round() as u64));
                let _ = write!(h, "<td>{}</td>", esc(&v));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }
    h.push_str("</section>\n");
    svg::page_end(&mut h);
    out.write_all(h.as_bytes())?;
    Ok(())
}

/// A table's opening and heading row: stage, `first`, one column per point.
fn table_head(h: &mut String, s: &Sweep, class: &str, first: &str) {
    let _ = write!(h, "<table class=\"{class}\"><tr><th>stage</th><th class=\"text\">{}</th>", esc(first));
    for p in &s.points {
        let _ = write!(h, "<th class=\"point\">{}</th>", esc(&s.heading(p)));
    }
    h.push_str("</tr>\n");
}
