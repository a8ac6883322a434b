//! `cargo xtask bench`: what netprobe costs the datapath it measures.
//! A 64-byte UDP flood (iperf3) through (a) a veth pair between two
//! namespaces and (b) the demo MacVTap topology, each measured untraced,
//! under netprobe's aggregate mode, its per-packet trace mode, the
//! equivalent bpftrace script (bench/hops.bt), and netprobe's programs
//! attached to the same tracepoints but returning at once ("empty
//! programs": what any tracepoint-based tool pays here before doing
//! anything), interleaved (order rotated each repetition) and repeated.
//! Also: per-hop cost per backend (kernel.bpf_stats_enabled), trace
//! delivery (events/s, lost, consumer CPU) and memory over a soak run.
//! Figures go to target/bench/bench.json and a table.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use netprobe::demo::{Kind, Topology};
use serde_json::{json, Value};

use crate::{build, run, tools};

#[derive(clap::Args, Clone)]
pub(crate) struct BenchOpts {
    /// Repetitions of each measurement.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Seconds of flood per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Length of the memory soak run (the figure is 600).
    #[arg(long, default_value_t = 60)]
    soak_seconds: u64,
    /// Modes to compare, interleaved (order rotated each repetition):
    /// untraced, empty (netprobe's programs returning at once: the
    /// tracepoints' own cost), aggregate, aggregate_nocpu (without the CPU
    /// accounting programs), aggregate_probe (the skb laundered by a helper
    /// call, as before), trace, bpftrace.
    #[arg(long, value_delimiter = ',', default_value = "untraced,empty,aggregate,trace,bpftrace")]
    modes: Vec<String>,
    /// Paths to flood: veth, macvtap.
    #[arg(long, value_delimiter = ',', default_value = "veth,macvtap")]
    paths: Vec<String>,
    /// Throughput only: no per-hop costs, no soak.
    #[arg(long)]
    quick: bool,
}

/// Where a flood goes: (sender ns, receiver ns, receiver address).
struct Path2 {
    name: &'static str,
    from_ns: String,
    to_ns: String,
    to_addr: String,
}

struct VethPair;

impl VethPair {
    fn create() -> Result<VethPair> {
        let _ = VethPair::delete();
        let sh = |a: &[&str]| netprobe::netns::ip(a);
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
        let _ = netprobe::netns::ip(&["netns", "del", "npbench-a"]);
        let _ = netprobe::netns::ip(&["netns", "del", "npbench-b"]);
        Ok(())
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = VethPair::delete();
    }
}

