//! Turns the kernel's aggregates into per-hop numbers: hop-pair histograms
//! become HdrHistograms and percentiles, device keys become names, each
//! packet's origin decides its direction, and pairs are put in path order.
//! The only module that gives the raw aggregates a meaning.

use std::collections::{BTreeMap, HashMap, VecDeque};

use anyhow::Result;
use hdrhistogram::Histogram;
use netprobe_common::{
    counter,
    hist::{bucket_bounds, Hist},
    DevInfo,
};

use crate::{
    attach::Coverage,
    catalog,
    collect::Snapshot,
    recording::Recording,
    report::{
        CoverageEntry, DeviceReport, Direction, DirectionReport, DropReport, FunctionReport, IntervalHists, Journey,
        JourneyHop, PairName, PairReport, Report,
    },
};

/// What the report needs besides the snapshot.
pub struct Context<'a> {
    pub coverage: &'a [Coverage],
    pub drop_reasons: &'a BTreeMap<u32, String>,
    pub duration_s: f64,
    pub interrupted: bool,
    /// Devices known (from --iface) to be guest-facing; needed where the
    /// kernel side cannot tell a device's kind (classic tracepoints).
    pub guest_facing: &'a [String],
    /// The workload, whose processes' threads get the role `workload`
    /// and whose transactions normalise CPU time.
    pub workload: Option<&'a crate::report::Workload>,
    /// QEMU guests found during the recording.
    pub guests: &'a [crate::guests::Guest],
}

/// A NUL-padded kernel name as a string.
pub fn cstr(b: &[u8; 16]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

pub(crate) fn dev_name(devs: &BTreeMap<u64, DevInfo>, key: u64) -> String {
    if key == 0 {
        return String::new();
    }
    match devs.get(&key) {
        Some(d) if d.name[0] != 0 => cstr(&d.name),
        _ => format!("dev:{key:x}"),
    }
}

/// Guest-facing devices are where a guest's packets enter the host: the
/// macvtap or tap device QEMU/vhost writes into.
fn is_guest_facing(devs: &BTreeMap<u64, DevInfo>, key: u64, known: &[String]) -> bool {
    let Some(d) = devs.get(&key) else {
        return false;
    };
    let kind = cstr(&d.kind);
    if !kind.is_empty() {
        return kind == "macvtap" || kind == "tun";
    }
    // Classic tracepoints carry names only: what --iface told us, else
    // sysfs (this namespace).
    let name = cstr(&d.name);
    if known.contains(&name) {
        return true;
    }
    let sys = std::path::Path::new("/sys/class/net").join(&name);
    sys.join("tun_flags").exists() || sys.join("macvtap").exists()
}

/// HdrHistogram of a kernel histogram, each bucket at its midpoint.
pub(crate) fn hdr(h: &Hist) -> Histogram<u64> {
    let mut hd = Histogram::<u64>::new_with_bounds(1, 1 << 42, 3).expect("valid bounds");
    for (i, &c) in h.buckets.iter().enumerate() {
        if c > 0 {
            let (lo, hi) = bucket_bounds(i);
            let mid = lo + (hi - lo) / 2;
            hd.saturating_record_n(mid.max(1), c);
        }
    }
    hd
}

/// The values at quantiles `qs` (0.0..=1.0), clamped to the exact min/max.
pub(crate) fn quantiles(h: &Hist, qs: &[f64]) -> Vec<u64> {
    let hd = hdr(h);
    qs.iter().map(|&q| hd.value_at_quantile(q).clamp(h.min_ns, h.max_ns.max(h.min_ns))).collect()
}

/// The percentiles reported: p50, p90, p99, p99.9.
pub(crate) fn percentiles(h: &Hist) -> (u64, u64, u64, u64) {
    let q = quantiles(h, &[0.5, 0.9, 0.99, 0.999]);
    (q[0], q[1], q[2], q[3])
}

/// A hop at a device (0: the hop has none of its own).
pub type Node = (u8, u64);

/// The direction of a packet that first appeared on `origin`.
pub(crate) fn direction(s: &Snapshot, origin: u64, guest_facing: &[String]) -> Direction {
    if is_guest_facing(&s.devs, origin, guest_facing) {
        Direction::ToWire
    } else {
        Direction::ToGuest
    }
}

/// The hop-pair histograms as rows: per direction, packets of different
/// origins that share a pair are one row. Every consumer (report, metrics)
/// groups pairs this way.
pub fn pair_rows(s: &Snapshot, guest_facing: &[String]) -> BTreeMap<(Direction, Node, Node), Hist> {
    let mut rows: BTreeMap<(Direction, Node, Node), Hist> = BTreeMap::new();
    for (k, h) in &s.pairs {
        let dir = direction(s, k.origin, guest_facing);
        rows.entry((dir, (k.from_hop, k.from_dev), (k.to_hop, k.to_dev))).or_insert_with(Hist::zeroed).merge(h);
    }
    rows
}

/// The catalog path a hop pair belongs to: its hops' path, the specific
/// one when one of them is generic.
pub fn pair_path(from_hop: u8, to_hop: u8) -> &'static str {
    let path = |id: u8| catalog::by_id(id).map_or("", |h| h.path.label());
    match (path(from_hop), path(to_hop)) {
        ("generic", p) if !p.is_empty() => p,
        (p, _) => p,
    }
}

