//! A recording session: attach the hops, restrict them to the chosen
//! interfaces, wait for the duration, Ctrl-C or SIGTERM, then read the
//! aggregates once and build the report. Whatever ends the wait, the full
//! result is produced.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use aya::maps::HashMap;
use netprobe_common::{hist::Hist, PairKey};
use netprobe_common::{name_key, names, Backend};

use crate::{
    attach::{self, AttachOptions, Attached},
    collect, netns,
    recording::{HistRec, IntervalPair, IntervalRec, Meta, Recording},
    report::{CoverageEntry, IntervalReport, Report},
};

#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// Interfaces as `NAME` (this namespace) or `NETNS/NAME` (`ip netns` name).
    pub ifaces: Vec<String>,
    pub btf_file: Option<PathBuf>,
    pub backend: Option<Backend>,
    /// A packet unseen for this long is considered gone.
    pub max_gap: Duration,
    /// Per-packet trace mode on top of the always-on aggregates.
    pub trace: bool,
    /// Trace mode: how many complete packet journeys the recording keeps.
    pub samples: usize,
    /// Attach hops whose module loads later (`rescan`).
    pub wait_for_modules: bool,
    /// Flow filter expression (`--filter`), applied in the kernel.
    pub filter: Option<String>,
    /// NET_RX/NET_TX softirq time from BPF programs (`--softirq-vectors`)
    /// rather than all softirq time from /proc/stat.
    pub softirq_vectors: bool,
    /// The catalog hops to attach (`--hops`).
    pub hops: crate::catalog::HopSet,
    /// Where the time series' histograms wait for the recording to be
    /// assembled (an unlinked file): the output file's directory, say.
    /// None: they stay in memory (consumers that keep no series: `serve`,
    /// `top`, `probes`).
    pub spool_dir: Option<PathBuf>,
}

impl Default for RecordOptions {
    fn default() -> Self {
        RecordOptions {
            ifaces: Vec::new(),
            btf_file: None,
            backend: None,
            max_gap: Duration::from_secs(1),
            trace: false,
            samples: DEFAULT_SAMPLES,
            wait_for_modules: false,
            filter: None,
            softirq_vectors: false,
            hops: crate::catalog::HopSet::ALL,
            spool_dir: None,
        }
    }
}

/// Packet journeys a trace-mode recording keeps by default.
pub const DEFAULT_SAMPLES: usize = 2000;

pub struct Recorder {
    attached: Attached,
    trace: Option<std::sync::Mutex<crate::trace::TraceReader>>,
    started: Instant,
    /// Names of the --iface devices that are guest-facing (macvtap, tap).
    guest_facing: Vec<String>,
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
    spool: Option<crate::spool::HistSpool>,
    /// The workload's processes so far (their threads' role is `workload`).
    workload: Option<crate::report::Workload>,
    filter: Option<String>,
    /// QEMU guests seen so far (looked for at start and every sample).
    guests: Vec<crate::guests::Guest>,
    /// Hop pairs moved out of the kernel's hash map after going idle
    /// ([`collect::retire`]); every snapshot adds them back in.
    retired: BTreeMap<PairKey, Hist>,
    /// Sample count of each pair in the hash map, and since when unchanged.
    hash_seen: BTreeMap<PairKey, (u64, Instant)>,
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

/// Parses `NETNS/NAME` or `NAME`.
fn split_iface(spec: &str) -> (Option<&str>, &str) {
    match spec.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, spec),
    }
}

