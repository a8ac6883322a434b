//! What tracing adds to a benchmark's own result (issue 16): a sockperf
//! ping-pong's round trip and a pinned TCP stream's throughput, each run
//! untraced and under every tracing mode in turn, in rounds whose order
//! rotates so the machine's drifting load falls on every mode alike. Also
//! a rate-limited flood the path can carry, for host CPU per delivered
//! packet, traced against untraced.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bench::{median, mode_label, mode_tracer, Path2};

/// The modes whose effect on a benchmark is reported: "empty" (netprobe's
/// programs returning at once) is the floor the others are judged above.
const MODES: &[&str] = &["untraced", "empty", "aggregate", "trace", "bpftrace"];

/// The carried flood's modes: also netprobe on only the hops the
/// bpftrace script times (`--hops`), the fair match for the script's
/// cost, and `--sample 64`.
const CARRIED_MODES: &[&str] =
    &["untraced", "empty", "aggregate", "aggregate_bt_hops", "sample64", "trace", "bpftrace"];

/// A background server in the receiver's namespace, killed when dropped.
struct Server(Child);

impl Server {
    fn start(p: &Path2, args: &[&str]) -> Result<Server> {
        let c = Command::new("ip")
            .args(["netns", "exec", &p.to_ns, "taskset", "-c", "1"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} in {}", args[0], p.to_ns))?;
        std::thread::sleep(Duration::from_millis(400));
        Ok(Server(c))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a client pinned to CPU 0 in the sender's namespace; its stdout.
fn client(p: &Path2, args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &p.from_ns, "taskset", "-c", "0"])
        .args(args)
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!("{} failed: {}", args[0], String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// sockperf's `---> percentile P = X` (microseconds).
fn percentile(out: &str, p: &str) -> Option<f64> {
    out.lines().find_map(|l| l.split_once(&format!("percentile {p} ="))?.1.trim().parse().ok())
}

/// How the runs are made: the netprobe binary, the bpftrace script,
/// rounds (each runs every mode) and seconds per run.
pub(crate) struct Runs<'a> {
    pub(crate) bin: &'a Path,
    pub(crate) script: &'a Path,
    pub(crate) rounds: usize,
    pub(crate) secs: u64,
}

/// Runs `f` under each mode, `rounds` times, the order rotated per round.
fn rounds<T>(
    runs: &Runs<'_>,
    modes: &[&'static str],
    mut f: impl FnMut() -> Result<T>,
) -> Result<BTreeMap<&'static str, Vec<T>>> {
    let mut by_mode: BTreeMap<&'static str, Vec<T>> = BTreeMap::new();
    for r in 0..runs.rounds {
        for i in 0..modes.len() {
            let mode = modes[(i + r) % modes.len()];
            let tracer = match mode_tracer(mode).flatten() {
                Some(start) => Some(start(runs.bin, runs.script)?),
                None => None,
            };
            let v = f();
            if let Some(t) = tracer {
                t.stop()?;
            }
            by_mode.entry(mode).or_default().push(v?);
        }
    }
    Ok(by_mode)
}

/// Round trip (sockperf ping-pong, full RTT) and a TCP stream at a fixed
/// CPU budget (iperf3, client on CPU 0, server on CPU 1), per mode.
pub(crate) fn benchmark_effect(runs: &Runs<'_>, p: &Path2, table: &mut Vec<String>) -> Result<Value> {
    let (n, t) = (runs.rounds, runs.secs.to_string());
    let rtt = {
        let _server = Server::start(p, &["sockperf", "server", "-i", &p.to_addr, "-p", "11111"])?;
        rounds(runs, MODES, || {
            let out = client(p, &["sockperf", "ping-pong", "-i", &p.to_addr, "-p", "11111", "-t", &t, "--full-rtt"])?;
            match (percentile(&out, "50.000"), percentile(&out, "99.000")) {
                (Some(p50), Some(p99)) => Ok((p50, p99)),
                _ => bail!("sockperf printed no percentiles:\n{out}"),
            }
        })?
    };
    let stream = {
        let _server = Server::start(p, &["iperf3", "-s", "-B", &p.to_addr])?;
        rounds(runs, MODES, || {
            let out = client(p, &["iperf3", "-c", &p.to_addr, "-t", &t, "-J"])?;
            let v: Value = serde_json::from_str(&out[..out.rfind('}').map_or(0, |i| i + 1)])
                .context("iperf3 -J printed no JSON")?;
            v["end"]["sum_received"]["bits_per_second"].as_f64().context("iperf3 JSON without sum_received")
        })?
    };
    let base = |v: &BTreeMap<&str, Vec<f64>>| median(&v["untraced"]);
    let p50: BTreeMap<&str, Vec<f64>> = rtt.iter().map(|(m, v)| (*m, v.iter().map(|x| x.0).collect())).collect();
    let p99: BTreeMap<&str, Vec<f64>> = rtt.iter().map(|(m, v)| (*m, v.iter().map(|x| x.1).collect())).collect();
    let mut out = serde_json::Map::new();
    for &mode in MODES {
        let (a, b, s) = (median(&p50[mode]), median(&p99[mode]), median(&stream[mode]));
        let pct = |x: f64, base: f64| (x / base - 1.0) * 100.0;
        table.push(format!(
            "{:<8} {:<20} RTT p50 {a:>7.1} us ({:+.1}%), p99 {b:>7.1} us ({:+.1}%); TCP stream {:>6.2} Gbit/s ({:+.1}%), {n} rounds",
            p.name,
            mode_label(mode),
            pct(a, base(&p50)),
            pct(b, base(&p99)),
            s / 1e9,
            pct(s, base(&stream)),
        ));
        out.insert(
            mode.into(),
            json!({
                "rtt_p50_us": p50[mode], "rtt_p99_us": p99[mode], "tcp_bits_per_s": stream[mode],
                "rtt_p50_added_pct": pct(a, base(&p50)), "rtt_p99_added_pct": pct(b, base(&p99)),
                "tcp_change_pct": pct(s, base(&stream)),
            }),
        );
    }
    let added = |m: &str| median(&p50[m]) - base(&p50);
    if added("bpftrace") > 0.0 {
        let r = added("aggregate") / added("bpftrace");
        table.push(format!("{:<8} RTT p50 added by aggregate mode / by bpftrace {r:>6.2}", p.name));
        out.insert("rtt_p50_added_aggregate_over_bpftrace".into(), json!(r));
    }
    Ok(Value::Object(out))
}

/// Busy host CPU time so far, all CPUs, in seconds, and where it came
/// from. The root cgroup's CPU usage counts in nanoseconds (cgroup v1
/// `cpuacct.usage`) or microseconds (v2 `cpu.stat` `usage_usec`); it
/// holds the softirqs that run in a task's context (all of a veth or
/// macvtap flood's, where the sender raises them), and, on a kernel
/// with IRQ time accounting, cgroup v2's adds the rest. /proc/stat, the
/// fallback, counts in 10 ms units sampled at each tick: over a 3 s
/// window of a 20k pps flood, one unit is 167 ns per packet, too coarse
/// to tell the modes apart.
fn busy_cpu_s() -> Result<(f64, &'static str)> {
    if let Ok(ns) = std::fs::read_to_string("/sys/fs/cgroup/cpuacct/cpuacct.usage") {
        if let Ok(ns) = ns.trim().parse::<u64>() {
            return Ok((ns as f64 / 1e9, "cgroup v1 cpuacct.usage (ns)"));
        }
    }
    if let Ok(stat) = std::fs::read_to_string("/sys/fs/cgroup/cpu.stat") {
        if let Some(us) =
            stat.lines().find_map(|l| l.strip_prefix("usage_usec ")).and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Ok((us as f64 / 1e6, "cgroup v2 cpu.stat usage_usec"));
        }
    }
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().context("/proc/stat is empty")?;
    let f: Vec<u64> = cpu.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: u64 = f.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((busy as f64 / hz, "/proc/stat (10 ms units)"))
}

/// The run time (bpf_stats) of every tracing-type BPF program loaded, in
/// ns: netprobe's or bpftrace's hops, whichever is attached; not the
/// cgroup and socket programs a service manager may have loaded.
fn tracing_program_ns() -> Result<u64> {
    Ok(crate::bench::loaded_programs()?
        .iter()
        .filter(|p| {
            matches!(p["type"].as_str(), Some("tracing" | "raw_tracepoint" | "tracepoint" | "kprobe" | "perf_event"))
        })
        .filter_map(|p| p["run_time_ns"].as_u64())
        .sum())
}

/// Packets received so far by `dev` in `ns`.
fn rx_packets(ns: &str, dev: &str) -> Result<u64> {
    let out = Command::new("ip").args(["-n", ns, "-s", "-j", "link", "show", "dev", dev]).output()?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| format!("ip -s link of {ns}/{dev}"))?;
    v[0]["stats64"]["rx"]["packets"].as_u64().with_context(|| format!("no rx counter for {ns}/{dev}"))
}

