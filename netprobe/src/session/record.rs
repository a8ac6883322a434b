//! A recording session: attach the hops, restrict them to the chosen
//! interfaces, close an interval of the time series about once a second,
//! and at the end read the aggregates once into a recording, which every
//! report is made from. Live consumers (`top`, `serve`) get the same
//! aggregates analysed as they stand.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use netprobe_common::{counter, hist::Hist, Backend, PairKey};
use netprobe_testbed::netns;

use super::guests;
use super::hostconfig;
use crate::{
    analyze::{analyze, percentiles, Analysis},
    model::{
        report::{CoverageEntry, CpuReport, IntervalLoad, IntervalReport},
        Guest, GuestNames, Role, Workload,
    },
    probe::{
        attach::{self, AttachOptions, BenchSwitches, Coverage, Probe},
        catalog::HopSet,
        collect::{self, Snapshot},
        trace,
    },
    recording::{spool::HistSpool, CpuRec, HistRec, IntervalPair, IntervalRec, Meta, Recording},
};

#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// Interfaces as `NAME` (this namespace) or `NETNS/NAME` (`ip netns` name).
    pub ifaces: Vec<String>,
    pub btf_file: Option<PathBuf>,
    pub backend: Option<Backend>,
    /// A packet unseen for this long is considered gone.
    pub max_gap: Duration,
    /// After a gap this long, a tracked packet's headers are checked
    /// against where it started (README, "Packet identity"); zero: never.
    pub fingerprint_gap: Duration,
    /// Per-packet trace mode on top of the always-on aggregates.
    pub trace: bool,
    /// Trace mode: how many complete packet journeys the recording keeps.
    pub samples: usize,
    /// Attach hops whose module loads later (`rescan`).
    pub wait_for_modules: bool,
    /// Flow filter expression (`--filter`), applied in the kernel.
    pub filter: Option<String>,
    /// `--sample N`: one packet in N followed (1: all).
    pub sample_every: u32,
    /// NET_RX/NET_TX softirq time from BPF programs (`--softirq-vectors`)
    /// rather than all softirq time from /proc/stat.
    pub softirq_vectors: bool,
    /// Drops counted by kernel stack too (`--drop-stacks`).
    pub drop_stacks: bool,
    /// The catalog hops to attach (`--hops`).
    pub hops: HopSet,
    /// Also attach tracepoints defined in modules, which hold them loaded
    /// (`--pin-modules`).
    pub pin_modules: bool,
    /// Where the time series' histograms wait for the recording to be
    /// assembled (an unlinked file): the output file's directory, say.
    /// None: they stay in memory (consumers that keep no series: `serve`,
    /// `top`, `probes`).
    pub spool_dir: Option<PathBuf>,
    /// Bench-only switches (`cargo xtask bench`).
    pub bench: BenchSwitches,
}

impl Default for RecordOptions {
    fn default() -> Self {
        RecordOptions {
            ifaces: Vec::new(),
            btf_file: None,
            backend: None,
            max_gap: Duration::from_secs(1),
            fingerprint_gap: FINGERPRINT_GAP,
            trace: false,
            samples: DEFAULT_SAMPLES,
            wait_for_modules: false,
            filter: None,
            sample_every: 1,
            softirq_vectors: false,
            drop_stacks: false,
            hops: HopSet::ALL,
            pin_modules: false,
            spool_dir: None,
            bench: BenchSwitches::default(),
        }
    }
}

/// Default `--fingerprint-gap`: hops of one packet on a host's datapath
/// follow each other within microseconds unless it waits in a queue; a
/// longer gap is where a recycled sk_buff can pass for the same packet.
pub const FINGERPRINT_GAP: Duration = Duration::from_micros(10);

/// Packet journeys a trace-mode recording keeps by default.
pub const DEFAULT_SAMPLES: usize = 2000;

