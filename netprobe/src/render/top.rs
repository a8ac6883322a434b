//! `netprobe top`'s screen: the view of one interval (per hop pair its
//! packet rate, p50 and p99 per direction, the costliest first: the latency
//! the pair added in the interval, summed over its packets; a guest's
//! device named with it, `macvtap0 [web1]`; CPU by role as a share of one
//! CPU) and how it is drawn. The loop that owns the
//! terminal is `session::top`.

use ratatui::{
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Paragraph, Row, Table},
    Frame,
};

use crate::model::fmt_ns;
use crate::model::{
    report::{CpuReport, IntervalReport},
    Direction, GuestNames,
};

/// One hop pair in the last interval.
#[derive(Clone, Debug, PartialEq)]
pub struct HopRow {
    pub direction: Direction,
    pub from: String,
    pub to: String,
    pub packets_per_s: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    /// Latency added per second of wall time (sum over the pair's packets).
    pub cost_ns_per_s: f64,
}

/// What one screen shows.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub host: String,
    pub elapsed_s: f64,
    pub interval_s: f64,
    pub hops_attached: usize,
    pub followed: u64,
    pub lost: u64,
    /// Costliest first.
    pub rows: Vec<HopRow>,
    /// Share of one CPU over the interval, by role; then softirq (NET_RX,
    /// NET_TX with --softirq-vectors, else all).
    pub cpu: Vec<(String, f64)>,
}

