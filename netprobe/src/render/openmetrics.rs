//! The always-on aggregates as OpenMetrics text (what `netprobe serve`
//! answers on `/metrics`): per hop pair a latency histogram and a packet
//! counter, drops by reason, the kernel side's tracking and loss counters,
//! and CPU seconds by role and softirq. Everything comes from the analysis
//! of the live aggregates, like a report's; this module only names and
//! encodes it, with a bound on the number of series ([`SeriesCap`]).

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
};

use anyhow::Result;
use netprobe_common::{
    counter,
    hist::{bucket_bounds, Hist},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeCounterValue, EncodeMetric, NoLabelSet},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};

use crate::analyze::Analysis;

/// `le` bounds of the latency histograms: powers of two from 128 ns to
/// 2^30 ns (1.07 s). The kernel's log-linear buckets have edges at every
/// power of two, so these cumulative counts are exact, not interpolated.
const LE_EXP: std::ops::RangeInclusive<u32> = 7..=30;

/// The label value of every series folded together past the cap.
pub const OTHER: &str = "other";

/// Bounds the number of series per family: the first `max` distinct label
/// sets seen are kept for as long as netprobe runs (so each stays one
/// monotonic series), everything after them is folded into one `other`
/// series. Sticky admission also keeps `other` monotonic.
#[derive(Debug)]
pub struct SeriesCap {
    max: usize,
    admitted: BTreeSet<Vec<String>>,
}

impl SeriesCap {
    pub fn new(max: usize) -> SeriesCap {
        SeriesCap { max, admitted: BTreeSet::new() }
    }

    fn admit(&mut self, key: &[String]) -> bool {
        if self.admitted.contains(key) {
            return true;
        }
        if self.admitted.len() < self.max {
            self.admitted.insert(key.to_vec());
            return true;
        }
        false
    }
}

/// What a scrape needs besides the analysis: the `host` label, and the
/// caps, which persist across scrapes.
pub struct Scrape<'a> {
    pub host: &'a str,
    pub pair_cap: &'a mut SeriesCap,
    pub drop_cap: &'a mut SeriesCap,
}