impl Recorder {
    pub fn start(opts: &RecordOptions) -> Result<Recorder> {
        // Check the filter and resolve interfaces before touching the
        // kernel: a typo fails fast.
        let flow = opts.filter.as_deref().map(crate::filter::compile).transpose()?;
        let mut resolved = Vec::new();
        let mut guest_facing = Vec::new();
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
        }
        // Journeys' times count from here (before any program runs).
        let base_ns = crate::trace::monotonic_ns();
        // Trace mode's reader drains the ring buffer from before the first
        // program is attached: attaching every hop takes a while (each
        // load is verified, refused backends are tried first), and at a
        // million events a second the ring would fill in the meantime.
        let mut trace = None;
        let mut start_reader = |ebpf: &mut aya::Ebpf| -> Result<()> {
            if opts.trace {
                let map = ebpf.take_map(names::EVENTS).context("map NP_EVENTS missing")?;
                let ring = aya::maps::RingBuf::try_from(map)?;
                let journeys = crate::trace::Journeys::new(base_ns, opts.samples);
                trace = Some(std::sync::Mutex::new(crate::trace::TraceReader::start(ring, journeys)?));
            }
            Ok(())
        };
        let mut attached = attach::attach(
            &AttachOptions {
                btf_file: opts.btf_file.clone(),
                backend: opts.backend,
                max_gap_ns: opts.max_gap.as_nanos() as u64,
                filter_enabled: !resolved.is_empty(),
                flow,
                trace: opts.trace,
                rescan: opts.wait_for_modules,
                softirq_vectors: opts.softirq_vectors,
                hops: opts.hops,
            },
            &mut start_reader,
        )?;
        let classic = attached.classic_only;
        let mut filter: HashMap<_, u64, u8> =
            HashMap::try_from(attached.ebpf.map_mut(names::FILTER).context("map NP_FILTER missing")?)?;
        for (name, inum, ifindex) in resolved {
            let key = if classic {
                let mut n = [0u8; 16];
                n[..name.len()].copy_from_slice(name.as_bytes());
                name_key(&n)
            } else {
                ((inum as u64) << 32) | ifindex as u64
            };
            filter.insert(key, 1, 0)?;
        }
        // Softirq time from /proc/stat counts from here.
        let softirq_base = if opts.softirq_vectors { None } else { Some(collect::softirq_stat_ns()) };
        Ok(Recorder {
            softirq_base,
            attached,
            trace,
            started: Instant::now(),
            guest_facing,
            last_sample: BTreeMap::new(),
            last_cpu: BTreeMap::new(),
            last_softirq_ns: 0,
            last_started: 0,
            intervals: Vec::new(),
            spool: opts.spool_dir.as_deref().and_then(crate::spool::HistSpool::new),
            workload: None,
            filter: opts.filter.clone(),
            guests: crate::guests::discover(),
            retired: BTreeMap::new(),
            hash_seen: BTreeMap::new(),
        })
    }

    pub fn coverage(&self) -> &[attach::Coverage] {
        &self.attached.coverage
    }

    /// Closes one interval of the time series: what each hop pair saw
    /// since the previous sample (call about once a second).
    pub fn sample(&mut self) {
        crate::guests::merge(&mut self.guests, crate::guests::discover(), self.started.elapsed().as_secs_f64());
        let Ok(snap) = self.kernel_snapshot() else { return };
        let mut iv = self.close_interval(&snap);
        if let Some(spool) = &mut self.spool {
            spool.push(&mut iv);
        }
        self.intervals.push(iv);
        self.retire_idle(&snap);
    }

    /// The kernel's aggregates with the retired pairs added back.
    fn kernel_snapshot(&self) -> Result<collect::Snapshot> {
        let mut s = collect::snapshot(&self.attached.ebpf)?;
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
    pub fn maintain(&mut self) {
        if let Ok(snap) = self.kernel_snapshot() {
            self.retire_idle(&snap);
        }
    }

    /// Moves hash-map pairs idle for [`RETIRE_IDLE`] out of the kernel.
    fn retire_idle(&mut self, snap: &collect::Snapshot) {
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
            return;
        }
        match collect::retire(&mut self.attached.ebpf, &idle) {
            Ok(moved) => {
                for (k, h) in moved {
                    self.retired.entry(k).or_insert_with(Hist::zeroed).merge(&h);
                    self.hash_seen.remove(&k);
                }
            }
            Err(e) => eprintln!("netprobe: cannot retire idle hop pairs: {e:#}"),
        }
    }

    /// For live views (`top`): closes an interval like [`Recorder::sample`],
    /// but hands it back in report form (devices named, directions decided)
    /// with the snapshot it ends at, instead of keeping it.
    pub fn next_interval(&mut self) -> Result<(IntervalReport, collect::Snapshot)> {
        let snap = self.kernel_snapshot()?;
        let iv = self.close_interval(&snap);
        self.retire_idle(&snap);
        let report = crate::correlate::intervals(std::slice::from_ref(&iv), &snap, &self.guest_facing);
        Ok((report.into_iter().next().context("no interval")?, snap))
    }

    /// The kernel's cumulative aggregates now (for `serve`).
    pub fn snapshot(&self) -> Result<collect::Snapshot> {
        self.kernel_snapshot()
    }

    /// What gives the raw aggregates a meaning besides the snapshot: the
    /// --iface devices known to be guest-facing, and drop reason names.
    pub fn guest_facing(&self) -> &[String] {
        &self.guest_facing
    }

    pub fn drop_reasons(&self) -> &BTreeMap<u32, String> {
        &self.attached.drop_reasons
    }

    /// Seconds since the probes were attached.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Closes the interval from the previous sample to `snap`.
    fn close_interval(&mut self, snap: &collect::Snapshot) -> IntervalRec {
        let iv = self.interval(snap);
        self.last_sample.clone_from(&snap.pairs);
        self.last_cpu = snap.cpu.iter().map(|(&id, c)| (id, c.ns)).collect();
        self.last_softirq_ns = snap.softirq_ns();
        self.last_started = snap.counters[netprobe_common::counter::TRACK_STARTED as usize];
        iv
    }

    /// The interval from the previous sample to `snap`: per hop pair, the
    /// difference of the cumulative histograms; packets and CPU by role.
    fn interval(&self, snap: &collect::Snapshot) -> IntervalRec {
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
            let (p50, _, p99, _) = crate::correlate::percentiles(&delta);
            pairs.push(IntervalPair {
                origin: k.origin,
                from_dev: k.from_dev,
                to_dev: k.to_dev,
                from_hop: k.from_hop,
                to_hop: k.to_hop,
                packets: delta.count,
                p50_ns: p50,
                p99_ns: p99,
                total_ns: delta.sum_ns,
                hist: Some(HistRec::from_hist(&delta)),
            });
        }
        let mut cpu_ns_by_role: BTreeMap<String, u64> = BTreeMap::new();
        for (&id, c) in &snap.cpu {
            let delta = c.ns.saturating_sub(self.last_cpu.get(&id).copied().unwrap_or(0));
            if delta > 0 {
                let comm = crate::correlate::cstr(&c.comm);
                let role = crate::correlate::role_of((id >> 32) as u32, &comm, self.workload.as_ref());
                *cpu_ns_by_role.entry(role.to_owned()).or_default() += delta;
            }
        }
        let softirq = snap.softirq_ns();
        let started = snap.counters[netprobe_common::counter::TRACK_STARTED as usize];
        IntervalRec {
            t_s: self.started.elapsed().as_secs_f64(),
            pairs,
            load: crate::report::IntervalLoad {
                packets: started.saturating_sub(self.last_started),
                softirq_ns: softirq.saturating_sub(self.last_softirq_ns),
                cpu_ns_by_role,
            },
        }
    }

    /// Tells the recorder what the workload is (its processes so far), so
    /// its threads' CPU time is attributed to it from now on.
    pub fn set_workload(&mut self, w: crate::report::Workload) {
        self.workload = Some(w);
    }

    /// One status line on stderr (rewritten in place): elapsed and
    /// remaining time, packets followed, events lost, hops active.
    pub fn status_line(&self, duration: Option<Duration>) {
        let Ok(c) = collect::counters(&self.attached.ebpf) else { return };
        let elapsed = self.started.elapsed().as_secs_f64();
        let remaining =
            duration.map_or(String::new(), |d| format!(", {:.0} s left", (d.as_secs_f64() - elapsed).max(0.0)));
        let hops = self.attached.coverage.iter().filter(|c| c.backend.is_some()).count();
        let lost = c[netprobe_common::counter::EVENTS_LOST as usize] + c[netprobe_common::counter::PAIR_LOST as usize];
        eprint!(
            "\r\x1b[K[netprobe] {elapsed:.0} s{remaining}, {} packets followed, {lost} events lost, {hops} hops active",
            c[netprobe_common::counter::TRACK_STARTED as usize]
        );
    }

    /// Attaches hops whose module appeared since (`--wait-for-modules`).
    pub fn rescan(&mut self) {
        match self.attached.rescan() {
            Ok(added) if !added.is_empty() => {
                eprintln!("netprobe: now observing {}", added.join(", "))
            }
            Ok(_) => {}
            Err(e) => eprintln!("netprobe: rescan failed: {e:#}"),
        }
    }

    /// Reads the aggregates and builds the report (the programs stay
    /// attached until the recorder is dropped).
    pub fn report(&self, interrupted: bool) -> Result<Report> {
        self.recording(interrupted)?.report()
    }

    /// Reads the aggregates into a recording: what `-o` writes and what
    /// every report is made from, so the two never differ.
    pub fn recording(&self, interrupted: bool) -> Result<Recording> {
        // Trace mode: the kernel is still sending; stop the consumer after
        // it drained the queue, so the aggregates below see no later event.
        let trace = self.trace.as_ref().map(|t| t.lock().map(|mut t| t.finish()).unwrap_or_default());
        let snap = self.kernel_snapshot()?;
        let mut extra = std::collections::BTreeMap::new();
        let mut samples = Vec::new();
        if let Some(t) = trace {
            samples = t.journeys;
            extra.insert("events_received".to_owned(), t.events);
            extra.insert("event_records".to_owned(), t.records);
            if let Ok(n) = collect::journey_events_in_flight(&self.attached.ebpf) {
                extra.insert("events_in_flight".to_owned(), n);
            }
            extra.insert("events_malformed".to_owned(), t.malformed);
            extra.insert("trace_reader_cpu_us".to_owned(), t.cpu_ns / 1000);
        }
        let mut rec = Recording::new(
            &snap,
            Meta::now(self.started.elapsed().as_secs_f64(), interrupted),
            self.attached.coverage.iter().map(CoverageEntry::from).collect(),
            self.attached.drop_reasons.clone(),
            self.guest_facing.clone(),
            extra,
        );
        // The last, partial interval ends at this very snapshot, so the
        // intervals add up to the whole recording.
        rec.intervals = self.intervals.clone();
        if let Some(spool) = &self.spool {
            spool.restore(&mut rec.intervals)?;
        }
        rec.meta.workload = self.workload.clone();
        rec.meta.filter = self.filter.clone();
        rec.meta.guests = self.guests.clone();
        let last = self.interval(&snap);
        if !last.pairs.is_empty() {
            rec.intervals.push(last);
        }
        rec.samples = samples;
        Ok(rec)
    }
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// For loops that run until told to stop (`top`, `serve`): SIGINT, SIGTERM
/// and SIGHUP (the SSH session closed) set the returned flag instead of
/// ending the process, so the loop returns and every probe is detached.
pub fn stop_on_signals() -> &'static std::sync::atomic::AtomicBool {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { libc::signal(sig, on_stop_signal as *const () as libc::sighandler_t) };
    }
    &STOP
}