pub struct Recorder {
    probe: Probe,
    started: Instant,
    /// Names of the --iface devices that are guest-facing (macvtap, tap).
    guest_facing: Vec<String>,
    /// The --iface devices (with their namespace's inode), whose
    /// configuration the recording keeps besides the devices it saw.
    ifaces: Vec<hostconfig::DeviceRef>,
    /// The time series: cumulative histograms at the last sample, and the
    /// intervals so far.
    last_sample: BTreeMap<PairKey, Hist>,
    /// /proc/stat's softirq ns per CPU at the start (None with
    /// `--softirq-vectors`: programs time NET_RX/NET_TX instead).
    softirq_base: Option<Vec<u64>>,
    /// CPU counters at the last sample: per thread, softirq total, packets.
    last_cpu: BTreeMap<u64, u64>,
    last_softirq_ns: u64,
    last_started: u64,
    intervals: Vec<IntervalRec>,
    /// The intervals' full histograms, off the heap.
    spool: Option<HistSpool>,
    /// The workload's processes so far (their threads' role is `workload`).
    workload: Option<Workload>,
    filter: Option<String>,
    sample_every: u32,
    /// QEMU guests seen so far (looked for at start and every sample).
    guests: Vec<Guest>,
    /// Hop pairs moved out of the kernel's hash map after going idle
    /// ([`Probe::retire`]); every snapshot adds them back in.
    retired: BTreeMap<PairKey, Hist>,
    /// Sample count of each pair in the hash map, and since when unchanged.
    hash_seen: BTreeMap<PairKey, (u64, Instant)>,
    /// Attach hops whose module loads (again) later (`--wait-for-modules`).
    wait_for_modules: bool,
}

/// A hop pair in the kernel's hash map without a new sample for this long
/// is moved out to userspace (a device gone, a guest stopped).
const RETIRE_IDLE: Duration = Duration::from_secs(10);

/// Whether an interface is a macvtap or tun/tap device, asked of iproute2
/// (works across namespaces, unlike sysfs).
fn is_guest_facing(ns: Option<&str>, name: &str) -> bool {
    let mut args = Vec::new();
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["-d", "-o", "link", "show", "dev", name]);
    netns::ip(&args).is_ok_and(|out| out.split_whitespace().any(|w| w == "macvtap" || w == "tun"))
}

/// Whether a device of this namespace is a tap or macvtap, by sysfs: for
/// devices the kernel side could not tell the kind of (classic
/// tracepoints), decided while the device still exists.
fn is_guest_facing_sysfs(name: &str) -> bool {
    let sys = std::path::Path::new("/sys/class/net").join(name);
    sys.join("tun_flags").exists() || sys.join("macvtap").exists()
}

/// Parses `NETNS/NAME` or `NAME`.
fn split_iface(spec: &str) -> (Option<&str>, &str) {
    match spec.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, spec),
    }
}

/// Where a session stands, for a status line.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub elapsed: Duration,
    pub followed: u64,
    /// Events and samples the kernel side could not keep.
    pub lost: u64,
    pub hops_attached: usize,
}

/// One interval of a live session, analysed: its hop pairs named, the
/// cumulative CPU report and tracking counters at its end.
pub struct LiveInterval {
    pub interval: IntervalReport,
    /// The guest behind each device, as found so far.
    pub guest_names: GuestNames,
    pub cpu: Option<CpuReport>,
    pub tracking: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn start(opts: &RecordOptions) -> Result<Recorder> {
        // Check the filter and resolve interfaces before touching the
        // kernel: a typo fails fast.
        let flow = opts.filter.as_deref().map(crate::probe::filter::compile).transpose()?;
        let mut resolved = Vec::new();
        let mut guest_facing = Vec::new();
        let mut ifaces = Vec::new();
        for spec in &opts.ifaces {
            let (ns, name) = split_iface(spec);
            if name.is_empty() || name.len() > 15 {
                bail!("--iface {spec:?}: interface names are 1 to 15 characters");
            }
            let ifindex = netns::ifindex(ns, name)?;
            let inum = netns::inode(ns)?;
            if is_guest_facing(ns, name) {
                guest_facing.push(name.to_owned());
            }
            resolved.push((name.to_owned(), inum, ifindex));
            ifaces.push(hostconfig::DeviceRef { netns: inum, name: name.to_owned() });
        }
        let mut probe = attach::attach(&AttachOptions {
            btf_file: opts.btf_file.clone(),
            backend: opts.backend,
            max_gap_ns: opts.max_gap.as_nanos() as u64,
            fingerprint_gap_ns: opts.fingerprint_gap.as_nanos().min(u32::MAX as u128) as u32,
            filter_enabled: !resolved.is_empty(),
            flow,
            sample_every: opts.sample_every,
            trace: opts.trace,
            rescan: opts.wait_for_modules,
            softirq_vectors: opts.softirq_vectors,
            hops: opts.hops,
            pin_modules: opts.pin_modules,
            samples: opts.samples,
            // Journeys' times count from here (before any program runs).
            trace_base_ns: trace::monotonic_ns(),
            bench: opts.bench,
            drop_stacks: opts.drop_stacks,
        })?;
        probe.restrict_to(&resolved)?;
        // Softirq time from /proc/stat counts from here.
        let softirq_base = if opts.softirq_vectors { None } else { Some(collect::softirq_stat_ns()) };
        Ok(Recorder {
            softirq_base,
            probe,
            started: Instant::now(),
            guest_facing,
            ifaces,
            last_sample: BTreeMap::new(),
            last_cpu: BTreeMap::new(),
            last_softirq_ns: 0,
            last_started: 0,
            intervals: Vec::new(),
            spool: opts.spool_dir.as_deref().and_then(HistSpool::new),
            workload: None,
            filter: opts.filter.clone(),
            sample_every: opts.sample_every,
            guests: guests::discover(),
            retired: BTreeMap::new(),
            hash_seen: BTreeMap::new(),
            wait_for_modules: opts.wait_for_modules,
        })
    }