/// One iperf3 64-byte UDP flood; returns (sent pps, received pps).
fn flood(p: &Path2, seconds: u64) -> Result<(f64, f64)> {
    let mut server = Command::new("ip")
        .args(["netns", "exec", &p.to_ns, "iperf3", "-s", "-1", "-B", &p.to_addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("ip")
        .args(["netns", "exec", &p.from_ns, "iperf3", "-c", &p.to_addr, "-u", "-l", "64", "-b", "0", "-J"])
        .args(["-t", &seconds.to_string()])
        .output()?;
    let _ = server.kill();
    let _ = server.wait();
    let v: Value = serde_json::from_slice(&out.stdout).context("iperf3 printed no JSON")?;
    let sum = &v["end"]["sum"];
    let secs = sum["seconds"].as_f64().context("iperf3: no seconds")?;
    let sent = sum["packets"].as_f64().context("iperf3: no packets")?;
    let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
    Ok((sent / secs, (sent - lost) / secs))
}

/// A background tracer, started and confirmed attached.
struct Tracer {
    child: Child,
    kind: &'static str,
}

impl Tracer {
    fn netprobe(bin: &Path, extra: &[&str]) -> Result<Tracer> {
        Tracer::netprobe_env(bin, extra, &[])
    }

    fn netprobe_env(bin: &Path, extra: &[&str], env: &[&str]) -> Result<Tracer> {
        let mut child = Command::new(bin)
            .args(["record", "--format", "json"])
            .args(extra)
            .envs(env.iter().map(|v| (v, "1")))
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
    fn stop(self) -> Result<Option<Value>> {
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

fn median(v: &[f64]) -> f64 {
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

/// Average run time per invocation of netprobe's programs, from
/// kernel.bpf_stats_enabled (per program name).
fn per_program_ns() -> Result<Vec<(String, f64, u64)>> {
    let out = Command::new("bpftool").args(["prog", "show", "-j"]).output()?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let mut res = Vec::new();
    for p in v.as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default();
        let cnt = p["run_cnt"].as_u64().unwrap_or(0);
        if cnt > 1000 && ["btf_", "raw_", "tp_"].iter().any(|x| name.starts_with(x)) {
            res.push((name.to_owned(), p["run_time_ns"].as_f64().unwrap_or(0.0) / cnt as f64, cnt));
        }
    }
    Ok(res)
}

/// Sum of memlock of netprobe's maps (names start with NP_).
fn map_bytes() -> u64 {
    let Ok(out) = Command::new("bpftool").args(["map", "show", "-j"]).output() else { return 0 };
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["name"].as_str().is_some_and(|n| n.starts_with("NP_")))
        .map(|m| m["bytes_memlock"].as_u64().unwrap_or(0))
        .sum()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn bench(opts: &BenchOpts) -> Result<()> {
    tools::ensure_debs(&["iproute2", "iperf3", "bpftrace", "bpftool"])?;
    let bin = build::build_all(&build::BuildOpts::default())?;
    let script = build::workspace_root().join("bench/hops.bt");
    let out_dir = build::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let _ = run(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=0"]));

    let veth = VethPair::create()?;
    let topo = Topology::create_kind(Kind::Macvtap)?;
    let paths: Vec<Path2> = [
        Path2 { name: "veth", from_ns: "npbench-a".into(), to_ns: "npbench-b".into(), to_addr: "198.18.2.2".into() },
        Path2 {
            name: "macvtap",
            from_ns: topo.guest_ns.clone(),
            to_ns: topo.peer_ns.clone(),
            to_addr: netprobe::demo::PEER_ADDR.into(),
        },
    ]
    .into_iter()
    .filter(|p| opts.paths.iter().any(|n| n == p.name))
    .collect();
    for m in &opts.modes {
        if mode_tracer(m).is_none() {
            bail!("unknown bench mode {m}");
        }
    }
    let mut results = serde_json::Map::new();
    let mut table = Vec::new();
    for p in &paths {
        let mut pps: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        // Each traced run relative to the untraced run of its repetition:
        // the machine's background load drifts between repetitions.
        let mut ratios: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        let mut trace_reports = Vec::new();
        for rep in 0..opts.reps {
            eprintln!("xtask bench: {} repetition {}/{}", p.name, rep + 1, opts.reps);
            let n = opts.modes.len();
            let mut this_rep = Vec::new();
            for i in 0..n {
                let mode = &opts.modes[(i + rep) % n];
                let started = Instant::now();
                let (rate, report) = match mode_tracer(mode).unwrap_or_default() {
                    None => (flood(p, opts.seconds)?.0, None),
                    Some(start) => {
                        let t = start(&bin, &script)?;
                        let rate = flood(p, opts.seconds)?.0;
                        (rate, t.stop()?)
                    }
                };
                if mode == "trace" {
                    if let Some(r) = report {
                        trace_reports.push((r, started.elapsed().as_secs_f64()));
                    }
                }
                pps.entry(mode.clone()).or_default().push(rate);
                this_rep.push((mode.clone(), rate));
            }
            if let Some(&(_, u)) = this_rep.iter().find(|(m, _)| m == "untraced") {
                for (m, r) in this_rep {
                    ratios.entry(m).or_default().push(r / u);
                }
            }
        }
        let mut modes = serde_json::Map::new();
        for mode in &opts.modes {
            let v = &pps[mode];
            let r = ratios.get(mode).cloned().unwrap_or_default();
            modes.insert(mode.to_string(), json!({"pps": stats(v), "ratio_to_untraced": stats(&r)}));
            let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len().max(1) as f64;
            table.push(format!(
                "{:<8} {:<20} {:>10.0} pps  ratio median {:.2}, mean {:.2} (min {:.2}, max {:.2})",
                p.name,
                mode_label(mode),
                mean(v),
                median(&r),
                mean(&r),
                r.iter().cloned().fold(f64::INFINITY, f64::min),
                r.iter().cloned().fold(0.0, f64::max),
            ));
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
    for backend in ["tp_btf", "raw_tp", "tracepoint"] {
        run(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=1"]))?;
        let t = Tracer::netprobe(&bin, &["--backend", backend])?;
        let flooder = std::thread::spawn({
            let p = Path2 {
                name: "veth",
                from_ns: "npbench-a".into(),
                to_ns: "npbench-b".into(),
                to_addr: "198.18.2.2".into(),
            };
            let secs = opts.seconds;
            move || flood(&p, secs)
        });
        std::thread::sleep(Duration::from_secs(opts.seconds.max(2) - 1));
        let progs = per_program_ns()?;
        let _ = flooder.join();
        t.stop()?;
        run(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=0"]))?;
        let busy: Vec<&(String, f64, u64)> = progs.iter().collect();
        let mean =
            busy.iter().map(|p| p.1 * p.2 as f64).sum::<f64>() / busy.iter().map(|p| p.2 as f64).sum::<f64>().max(1.0);
        table.push(format!(
            "per-hop  {backend:<20} {mean:>10.0} ns per hop (bpf_stats, weighted over {} programs)",
            busy.len()
        ));
        per_backend.insert(
            backend.into(),
            json!({"mean_ns_per_hop": mean, "programs": busy.iter().map(|p| json!({"name": p.0, "ns": p.1, "runs": p.2})).collect::<Vec<_>>()}),
        );
    }
    // From throughput: extra time per packet over hops seen per packet.
    let veth_path = paths.iter().find(|p| p.name == "veth");
    if let (Some(v), Some(hops)) =
        (results.get("veth"), veth_path.map(|p| hops_per_packet(&bin, p)).transpose()?.flatten())
    {
        let u = v["untraced"]["pps"]["mean"].as_f64().unwrap_or(0.0);
        let a = v["aggregate"]["pps"]["mean"].as_f64().unwrap_or(0.0);
        if u > 0.0 && a > 0.0 {
            let ns = (1e9 / a - 1e9 / u) / hops;
            table.push(format!(
                "per-hop  from throughput        {ns:>10.0} ns per hop ({hops:.1} hops per packet, aggregate mode)"
            ));
            per_backend.insert("from_throughput".into(), json!({"ns_per_hop": ns, "hops_per_packet": hops}));
        }
        // Of which the tracepoints' own cost (empty programs) and netprobe's code.
        let e = v.get("empty").and_then(|e| e["pps"]["mean"].as_f64()).unwrap_or(0.0);
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
    let t = Tracer::netprobe(&bin, &["--trace"])?;
    let pid = t.child.id();
    let soak_path =
        Path2 { name: "veth", from_ns: "npbench-a".into(), to_ns: "npbench-b".into(), to_addr: "198.18.2.2".into() };
    let secs = opts.soak_seconds;
    let flooder = std::thread::spawn(move || flood(&soak_path, secs));
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(opts.soak_seconds) {
        samples.push(json!({"t_s": start.elapsed().as_secs(), "rss_kib": rss_kib(pid), "map_bytes": map_bytes()}));
        std::thread::sleep(Duration::from_secs(5));
    }
    let _ = flooder.join();
    let soak_report = t.stop()?;
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

/// A bench mode as the table names it.
fn mode_label(mode: &str) -> &str {
    match mode {
        "empty" => "empty programs",
        "aggregate" => "netprobe aggregate",
        "aggregate_nocpu" => "aggregate, no CPU",
        "aggregate_probe" => "aggregate, helper",
        "trace" => "netprobe trace",
        other => other,
    }
}

type StartTracer = fn(&Path, &Path) -> Result<Tracer>;

/// How a bench mode is traced: None for an unknown mode, Some(None) untraced.
fn mode_tracer(mode: &str) -> Option<Option<StartTracer>> {
    let start: StartTracer = match mode {
        "untraced" => return Some(None),
        "empty" => |b, _| Tracer::netprobe_env(b, &[], &["NETPROBE_EMPTY_PROGRAMS"]),
        "aggregate" => |b, _| Tracer::netprobe(b, &[]),
        "aggregate_nocpu" => |b, _| Tracer::netprobe_env(b, &[], &["NETPROBE_NO_CPU"]),
        "aggregate_probe" => |b, _| Tracer::netprobe_env(b, &[], &["NETPROBE_PROBE_LAUNDER"]),
        "trace" => |b, _| Tracer::netprobe(b, &["--trace"]),
        "bpftrace" => |_, s| Tracer::bpftrace(s),
        _ => return None,
    };
    Some(Some(start))
}

/// Hops per packet on a path: samples per followed packet, plus the first hop.
fn hops_per_packet(bin: &Path, p: &Path2) -> Result<Option<f64>> {
    let t = Tracer::netprobe(bin, &[])?;
    flood(p, 2)?;
    let Some(r) = t.stop()? else { return Ok(None) };
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