pub fn build(s: &Snapshot, cx: &Context<'_>) -> Report {
    let dir_of = |origin: u64| direction(s, origin, cx.guest_facing);
    let rows = pair_rows(s, cx.guest_facing);
    let mut origins: BTreeMap<Direction, Vec<Node>> = BTreeMap::new();
    for k in s.pairs.keys() {
        origins.entry(dir_of(k.origin)).or_default().push((k.origin_hop, k.origin));
    }

    let directions = [Direction::ToWire, Direction::ToGuest]
        .into_iter()
        .map(|dir| {
            // Path order: breadth-first from this direction's origins over
            // (hop, device) nodes; a hop without a device stays on the
            // device of the hop before it.
            let mut next: HashMap<Node, Vec<Node>> = HashMap::new();
            for (d, from, to) in rows.keys() {
                if *d == dir {
                    let to = if to.1 == 0 { (to.0, from.1) } else { *to };
                    next.entry(*from).or_default().push(to);
                }
            }
            let mut depth: HashMap<Node, usize> = HashMap::new();
            let mut queue = VecDeque::new();
            for o in origins.get(&dir).map(Vec::as_slice).unwrap_or_default() {
                if depth.insert(*o, 0).is_none() {
                    queue.push_back(*o);
                }
            }
            while let Some(n) = queue.pop_front() {
                let d = depth[&n];
                for &m in next.get(&n).map(Vec::as_slice).unwrap_or_default() {
                    if let std::collections::hash_map::Entry::Vacant(e) = depth.entry(m) {
                        e.insert(d + 1);
                        queue.push_back(m);
                    }
                }
            }
            let mut v: Vec<(usize, PairReport)> = rows
                .iter()
                .filter(|((d, _, _), _)| *d == dir)
                .map(|((_, from, to), h)| {
                    let (p50, p90, p99, p999) = percentiles(h);
                    let pr = PairReport {
                        from_hop: catalog::label(from.0),
                        from_dev: dev_name(&s.devs, from.1),
                        to_hop: catalog::label(to.0),
                        to_dev: dev_name(&s.devs, to.1),
                        packets: h.count,
                        min_ns: h.min_ns,
                        mean_ns: h.sum_ns / h.count.max(1),
                        p50_ns: p50,
                        p90_ns: p90,
                        p99_ns: p99,
                        p999_ns: p999,
                        max_ns: h.max_ns,
                    };
                    (depth.get(from).copied().unwrap_or(usize::MAX), pr)
                })
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.packets.cmp(&a.1.packets)));
            DirectionReport { direction: dir, pairs: v.into_iter().map(|(_, p)| p).collect() }
        })
        .collect();

    // Drops: one row per (reason, direction, last hop, last device).
    let mut drop_rows: BTreeMap<(u32, Direction, u8, u64), u64> = BTreeMap::new();
    for (k, &n) in &s.drops {
        *drop_rows.entry((k.reason, dir_of(k.origin), k.last_hop, k.last_dev)).or_default() += n;
    }
    let mut drops: Vec<DropReport> = drop_rows
        .into_iter()
        .map(|((reason, dir, last_hop, last_dev), n)| DropReport {
            reason: cx.drop_reasons.get(&reason).cloned().unwrap_or_else(|| format!("reason {reason}")),
            reason_code: reason,
            packets: n,
            direction: dir,
            last_hop: catalog::label(last_hop),
            last_dev: dev_name(&s.devs, last_dev),
        })
        .collect();
    drops.sort_by_key(|d| std::cmp::Reverse(d.packets));

    let mut functions: Vec<FunctionReport> = s
        .funcs
        .iter()
        .map(|(&id, h)| {
            let (p50, p90, p99, p999) = percentiles(h);
            FunctionReport {
                hop: catalog::label(id as u8),
                path: catalog::by_id(id as u8).map_or("", |h| h.path.label()).to_owned(),
                calls: h.count,
                p50_ns: p50,
                p90_ns: p90,
                p99_ns: p99,
                p999_ns: p999,
                max_ns: h.max_ns,
                total_ns: h.sum_ns,
            }
        })
        .collect();
    functions.sort_by_key(|f| std::cmp::Reverse(f.total_ns));

    let devices = s
        .devs
        .values()
        .map(|d| DeviceReport { name: cstr(&d.name), kind: cstr(&d.kind), ifindex: d.ifindex, netns: d.netns })
        .collect();
    let tracking = counter::NAMES.iter().zip(s.counters.iter()).map(|(n, v)| ((*n).to_owned(), *v)).collect();

    Report {
        netprobe_version: env!("CARGO_PKG_VERSION").to_owned(),
        kernel: kernel_release(),
        duration_s: cx.duration_s,
        interrupted: cx.interrupted,
        workload: None,
        filter: None,
        guests: guest_reports(s, cx.guests),
        intervals: Vec::new(),
        cpu: cpu(s, cx.workload),
        coverage: cx.coverage.iter().map(CoverageEntry::from).collect(),
        directions,
        drops,
        functions,
        devices,
        tracking,
    }
}