/// Which figure of a carried-flood round (host CPU-seconds, BPF seconds,
/// delivered packets/s) a per-packet figure is made of.
type Pick = fn(&(f64, f64, f64)) -> f64;

/// A flood the path can carry (64-byte UDP at `pps`): host CPU-seconds per
/// delivered packet, untraced and under each mode, and how many arrived.
pub(crate) fn cpu_per_packet(
    runs: &Runs<'_>,
    p: &Path2,
    to_dev: &str,
    pps: u64,
    table: &mut Vec<String>,
) -> Result<Value> {
    let secs = runs.secs;
    let _server = Server::start(p, &["iperf3", "-s", "-B", &p.to_addr])?;
    let rate = (pps * 64 * 8).to_string();
    let mut client = Command::new("ip")
        .args(["netns", "exec", &p.from_ns, "taskset", "-c", "0"])
        .args(["iperf3", "-c", &p.to_addr, "-u", "-l", "64", "-b", &rate, "-t", "86400"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(800));
    // bpf_stats on for every mode alike (its own few tens of ns per run
    // land in the host CPU of the traced modes): the programs' own time
    // per delivered packet, exact where the CPU figure is not.
    let stats_on = crate::run(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=1"]));
    let res = stats_on.and_then(|()| {
        rounds(runs, CARRIED_MODES, || {
            std::thread::sleep(Duration::from_millis(300));
            let (c0, b0, r0, t0) =
                (busy_cpu_s()?.0, tracing_program_ns()?, rx_packets(&p.to_ns, to_dev)?, Instant::now());
            std::thread::sleep(Duration::from_secs(secs));
            let (c1, b1, r1) = (busy_cpu_s()?.0, tracing_program_ns()?, rx_packets(&p.to_ns, to_dev)?);
            let delivered = r1.saturating_sub(r0) as f64;
            Ok((c1 - c0, b1.saturating_sub(b0) as f64 / 1e9, delivered / t0.elapsed().as_secs_f64()))
        })
    });
    let _ = crate::run(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=0"]));
    let _ = client.kill();
    let _ = client.wait();
    let res = res?;
    let per_packet = |m: &str, pick: Pick| -> f64 {
        let v: Vec<f64> = res[m].iter().map(|x| pick(x) / (x.2 * secs as f64).max(1.0) * 1e9).collect();
        median(&v)
    };
    let (cpu, bpf): (Pick, Pick) = (|x| x.0, |x| x.1);
    let mut out = serde_json::Map::new();
    let (base, floor) = (per_packet("untraced", cpu), per_packet("empty", cpu));
    for &mode in CARRIED_MODES {
        let (ns, bpf_ns) = (per_packet(mode, cpu), per_packet(mode, bpf));
        let delivered = median(&res[mode].iter().map(|x| x.2).collect::<Vec<_>>());
        // "Of the floor" as the flood's rates give it: for a load bound by
        // CPU, the rate kept is the floor's CPU per packet over the mode's.
        table.push(format!(
            "{:<8} {:<20} {ns:>7.0} ns host CPU per delivered packet ({:.2}x untraced, of the floor {:.2}), {bpf_ns:>5.0} ns in BPF programs, at {delivered:.0} of {pps} pps offered",
            p.name,
            mode_label(mode),
            ns / base,
            floor / ns,
        ));
        out.insert(
            mode.into(),
            json!({"cpu_ns_per_packet": ns, "bpf_ns_per_packet": bpf_ns, "delivered_pps": delivered, "ratio_to_untraced": ns / base, "of_the_floor": floor / ns}),
        );
    }
    // netprobe's cost above the floor against bpftrace's, at a load both
    // carry to the end (what the overdriven flood cannot tell: there
    // netprobe follows the dropped packets, the script does not).
    for (what, key, pick) in [("host CPU", "cpu", cpu), ("BPF time", "bpf", bpf)] {
        let above = |m: &str| per_packet(m, pick) - per_packet("empty", pick);
        if above("bpftrace") <= 0.0 {
            continue;
        }
        // All of netprobe's hops, and only the script's (the fair match).
        for mode in ["aggregate", "aggregate_bt_hops"] {
            let r = above(mode) / above("bpftrace");
            table.push(format!(
                "{:<8} {what} per delivered packet above the floor: {} {:.0} ns, bpftrace {:.0} ns: {r:.2} of it (target 0.40)",
                p.name,
                mode_label(mode),
                above(mode),
                above("bpftrace"),
            ));
            out.insert(format!("{key}_above_floor_{mode}_over_bpftrace"), json!(r));
        }
    }
    let source = busy_cpu_s()?.1;
    table.push(format!("{:<8} (host CPU from {source})", p.name));
    out.insert("cpu_source".into(), json!(source));
    out.insert("offered_pps".into(), json!(pps));
    Ok(Value::Object(out))
}
