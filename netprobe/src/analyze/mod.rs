//! The analysis: one pure function, [`analyze`], from a recording to what
//! every printer shows. Hop-pair histograms become percentiles, device
//! keys become names, each packet's origin decides its direction, pairs
//! are put in path order, CPU time gets its roles; the whole run's and each
//! interval's histograms and the packet journeys come along for the
//! printers that draw them. It reads nothing but the recording (no /sys,
//! no clock), so a recording gives the same analysis on any host.
//! `compare` sets two analyses side by side, `sweep` any number of them
//! along a label; `share` estimates the host's share of the workload's own
//! round trip.

pub mod compare;
pub mod share;
pub mod sweep;

use std::collections::{BTreeMap, HashMap, VecDeque};

use anyhow::Result;
use hdrhistogram::Histogram;
use netprobe_common::{
    counter,
    hist::{bucket_bounds, Hist},
};

use crate::{
    model::{
        at,
        report::{
            CpuReport, CpuThread, DeviceReport, DirectionReport, DropReport, DropStackReport, DropStacksLeftOut,
            FunctionReport, GuestReport, IntervalPairReport, IntervalReport, PairReport, Report,
        },
        Direction, PairName, Role, Workload, SOFTIRQ_FROM_BPF, SOFTIRQ_FROM_STAT,
    },
    probe::catalog,
    recording::{CpuRec, DevRec, IntervalRec, Recording},
};

/// Everything the printers need of one recording.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// The report model (what `--format json` prints).
    pub report: Report,
    /// The host the recording was made on.
    pub host: Host,
    /// Every hop pair's whole-run histogram, per direction and pair of
    /// (hop, device), in the order of the report's rows.
    pub pairs: Vec<PairHist>,
    /// The interval series with each pair's full histogram of that
    /// interval (recordings before format 2 have none: empty intervals).
    pub intervals: Vec<IntervalHists>,
    /// Trace mode's packet journeys, hops named, direction decided.
    pub journeys: Vec<Journey>,
    /// Journeys the recording kept (some may have too few hops to show).
    pub journeys_kept: usize,
}

#[derive(Clone, Debug)]
pub struct Host {
    pub arch: String,
    pub cpus: usize,
    pub started_unix_s: f64,
}

/// One hop pair's histogram over the whole run.
#[derive(Clone, Debug)]
pub struct PairHist {
    pub direction: Direction,
    /// The catalog path the pair belongs to ([`pair_path`]).
    pub path: &'static str,
    pub from_hop: String,
    pub from_dev: String,
    pub to_hop: String,
    pub to_dev: String,
    pub hist: Hist,
}

impl PairHist {
    pub fn name(&self) -> PairName {
        (self.direction, at(&self.from_hop, &self.from_dev), at(&self.to_hop, &self.to_dev))
    }
}

impl Analysis {
    /// The whole run's histogram of every hop pair by name (pairs of
    /// devices that share a name are merged).
    pub fn pair_hists(&self) -> BTreeMap<PairName, Hist> {
        let mut out: BTreeMap<PairName, Hist> = BTreeMap::new();
        for p in &self.pairs {
            out.entry(p.name()).or_insert_with(Hist::zeroed).merge(&p.hist);
        }
        out
    }
}

/// One interval of the series with each hop pair's full histogram.
#[derive(Clone, Debug)]
pub struct IntervalHists {
    /// Seconds since the recording started.
    pub start_s: f64,
    pub end_s: f64,
    pub pairs: BTreeMap<PairName, Hist>,
}

/// One packet's way through the host (trace mode), hop by hop.
#[derive(Clone, Debug)]
pub struct Journey {
    pub direction: Direction,
    pub hops: Vec<JourneyStep>,
}

#[derive(Clone, Debug)]
pub struct JourneyStep {
    /// `hop@device`, or the hop alone where it has no device.
    pub at: String,
    /// Nanoseconds since the recording started.
    pub t_ns: u64,
}