/// Waits for `duration` (forever if None), Ctrl-C or SIGTERM; returns true
/// when a signal ended the wait.
pub fn wait(duration: Option<Duration>) -> Result<bool> {
    wait_for(duration, None, None)
}

/// Like [`wait`], but also ends when `done` receives (or its sender is
/// dropped), and calls `tick` about once a second while waiting.
pub fn wait_for(
    duration: Option<Duration>,
    done: Option<std::sync::mpsc::Receiver<()>>,
    mut tick: Option<&mut dyn FnMut()>,
) -> Result<bool> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let sleep = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let finished = async {
            match done {
                Some(rx) => {
                    let _ = tokio::task::spawn_blocking(move || rx.recv()).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep, finished);
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        // The first tick a second from now: an immediate one would close
        // an empty interval a few milliseconds into every series.
        let second = Duration::from_secs(1);
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut sleep => return Ok(false),
                () = &mut finished => return Ok(false),
                r = &mut ctrl_c => return r.map(|()| true).context("waiting for Ctrl-C"),
                _ = term.recv() => return Ok(true),
                _ = every.tick() => {
                    if let Some(t) = tick.as_mut() {
                        t();
                    }
                }
            }
        }
    })
}

/// Parses durations like `10s`, `500ms`, `2m`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration; use e.g. 10s, 500ms, 2m"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" => v / 1e6,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s, m or h")),
    };
    if !(secs > 0.0 && secs < 1e9) {
        return Err(format!("{s:?}: duration must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The workload a recording follows: a command netprobe runs (`record --
/// CMD ARGS`, its standard output passed on to netprobe's standard error
/// and read for its transaction count), a process already running
/// (`--pid`), or a cgroup's processes (`--cgroup`).
pub struct Workload {
    info: crate::report::Workload,
    kind: WorkloadKind,
    done: Option<std::sync::mpsc::Receiver<()>>,
    /// Exit status and time of a command netprobe started.
    status: std::sync::Arc<std::sync::Mutex<Option<(std::process::ExitStatus, f64)>>>,
    /// Transactions the workload's output reported (sockperf's summary).
    reported: std::sync::Arc<std::sync::Mutex<Option<(u64, String)>>>,
    /// `--transactions N`: the user's count wins over the output's.
    named_transactions: Option<u64>,
}

enum WorkloadKind {
    Command(u32),
    Pid(u32),
    Cgroup(PathBuf),
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// Transactions a benchmark's output line reports, and from what. sockperf
/// (ping-pong, under-load) ends with `[Total Run] ... ReceivedMessages=N`:
/// each reply received completes one request/response transaction.
pub fn transactions_in(line: &str) -> Option<(u64, &'static str)> {
    if line.contains("sockperf") && line.contains("[Total Run]") {
        let n = line.split(';').find_map(|f| f.trim().strip_prefix("ReceivedMessages="))?;
        return n.trim().parse().ok().map(|n| (n, "sockperf ReceivedMessages ([Total Run])"));
    }
    None
}

/// Parent PID of each process (from /proc/PID/stat).
fn parents() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces and ')'.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect()
}

/// A process and all its descendants.
fn process_tree(root: u32) -> Vec<u32> {
    let all = parents();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// The processes of a cgroup (v2) and of its descendant cgroups.
fn cgroup_procs(dir: &std::path::Path) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(cgroup_procs(&e.path()));
            }
        }
    }
    out
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

impl Workload {
    fn new(kind: WorkloadKind, command: Vec<String>, named_transactions: Option<u64>) -> Workload {
        Workload {
            info: crate::report::Workload {
                command,
                started_unix_s: unix_now(),
                ended_unix_s: 0.0,
                exit_status: None,
                signal: None,
                tgids: Vec::new(),
                cgroup: None,
                transactions: None,
                transactions_from: None,
            },
            kind,
            done: None,
            status: std::sync::Arc::default(),
            reported: std::sync::Arc::default(),
            named_transactions,
        }
    }

    /// Starts `command`; its standard output goes to netprobe's standard
    /// error line by line (the report alone is on standard output) and is
    /// read for the transaction count.
    pub fn start(command: &[String], named_transactions: Option<u64>) -> Result<Workload> {
        use std::io::{BufRead, Write};
        let mut child = std::process::Command::new(&command[0])
            .args(&command[1..])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start the workload `{}`", command.join(" ")))?;
        let pid = child.id();
        let mut w = Workload::new(WorkloadKind::Command(pid), command.to_vec(), named_transactions);
        let stdout = child.stdout.take().context("workload stdout")?;
        let reported = w.reported.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(std::io::stderr(), "{line}");
                if let Some((n, from)) = transactions_in(&line) {
                    if let Ok(mut g) = reported.lock() {
                        *g = Some((n, from.to_owned()));
                    }
                }
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let slot = w.status.clone();
        std::thread::spawn(move || {
            if let Ok(s) = child.wait() {
                // Its last lines (the summary) are read before it counts as done.
                let _ = reader.join();
                if let Ok(mut g) = slot.lock() {
                    *g = Some((s, unix_now()));
                }
            }
            let _ = tx.send(());
        });
        w.done = Some(rx);
        w.refresh();
        Ok(w)
    }

    /// Follows a process already running; the recording ends when it exits.
    pub fn attach_pid(pid: u32, named_transactions: Option<u64>) -> Result<Workload> {
        if pid == 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            bail!("--pid {pid}: no such process (check the PID with `ps -p {pid}`)");
        }
        let mut w = Workload::new(WorkloadKind::Pid(pid), cmdline(pid), named_transactions);
        let (tx, rx) = std::sync::mpsc::channel();
        let stat = format!("/proc/{pid}/stat");
        // (state, start time): a zombie (our own child not yet reaped) has
        // exited too; another start time means the PID was reused.
        let look = |s: &str| {
            let t = std::fs::read_to_string(s).ok()?;
            let mut f = t.rsplit_once(')')?.1.split_whitespace();
            let state = f.next()?.to_owned();
            Some((state, f.nth(18)?.to_owned()))
        };
        let born = look(&stat).map(|(_, t)| t);
        std::thread::spawn(move || {
            while look(&stat).is_some_and(|(state, t)| state != "Z" && state != "X" && Some(t) == born) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = tx.send(());
        });
        w.done = Some(rx);
        w.refresh();
        Ok(w)
    }

    /// Follows the processes of a cgroup: an absolute cgroup directory, or
    /// a path relative to /sys/fs/cgroup (cgroup v2, or its `unified`
    /// mount on hybrid hosts).
    pub fn cgroup(path: &str, named_transactions: Option<u64>) -> Result<Workload> {
        let p = std::path::Path::new(path);
        let candidates: Vec<PathBuf> = if p.is_absolute() {
            vec![p.to_path_buf()]
        } else {
            ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"].iter().map(|b| std::path::Path::new(b).join(p)).collect()
        };
        let Some(dir) = candidates.iter().find(|d| d.join("cgroup.procs").exists()).cloned() else {
            bail!(
                "--cgroup {path}: not a cgroup directory (no cgroup.procs in {}); name it as /proc/PID/cgroup \
                 shows it, e.g. machine.slice/machine-qemu\\x2d1.scope",
                candidates.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" or ")
            );
        };
        let mut w = Workload::new(WorkloadKind::Cgroup(dir.clone()), Vec::new(), named_transactions);
        w.info.cgroup = Some(dir.display().to_string());
        w.refresh();
        Ok(w)
    }

    /// Fires when the workload exits (for [`wait_for`]); a cgroup has none.
    pub fn take_done(&mut self) -> Option<std::sync::mpsc::Receiver<()>> {
        self.done.take()
    }

    /// Looks for the workload's processes again (children come and go);
    /// returns what is known so far, for [`Recorder::set_workload`].
    pub fn refresh(&mut self) -> crate::report::Workload {
        let now = match &self.kind {
            WorkloadKind::Command(pid) | WorkloadKind::Pid(pid) => process_tree(*pid),
            WorkloadKind::Cgroup(dir) => cgroup_procs(dir),
        };
        for p in now {
            if !self.info.tgids.contains(&p) {
                self.info.tgids.push(p);
            }
        }
        self.info.clone()
    }

    /// What ran, when, and how it ended. A command still running (the
    /// recording ended first) is asked to stop with SIGTERM.
    pub fn finish(mut self) -> crate::report::Workload {
        use std::os::unix::process::ExitStatusExt;
        self.refresh();
        if let WorkloadKind::Command(pid) = self.kind {
            let running = self.status.lock().map(|g| g.is_none()).unwrap_or(false);
            if running {
                // SAFETY: kill on our own child's pid.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
        }
        let ended = self.status.lock().ok().and_then(|g| *g);
        let mut info = self.info;
        info.ended_unix_s = ended.map_or_else(unix_now, |(_, t)| t);
        info.exit_status = ended.and_then(|(s, _)| s.code());
        info.signal = ended.and_then(|(s, _)| s.signal());
        let reported = self.reported.lock().ok().and_then(|g| g.clone());
        (info.transactions, info.transactions_from) = match (self.named_transactions, reported) {
            (Some(n), _) => (Some(n), Some("--transactions".to_owned())),
            (None, Some((n, from))) => (Some(n), Some(from)),
            (None, None) => (None, None),
        };
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("ten").unwrap_err().contains("not a duration"));
        assert!(parse_duration("5y").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn sockperf_transactions() {
        let line = "sockperf: [Total Run] RunTime=3.000 sec; Warm up time=400 msec; SentMessages=41210; \
                    ReceivedMessages=41209";
        assert_eq!(transactions_in(line).map(|t| t.0), Some(41209));
        assert_eq!(transactions_in("sockperf: [Valid Duration] RunTime=2.5 sec; ReceivedMessages=3"), None);
        assert_eq!(transactions_in("iperf3: 1.2 Gbits/sec"), None);
    }

    #[test]
    fn own_process_tree_and_unknown_pid() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let tree = process_tree(me);
        let _ = child.kill();
        let _ = child.wait();
        assert!(tree.contains(&me) && tree.contains(&child.id()), "{tree:?}");
        let e = Workload::attach_pid(u32::MAX - 1, None).err().unwrap().to_string();
        assert!(e.contains("no such process"), "{e}");
        let e = Workload::cgroup("no/such/cgroup-np", None).err().unwrap().to_string();
        assert!(e.contains("not a cgroup directory"), "{e}");
    }

    #[test]
    fn iface_specs() {
        assert_eq!(split_iface("eth0"), (None, "eth0"));
        assert_eq!(split_iface("ns1/macvtap0"), (Some("ns1"), "macvtap0"));
    }
}