/// A hop pair as the reports name it: its packets' direction (decided by
/// their origin device) and `hop@device` of both ends.
fn pair_name(s: &Snapshot, guest_facing: &[String], origin: u64, from: (u8, u64), to: (u8, u64)) -> PairName {
    (direction(s, origin, guest_facing), at(s, from.0, from.1), at(s, to.0, to.1))
}

fn at(s: &Snapshot, hop: u8, dev: u64) -> String {
    let d = dev_name(&s.devs, dev);
    if d.is_empty() {
        catalog::label(hop)
    } else {
        format!("{}@{d}", catalog::label(hop))
    }
}

/// The interval series in report form: devices named, directions decided
/// the same way as for the whole recording.
pub fn intervals(
    recs: &[crate::recording::IntervalRec],
    s: &Snapshot,
    guest_facing: &[String],
) -> Vec<crate::report::IntervalReport> {
    recs.iter()
        .map(|r| crate::report::IntervalReport {
            t_s: r.t_s,
            pairs: r
                .pairs
                .iter()
                .map(|p| {
                    let (direction, from, to) =
                        pair_name(s, guest_facing, p.origin, (p.from_hop, p.from_dev), (p.to_hop, p.to_dev));
                    crate::report::IntervalPairReport {
                        direction,
                        from,
                        to,
                        packets: p.packets,
                        p50_ns: p.p50_ns,
                        p99_ns: p.p99_ns,
                        total_ns: p.total_ns,
                    }
                })
                .collect(),
            load: r.load.clone(),
        })
        .collect()
}