/// HdrHistogram of a kernel histogram, each bucket at its midpoint.
pub fn hdr(h: &Hist) -> Histogram<u64> {
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
pub fn quantiles(h: &Hist, qs: &[f64]) -> Vec<u64> {
    let hd = hdr(h);
    qs.iter().map(|&q| hd.value_at_quantile(q).clamp(h.min_ns, h.max_ns.max(h.min_ns))).collect()
}

/// The percentiles reported: p50, p90, p99, p99.9.
pub fn percentiles(h: &Hist) -> (u64, u64, u64, u64) {
    let q = quantiles(h, &[0.5, 0.9, 0.99, 0.999]);
    (q[0], q[1], q[2], q[3])
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

/// A hop at a device (0: the hop has none of its own).
type Node = (u8, u64);

/// The recording's devices, and what was decided about them at record
/// time: how each is named, and which are guest-facing.
struct Devices<'a> {
    by_key: BTreeMap<u64, &'a DevRec>,
    /// Devices known at record time to be guest-facing (needed where the
    /// kernel side could not read a device's kind: classic tracepoints).
    guest_facing: &'a [String],
}

impl<'a> Devices<'a> {
    fn of(rec: &'a Recording) -> Devices<'a> {
        Devices { by_key: rec.devices.iter().map(|d| (d.key, d)).collect(), guest_facing: &rec.guest_facing }
    }

    fn name(&self, key: u64) -> String {
        if key == 0 {
            return String::new();
        }
        match self.by_key.get(&key) {
            Some(d) if !d.name.is_empty() => d.name.clone(),
            _ => format!("dev:{key:x}"),
        }
    }

    /// Guest-facing devices are where a guest's packets enter the host:
    /// the macvtap or tap device QEMU/vhost writes into.
    fn guest_facing(&self, key: u64) -> bool {
        let Some(d) = self.by_key.get(&key) else {
            return false;
        };
        if !d.kind.is_empty() {
            return d.kind == "macvtap" || d.kind == "tun";
        }
        self.guest_facing.contains(&d.name)
    }

    /// The direction of a packet that first appeared on `origin`, at
    /// `origin_hop` where it is known: out of the guest if it started at a
    /// guest-facing device on its way in from the guest, else toward it
    /// (a tap's own transmit is the host sending to its guest).
    fn direction(&self, origin_hop: Option<u8>, origin: u64) -> Direction {
        if !self.guest_facing(origin) {
            return Direction::ToGuest;
        }
        let kind = self.by_key.get(&origin).map_or("", |d| d.kind.as_str());
        if origin_hop.is_some_and(|h| catalog::starts_toward_guest(h, kind)) {
            Direction::ToGuest
        } else {
            Direction::ToWire
        }
    }

    fn at(&self, hop: u8, dev: u64) -> String {
        at(&catalog::label(hop), &self.name(dev))
    }

    /// A hop pair as the reports name it.
    fn pair_name(&self, origin_hop: Option<u8>, origin: u64, from: Node, to: Node) -> PairName {
        (self.direction(origin_hop, origin), self.at(from.0, from.1), self.at(to.0, to.1))
    }
}

/// Analyses a recording.
pub fn analyze(rec: &Recording) -> Result<Analysis> {
    let devs = Devices::of(rec);
    // Per direction, packets of different origins that share a pair are
    // one row.
    let mut rows: BTreeMap<(Direction, Node, Node), Hist> = BTreeMap::new();
    let mut origins: BTreeMap<Direction, Vec<Node>> = BTreeMap::new();
    for p in &rec.pairs {
        let dir = devs.direction(Some(p.origin_hop), p.origin);
        rows.entry((dir, (p.from_hop, p.from_dev), (p.to_hop, p.to_dev)))
            .or_insert_with(Hist::zeroed)
            .merge(&p.hist.to_hist()?);
        origins.entry(dir).or_default().push((p.origin_hop, p.origin));
    }
    let pairs = rows
        .iter()
        .map(|((dir, from, to), h)| PairHist {
            direction: *dir,
            path: pair_path(from.0, to.0),
            from_hop: catalog::label(from.0),
            from_dev: devs.name(from.1),
            to_hop: catalog::label(to.0),
            to_dev: devs.name(to.1),
            hist: *h,
        })
        .collect();
    let directions: Vec<DirectionReport> = [Direction::ToWire, Direction::ToGuest]
        .into_iter()
        .map(|dir| direction_report(dir, &rows, origins.get(&dir).map(Vec::as_slice).unwrap_or_default(), &devs))
        .collect();

    // Drops: one row per (reason, direction, last hop, last device).
    let mut drop_rows: BTreeMap<(u32, Direction, u8, u64), u64> = BTreeMap::new();
    for d in &rec.drops {
        *drop_rows
            .entry((d.reason, devs.direction(Some(d.origin_hop), d.origin), d.last_hop, d.last_dev))
            .or_default() += d.packets;
    }
    let mut drops: Vec<DropReport> = drop_rows
        .into_iter()
        .map(|((reason, dir, last_hop, last_dev), n)| DropReport {
            reason: rec.drop_reasons.get(&reason).cloned().unwrap_or_else(|| format!("reason {reason}")),
            reason_code: reason,
            packets: n,
            direction: dir,
            last_hop: catalog::label(last_hop),
            last_dev: devs.name(last_dev),
        })
        .collect();
    drops.sort_by_key(|d| std::cmp::Reverse(d.packets));
    let (drop_stacks, drop_stacks_left_out) = drop_stacks(rec);

    let mut funcs: Vec<(u8, Hist)> =
        rec.functions.iter().map(|(id, h)| h.to_hist().map(|h| (*id, h))).collect::<Result<_>>()?;
    funcs.sort_by_key(|(id, _)| *id);
    let mut functions: Vec<FunctionReport> = funcs
        .iter()
        .filter(|(_, h)| h.count > 0)
        .map(|&(id, ref h)| {
            let (p50, p90, p99, p999) = percentiles(h);
            FunctionReport {
                hop: catalog::label(id),
                path: catalog::by_id(id).map_or("", |h| h.path.label()).to_owned(),
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

    let devices: Vec<DeviceReport> = devs
        .by_key
        .values()
        .map(|d| DeviceReport { name: d.name.clone(), kind: d.kind.clone(), ifindex: d.ifindex, netns: d.netns })
        .collect();
    // The counters the recording has: one made before a counter existed
    // does not show it as a measured zero.
    let tracking = rec.counters.clone();
    let mut threads: Vec<&CpuRec> = rec.cpu_threads.iter().collect();
    threads.sort_by_key(|c| (c.tgid, c.tid));
    // `--sample N`: the kernel followed one packet in N; counts are scaled
    // here, once, and the report says so (percentiles need no scaling).
    let scale = u64::from(rec.meta.sample_every.max(1));
    let packets = scale * tracking.get(counter::NAMES[counter::TRACK_STARTED as usize]).copied().unwrap_or(0);

    let report = Report {
        netprobe_version: rec.meta.netprobe_version.clone(),
        kernel: rec.meta.kernel.clone(),
        duration_s: rec.meta.duration_s,
        interrupted: rec.meta.interrupted,
        workload: rec.meta.workload.clone(),
        labels: rec.meta.labels.clone(),
        config: rec.meta.host_config.clone(),
        host_share: share::host_share(&directions, &devices, rec.meta.workload.as_ref()),
        filter: rec.meta.filter.clone(),
        sampled_one_in: (scale > 1).then_some(scale as u32),
        guests: guest_reports(rec, &devs, scale)?,
        intervals: intervals(&rec.intervals, &devs),
        cpu: cpu(rec, &threads, packets, rec.meta.workload.as_ref()),
        coverage: rec.coverage.clone(),
        directions,
        drops,
        drop_stacks,
        drop_stacks_left_out,
        functions,
        devices,
        tracking,
    };
    let mut report = report;
    if scale > 1 {
        for p in report.directions.iter_mut().flat_map(|d| d.pairs.iter_mut()) {
            p.packets *= scale;
        }
        for d in &mut report.drops {
            d.packets *= scale;
        }
        for p in report.intervals.iter_mut().flat_map(|i| i.pairs.iter_mut()) {
            p.packets *= scale;
        }
    }
    Ok(Analysis {
        report,
        host: Host { arch: rec.meta.arch.clone(), cpus: rec.meta.cpus, started_unix_s: rec.meta.started_unix_s },
        pairs,
        intervals: interval_hists(rec, &devs)?,
        journeys: journeys(rec, &devs),
        journeys_kept: rec.samples.len(),
    })
}

/// One direction's hop pairs in path order: breadth-first from the
/// direction's origins over (hop, device) nodes, a hop without a device
/// staying on the device of the hop before it; the busiest first among
/// pairs at the same depth.
/// Stacks shown per drop reason (`--drop-stacks`).
pub const TOP_STACKS_PER_REASON: usize = 5;

/// `--drop-stacks`: per drop reason, its [`TOP_STACKS_PER_REASON`] stacks
/// with the most packets (over every direction and previous hop); the
/// reasons with the most packets first; and per reason, the stacks and
/// packets left out of that top.
fn drop_stacks(rec: &Recording) -> (Vec<DropStackReport>, Vec<DropStacksLeftOut>) {
    // reason -> stack -> (freed by, packets)
    let mut by: BTreeMap<u32, BTreeMap<&str, (&str, u64)>> = BTreeMap::new();
    for d in &rec.drop_stacks {
        by.entry(d.reason).or_default().entry(d.stack.as_str()).or_insert((d.freed_by.as_str(), 0)).1 += d.packets;
    }
    let mut reasons: Vec<(u64, Vec<DropStackReport>)> = by
        .into_iter()
        .map(|(reason, stacks)| {
            let name = rec.drop_reasons.get(&reason).cloned().unwrap_or_else(|| format!("reason {reason}"));
            let mut rows: Vec<DropStackReport> = stacks
                .into_iter()
                .map(|(stack, (freed_by, packets))| DropStackReport {
                    reason: name.clone(),
                    reason_code: reason,
                    packets,
                    freed_by: freed_by.to_owned(),
                    stack: stack.to_owned(),
                })
                .collect();
            rows.sort_by(|a, b| b.packets.cmp(&a.packets).then_with(|| a.stack.cmp(&b.stack)));
            (rows.iter().map(|r| r.packets).sum(), rows)
        })
        .collect();
    reasons.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1[0].reason_code.cmp(&b.1[0].reason_code)));
    let mut shown = Vec::new();
    let mut left_out = Vec::new();
    for (_, mut rows) in reasons {
        let rest = rows.split_off(rows.len().min(TOP_STACKS_PER_REASON));
        if !rest.is_empty() {
            left_out.push(DropStacksLeftOut {
                reason: rest[0].reason.clone(),
                reason_code: rest[0].reason_code,
                stacks: rest.len() as u64,
                packets: rest.iter().map(|r| r.packets).sum(),
            });
        }
        shown.extend(rows);
    }
    (shown, left_out)
}

fn direction_report(
    dir: Direction,
    rows: &BTreeMap<(Direction, Node, Node), Hist>,
    origins: &[Node],
    devs: &Devices<'_>,
) -> DirectionReport {
    let mut next: HashMap<Node, Vec<Node>> = HashMap::new();
    for (d, from, to) in rows.keys() {
        if *d == dir {
            let to = if to.1 == 0 { (to.0, from.1) } else { *to };
            next.entry(*from).or_default().push(to);
        }
    }
    let mut depth: HashMap<Node, usize> = HashMap::new();
    let mut queue = VecDeque::new();
    for o in origins {
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
                from_dev: devs.name(from.1),
                to_hop: catalog::label(to.0),
                to_dev: devs.name(to.1),
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
}

/// The interval series in report form: devices named, directions decided
/// the same way as for the whole recording.
fn intervals(recs: &[IntervalRec], devs: &Devices<'_>) -> Vec<IntervalReport> {
    recs.iter()
        .map(|r| IntervalReport {
            t_s: r.t_s,
            pairs: r
                .pairs
                .iter()
                .map(|p| {
                    let (direction, from, to) =
                        devs.pair_name(p.origin_hop, p.origin, (p.from_hop, p.from_dev), (p.to_hop, p.to_dev));
                    IntervalPairReport {
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

fn interval_hists(rec: &Recording, devs: &Devices<'_>) -> Result<Vec<IntervalHists>> {
    let mut start = 0.0;
    let mut out = Vec::new();
    for iv in &rec.intervals {
        let mut pairs: BTreeMap<PairName, Hist> = BTreeMap::new();
        for p in &iv.pairs {
            let Some(h) = &p.hist else { continue };
            let name = devs.pair_name(p.origin_hop, p.origin, (p.from_hop, p.from_dev), (p.to_hop, p.to_dev));
            pairs.entry(name).or_insert_with(Hist::zeroed).merge(&h.to_hist()?);
        }
        out.push(IntervalHists { start_s: start, end_s: iv.t_s, pairs });
        start = iv.t_s;
    }
    Ok(out)
}

/// The packet journeys with their hops named and their direction decided
/// by the first hop's device.
fn journeys(rec: &Recording, devs: &Devices<'_>) -> Vec<Journey> {
    rec.samples
        .iter()
        .filter(|j| j.hops.len() >= 2)
        .map(|j| Journey {
            direction: devs.direction(Some(j.hops[0].hop), j.hops[0].dev),
            hops: j.hops.iter().map(|h| JourneyStep { at: devs.at(h.hop, h.dev), t_ns: h.t_ns }).collect(),
        })
        .collect()
}

/// Each guest with the CPU time of its vCPU and vhost threads and the
/// packets of its devices: those whose tracking started on one of them
/// (counted on the pair leaving the start hop) and those that came to one
/// from another device.
fn guest_reports(rec: &Recording, devs: &Devices<'_>, scale: u64) -> Result<Vec<GuestReport>> {
    let mut out = Vec::new();
    for g in &rec.meta.guests {
        let ns_of = |tids: &[u32], own: bool| -> u64 {
            rec.cpu_threads.iter().filter(|c| tids.contains(&c.tid) && (!own || c.tgid == g.pid)).map(|c| c.ns).sum()
        };
        let its = |key: u64| key != 0 && g.devices.contains(&devs.name(key));
        let mut packets = 0;
        for p in &rec.pairs {
            let started_here = its(p.origin) && (p.from_hop, p.from_dev) == (p.origin_hop, p.origin);
            let arrived = !its(p.origin) && its(p.to_dev) && !its(p.from_dev);
            if started_here || arrived {
                packets += p.hist.to_hist()?.count;
            }
        }
        packets *= scale;
        let (vcpu_ns, vhost_ns) = (ns_of(&g.vcpu_tids, true), ns_of(&g.vhost_tids, false));
        let per_packet = if packets > 0 { (vcpu_ns + vhost_ns) as f64 / packets as f64 } else { 0.0 };
        out.push(GuestReport { vcpu_ns, vhost_ns, packets, cpu_ns_per_packet: per_packet, guest: g.clone() });
    }
    Ok(out)
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

/// Softirq ns, all CPUs: NET_RX + NET_TX when timed by vector, else all
/// softirq time.
fn softirq_ns(rec: &Recording) -> u64 {
    if rec.softirq_net_rx_ns.is_empty() && rec.softirq_net_tx_ns.is_empty() {
        rec.softirq_all_ns.iter().sum()
    } else {
        rec.softirq_net_rx_ns.iter().chain(&rec.softirq_net_tx_ns).sum()
    }
}

/// CPU time by role, softirq and thread; per packet followed and per
/// workload transaction.
fn cpu(rec: &Recording, threads: &[&CpuRec], packets: u64, workload: Option<&Workload>) -> Option<CpuReport> {
    let (rx_cpus, tx_cpus, all_cpus) = (&rec.softirq_net_rx_ns, &rec.softirq_net_tx_ns, &rec.softirq_all_ns);
    if threads.is_empty() && rx_cpus.is_empty() && all_cpus.is_empty() {
        return None;
    }
    let mut by_role: BTreeMap<String, u64> = BTreeMap::new();
    let mut threads: Vec<CpuThread> = threads
        .iter()
        .map(|c| {
            let r = Role::of_thread(c.tgid, c.tid, &c.comm, workload, &rec.meta.guests).as_str();
            *by_role.entry(r.to_owned()).or_default() += c.ns;
            CpuThread { tgid: c.tgid, tid: c.tid, comm: c.comm.clone(), role: r.to_owned(), ns: c.ns }
        })
        .collect();
    threads.sort_by_key(|t| std::cmp::Reverse(t.ns));
    threads.truncate(20);
    let (rx, tx): (u64, u64) = (rx_cpus.iter().sum(), tx_cpus.iter().sum());
    let softirq = softirq_ns(rec);
    let source = if rx_cpus.is_empty() && tx_cpus.is_empty() {
        if all_cpus.is_empty() {
            ""
        } else {
            SOFTIRQ_FROM_STAT
        }
    } else {
        SOFTIRQ_FROM_BPF
    };
    let transactions = workload.and_then(|w| w.transactions).unwrap_or(0);
    Some(CpuReport {
        per_packet_ns: per_unit(&by_role, softirq, packets),
        per_transaction_ns: per_unit(&by_role, softirq, transactions),
        transactions: (transactions > 0).then_some(transactions),
        by_role_ns: by_role,
        softirq_net_rx_ns: rx,
        softirq_net_tx_ns: tx,
        softirq_net_rx_per_cpu_ns: rx_cpus.clone(),
        softirq_net_tx_per_cpu_ns: tx_cpus.clone(),
        softirq_ns: softirq,
        softirq_source: source.to_owned(),
        softirq_per_cpu_ns: all_cpus.clone(),
        softirq_ns_per_packet: if packets > 0 { softirq as f64 / packets as f64 } else { 0.0 },
        threads,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use netprobe_common::{hist::bucket_of, hop};

    use super::*;
    use crate::recording::{HistRec, Meta, PairRec};

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

    pub(crate) fn dev(key: u64, name: &str, kind: &str) -> DevRec {
        DevRec { key, name: name.to_owned(), kind: kind.to_owned(), ifindex: 0, netns: 0 }
    }

    /// A hop pair for [`recording`]: (origin, from hop, from device, to
    /// hop, to device, latencies).
    pub(crate) type TestPair<'a> = (u64, u8, u64, u8, u64, &'a [u64]);

    /// A recording of these hop pairs.
    pub(crate) fn recording(devices: Vec<DevRec>, pairs: &[TestPair<'_>]) -> Recording {
        let mut rec: Recording = serde_json::from_value(serde_json::json!({
            "meta": Meta::now(1.0, false),
            "coverage": [], "drop_reasons": {}, "guest_facing": [], "pairs": [], "drops": [],
            "devices": [], "functions": [], "counters": {},
        }))
        .unwrap();
        rec.devices = devices;
        rec.pairs = pairs
            .iter()
            .map(|&(origin, from_hop, from_dev, to_hop, to_dev, values)| PairRec {
                origin,
                from_dev,
                to_dev,
                from_hop,
                to_hop,
                origin_hop: if origin == 0x10 { hop::NET_DEV_QUEUE } else { hop::NETIF_RECEIVE_SKB },
                hist: HistRec::from(&hist(values)),
            })
            .collect();
        rec
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
        let rec = recording(
            vec![dev(0x10, "macvtap0", "macvtap"), dev(0x20, "eth0", "veth")],
            &[
                // guest -> wire: queue@macvtap0 -> xmit@macvtap0 -> queue@eth0
                (0x10, hop::NET_DEV_START_XMIT, 0x10, hop::NET_DEV_QUEUE, 0x20, &[2000]),
                (0x10, hop::NET_DEV_QUEUE, 0x10, hop::NET_DEV_START_XMIT, 0x10, &[1000, 1000]),
                // wire -> guest: receive@eth0 -> copy_out@macvtap0 -> consumed
                (0x20, hop::NETIF_RECEIVE_SKB, 0x20, hop::SKB_COPY_DATAGRAM_IOVEC, 0x10, &[5000]),
                (0x20, hop::SKB_COPY_DATAGRAM_IOVEC, 0x10, hop::CONSUME_SKB, 0, &[300]),
            ],
        );
        let r = analyze(&rec).unwrap().report;
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

    /// A packet that starts with the tap's own transmit is the host sending
    /// to the guest (`dev_queue_xmit` -> `tun_net_xmit`), not the guest
    /// sending: seen in the lab's OVS scenario as one to-wire journey
    /// `queue -> xmit -> tun_xmit -> copy_out` at the tap. On a macvtap the
    /// same hops are the guest's frame leaving (the test above).
    #[test]
    fn a_journey_that_starts_with_a_taps_transmit_goes_toward_the_guest() {
        let rec = recording(
            vec![dev(0x10, "tap0", "tun"), dev(0x20, "eth0", "veth")],
            &[
                (0x10, hop::NET_DEV_QUEUE, 0x10, hop::NET_DEV_START_XMIT, 0x10, &[1000]),
                (0x10, hop::NET_DEV_START_XMIT, 0x10, hop::SKB_COPY_DATAGRAM_IOVEC, 0x10, &[9000]),
            ],
        );
        let r = analyze(&rec).unwrap().report;
        assert!(r.directions[0].pairs.is_empty(), "nothing toward the wire: {:?}", r.directions[0].pairs);
        let to_guest: Vec<String> =
            r.directions[1].pairs.iter().map(|p| format!("{} -> {}", p.from_label(), p.to_label())).collect();
        assert_eq!(to_guest, ["queue@tap0 -> xmit@tap0", "xmit@tap0 -> copy_out@tap0"]);
        // What the guest writes into its tap enters by netif_rx: out of the guest.
        assert!(!catalog::starts_toward_guest(hop::NETIF_RX, "tun"));
        assert!(!catalog::starts_toward_guest(hop::NET_DEV_QUEUE, "macvtap"));
        assert!(!catalog::starts_toward_guest(hop::NET_DEV_QUEUE, ""));
        assert!(catalog::starts_toward_guest(hop::SKB_COPY_DATAGRAM_IOVEC, "macvtap"));
    }

    /// The steps of vhost-net's thread chains (no skb: netprobe-ebpf's
    /// `chain`) go the way of the worker that made them: the kick, the TX
    /// worker and its send out of the guest at the guest's macvtap; the RX
    /// worker's wake-up and the signal after the last skb toward it, from
    /// the uplink the frame came in by.
    #[test]
    fn thread_chain_steps_go_the_way_of_their_worker() {
        let id = |l: &str| catalog::HOPS.iter().find(|h| h.label == l).unwrap().id;
        let mut rec = recording(vec![dev(0x10, "macvtap0", "macvtap"), dev(0x20, "eth0", "veth")], &[]);
        let step = |origin, from: u8, from_dev, to: u8, origin_hop: u8| PairRec {
            origin,
            from_dev,
            to_dev: 0x10,
            from_hop: from,
            to_hop: to,
            origin_hop,
            hist: HistRec::from(&hist(&[20_000])),
        };
        let (kick, tx, rx, send) = (id("vhost_kick"), id("vhost_tx_kick"), id("vhost_rx_wake"), id("tap_sendmsg"));
        rec.pairs = vec![
            step(0x10, kick, 0x10, tx, tx),
            step(0x10, tx, 0x10, send, tx),
            step(0x10, send, 0x10, hop::NET_DEV_QUEUE, tx),
            step(0x20, kick, 0x10, rx, rx),
            step(0x20, hop::CONSUME_SKB, 0, id("vhost_signal"), hop::NETIF_RECEIVE_SKB),
        ];
        let r = analyze(&rec).unwrap().report;
        let names = |i: usize| -> Vec<String> {
            r.directions[i].pairs.iter().map(|p| format!("{} -> {}", p.from_label(), p.to_label())).collect()
        };
        let mut wire = names(0);
        wire.sort();
        assert_eq!(
            wire,
            [
                "tap_sendmsg@macvtap0 -> queue@macvtap0",
                "vhost_kick@macvtap0 -> vhost_tx_kick@macvtap0",
                "vhost_tx_kick@macvtap0 -> tap_sendmsg@macvtap0"
            ]
        );
        let mut guest = names(1);
        guest.sort();
        assert_eq!(guest, ["consumed -> vhost_signal@macvtap0", "vhost_kick@macvtap0 -> vhost_rx_wake@macvtap0"]);
        assert!(analyze(&rec).unwrap().pairs.iter().all(|p| p.path == "vhost-net"));
    }

    /// A device whose kind the kernel side could not read is guest-facing
    /// only as the recording says (decided at record time), never by what
    /// this host's /sys shows now.
    #[test]
    fn direction_of_a_kindless_device_comes_from_the_recording() {
        let mut rec = recording(
            vec![dev(0x10, "lo", ""), dev(0x20, "eth0", "")],
            &[(0x10, hop::NET_DEV_QUEUE, 0x10, hop::NET_DEV_START_XMIT, 0x10, &[1000])],
        );
        assert_eq!(analyze(&rec).unwrap().report.directions[1].pairs.len(), 1, "lo is not guest-facing here");
        rec.guest_facing = vec!["lo".to_owned()];
        assert_eq!(analyze(&rec).unwrap().report.directions[0].pairs.len(), 1, "guest-facing as recorded");
    }
}
