//! `cargo xtask bench`: what netprobe costs the datapath it measures.
//! A 64-byte UDP flood (iperf3) through (a) a veth pair between two
//! namespaces and (b) the demo MacVTap topology, each measured untraced,
//! under netprobe's aggregate mode, its per-packet trace mode, the
//! equivalent bpftrace script (bench/hops.bt), and netprobe's programs
//! attached to the same tracepoints but returning at once ("empty
//! programs": what any tracepoint-based tool pays here before doing
//! anything). Each repetition runs one continuous flood; every traced
//! window sits between two untraced ones and its ratio is to their mean,
//! the order of modes rotating from one repetition to the next.
//! Also: per-hop cost per backend (kernel.bpf_stats_enabled), trace
//! delivery (events/s, lost, consumer CPU) and memory over a soak run.
//! Figures go to target/bench/bench.json and a table.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use netprobe_testbed::topology::{Kind, Topology};
use serde_json::{json, Value};

use crate::{build, run, tools};

#[derive(clap::Args, Clone)]
pub(crate) struct BenchOpts {
    /// Repetitions: each starts a flood and measures every mode once,
    /// each traced window between two untraced ones.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Seconds per measuring window.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Length of the memory soak run (the figure is 600).
    #[arg(long, default_value_t = 60)]
    soak_seconds: u64,
    /// Modes to compare, interleaved (order rotated each repetition):
    /// untraced, empty (netprobe's programs returning at once: the
    /// tracepoints' own cost), aggregate, aggregate_nocpu (without the CPU
    /// accounting programs), aggregate_nofp (without the header
    /// fingerprint, `--fingerprint-gap 0`), aggregate_bt_hops (only the five hops
    /// bench/hops.bt times, `--hops`), softirq_vectors (aggregate with
    /// --softirq-vectors), aggregate_probe (the skb laundered by a helper
    /// call, as before), aggregate_one_clock (one clock read per hop,
    /// `--bench-one-clock`: what the second read costs), trace, sample64 (aggregate with --sample 64),
    /// bpftrace.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "untraced,empty,aggregate,aggregate_bt_hops,sample64,trace,bpftrace"
    )]
    modes: Vec<String>,
    /// Paths to flood: veth, macvtap.
    #[arg(long, value_delimiter = ',', default_value = "veth,macvtap")]
    paths: Vec<String>,
    /// Throughput only: no per-hop costs, no soak.
    #[arg(long)]
    quick: bool,
    /// The memory soak only (e.g. `--soak-only --soak-seconds 600`).
    #[arg(long, conflicts_with = "quick")]
    soak_only: bool,
    /// The footprint only: record's peak RSS, serve's steady RSS, the
    /// binary's size with and without debuginfo.
    #[arg(long, conflicts_with_all = ["quick", "soak_only"])]
    footprint_only: bool,
    /// Rounds of the benchmark-effect runs (sockperf round trip, TCP
    /// stream, CPU per delivered packet); each round runs every mode.
    #[arg(long, default_value_t = 5)]
    effect_rounds: usize,
    /// The rate-limited flood's offered load (64-byte UDP packets/s): one
    /// the MacVTap guest stand-in carries without drops.
    #[arg(long, default_value_t = 20_000)]
    carried_pps: u64,
    /// Only the benchmark-effect runs (after the footprint).
    #[arg(long, conflicts_with_all = ["quick", "soak_only", "footprint_only"])]
    effect_only: bool,
}

/// Where a flood goes: sender namespace and interface, receiver namespace and address.
pub(crate) struct Path2 {
    pub(crate) name: &'static str,
    pub(crate) from_ns: String,
    /// The sender's interface, whose counter gives the rate.
    pub(crate) from_dev: String,
    pub(crate) to_ns: String,
    pub(crate) to_addr: String,
}

struct VethPair;