    pub fn coverage(&self) -> &[Coverage] {
        self.probe.coverage()
    }

    pub fn hops_attached(&self) -> usize {
        self.probe.hops_attached()
    }

    /// Whether this kernel allowed fentry, as attaching showed.
    pub fn fentry_allowed(&self) -> Option<bool> {
        self.probe.fentry_allowed()
    }

    /// Closes one interval of the time series: what each hop pair saw
    /// since the previous sample (call about once a second).
    pub fn sample(&mut self) -> Result<()> {
        self.look_for_guests();
        let snap = self.kernel_snapshot()?;
        let mut iv = self.close_interval(&snap);
        if let Some(spool) = &mut self.spool {
            spool.push(&mut iv);
        }
        self.intervals.push(iv);
        self.retire_idle(&snap)
    }

    /// The kernel's aggregates with the retired pairs added back.
    fn kernel_snapshot(&self) -> Result<Snapshot> {
        let mut s = self.probe.snapshot()?;
        if let Some(base) = &self.softirq_base {
            // No softirq programs ran: their map holds only zeroes.
            s.softirq_rx.clear();
            s.softirq_tx.clear();
            s.softirq_all = collect::softirq_stat_ns()
                .iter()
                .enumerate()
                .map(|(i, v)| v.saturating_sub(base.get(i).copied().unwrap_or(0)))
                .collect();
        }
        for (k, h) in &self.retired {
            s.pairs.entry(*k).or_insert_with(Hist::zeroed).merge(h);
        }
        Ok(s)
    }

    /// For long-running consumers that keep no series (`serve`): moves
    /// idle pairs out of the kernel's hash map (call every few seconds).
    pub fn maintain(&mut self) -> Result<()> {
        // The guests running now (gone ones are not kept: no series).
        self.look_for_guests();
        self.guests.retain(|g| g.gone_after_s.is_none());
        let snap = self.kernel_snapshot()?;
        self.retire_idle(&snap)
    }

    /// Moves hash-map pairs idle for [`RETIRE_IDLE`] out of the kernel.
    fn retire_idle(&mut self, snap: &Snapshot) -> Result<()> {
        let now = Instant::now();
        let mut idle = Vec::new();
        for (k, &count) in &snap.in_hash {
            match self.hash_seen.get_mut(k) {
                Some((c, since)) if *c == count => {
                    if now.duration_since(*since) >= RETIRE_IDLE {
                        idle.push(*k);
                    }
                }
                Some(seen) => *seen = (count, now),
                None => {
                    self.hash_seen.insert(*k, (count, now));
                }
            }
        }
        self.hash_seen.retain(|k, _| snap.in_hash.contains_key(k));
        if idle.is_empty() {
            return Ok(());
        }
        for (k, h) in self.probe.retire(&idle).context("cannot retire idle hop pairs")? {
            self.retired.entry(k).or_insert_with(Hist::zeroed).merge(&h);
            self.hash_seen.remove(&k);
        }
        Ok(())
    }

    /// For live views (`top`): closes an interval like [`Recorder::sample`],
    /// but hands it back analysed instead of keeping it.
    pub fn next_interval(&mut self) -> Result<LiveInterval> {
        self.look_for_guests();
        let snap = self.kernel_snapshot()?;
        let iv = self.close_interval(&snap);
        self.retire_idle(&snap)?;
        let mut rec = self.assemble(&snap, false, BTreeMap::new());
        rec.intervals = vec![iv];
        let report = analyze(&rec)?.report;
        Ok(LiveInterval {
            guest_names: report.guest_names(),
            interval: report.intervals.into_iter().next().context("no interval")?,
            cpu: report.cpu,
            tracking: report.tracking,
        })
    }

