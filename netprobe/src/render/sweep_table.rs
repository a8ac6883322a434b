//! `compare --format table` of a sweep (more than two recordings, or
//! labelled ones): the recordings in label order, then per direction and
//! path stage each aligned hop pair's p50 and p99 with one column per
//! recording, then the CPU per transaction by role, column for column.

use std::io::Write;

use anyhow::Result;

use crate::{
    analyze::sweep::Sweep,
    model::{fmt_ns, labels},
};

pub fn write(s: &Sweep, out: &mut dyn Write) -> Result<()> {
    let along = match (&s.swept, &s.group_by) {
        (Some(x), Some(g)) => format!(" along {x}, one line per {g}"),
        (Some(x), None) => format!(" along {x}"),
        (None, Some(g)) => format!(", one line per {g}"),
        (None, None) => String::new(),
    };
    writeln!(out, "sweep of {} recordings{along}", s.points.len())?;
    for (i, p) in s.points.iter().enumerate() {
        let labels = if p.labels.is_empty() { "no labels".to_owned() } else { labels::describe(&p.labels) };
        writeln!(out, "  [{}] {} ({labels})", i + 1, p.name)?;
    }
    let heads: Vec<String> = s.points.iter().map(|p| s.heading(p)).collect();
    let width = heads.iter().map(|h| h.chars().count()).max().unwrap_or(0).max(9);
    let header = |out: &mut dyn Write, first: &str| -> Result<()> {
        write!(out, "  {first:<38}")?;
        for h in &heads {
            write!(out, " {h:>width$}")?;
        }
        writeln!(out)?;
        Ok(())
    };
    let mut last = None;
    for r in &s.rows {
        if last != Some((r.direction, r.stage)) {
            writeln!(out, "\n{} / {:?}", r.direction.title(), r.stage)?;
            header(out, "hop pair")?;
            last = Some((r.direction, r.stage));
        }
        let pair = format!("{} -> {}", r.from_hop, r.to_hop);
        for (what, get) in
            [("p50", (|c: &crate::analyze::compare::Side| c.p50_ns) as fn(&_) -> u64), ("p99", |c| c.p99_ns)]
        {
            write!(out, "  {:<38}", format!("{pair} {what}"))?;
            for c in &r.cells {
                let v = c.as_ref().map_or("-".to_owned(), |c| fmt_ns(get(c)));
                write!(out, " {v:>width$}")?;
            }
            writeln!(out)?;
        }
    }
    writeln!(out, "\nCPU per transaction")?;
    if s.cpu_roles.is_empty() {
        writeln!(
            out,
            "  none: no recording's workload reported its transactions (sockperf, uperf, netperf, or --transactions)"
        )?;
        return Ok(());
    }
    header(out, "role")?;
    write!(out, "  {:<38}", "transactions")?;
    for p in &s.points {
        let v = p.transactions.map_or("-".to_owned(), |n| n.to_string());
        write!(out, " {v:>width$}")?;
    }
    writeln!(out)?;
    for role in &s.cpu_roles {
        write!(out, "  {role:<38}")?;
        for p in &s.points {
            let v = p.cpu_per_transaction_ns.get(role).map_or("-".to_owned(), |ns| fmt_ns(ns.round() as u64));
            write!(out, " {v:>width$}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}