impl View {
    /// The view of one interval of `dt` seconds; CPU from the difference
    /// of two cumulative CPU reports; devices named with their guests.
    pub fn new(
        iv: &IntervalReport,
        dt: f64,
        cpu_now: Option<&CpuReport>,
        cpu_before: Option<&CpuReport>,
        names: &GuestNames,
    ) -> View {
        let dt = dt.max(1e-3);
        let mut rows: Vec<HopRow> = iv
            .pairs
            .iter()
            .map(|p| {
                let (from, to) = names.pair_ends(&p.from, &p.to);
                HopRow {
                    direction: p.direction,
                    from,
                    to,
                    packets_per_s: p.packets as f64 / dt,
                    p50_ns: p.p50_ns,
                    p99_ns: p.p99_ns,
                    cost_ns_per_s: p.total_ns as f64 / dt,
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            b.cost_ns_per_s.total_cmp(&a.cost_ns_per_s).then(b.packets_per_s.total_cmp(&a.packets_per_s))
        });
        let mut cpu = Vec::new();
        if let Some(now) = cpu_now {
            let before = |f: &dyn Fn(&CpuReport) -> u64| cpu_before.map_or(0, f);
            let share = |now: u64, then: u64| now.saturating_sub(then) as f64 / 1e9 / dt;
            let mut roles: Vec<(String, f64)> = now
                .by_role_ns
                .iter()
                .map(|(role, &ns)| {
                    (role.clone(), share(ns, before(&|c: &CpuReport| c.by_role_ns.get(role).copied().unwrap_or(0))))
                })
                .collect();
            roles.sort_by(|a, b| b.1.total_cmp(&a.1));
            cpu.extend(roles);
            for (label, ns) in now.softirq_rows() {
                let then = before(&|c| c.softirq_rows().iter().find(|(l, _)| *l == label).map_or(0, |r| r.1));
                let name = if label == "all" { "softirq".to_owned() } else { label.to_owned() };
                cpu.push((name, share(ns, then)));
            }
        }
        View { interval_s: dt, rows, cpu, ..View::default() }
    }
}

/// Draws `view` on one frame.
pub fn draw(f: &mut Frame<'_>, view: &View) {
    let [head, body, foot] =
        Layout::vertical([Constraint::Length(2), Constraint::Min(3), Constraint::Length(2)]).areas(f.area());
    let header = vec![
        Line::from(format!(
            "netprobe top on {}: {:.0} s, last {:.1} s; {} hops attached, {} packets followed, {} lost",
            view.host, view.elapsed_s, view.interval_s, view.hops_attached, view.followed, view.lost
        )),
        Line::from("hop pairs by latency added per second (costliest first); q quits")
            .style(Style::new().add_modifier(Modifier::DIM)),
    ];
    f.render_widget(Paragraph::new(header), head);

    let rows = view.rows.iter().map(|r| {
        Row::new(vec![
            r.direction.slug().to_owned(),
            format!("{} -> {}", r.from, r.to),
            format!("{:.0}", r.packets_per_s),
            fmt_ns(r.p50_ns),
            fmt_ns(r.p99_ns),
            format!("{}/s", fmt_ns(r.cost_ns_per_s as u64)),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Min(30),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(11),
        ],
    )
    .header(
        Row::new(vec!["dir", "hop pair", "pkts/s", "p50", "p99", "cost"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    );
    if view.rows.is_empty() {
        f.render_widget(Paragraph::new("no packets in the last interval"), body);
    } else {
        f.render_widget(table, body);
    }

    let cpu: Vec<String> = view.cpu.iter().map(|(role, share)| format!("{role} {:.1}%", share * 100.0)).collect();
    let cpu = if cpu.is_empty() {
        "CPU: not measured on this kernel".to_owned()
    } else {
        format!("CPU (% of one CPU): {}", cpu.join("  "))
    };
    f.render_widget(Paragraph::new(cpu), foot);
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;

    use std::collections::BTreeMap;

    use super::*;
    use ratatui::Terminal;

    use crate::model::report::{IntervalLoad, IntervalPairReport};

    fn pair(
        direction: Direction,
        from: &str,
        to: &str,
        packets: u64,
        p99_ns: u64,
        total_ns: u64,
    ) -> IntervalPairReport {
        IntervalPairReport {
            direction,
            from: from.into(),
            to: to.into(),
            packets,
            p50_ns: p99_ns / 2,
            p99_ns,
            total_ns,
        }
    }

    #[test]
    fn costliest_pair_first_with_rates_and_cpu_shares() {
        let iv = IntervalReport {
            t_s: 2.0,
            pairs: vec![
                pair(Direction::ToWire, "queue@m0", "xmit@m0", 1000, 900, 600_000),
                pair(Direction::ToGuest, "receive@u0", "copy_out@m0", 100, 2_000_000, 50_000_000),
            ],
            load: IntervalLoad { packets: 1100, ..Default::default() },
        };
        let cpu = |vcpu: u64, rx: u64| CpuReport {
            by_role_ns: BTreeMap::from([("vcpu".to_owned(), vcpu)]),
            softirq_net_rx_ns: rx,
            softirq_net_tx_ns: 0,
            softirq_net_rx_per_cpu_ns: vec![],
            softirq_net_tx_per_cpu_ns: vec![],
            softirq_ns: rx,
            softirq_source: crate::model::SOFTIRQ_FROM_BPF.to_owned(),
            softirq_per_cpu_ns: vec![],
            softirq_ns_per_packet: 0.0,
            per_packet_ns: BTreeMap::new(),
            per_transaction_ns: BTreeMap::new(),
            transactions: None,
            threads: vec![],
        };
        let web1 = crate::model::Guest { name: "web1".into(), devices: vec!["m0".into()], ..Default::default() };
        let names = GuestNames::of([&web1]);
        let v = View::new(&iv, 0.5, Some(&cpu(300_000_000, 50_000_000)), Some(&cpu(100_000_000, 0)), &names);
        assert_eq!(v.rows[0].to, "copy_out@m0 [web1]");
        assert_eq!(v.rows[1].packets_per_s, 2000.0);
        assert_eq!(v.cpu[0], ("vcpu".to_owned(), 0.4));
        assert_eq!(v.cpu[1], ("NET_RX".to_owned(), 0.1));

        let mut t = Terminal::new(TestBackend::new(100, 10)).unwrap();
        t.draw(|f| draw(f, &v)).unwrap();
        let buf = t.backend().buffer();
        let lines: Vec<String> = (0..buf.area.height)
            .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol().to_owned()).collect())
            .collect();
        let screen = lines.join("\n");
        assert!(lines[3].contains("to-guest") && lines[3].contains("receive@u0 -> copy_out@m0 [web1]"), "{screen}");
        assert!(lines[3].contains("2.00ms"), "{screen}");
        assert!(lines[4].contains("queue@m0 -> xmit@m0 [web1]") && lines[4].contains("2000"), "{screen}");
        assert!(screen.contains("vcpu 40.0%"), "{screen}");
    }
}
