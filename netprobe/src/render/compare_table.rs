//! `compare --format table`: what carried each side's guest traffic, the
//! configuration differences, then the aligned hop pairs of two
//! recordings, per direction and path stage, with both sides' packets, p50
//! and p99 and the relative change of the median, and host CPU per packet
//! by role.

use crate::{
    analyze::compare::{Comparison, Side},
    model::fmt_ns,
};

pub fn write(c: &Comparison, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    writeln!(out, "A = {}\nB = {}", c.a, c.b)?;
    writeln!(out, "\nguests\n  A: {}\n  B: {}", c.guests[0], c.guests[1])?;
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
    cpu(c, out)
}

/// Host CPU per packet (and per transaction) by role, A against B.
fn cpu(c: &Comparison, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    if c.cpu.is_empty() {
        return Ok(());
    }
    let with_tx = c.cpu.iter().any(|r| r.a_ns_per_transaction.is_some() || r.b_ns_per_transaction.is_some());
    writeln!(out, "\nhost CPU per packet followed{}", if with_tx { " and per transaction" } else { "" })?;
    write!(out, "  {:<34} {:>9} {:>9} {:>8}", "role", "A", "B", "B/A")?;
    if with_tx {
        write!(out, " {:>11} {:>11}", "A per tx", "B per tx")?;
    }
    writeln!(out)?;
    let ns = |v: Option<f64>| v.map_or("-".to_owned(), |x| fmt_ns(x.round() as u64));
    for r in &c.cpu {
        let ratio = match (r.a_ns_per_packet, r.b_ns_per_packet) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:.2}x", b / a),
            _ => "-".to_owned(),
        };
        write!(out, "  {:<34} {:>9} {:>9} {:>8}", r.role, ns(r.a_ns_per_packet), ns(r.b_ns_per_packet), ratio)?;
        if with_tx {
            write!(out, " {:>11} {:>11}", ns(r.a_ns_per_transaction), ns(r.b_ns_per_transaction))?;
        }
        writeln!(out)?;
    }
    Ok(())
}