/// The whole run's full histogram of every hop pair, merged over origins
/// as the report's rows are.
pub fn pair_hists(rec: &Recording) -> Result<BTreeMap<PairName, Hist>> {
    let s = rec.snapshot()?;
    let mut out: BTreeMap<PairName, Hist> = BTreeMap::new();
    for (k, h) in &s.pairs {
        let name = pair_name(&s, &rec.guest_facing, k.origin, (k.from_hop, k.from_dev), (k.to_hop, k.to_dev));
        out.entry(name).or_insert_with(Hist::zeroed).merge(h);
    }
    Ok(out)
}

/// The interval series with each pair's full histogram of that interval
/// (recordings before format 2 have none: their intervals come out empty).
pub fn interval_hists(rec: &Recording) -> Result<Vec<IntervalHists>> {
    let s = rec.snapshot()?;
    let mut start = 0.0;
    let mut out = Vec::new();
    for iv in &rec.intervals {
        let mut pairs: BTreeMap<PairName, Hist> = BTreeMap::new();
        for p in &iv.pairs {
            let Some(h) = &p.hist else { continue };
            let name = pair_name(&s, &rec.guest_facing, p.origin, (p.from_hop, p.from_dev), (p.to_hop, p.to_dev));
            pairs.entry(name).or_insert_with(Hist::zeroed).merge(&h.to_hist()?);
        }
        out.push(IntervalHists { start_s: start, end_s: iv.t_s, pairs });
        start = iv.t_s;
    }
    Ok(out)
}

/// The recording's packet journeys (trace mode's samples) with their hops
/// named and their direction decided by the first hop's device.
pub fn journeys(rec: &Recording) -> Result<Vec<Journey>> {
    let s = rec.snapshot()?;
    Ok(rec
        .samples
        .iter()
        .filter(|j| j.hops.len() >= 2)
        .map(|j| Journey {
            direction: direction(&s, j.hops[0].dev, &rec.guest_facing),
            hops: j.hops.iter().map(|h| JourneyHop { at: at(&s, h.hop, h.dev), t_ns: h.t_ns }).collect(),
        })
        .collect())
}

/// The role of a thread, by its name (QEMU and the kernel name theirs).
pub fn role(comm: &str) -> &'static str {
    if comm.starts_with("CPU ") && (comm.ends_with("/KVM") || comm.ends_with("/TCG")) {
        "vcpu"
    } else if comm.starts_with("vhost-") {
        "vhost"
    } else if comm.starts_with("ksoftirqd/") {
        "ksoftirqd"
    } else if comm.starts_with("handler") || comm.starts_with("revalidator") {
        "ovs"
    } else if comm.starts_with(crate::demo::RELAY_THREAD) {
        // The demo's guest stand-in, doing what QEMU/vhost do with a tap.
        "guest"
    } else if comm.starts_with("netprobe") {
        "netprobe"
    } else {
        "other"
    }
}

/// The role of a thread of process `tgid`: the workload's processes
/// first, then by name.
pub fn role_of(tgid: u32, comm: &str, workload: Option<&crate::report::Workload>) -> &'static str {
    if workload.is_some_and(|w| w.tgids.contains(&tgid)) {
        "workload"
    } else {
        role(comm)
    }
}

