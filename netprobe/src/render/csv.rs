//! CSV: one row per hop pair (then one per drop reason, one per function
//! hop), for spreadsheets and scripts. Fields never contain commas (hop
//! labels, device names and drop reasons are identifiers).

use std::io::Write;

use anyhow::Result;

use crate::model::report::Report;

pub fn write(r: &Report, out: &mut dyn Write) -> Result<()> {
    writeln!(
        out,
        "kind,direction,from_hop,from_dev,to_hop,to_dev,packets,min_ns,mean_ns,p50_ns,p90_ns,p99_ns,p999_ns,max_ns"
    )?;
    for d in &r.directions {
        for p in &d.pairs {
            writeln!(
                out,
                "pair,{},{},{},{},{},{},{},{},{},{},{},{},{}",
                d.direction.slug(),
                p.from_hop,
                p.from_dev,
                p.to_hop,
                p.to_dev,
                p.packets,
                p.min_ns,
                p.mean_ns,
                p.p50_ns,
                p.p90_ns,
                p.p99_ns,
                p.p999_ns,
                p.max_ns
            )?;
        }
    }
    for f in &r.functions {
        writeln!(
            out,
            "function,,{},,,,{},,{},{},{},{},{},{}",
            f.hop,
            f.calls,
            f.total_ns / f.calls.max(1),
            f.p50_ns,
            f.p90_ns,
            f.p99_ns,
            f.p999_ns,
            f.max_ns
        )?;
    }
    for d in &r.drops {
        writeln!(out, "drop:{},{},{},{},,,{},,,,,,,", d.reason, d.direction.slug(), d.last_hop, d.last_dev, d.packets)?;
    }
    Ok(())
}