type Labels = Vec<(&'static str, String)>;

/// Everything one scrape reports, as plain data.
#[derive(Debug, Default)]
struct Exposition {
    /// (labels, latency histogram) per hop pair.
    pairs: Vec<(Labels, Hist)>,
    drops: Vec<(Labels, u64)>,
    tracking: Vec<(Labels, u64)>,
    cpu_ns: Vec<(Labels, u64)>,
    softirq_ns: Vec<(Labels, u64)>,
    hops_attached: i64,
    /// Hops detached because their module was unloaded, per module.
    detached: Vec<(Labels, u64)>,
}

/// `guest`, last, names the QEMU guest behind the pair's (or the drop's)
/// device; series with no guest behind them go without it.
const PAIR_LABELS: [&str; 7] = ["direction", "path", "from_hop", "from_dev", "to_hop", "to_dev", "guest"];
const DROP_LABELS: [&str; 5] = ["direction", "reason", "last_hop", "last_dev", "guest"];

/// Labels without an empty `guest`.
fn without_empty_guest(mut labels: Labels) -> Labels {
    labels.retain(|(k, v)| *k != "guest" || !v.is_empty());
    labels
}

fn labelled(names: &[&'static str], values: Vec<String>) -> Labels {
    names.iter().copied().zip(values).collect()
}

/// `values` if admitted under the cap, else the same label set with every
/// label but the direction set to `other`.
fn capped(cap: &mut SeriesCap, names: &[&'static str], values: Vec<String>) -> Labels {
    if cap.admit(&values) {
        labelled(names, values)
    } else {
        let folded = values.iter().enumerate().map(|(i, v)| if i == 0 { v.clone() } else { OTHER.to_owned() });
        labelled(names, folded.collect())
    }
}

fn exposition(a: &Analysis, cx: &mut Scrape<'_>) -> Exposition {
    let r = &a.report;
    let hops_attached = r.coverage.iter().filter(|c| c.backend.is_some()).count();
    let mut e = Exposition { hops_attached: hops_attached as i64, ..Exposition::default() };
    let mut detached: BTreeMap<&str, u64> = BTreeMap::new();
    for d in r.coverage.iter().flat_map(|c| &c.detached) {
        *detached.entry(&d.module).or_default() += 1;
    }
    e.detached = detached.into_iter().map(|(m, n)| (labelled(&["module"], vec![m.to_owned()]), n)).collect();
    // Hop pairs, busiest first, so the cap admits those first.
    let mut rows: Vec<_> = a.pairs.iter().collect();
    rows.sort_by_key(|p| std::cmp::Reverse(p.hist.count));
    let names = r.guest_names();
    let mut pairs: BTreeMap<Labels, Hist> = BTreeMap::new();
    for p in rows {
        let values = vec![
            p.direction.slug().to_owned(),
            p.path.to_owned(),
            p.from_hop.clone(),
            p.from_dev.clone(),
            p.to_hop.clone(),
            p.to_dev.clone(),
            names.of_pair(&p.from_dev, &p.to_dev).unwrap_or_default().to_owned(),
        ];
        let labels = without_empty_guest(capped(cx.pair_cap, &PAIR_LABELS, values));
        pairs.entry(labels).or_insert_with(Hist::zeroed).merge(&p.hist);
    }
    e.pairs = pairs.into_iter().collect();

    // The report's drops are busiest first already.
    let mut drops: BTreeMap<Labels, u64> = BTreeMap::new();
    for d in &r.drops {
        let guest = names.guest(&d.last_dev).unwrap_or_default().to_owned();
        let values =
            vec![d.direction.slug().to_owned(), d.reason.clone(), d.last_hop.clone(), d.last_dev.clone(), guest];
        *drops.entry(without_empty_guest(capped(cx.drop_cap, &DROP_LABELS, values))).or_default() += d.packets;
    }
    e.drops = drops.into_iter().collect();

    e.tracking = counter::NAMES
        .iter()
        .map(|n| (vec![("counter", (*n).to_owned())], r.tracking.get(*n).copied().unwrap_or(0)))
        .collect();
    if let Some(cpu) = &r.cpu {
        e.softirq_ns =
            cpu.softirq_rows().into_iter().map(|(l, ns)| (vec![("softirq", l.to_ascii_lowercase())], ns)).collect();
        e.cpu_ns = cpu.by_role_ns.iter().map(|(role, ns)| (vec![("role", role.clone())], *ns)).collect();
    }
    e
}

/// The kernel's log-linear buckets folded into the `le` buckets (counts
/// per bucket, the encoder accumulates them; the last is +Inf).
fn le_buckets(h: &Hist) -> Vec<(f64, u64)> {
    let mut out: Vec<(f64, u64)> = LE_EXP.map(|e| ((1u64 << e) as f64 / 1e9, 0)).collect();
    out.push((f64::MAX, 0));
    for (i, &c) in h.buckets.iter().enumerate() {
        if c == 0 {
            continue;
        }
        // Values in bucket i are < hi; they count under the first le >= hi.
        let hi = bucket_bounds(i).1;
        let slot = LE_EXP.clone().position(|e| hi <= 1u64 << e).unwrap_or(out.len() - 1);
        out[slot].1 += c;
    }
    out
}

const NS: f64 = 1e9;

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cap_note =
            "Series beyond --max-series are folded into one with every label but direction set to \"other\".";
        let mut m = enc.encode_descriptor(
            "netprobe_hop_latency_seconds",
            &format!(
                "Time from one hop to the next for the same packet, per hop pair, direction and device. {cap_note}"
            ),
            None,
            MetricType::Histogram,
        )?;
        for (labels, h) in &self.pairs {
            m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
                h.sum_ns as f64 / NS,
                h.count,
                &le_buckets(h),
                None,
            )?;
        }
        let packets = self.pairs.iter().map(|(l, h)| (l, h.count));
        let help = "Packets that went from one hop to the next, per hop pair, direction and device.";
        counter_family(&mut enc, "netprobe_hop_packets", &format!("{help} {cap_note}"), packets)?;
        let help = "Packets freed as dropped (kfree_skb), by kernel drop reason and the last hop seen.";
        counter_family(
            &mut enc,
            "netprobe_drops",
            &format!("{help} {cap_note}"),
            self.drops.iter().map(|(l, n)| (l, *n)),
        )?;
        counter_family(
            &mut enc,
            "netprobe_tracking",
            "The kernel side's own accounting: packets followed and ended, journeys cut short (skb reused unseen, stale), and everything lost (not tracked, samples, drops not counted by reason).",
            self.tracking.iter().map(|(l, n)| (l, *n)),
        )?;
        counter_family(
            &mut enc,
            "netprobe_cpu_seconds",
            "On-CPU time of threads by role: vcpu (QEMU CPU n/KVM), vhost, ksoftirqd, ovs, netprobe, other.",
            self.cpu_ns.iter().map(|(l, ns)| (l, *ns as f64 / NS)),
        )?;
        counter_family(
            &mut enc,
            "netprobe_softirq_seconds",
            "Softirq time, all CPUs: net_rx and net_tx with --softirq-vectors, else all (from /proc/stat); also included in the thread times it ran in.",
            self.softirq_ns.iter().map(|(l, ns)| (l, *ns as f64 / NS)),
        )?;
        let m = enc.encode_descriptor(
            "netprobe_hops_attached",
            "Catalog hops attached right now (rises when a module such as openvswitch loads).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.hops_attached).encode(m)?;
        counter_family(
            &mut enc,
            "netprobe_hop_detachments",
            "Hops detached because their module was unloaded (what they measured is kept in the other series).",
            self.detached.iter().map(|(l, n)| (l, *n)),
        )?;
        Ok(())
    }
}

/// One counter family: its descriptor, then a series per label set.
fn counter_family<'a, N: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (&'a Labels, N)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// The OpenMetrics text of one scrape, every series labelled with `host`.
pub fn encode(a: &Analysis, cx: &mut Scrape<'_>) -> Result<String> {
    let host: Cow<'static, str> = Cow::Owned(cx.host.to_owned());
    let mut registry = Registry::with_labels([(Cow::Borrowed("host"), host)].into_iter());
    registry.register_collector(Box::new(exposition(a, cx)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use netprobe_common::hop;

    use super::*;
    use crate::{
        analyze::{
            analyze,
            tests::{dev, hist, recording, TestPair},
        },
        model::report::CoverageEntry,
        recording::Recording,
    };

    fn scrape(rec: &Recording, max_series: usize) -> String {
        let (mut pc, mut dc) = (SeriesCap::new(max_series), SeriesCap::new(max_series));
        encode(&analyze(rec).unwrap(), &mut Scrape { host: "h1", pair_cap: &mut pc, drop_cap: &mut dc }).unwrap()
    }

    #[test]
    fn le_buckets_are_exact_at_powers_of_two() {
        // 100 ns, 1000 ns (< 1024), 1500 ns (< 2048), 2 s (past the last le).
        let b = le_buckets(&hist(&[100, 1000, 1500, 2_000_000_000]));
        assert_eq!(b[0], (128e-9, 1));
        assert_eq!(b[3], (1024e-9, 1));
        assert_eq!(b[4], (2048e-9, 1));
        assert_eq!(b.last().unwrap(), &(f64::MAX, 1));
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 4);
    }

    #[test]
    fn histogram_and_counters_with_labels() {
        let (q, x) = (hop::NET_DEV_QUEUE, hop::NET_DEV_START_XMIT);
        let mut rec = recording(vec![dev(0x10, "mvt0", "macvtap")], &[(0x10, q, 0x10, x, 0x10, &[1000, 1000, 3000])]);
        rec.counters.insert("track_started".to_owned(), 7);
        let hop = CoverageEntry {
            hop: "queue".into(),
            path: "generic".into(),
            site: String::new(),
            backend: Some("tp_btf".into()),
            time_inside: false,
            notes: Vec::new(),
            detached: Vec::new(),
        };
        rec.coverage = vec![hop; 8];
        let text = scrape(&rec, 10);
        let labels =
            r#"direction="to-wire",path="generic",from_hop="queue",from_dev="mvt0",to_hop="xmit",to_dev="mvt0""#;
        for line in [
            format!("netprobe_hop_latency_seconds_count{{host=\"h1\",{labels}}} 3"),
            format!("netprobe_hop_latency_seconds_bucket{{host=\"h1\",le=\"0.000001024\",{labels}}} 2"),
            format!("netprobe_hop_latency_seconds_bucket{{host=\"h1\",le=\"0.000004096\",{labels}}} 3"),
            format!("netprobe_hop_latency_seconds_bucket{{host=\"h1\",le=\"+Inf\",{labels}}} 3"),
            format!("netprobe_hop_packets_total{{host=\"h1\",{labels}}} 3"),
            "netprobe_tracking_total{host=\"h1\",counter=\"track_started\"} 7".to_owned(),
            "netprobe_hops_attached{host=\"h1\"} 8".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_guests_pairs_and_drops_carry_its_name() {
        let (q, x, r) = (hop::NET_DEV_QUEUE, hop::NET_DEV_START_XMIT, hop::NETIF_RECEIVE_SKB);
        let mut rec = recording(
            vec![dev(0x10, "mvt0", "macvtap"), dev(0x20, "eth0", "veth")],
            &[(0x10, q, 0x10, x, 0x10, &[1000]), (0x20, r, 0x20, x, 0x20, &[1000])],
        );
        rec.meta.guests =
            vec![crate::model::Guest { name: "web1".into(), devices: vec!["mvt0".into()], ..Default::default() }];
        let text = scrape(&rec, 10);
        let counts: Vec<&str> = text.lines().filter(|l| l.starts_with("netprobe_hop_packets_total")).collect();
        assert!(counts.iter().any(|l| l.contains("from_dev=\"mvt0\"") && l.contains("guest=\"web1\"")), "{text}");
        assert!(counts.iter().any(|l| l.contains("from_dev=\"eth0\"") && !l.contains("guest=")), "{text}");
    }

    #[test]
    fn series_past_the_cap_fold_into_other() {
        let (q, x) = (hop::NET_DEV_QUEUE, hop::NET_DEV_START_XMIT);
        let values: Vec<Vec<u64>> = (1..=5).map(|d| vec![500; d]).collect();
        let pairs: Vec<TestPair<'_>> =
            (1..=5u64).map(|d| (0x10, q, d, x, d, values[d as usize - 1].as_slice())).collect();
        let rec = recording((1..=5u64).map(|d| dev(d, &format!("veth{d}"), "veth")).collect(), &pairs);
        let text = scrape(&rec, 2);
        let counts: Vec<&str> = text.lines().filter(|l| l.starts_with("netprobe_hop_packets_total")).collect();
        assert_eq!(counts.len(), 3, "{counts:#?}");
        // The busiest two keep their labels; 1 + 2 + 3 packets are "other".
        assert!(counts.iter().any(|l| l.contains("from_dev=\"veth5\"") && l.ends_with(" 5")));
        assert!(counts.iter().any(|l| l.contains("from_dev=\"veth4\"") && l.ends_with(" 4")));
        assert!(counts.iter().any(|l| l.contains("from_hop=\"other\",from_dev=\"other\"") && l.ends_with(" 6")));
    }
}