/// Each guest with the CPU time of its vCPU and vhost threads.
fn guest_reports(s: &Snapshot, guests: &[crate::guests::Guest]) -> Vec<crate::report::GuestReport> {
    let ns_of =
        |tids: &[u32]| -> u64 { s.cpu.iter().filter(|(id, _)| tids.contains(&(**id as u32))).map(|(_, c)| c.ns).sum() };
    guests
        .iter()
        .map(|g| crate::report::GuestReport {
            vcpu_ns: ns_of(&g.vcpu_tids),
            vhost_ns: ns_of(&g.vhost_tids),
            guest: g.clone(),
        })
        .collect()
}

/// `ns` per unit, for each entry (empty when there are no units).
fn per_unit(by: &BTreeMap<String, u64>, softirq_ns: u64, units: u64) -> BTreeMap<String, f64> {
    if units == 0 {
        return BTreeMap::new();
    }
    let mut out: BTreeMap<String, f64> = by.iter().map(|(k, &v)| (k.clone(), v as f64 / units as f64)).collect();
    out.insert("softirq".to_owned(), softirq_ns as f64 / units as f64);
    out
}

/// `CpuReport::softirq_source` values.
pub const SOFTIRQ_FROM_BPF: &str = "bpf: NET_RX+NET_TX";
pub const SOFTIRQ_FROM_STAT: &str = "/proc/stat: all vectors";