    /// The kernel's cumulative aggregates now, analysed (for `serve`).
    pub fn live(&self) -> Result<Analysis> {
        analyze(&self.assemble(&self.kernel_snapshot()?, false, BTreeMap::new()))
    }

    /// Looks for QEMU guests again: new ones are added, gone ones marked.
    fn look_for_guests(&mut self) {
        guests::merge(&mut self.guests, guests::discover(), self.started.elapsed().as_secs_f64());
    }

    /// Time since the probes were attached.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Closes the interval from the previous sample to `snap`.
    fn close_interval(&mut self, snap: &Snapshot) -> IntervalRec {
        let iv = self.interval(snap);
        self.last_sample.clone_from(&snap.pairs);
        self.last_cpu = snap.cpu.iter().map(|(&id, c)| (id, c.ns)).collect();
        self.last_softirq_ns = snap.softirq_ns();
        self.last_started = snap.counters[netprobe_common::counter::TRACK_STARTED as usize];
        iv
    }

    /// The interval from the previous sample to `snap`: per hop pair, the
    /// difference of the cumulative histograms; packets and CPU by role.
    fn interval(&self, snap: &Snapshot) -> IntervalRec {
        let mut pairs = Vec::new();
        for (k, h) in &snap.pairs {
            let mut delta = *h;
            if let Some(prev) = self.last_sample.get(k) {
                delta.count = h.count.saturating_sub(prev.count);
                delta.sum_ns = h.sum_ns.saturating_sub(prev.sum_ns);
                for (d, p) in delta.buckets.iter_mut().zip(prev.buckets.iter()) {
                    *d = d.saturating_sub(*p);
                }
            }
            if delta.count == 0 {
                continue;
            }
            // The interval's own extremes are unknown; bound by the buckets.
            let lo = delta.buckets.iter().position(|&c| c > 0).map_or(0, |i| netprobe_common::hist::bucket_bounds(i).0);
            let hi =
                delta.buckets.iter().rposition(|&c| c > 0).map_or(0, |i| netprobe_common::hist::bucket_bounds(i).1);
            (delta.min_ns, delta.max_ns) = (lo.max(1), hi.max(1));
            let (p50, _, p99, _) = percentiles(&delta);
            pairs.push(IntervalPair {
                origin: k.origin,
                origin_hop: Some(k.origin_hop),
                from_dev: k.from_dev,
                to_dev: k.to_dev,
                from_hop: k.from_hop,
                to_hop: k.to_hop,
                packets: delta.count,
                p50_ns: p50,
                p99_ns: p99,
                total_ns: delta.sum_ns,
                hist: Some(HistRec::from(&delta)),
            });
        }
        let mut cpu_ns_by_role: BTreeMap<String, u64> = BTreeMap::new();
        for (&id, c) in &snap.cpu {
            let delta = c.ns.saturating_sub(self.last_cpu.get(&id).copied().unwrap_or(0));
            if delta > 0 {
                let t = CpuRec::from((id, c));
                let role = Role::of_thread(t.tgid, t.tid, &t.comm, self.workload.as_ref(), &self.guests).as_str();
                *cpu_ns_by_role.entry(role.to_owned()).or_default() += delta;
            }
        }
        let softirq = snap.softirq_ns();
        let started = snap.counters[netprobe_common::counter::TRACK_STARTED as usize];
        IntervalRec {
            t_s: self.started.elapsed().as_secs_f64(),
            pairs,
            load: IntervalLoad {
                packets: started.saturating_sub(self.last_started),
                softirq_ns: softirq.saturating_sub(self.last_softirq_ns),
                cpu_ns_by_role,
            },
        }
    }

    /// Tells the recorder what the workload is (its processes so far), so
    /// its threads' CPU time is attributed to it from now on.
    pub fn set_workload(&mut self, w: Workload) {
        self.workload = Some(w);
    }

    /// Where the session stands: packets followed, events lost, hops
    /// active.
    pub fn progress(&self) -> Result<Progress> {
        let c = self.probe.counters()?;
        Ok(Progress {
            elapsed: self.started.elapsed(),
            followed: c[counter::TRACK_STARTED as usize],
            lost: c[counter::EVENTS_LOST as usize] + c[counter::PAIR_LOST as usize],
            hops_attached: self.probe.hops_attached(),
        })
    }

