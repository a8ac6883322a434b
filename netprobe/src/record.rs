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
    report::{CoverageEntry, Report},
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
    intervals: Vec<IntervalRec>,
}

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
        // Resolve interfaces before touching the kernel: a typo fails fast.
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
        let mut attached = attach::attach(&AttachOptions {
            btf_file: opts.btf_file.clone(),
            backend: opts.backend,
            max_gap_ns: opts.max_gap.as_nanos() as u64,
            filter_enabled: !resolved.is_empty(),
            trace: opts.trace,
            rescan: opts.wait_for_modules,
        })?;
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
        let trace = if opts.trace {
            let map = attached.ebpf.take_map(names::EVENTS).context("map NP_EVENTS missing")?;
            let ring = aya::maps::RingBuf::try_from(map)?;
            let journeys = crate::trace::Journeys::new(base_ns, opts.samples);
            Some(std::sync::Mutex::new(crate::trace::TraceReader::start(ring, journeys)?))
        } else {
            None
        };
        Ok(Recorder {
            attached,
            trace,
            started: Instant::now(),
            guest_facing,
            last_sample: BTreeMap::new(),
            intervals: Vec::new(),
        })
    }

    pub fn coverage(&self) -> &[attach::Coverage] {
        &self.attached.coverage
    }

    /// Closes one interval of the time series: what each hop pair saw
    /// since the previous sample (call about once a second).
    pub fn sample(&mut self) {
        let Ok(snap) = collect::snapshot(&self.attached.ebpf) else { return };
        self.intervals.push(self.interval(&snap));
        self.last_sample = snap.pairs;
    }

    /// The interval from the last sample to `snap`: per hop pair, the
    /// difference of the cumulative histograms.
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
                hist: Some(HistRec::from_hist(&delta)),
            });
        }
        IntervalRec { t_s: self.started.elapsed().as_secs_f64(), pairs }
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
        let snap = collect::snapshot(&self.attached.ebpf)?;
        let mut extra = std::collections::BTreeMap::new();
        let mut samples = Vec::new();
        if let Some(t) = trace {
            samples = t.journeys;
            extra.insert("events_received".to_owned(), t.events);
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
        let last = self.interval(&snap);
        if !last.pairs.is_empty() {
            rec.intervals.push(last);
        }
        rec.samples = samples;
        Ok(rec)
    }
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
        let mut every = tokio::time::interval(Duration::from_secs(1));
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

/// A workload netprobe runs and records (`record -- CMD ARGS`). Its
/// standard output goes to netprobe's standard error, so the report alone
/// is on standard output.
pub struct Workload {
    command: Vec<String>,
    started: f64,
    done: Option<std::sync::mpsc::Receiver<()>>,
    status: std::sync::Arc<std::sync::Mutex<Option<(std::process::ExitStatus, f64)>>>,
    pid: u32,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

impl Workload {
    pub fn start(command: &[String]) -> Result<Workload> {
        use std::os::fd::AsFd;
        let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
        let mut child = std::process::Command::new(&command[0])
            .args(&command[1..])
            .stdout(std::process::Stdio::from(stderr))
            .spawn()
            .with_context(|| format!("cannot start the workload `{}`", command.join(" ")))?;
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        let status = std::sync::Arc::new(std::sync::Mutex::new(None));
        let slot = status.clone();
        std::thread::spawn(move || {
            if let Ok(s) = child.wait() {
                if let Ok(mut g) = slot.lock() {
                    *g = Some((s, unix_now()));
                }
            }
            let _ = tx.send(());
        });
        Ok(Workload { command: command.to_vec(), started: unix_now(), done: Some(rx), status, pid })
    }

    /// Fires when the workload exits (for [`wait_for`]); there is one.
    pub fn take_done(&mut self) -> Option<std::sync::mpsc::Receiver<()>> {
        self.done.take()
    }

    /// What ran, when, and how it ended. A workload still running (the
    /// recording ended first) is asked to stop with SIGTERM.
    pub fn finish(self) -> crate::report::Workload {
        use std::os::unix::process::ExitStatusExt;
        let running = self.status.lock().map(|g| g.is_none()).unwrap_or(false);
        if running {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        }
        let ended = self.status.lock().ok().and_then(|g| *g);
        crate::report::Workload {
            command: self.command,
            started_unix_s: self.started,
            ended_unix_s: ended.map_or_else(unix_now, |(_, t)| t),
            exit_status: ended.and_then(|(s, _)| s.code()),
            signal: ended.and_then(|(s, _)| s.signal()),
        }
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
    fn iface_specs() {
        assert_eq!(split_iface("eth0"), (None, "eth0"));
        assert_eq!(split_iface("ns1/macvtap0"), (Some("ns1"), "macvtap0"));
    }
}