impl VethPair {
    fn create() -> Result<VethPair> {
        let _ = VethPair::delete();
        let sh = |a: &[&str]| netprobe_testbed::netns::ip(a);
        sh(&["netns", "add", "npbench-a"])?;
        sh(&["netns", "add", "npbench-b"])?;
        sh(&["-n", "npbench-a", "link", "add", "npba", "type", "veth", "peer", "name", "npbb", "netns", "npbench-b"])?;
        sh(&["-n", "npbench-a", "addr", "add", "198.18.2.1/24", "dev", "npba"])?;
        sh(&["-n", "npbench-b", "addr", "add", "198.18.2.2/24", "dev", "npbb"])?;
        for (ns, dev) in [("npbench-a", "npba"), ("npbench-b", "npbb"), ("npbench-a", "lo"), ("npbench-b", "lo")] {
            sh(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(VethPair)
    }
    fn delete() -> Result<()> {
        let _ = netprobe_testbed::netns::ip(&["netns", "del", "npbench-a"]);
        let _ = netprobe_testbed::netns::ip(&["netns", "del", "npbench-b"]);
        Ok(())
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = VethPair::delete();
    }
}

/// A 64-byte UDP flood (iperf3, `-b 0`) that runs for as long as it is
/// held. The client is pinned to CPU 0 and the server to CPU 1, so the
/// sender's CPU (which also runs the softirq that carries each packet
/// through the path) is the bottleneck, the same one in every window. The
/// rate is read from the sender's interface counter over a window, not from
/// iperf3's end-of-run summary: windows are short and placed next to each
/// other, which keeps the machine's drifting background load out of the
/// ratios.
struct Flood {
    client: Child,
    server: Child,
    dev: String,
}

impl Flood {
    fn start(p: &Path2) -> Result<Flood> {
        let pin = |cpu: &str| if num_cpus() >= 2 { vec!["-A".to_owned(), cpu.to_owned()] } else { Vec::new() };
        let server = Command::new("ip")
            .args(["netns", "exec", &p.to_ns, "iperf3", "-s", "-1", "-B", &p.to_addr])
            .args(pin("1"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("iperf3 (Debian's iperf3)")?;
        std::thread::sleep(Duration::from_millis(300));
        let client = Command::new("ip")
            .args(["netns", "exec", &p.from_ns, "iperf3", "-c", &p.to_addr, "-u", "-l", "64", "-b", "0", "-t", "86400"])
            .args(pin("0"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut f = Flood { client, server, dev: p.from_dev.clone() };
        // Up to speed before the first window.
        std::thread::sleep(Duration::from_millis(700));
        if f.tx_packets()? == 0 {
            bail!("iperf3 sent nothing from {} to {}", p.from_ns, p.to_addr);
        }
        if let Some(st) = f.client.try_wait()? {
            bail!("iperf3 client exited at once ({st})");
        }
        Ok(f)
    }

    /// Packets sent so far by the sender's interface (its namespace's
    /// /proc/net/dev, read through the client's /proc entry).
    fn tx_packets(&self) -> Result<u64> {
        let t = std::fs::read_to_string(format!("/proc/{}/net/dev", self.client.id()))
            .context("the iperf3 client is gone")?;
        t.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim() == self.dev)
            .and_then(|(_, v)| v.split_whitespace().nth(9)?.parse().ok())
            .with_context(|| format!("no counters for {} in the sender's namespace", self.dev))
    }

    /// Packets per second over the next `secs`.
    fn rate(&self, secs: f64) -> Result<f64> {
        let (a, t) = (self.tx_packets()?, Instant::now());
        std::thread::sleep(Duration::from_secs_f64(secs));
        let b = self.tx_packets()?;
        Ok(b.saturating_sub(a) as f64 / t.elapsed().as_secs_f64())
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        for c in [&mut self.client, &mut self.server] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A background tracer, started and confirmed attached.
pub(crate) struct Tracer {
    child: Child,
    kind: &'static str,
}

impl Tracer {
    fn netprobe(bin: &Path, extra: &[&str]) -> Result<Tracer> {
        let mut child = Command::new(bin)
            .args(["record", "--format", "json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        wait_for_line(&mut child, "recording")?;
        Ok(Tracer { child, kind: "netprobe" })
    }

    fn bpftrace(script: &Path) -> Result<Tracer> {
        let mut child = Command::new("bpftrace")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("bpftrace (Debian's bpftrace)")?;
        wait_for_line(&mut child, "Attaching")?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(Tracer { child, kind: "bpftrace" })
    }

    /// SIGINT, then the netprobe JSON report (None for bpftrace).
    pub(crate) fn stop(self) -> Result<Option<Value>> {
        // SAFETY: kill on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let out = self.child.wait_with_output()?;
        if self.kind == "netprobe" {
            return Ok(Some(serde_json::from_slice(&out.stdout).context("netprobe printed no report")?));
        }
        Ok(None)
    }
}

fn wait_for_line(child: &mut Child, needle: &str) -> Result<()> {
    let out = child.stdout.take();
    let err = child.stderr.take().context("no stderr")?;
    let mut reader = BufReader::new(err);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    // bpftrace prints "Attaching" on stdout; netprobe "recording" on stderr.
    if let Some(out) = out {
        if needle == "Attaching" {
            // Read on a thread: bpftrace's stdout into a pipe is not always
            // flushed at "Attaching" (seen once in a loaded run, which then
            // hung); after 30 s its probes are attached anyway.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if line.contains("Attaching") {
                        let _ = tx.send(());
                    }
                }
            });
            std::thread::spawn(move || for _ in reader.lines() {});
            if rx.recv_timeout(Duration::from_secs(30)).is_err() {
                if child.try_wait()?.is_some() {
                    bail!("bpftrace exited before attaching");
                }
                eprintln!("xtask bench: bpftrace printed no \"Attaching\" in 30 s; going on");
            }
            return Ok(());
        }
        child.stdout = Some(out);
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("tracer exited before attaching: {seen:?}");
        }
        seen.push(line.clone());
        if line.contains(needle) {
            std::thread::spawn(move || for _ in reader.lines() {});
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("tracer did not attach: {seen:?}");
        }
    }
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn stats(v: &[f64]) -> Value {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(0.0, f64::max);
    json!({"mean": mean, "median": median(v), "min": min, "max": max, "runs": v})
}

/// The BPF object ids (`key` is `prog_id:` or `map_id:`) that process
/// `pid`'s file descriptors hold, read from /proc/PID/fdinfo.
fn held_ids(pid: u32, key: &str) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).into_iter().flatten().flatten() {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        ids.extend(info.lines().filter_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok()));
    }
    ids
}

/// Run time (ns) and runs of each BPF program process `pid` holds (its
/// fds' `prog_id`), by program name.
fn held_program_stats(pid: u32) -> Result<BTreeMap<String, (u64, u64)>> {
    let ids = held_ids(pid, "prog_id:");
    let mut by_name = BTreeMap::new();
    for p in loaded_programs()?.iter().filter(|p| p["id"].as_u64().is_some_and(|id| ids.contains(&id))) {
        let e: &mut (u64, u64) =
            by_name.entry(format!("{}#{}", p["name"].as_str().unwrap_or("?"), p["id"])).or_default();
        e.0 += p["run_time_ns"].as_u64().unwrap_or(0);
        e.1 += p["run_cnt"].as_u64().unwrap_or(0);
    }
    Ok(by_name)
}

/// Every loaded BPF program, as `bpftool prog show -j` lists them (with
/// `run_time_ns` and `run_cnt` while kernel.bpf_stats_enabled is on).
pub(crate) fn loaded_programs() -> Result<Vec<Value>> {
    let out = Command::new("bpftool").args(["prog", "show", "-j"]).output().context("bpftool prog show")?;
    match serde_json::from_slice(&out.stdout).context("bpftool prog show -j printed no JSON")? {
        Value::Array(progs) => Ok(progs),
        _ => bail!("bpftool prog show -j printed no list"),
    }
}

/// A program's name, run time (ns) and runs over a window.
type ProgWindow = (String, f64, f64);

/// One window of bpf_stats under a flood on `p`: each program the tracer
/// holds as (name, ns, runs) over `secs`, busiest first, and the packets
/// sent meanwhile.
fn bpf_stats_window(p: &Path2, secs: u64, start: impl FnOnce() -> Result<Tracer>) -> Result<(Vec<ProgWindow>, f64)> {
    let flood = Flood::start(p)?;
    run(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=1"]))?;
    let window = (|| {
        let t = start()?;
        std::thread::sleep(Duration::from_millis(500));
        let pid = t.child.id();
        let (a, tx_a) = (held_program_stats(pid)?, flood.tx_packets()?);
        std::thread::sleep(Duration::from_secs(secs));
        let (b, tx_b) = (held_program_stats(pid)?, flood.tx_packets()?);
        t.stop()?;
        let mut progs: Vec<ProgWindow> = b
            .iter()
            .map(|(name, &(ns, runs))| {
                let (ns0, runs0) = a.get(name).copied().unwrap_or((0, 0));
                (name.clone(), ns.saturating_sub(ns0) as f64, runs.saturating_sub(runs0) as f64)
            })
            .collect();
        progs.sort_by(|x, y| y.1.total_cmp(&x.1));
        Ok((progs, tx_b.saturating_sub(tx_a).max(1) as f64))
    })();
    run(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=0"]))?;
    window
}

/// Sum of memlock of the maps process `pid` holds (its fds' `map_id`),
/// so that other netprobes on the machine do not count.
fn map_bytes(pid: u32) -> u64 {
    let ids = held_ids(pid, "map_id:");
    let Ok(out) = Command::new("bpftool").args(["map", "show", "-j"]).output() else { return 0 };
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["id"].as_u64().is_some_and(|id| ids.contains(&id)))
        .map(|m| m["bytes_memlock"].as_u64().unwrap_or(0))
        .sum()
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `/proc/PID/status` figure in KiB (0 once the process is gone).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn veth_path() -> Path2 {
    Path2 {
        name: "veth",
        from_ns: "npbench-a".into(),
        from_dev: "npba".into(),
        to_ns: "npbench-b".into(),
        to_addr: "198.18.2.2".into(),
    }
}

/// A mode's window rate over the untraced windows around it.
struct Window {
    mode: String,
    pps: f64,
}

pub(crate) fn bench(opts: &BenchOpts) -> Result<()> {
    tools::ensure_debs(&["iproute2", "iperf3", "bpftrace", "bpftool", "sockperf"])?;
    let bin = build::build_all(&build::BuildOpts::default())?;
    let script = build::workspace_root().join("bench/hops.bt");
    let out_dir = build::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let _ = run(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=0"]));
    for m in &opts.modes {
        if mode_tracer(m).is_none() {
            bail!("unknown bench mode {m}");
        }
    }
    let traced: Vec<&String> = opts.modes.iter().filter(|m| *m != "untraced").collect();
    let mut results = serde_json::Map::new();
    let mut table = Vec::new();
    let fp = footprint(&bin, &mut table)?;
    results.insert("footprint".into(), fp);
    if opts.footprint_only {
        return finish(&out_dir, &results, &table, opts);
    }

    let veth = VethPair::create()?;
    let topo = Topology::create_kind(Kind::Macvtap)?;
    let paths: Vec<Path2> = [
        veth_path(),
        Path2 {
            name: "macvtap",
            from_ns: topo.guest_ns.clone(),
            from_dev: topo.guest_dev.clone(),
            to_ns: topo.peer_ns.clone(),
            to_addr: netprobe_testbed::topology::PEER_ADDR.into(),
        },
    ]
    .into_iter()
    .filter(|p| !opts.soak_only && opts.paths.iter().any(|n| n == p.name))
    .collect();
    // What tracing adds to a benchmark's own figures, and CPU per packet
    // at a load the path carries.
    if !opts.quick && !opts.soak_only {
        for p in &paths {
            let to_dev = if p.name == "veth" { "npbb".to_owned() } else { topo.peer_dev.clone() };
            eprintln!("xtask bench: {} benchmark effect ({} rounds)", p.name, opts.effect_rounds);
            let runs = crate::rtt::Runs { bin: &bin, script: &script, rounds: opts.effect_rounds, secs: opts.seconds };
            let effect = crate::rtt::benchmark_effect(&runs, p, &mut table)?;
            let cpu = crate::rtt::cpu_per_packet(&runs, p, &to_dev, opts.carried_pps, &mut table)?;
            results.insert(format!("{}_effect", p.name), json!({"benchmark": effect, "carried_flood": cpu}));
        }
    }
    if opts.effect_only {
        return finish(&out_dir, &results, &table, opts);
    }
    for p in &paths {
        let mut pps: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        // Each traced window relative to the untraced windows just before
        // and after it: the machine's background load drifts.
        let mut ratios: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        let mut trace_reports = Vec::new();
        // What the flood does to the path: where packets are dropped.
        let mut aggregate_report: Option<Value> = None;
        for rep in 0..opts.reps {
            eprintln!("xtask bench: {} repetition {}/{}", p.name, rep + 1, opts.reps);
            let flood = Flood::start(p)?;
            let mut windows = vec![Window { mode: "untraced".into(), pps: flood.rate(opts.seconds as f64)? }];
            for i in 0..traced.len() {
                let mode = traced[(i + rep) % traced.len()];
                let start = mode_tracer(mode).flatten().context("mode")?;
                let started = Instant::now();
                let t = start(&bin, &script)?;
                std::thread::sleep(Duration::from_millis(500));
                let rate = flood.rate(opts.seconds as f64)?;
                let report = t.stop()?;
                if mode == "aggregate" && aggregate_report.is_none() {
                    aggregate_report = report.clone();
                }
                if mode == "trace" {
                    if let Some(r) = report {
                        trace_reports.push((r, started.elapsed().as_secs_f64()));
                    }
                }
                windows.push(Window { mode: mode.clone(), pps: rate });
                std::thread::sleep(Duration::from_millis(500));
                windows.push(Window { mode: "untraced".into(), pps: flood.rate(opts.seconds as f64)? });
            }
            drop(flood);
            for (i, w) in windows.iter().enumerate() {
                pps.entry(w.mode.clone()).or_default().push(w.pps);
                if w.mode != "untraced" {
                    let around = (windows[i - 1].pps + windows[i + 1].pps) / 2.0;
                    ratios.entry(w.mode.clone()).or_default().push(w.pps / around);
                }
            }
        }
        let mut modes = serde_json::Map::new();
        // Each repetition's ratio to untraced, divided by the same
        // repetition's empty-program ratio: the rate kept of what the
        // tracepoints alone leave.
        let to_floor = |mode: &str| -> Option<Vec<f64>> {
            let (r, e) = (ratios.get(mode)?, ratios.get("empty")?);
            Some(r.iter().zip(e).map(|(r, e)| r / e).collect())
        };
        for mode in &opts.modes {
            let v = &pps[mode];
            let r = ratios.get(mode).cloned().unwrap_or_else(|| vec![1.0]);
            let f = to_floor(mode).filter(|_| mode != "empty");
            modes.insert(
                mode.to_string(),
                json!({"pps": stats(v), "ratio_to_untraced": stats(&r), "ratio_to_floor": f.as_deref().map(stats)}),
            );
            table.push(format!(
                "{:<8} {:<20} {:>10.0} pps  ratio median {:.2} (min {:.2}, max {:.2}, {} windows){}",
                p.name,
                mode_label(mode),
                median(v),
                median(&r),
                r.iter().cloned().fold(f64::INFINITY, f64::min),
                r.iter().cloned().fold(0.0, f64::max),
                v.len(),
                f.map(|f| format!("; of the floor {:.2}", median(&f))).unwrap_or_default(),
            ));
        }
        // Cost above the floor (1 - rate/floor), netprobe's against bpftrace's.
        for mode in ["aggregate", "aggregate_bt_hops", "trace"] {
            if let (Some(a), Some(b)) = (to_floor(mode), to_floor("bpftrace")) {
                let (ca, cb) = (1.0 - median(&a), 1.0 - median(&b));
                if cb > 0.0 {
                    table.push(format!(
                        "{:<8} {:<20} cost above the floor {:.1}% against bpftrace's {:.1}%: {:.2} of it",
                        p.name,
                        mode_label(mode),
                        ca * 100.0,
                        cb * 100.0,
                        ca / cb
                    ));
                    modes.insert(format!("{mode}_cost_over_bpftrace_cost"), json!(ca / cb));
                }
            }
        }
        if let (Some(a), Some(b)) = (ratios.get("aggregate"), ratios.get("bpftrace")) {
            let (a, b) = (median(a), median(b));
            table.push(format!("{:<8} aggregate / bpftrace  {:>10.2}x", p.name, a / b));
            modes.insert("aggregate_over_bpftrace".into(), json!(a / b));
        }
        if let (Some(a), Some(b)) = (ratios.get("aggregate_bt_hops"), ratios.get("bpftrace")) {
            let (a, b) = (median(a), median(b));
            table.push(format!("{:<8} same hops / bpftrace  {:>10.2}x", p.name, a / b));
            modes.insert("aggregate_bt_hops_over_bpftrace".into(), json!(a / b));
        }
        // Trace delivery: events consumed per second, lost, consumer CPU.
        let delivery: Vec<Value> = trace_reports
            .iter()
            .map(|(r, secs)| {
                let t = &r["tracking"];
                let ev = t["events_received"].as_f64().unwrap_or(0.0);
                let cpu = t["trace_reader_cpu_us"].as_f64().unwrap_or(0.0) / 1e6;
                json!({
                    "events": ev,
                    "events_per_s": ev / secs,
                    "events_lost": t["events_lost"],
                    "reader_cpu_s": cpu,
                    "events_per_cpu_s": if cpu > 0.0 { ev / cpu } else { 0.0 },
                })
            })
            .collect();
        for d in &delivery {
            table.push(format!(
                "{:<8} trace delivery        {:>10.0} events/s, {} lost, {:.0} events per reader CPU-second",
                p.name,
                d["events_per_s"].as_f64().unwrap_or(0.0),
                d["events_lost"],
                d["events_per_cpu_s"].as_f64().unwrap_or(0.0)
            ));
        }
        modes.insert("trace_delivery".into(), Value::Array(delivery));
        if let Some(r) = &aggregate_report {
            let followed = r["tracking"]["track_started"].as_u64().unwrap_or(0);
            let mut drops: Vec<(u64, String)> = r["drops"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let n = d["packets"].as_u64().unwrap_or(0);
                    (
                        n,
                        format!(
                            "{} {} after {}@{}",
                            n,
                            d["reason"].as_str().unwrap_or("?"),
                            d["last_hop"].as_str().unwrap_or("?"),
                            d["last_dev"].as_str().unwrap_or("?")
                        ),
                    )
                })
                .collect();
            drops.sort_by_key(|d| std::cmp::Reverse(d.0));
            let dropped: u64 = drops.iter().map(|d| d.0).sum();
            table.push(format!(
                "{:<8} flood's drops         {dropped} of {followed} packets followed in an aggregate window{}{}",
                p.name,
                if drops.is_empty() { "" } else { ": " },
                drops.iter().take(3).map(|d| d.1.as_str()).collect::<Vec<_>>().join(", ")
            ));
            modes.insert(
                "aggregate_window_drops".into(),
                json!({"followed": followed, "dropped": dropped, "drops": r["drops"].clone()}),
            );
        }
        results.insert(p.name.into(), Value::Object(modes));
    }
    if opts.quick {
        drop(topo);
        drop(veth);
        return finish(&out_dir, &results, &table, opts);
    }

    // Per-hop cost per backend on the veth path (bpf_stats adds its own
    // few tens of ns to each figure).
    let mut per_backend = serde_json::Map::new();
    let backends: &[&str] = if opts.soak_only { &[] } else { &["tp_btf", "raw_tp", "tracepoint"] };
    for &backend in backends {
        let (progs, _) =
            bpf_stats_window(&veth_path(), opts.seconds, || Tracer::netprobe(&bin, &["--backend", backend]))?;
        // Average run time of its busy programs (the hops'; not a program
        // that barely ran), weighted by runs.
        let busy: Vec<ProgWindow> = progs.into_iter().filter(|p| p.2 > 1000.0).collect();
        let mean = busy.iter().map(|p| p.1).sum::<f64>() / busy.iter().map(|p| p.2).sum::<f64>().max(1.0);
        table.push(format!(
            "per-hop  {backend:<20} {mean:>10.0} ns per hop (bpf_stats, weighted over {} programs)",
            busy.len()
        ));
        per_backend.insert(
            backend.into(),
            json!({"mean_ns_per_hop": mean, "programs": busy.iter().map(|p| json!({"name": p.0, "ns": p.1 / p.2, "runs": p.2})).collect::<Vec<_>>()}),
        );
    }
    // Each tool's own BPF time per packet on each path: the programs the
    // tracer process holds, their run time and runs over a window, per
    // packet sent (bpf_stats; it leaves out the tracepoint dispatch and,
    // for classic tracepoints, the perf buffer the kernel fills first).
    let tools: Vec<&str> = ["aggregate", "aggregate_nocpu", "aggregate_bt_hops", "bpftrace"]
        .into_iter()
        .filter(|m| opts.modes.iter().any(|o| o == m))
        .collect();
    for p in paths.iter().filter(|_| !opts.soak_only) {
        let mut by_tool = serde_json::Map::new();
        for &mode in &tools {
            let start = mode_tracer(mode).flatten().context("mode")?;
            let (progs, packets) = bpf_stats_window(p, opts.seconds, || start(&bin, &script))?;
            let (ns, runs) = progs.iter().fold((0.0, 0.0), |acc, p| (acc.0 + p.1, acc.1 + p.2));
            let v = json!({
                "bpf_ns_per_packet": ns / packets,
                "runs_per_packet": runs / packets,
                "ns_per_run": if runs > 0.0 { ns / runs } else { 0.0 },
                "programs": progs.iter().map(|(name, ns, runs)| json!({
                    "name": name,
                    "ns_per_packet": ns / packets,
                    "runs_per_packet": runs / packets,
                    "ns_per_run": if *runs > 0.0 { ns / runs } else { 0.0 },
                })).collect::<Vec<_>>(),
            });
            let top: Vec<String> = progs
                .iter()
                .filter(|p| p.2 > 0.0)
                .take(3)
                .map(|(name, ns, runs)| {
                    format!("{} {:.1}x{:.0}", name.split('#').next().unwrap_or(name), runs / packets, ns / runs)
                })
                .collect();
            table.push(format!(
                "bpf time {:<8} {:<20} {:>7.0} ns per packet in its programs ({:.1} runs per packet, {:.0} ns each; top: {})",
                p.name,
                mode_label(mode),
                ns / packets,
                runs / packets,
                v["ns_per_run"].as_f64().unwrap_or(0.0),
                top.join(", ")
            ));
            by_tool.insert(mode.into(), v);
        }
        if let Some(Value::Object(m)) = results.get_mut(p.name) {
            m.insert("bpf_time".into(), Value::Object(by_tool));
        }
    }

    // From throughput: extra time per packet over hops seen per packet.
    let hops = if results.contains_key("veth") { hops_per_packet(&bin, &veth_path())? } else { None };
    if let (Some(v), Some(hops)) = (results.get("veth"), hops) {
        let rate = |m: &str| v.get(m).and_then(|e| e["pps"]["median"].as_f64()).unwrap_or(0.0);
        let (u, a, e) = (rate("untraced"), rate("aggregate"), rate("empty"));
        if u > 0.0 && a > 0.0 {
            let ns = (1e9 / a - 1e9 / u) / hops;
            table.push(format!(
                "per-hop  from throughput        {ns:>10.0} ns per hop ({hops:.1} hops per packet, aggregate mode)"
            ));
            per_backend.insert("from_throughput".into(), json!({"ns_per_hop": ns, "hops_per_packet": hops}));
        }
        // Of which the tracepoints' own cost (empty programs) and netprobe's code.
        if u > 0.0 && a > 0.0 && e > 0.0 {
            let floor = (1e9 / e - 1e9 / u) / hops;
            let code = (1e9 / a - 1e9 / e) / hops;
            table.push(format!(
                "per-hop  of which               {floor:>10.0} ns empty programs (tracepoint floor), {code:.0} ns netprobe's code"
            ));
            per_backend
                .insert("from_throughput_split".into(), json!({"empty_ns_per_hop": floor, "code_ns_per_hop": code}));
        }
    }
    results.insert("per_hop_cost".into(), Value::Object(per_backend));

    // Memory over a soak run at full rate: netprobe's RSS and its maps.
    eprintln!("xtask bench: soak {} s", opts.soak_seconds);
    let flood = Flood::start(&veth_path())?;
    let t = Tracer::netprobe(&bin, &["--trace"])?;
    let pid = t.child.id();
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(opts.soak_seconds) {
        samples.push(json!({"t_s": start.elapsed().as_secs(), "rss_kib": rss_kib(pid), "map_bytes": map_bytes(pid)}));
        std::thread::sleep(Duration::from_secs(5));
    }
    let soak_report = t.stop()?;
    drop(flood);
    let first = &samples[0];
    let last = &samples[samples.len() - 1];
    let max_rss = samples.iter().filter_map(|s| s["rss_kib"].as_u64()).max().unwrap_or(0);
    table.push(format!(
        "memory   soak {} s (trace mode)     RSS {} -> {} KiB (max {}), BPF maps {} -> {} bytes, events lost {}",
        opts.soak_seconds,
        first["rss_kib"],
        last["rss_kib"],
        max_rss,
        first["map_bytes"],
        last["map_bytes"],
        soak_report.as_ref().map_or(Value::Null, |r| r["tracking"]["events_lost"].clone()),
    ));
    results.insert("memory".into(), json!({"soak_seconds": opts.soak_seconds, "samples": samples}));

    drop(topo);
    drop(veth);
    finish(&out_dir, &results, &table, opts)
}

/// What an always-on agent costs in memory and disk: `record`'s peak RSS
/// over a one-second recording, `serve`'s RSS after a few scrapes, and the
/// binary with and without its debuginfo.
fn footprint(bin: &Path, table: &mut Vec<String>) -> Result<Value> {
    // The peak is the child's own VmHWM, polled until it exits. (Not
    // wait4's ru_maxrss: the child is spawned from this process, and
    // until its exec it counts this process's pages, which the BPF
    // object's slimming makes some 200 MiB: that was the figure reported.)
    let mut child = Command::new(bin)
        .args(["record", "--duration", "1s", "--format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut record_peak_kib = 0;
    while child.try_wait()?.is_none() {
        record_peak_kib = record_peak_kib.max(status_kib(child.id(), "VmHWM:"));
        std::thread::sleep(Duration::from_millis(2));
    }

    let listen = "127.0.0.1:19465";
    let mut serve =
        Command::new(bin).args(["serve", "--listen", listen]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let stderr = serve.stderr.take();
    let ready = stderr.map(|e| {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(e), &mut line);
        line
    });
    let mut scrape_bytes = 0;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(400));
        if let Ok(mut c) = std::net::TcpStream::connect(listen) {
            use std::io::{Read, Write};
            let _ = c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut body = Vec::new();
            let _ = c.read_to_end(&mut body);
            scrape_bytes = body.len();
        }
    }
    let serve_rss_kib = rss_kib(serve.id());
    // SAFETY: kill on our own child.
    unsafe { libc::kill(serve.id() as i32, libc::SIGINT) };
    serve.wait()?;
    if scrape_bytes == 0 {
        bail!("netprobe serve answered no scrape on {listen} ({})", ready.unwrap_or_default().trim());
    }

    let binary = std::fs::metadata(bin)?.len();
    let stripped_path = bin.with_extension("stripped");
    run(Command::new("strip").arg("-o").arg(&stripped_path).arg(bin))?;
    let stripped = std::fs::metadata(&stripped_path)?.len();
    let _ = std::fs::remove_file(&stripped_path);
    let mib = |b: u64| b as f64 / 1048576.0;
    table.push(format!(
        "footprint record --duration 1s peak RSS {:.1} MiB (target 64); serve steady RSS {:.1} MiB after 5 scrapes (target 32)",
        record_peak_kib as f64 / 1024.0,
        serve_rss_kib as f64 / 1024.0
    ));
    table.push(format!(
        "footprint binary {:.1} MiB with debuginfo, {:.1} MiB stripped (what the packages ship)",
        mib(binary),
        mib(stripped)
    ));
    Ok(json!({
        "record_peak_rss_kib": record_peak_kib,
        "serve_rss_kib": serve_rss_kib,
        "serve_scrape_bytes": scrape_bytes,
        "binary_bytes": binary,
        "stripped_bytes": stripped,
    }))
}

fn finish(out_dir: &Path, results: &serde_json::Map<String, Value>, table: &[String], opts: &BenchOpts) -> Result<()> {
    let out = out_dir.join("bench.json");
    std::fs::write(&out, serde_json::to_string_pretty(&Value::Object(results.clone()))?)?;
    println!("\nnetprobe bench ({} reps x {} s, 64-byte UDP, iperf3)", opts.reps, opts.seconds);
    for l in table {
        println!("  {l}");
    }
    println!("figures: {}", out.display());
    Ok(())
}

/// The hops bench/hops.bt times, as netprobe's `--hops`.
const BT_HOPS: &str = "queue,xmit,netif_rx,receive,consumed";

/// A bench mode as the table names it.
pub(crate) fn mode_label(mode: &str) -> &str {
    match mode {
        "empty" => "empty programs",
        "aggregate" => "netprobe aggregate",
        "aggregate_nocpu" => "aggregate, no CPU",
        "aggregate_bt_hops" => "aggregate, 5 bt hops",
        "aggregate_probe" => "aggregate, helper",
        "aggregate_one_clock" => "aggregate, 1 clock",
        "softirq_vectors" => "aggregate+softirq",
        "trace" => "netprobe trace",
        "sample64" => "aggregate, --sample 64",
        other => other,
    }
}

pub(crate) type StartTracer = fn(&Path, &Path) -> Result<Tracer>;

/// How a bench mode is traced: None for an unknown mode, Some(None) untraced.
pub(crate) fn mode_tracer(mode: &str) -> Option<Option<StartTracer>> {
    let start: StartTracer = match mode {
        "untraced" => return Some(None),
        "empty" => |b, _| Tracer::netprobe(b, &["--bench-empty-programs"]),
        "aggregate" => |b, _| Tracer::netprobe(b, &[]),
        "aggregate_nocpu" => |b, _| Tracer::netprobe(b, &["--bench-no-cpu"]),
        // Without the header fingerprint (no header read where tracking
        // starts, no check after a gap): what the fingerprint costs.
        "aggregate_nofp" => |b, _| Tracer::netprobe(b, &["--fingerprint-gap", "0"]),
        // bench/hops.bt's five tracepoints only: the same work as bpftrace.
        "aggregate_bt_hops" => |b, _| Tracer::netprobe(b, &["--hops", BT_HOPS]),
        "softirq_vectors" => |b, _| Tracer::netprobe(b, &["--softirq-vectors"]),
        "aggregate_probe" => |b, _| Tracer::netprobe(b, &["--bench-probe-launder"]),
        "aggregate_one_clock" => |b, _| Tracer::netprobe(b, &["--bench-one-clock"]),
        "trace" => |b, _| Tracer::netprobe(b, &["--trace"]),
        // Always-on sampling: one packet in 64 followed.
        "sample64" => |b, _| Tracer::netprobe(b, &["--sample", "64"]),
        "bpftrace" => |_, s| Tracer::bpftrace(s),
        _ => return None,
    };
    Some(Some(start))
}

/// Hops per packet on a path: samples per followed packet, plus the first hop.
fn hops_per_packet(bin: &Path, p: &Path2) -> Result<Option<f64>> {
    let flood = Flood::start(p)?;
    let t = Tracer::netprobe(bin, &[])?;
    flood.rate(2.0)?;
    let Some(r) = t.stop()? else { return Ok(None) };
    drop(flood);
    let samples: u64 = r["directions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["pairs"].as_array().into_iter().flatten())
        .map(|p| p["packets"].as_u64().unwrap_or(0))
        .sum();
    let started = r["tracking"]["track_started"].as_u64().unwrap_or(0);
    Ok((started > 0).then(|| samples as f64 / started as f64 + 1.0))
}
