//! `compare --format table`: the configuration differences first, then
//! the aligned hop pairs of two recordings, per
//! direction and path stage, with both sides' packets, p50 and p99 and the
//! relative change of the median.

use crate::{
    analyze::compare::{Comparison, Side},
    model::fmt_ns,
};

pub fn write(c: &Comparison, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    writeln!(out, "A = {}\nB = {}", c.a, c.b)?;
    writeln!(out, "\nconfiguration differences")?;
    if let Some(why) = &c.config_missing {
        writeln!(out, "  not compared: {why}")?;
    } else if c.config_differences.is_empty() {
        writeln!(out, "  none")?;
    }
    for d in &c.config_differences {
        writeln!(out, "  {}", d.describe())?;
    }
    let mut last = None;
    for r in &c.rows {
        if last != Some((r.direction, r.stage)) {
            writeln!(out, "\n{} / {:?}", r.direction.title(), r.stage)?;
            writeln!(
                out,
                "  {:<34} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
                "hop pair", "A pkts", "A p50", "A p99", "B pkts", "B p50", "B p99", "p50 B/A"
            )?;
            last = Some((r.direction, r.stage));
        }
        let side = |s: &Option<Side>| match s {
            Some(s) => (s.packets.to_string(), fmt_ns(s.p50_ns), fmt_ns(s.p99_ns)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let (ap, a50, a99) = side(&r.a);
        let (bp, b50, b99) = side(&r.b);
        let rel = r.p50_rel.map_or("only one".to_owned(), |x| format!("{:+.0}%", x * 100.0));
        writeln!(
            out,
            "  {:<34} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
            format!("{} -> {}", r.from_hop, r.to_hop),
            ap,
            a50,
            a99,
            bp,
            b50,
            b99,
            rel
        )?;
    }
    Ok(())
}