/// CPU time by role, softirq and thread, cumulative as the snapshot is;
/// per packet followed and per workload transaction.
pub fn cpu(s: &Snapshot, workload: Option<&crate::report::Workload>) -> Option<crate::report::CpuReport> {
    if s.cpu.is_empty() && s.softirq_rx.is_empty() && s.softirq_all.is_empty() {
        return None;
    }
    let mut by_role: BTreeMap<String, u64> = BTreeMap::new();
    let mut threads: Vec<crate::report::CpuThread> = s
        .cpu
        .iter()
        .map(|(&id, c)| {
            let comm = cstr(&c.comm);
            let tgid = (id >> 32) as u32;
            let r = role_of(tgid, &comm, workload);
            *by_role.entry(r.to_owned()).or_default() += c.ns;
            crate::report::CpuThread { tgid, tid: id as u32, comm, role: r.to_owned(), ns: c.ns }
        })
        .collect();
    threads.sort_by_key(|t| std::cmp::Reverse(t.ns));
    threads.truncate(20);
    let (rx, tx): (u64, u64) = (s.softirq_rx.iter().sum(), s.softirq_tx.iter().sum());
    let softirq = s.softirq_ns();
    let source = if s.softirq_rx.is_empty() && s.softirq_tx.is_empty() {
        if s.softirq_all.is_empty() {
            ""
        } else {
            SOFTIRQ_FROM_STAT
        }
    } else {
        SOFTIRQ_FROM_BPF
    };
    let packets = s.counters[counter::TRACK_STARTED as usize];
    let transactions = workload.and_then(|w| w.transactions).unwrap_or(0);
    Some(crate::report::CpuReport {
        per_packet_ns: per_unit(&by_role, softirq, packets),
        per_transaction_ns: per_unit(&by_role, softirq, transactions),
        transactions: (transactions > 0).then_some(transactions),
        by_role_ns: by_role,
        softirq_net_rx_ns: rx,
        softirq_net_tx_ns: tx,
        softirq_net_rx_per_cpu_ns: s.softirq_rx.clone(),
        softirq_net_tx_per_cpu_ns: s.softirq_tx.clone(),
        softirq_ns: softirq,
        softirq_source: source.to_owned(),
        softirq_per_cpu_ns: s.softirq_all.clone(),
        softirq_ns_per_packet: if packets > 0 { softirq as f64 / packets as f64 } else { 0.0 },
        threads,
    })
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use netprobe_common::{hist::bucket_of, hop, PairKey};

    use super::*;

    /// A kernel histogram of these values (for other modules' tests too).
    pub(crate) fn hist(values: &[u64]) -> Hist {
        let mut h = Hist::zeroed();
        for &v in values {
            h.count += 1;
            h.sum_ns += v;
            h.max_ns = h.max_ns.max(v);
            h.min_ns = if h.min_ns == 0 { v } else { h.min_ns.min(v) };
            h.buckets[bucket_of(v)] += 1;
        }
        h
    }

    pub(crate) fn dev(name: &str, kind: &str) -> DevInfo {
        let mut d = DevInfo::default();
        d.name[..name.len()].copy_from_slice(name.as_bytes());
        d.kind[..kind.len()].copy_from_slice(kind.as_bytes());
        d
    }

    #[test]
    fn percentiles_are_within_bucket_precision() {
        let values: Vec<u64> = (1..=1000).map(|i| i * 1000).collect(); // 1us..1ms
        let (p50, p90, p99, p999) = percentiles(&hist(&values));
        for (got, want) in [(p50, 500_000.0), (p90, 900_000.0), (p99, 990_000.0), (p999, 999_000.0)] {
            let err = (got as f64 - want).abs() / want;
            assert!(err < 0.04, "got {got}, want ~{want}");
        }
    }

    #[test]
    fn direction_and_path_order_follow_the_origin() {
        let mut s = Snapshot::default();
        s.devs.insert(0x10, dev("macvtap0", "macvtap"));
        s.devs.insert(0x20, dev("eth0", "veth"));
        let k = |origin, from_hop, from_dev, to_hop, to_dev| PairKey {
            origin,
            from_dev,
            to_dev,
            from_hop,
            to_hop,
            origin_hop: if origin == 0x10 { hop::NET_DEV_QUEUE } else { hop::NETIF_RECEIVE_SKB },
            _pad: 0,
            _pad2: 0,
        };
        // guest -> wire: queue@macvtap0 -> xmit@macvtap0 -> queue@eth0
        s.pairs.insert(k(0x10, hop::NET_DEV_START_XMIT, 0x10, hop::NET_DEV_QUEUE, 0x20), hist(&[2000]));
        s.pairs.insert(k(0x10, hop::NET_DEV_QUEUE, 0x10, hop::NET_DEV_START_XMIT, 0x10), hist(&[1000, 1000]));
        // wire -> guest: receive@eth0 -> copy_out@macvtap0 -> consumed
        s.pairs.insert(k(0x20, hop::NETIF_RECEIVE_SKB, 0x20, hop::SKB_COPY_DATAGRAM_IOVEC, 0x10), hist(&[5000]));
        s.pairs.insert(k(0x20, hop::SKB_COPY_DATAGRAM_IOVEC, 0x10, hop::CONSUME_SKB, 0), hist(&[300]));
        let r = build(
            &s,
            &Context {
                workload: None,
                guests: &[],
                coverage: &[],
                drop_reasons: &BTreeMap::new(),
                duration_s: 1.0,
                interrupted: false,
                guest_facing: &[],
            },
        );
        let wire = &r.directions[0];
        assert_eq!(wire.direction, Direction::ToWire);
        let order: Vec<String> = wire.pairs.iter().map(|p| format!("{} -> {}", p.from_label(), p.to_label())).collect();
        assert_eq!(order, ["queue@macvtap0 -> xmit@macvtap0", "xmit@macvtap0 -> queue@eth0"]);
        assert_eq!(wire.pairs[0].packets, 2);
        let guest = &r.directions[1];
        assert_eq!(guest.direction, Direction::ToGuest);
        assert_eq!(guest.pairs[0].to_label(), "copy_out@macvtap0");
        assert_eq!(guest.pairs[1].to_label(), "consumed");
    }

    #[test]
    fn thread_roles_by_name() {
        assert_eq!(role("CPU 3/KVM"), "vcpu");
        assert_eq!(role("vhost-4242"), "vhost");
        assert_eq!(role("ksoftirqd/1"), "ksoftirqd");
        assert_eq!(role("handler12"), "ovs");
        assert_eq!(role("iperf3"), "other");
    }
}