    /// Attaches hops whose module appeared since (`--wait-for-modules`);
    /// returns the hops newly attached.
    pub fn rescan(&mut self) -> Result<Vec<&'static str>> {
        let at = self.started.elapsed().as_secs_f64();
        self.probe.rescan(at)
    }

    /// For live views that print nothing (`top`): detaches the hops of
    /// modules gone and, with `--wait-for-modules`, attaches those of
    /// modules loaded since (call about once a second).
    pub fn follow_modules(&mut self) {
        self.release_gone_modules();
        if self.wait_for_modules {
            // A failed rescan is tried again at the next module change.
            let _ = self.rescan();
        }
    }

    /// Detaches the hops of modules unloaded since the last look (call
    /// about once a second; it reads /proc/modules). Returns each module
    /// gone with its hops; what they measured stays.
    pub fn release_gone_modules(&mut self) -> Vec<(String, Vec<&'static str>)> {
        let at = self.started.elapsed().as_secs_f64();
        self.probe.release_gone_modules(at)
    }

    /// The aggregates at `snap` as a recording of the session so far
    /// (without its interval series and journeys).
    fn assemble(&self, snap: &Snapshot, interrupted: bool, extra: BTreeMap<String, u64>) -> Recording {
        // Devices whose kind the kernel side could not read are decided
        // now, while they exist: a report made later, elsewhere, must not
        // ask that host's /sys.
        let mut guest_facing = self.guest_facing.clone();
        for d in snap.devs.values() {
            let name = crate::recording::cstr(&d.name);
            if d.kind[0] == 0 && !guest_facing.contains(&name) && is_guest_facing_sysfs(&name) {
                guest_facing.push(name);
            }
        }
        let mut rec = Recording::new(
            snap,
            Meta::now(self.started.elapsed().as_secs_f64(), interrupted),
            self.probe.coverage().iter().map(CoverageEntry::from).collect(),
            self.probe.drop_reasons().clone(),
            guest_facing,
            extra,
        );
        rec.meta.workload = self.workload.clone();
        rec.meta.filter = self.filter.clone();
        rec.meta.sample_every = self.sample_every;
        rec.meta.guests = self.guests.clone();
        rec
    }

    /// Reads the aggregates into a recording: what `-o` writes and what
    /// every report is made from, so the two never differ.
    pub fn recording(&mut self, interrupted: bool) -> Result<Recording> {
        // Trace mode: the kernel is still sending; stop the consumer after
        // it drained the queue, so the aggregates below see no later event.
        let trace = self.probe.finish_trace();
        let snap = self.kernel_snapshot()?;
        let mut extra = BTreeMap::new();
        let mut samples = Vec::new();
        if let Some((t, in_flight)) = trace {
            samples = t.journeys;
            extra.insert("events_received".to_owned(), t.events);
            extra.insert("event_records".to_owned(), t.records);
            if let Some(n) = in_flight {
                extra.insert("events_in_flight".to_owned(), n);
            }
            extra.insert("events_malformed".to_owned(), t.malformed);
            extra.insert("trace_reader_cpu_us".to_owned(), t.cpu_ns / 1000);
        }
        let mut rec = self.assemble(&snap, interrupted, extra);
        // The last, partial interval ends at this very snapshot, so the
        // intervals add up to the whole recording.
        rec.intervals = self.intervals.clone();
        if let Some(spool) = &self.spool {
            spool.restore(&mut rec.intervals)?;
        }
        let last = self.interval(&snap);
        if !last.pairs.is_empty() {
            rec.intervals.push(last);
        }
        // The host's configuration, for the devices on the measured paths,
        // read while they still exist.
        let mut devices: Vec<hostconfig::DeviceRef> = rec
            .devices
            .iter()
            .filter(|d| !d.name.is_empty())
            .map(|d| hostconfig::DeviceRef { netns: d.netns, name: d.name.clone() })
            .chain(self.ifaces.iter().cloned())
            .collect();
        devices.sort();
        devices.dedup();
        rec.meta.host_config = Some(hostconfig::capture(&devices, &rec.meta.guests));
        rec.samples = samples
            .iter()
            .map(|j| crate::recording::SampleRec { hops: j.iter().map(crate::recording::SampleHop::from).collect() })
            .collect();
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iface_specs() {
        assert_eq!(split_iface("eth0"), (None, "eth0"));
        assert_eq!(split_iface("ns1/macvtap0"), (Some("ns1"), "macvtap0"));
    }
}
