//! The netprobe command line: argument parsing, one session call per
//! subcommand, and output selection. No domain logic lives here.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use netprobe::{
    analyze::{self, analyze, compare::compare},
    model::{labels, report::Report},
    probe::{attach::BenchSwitches, catalog::HopSet},
    recording::{codec::looks_like_recording, Recording},
    render::{self, Format},
    session::{
        self,
        record::{RecordOptions, DEFAULT_SAMPLES},
        serve::ServeOptions,
        signals::Stop,
        RecordRun,
    },
};
use netprobe_common::Backend;
use netprobe_testbed::topology::Kind;

#[derive(Parser)]
#[command(version, about = "Per-hop latency of each packet's way through a KVM host's datapath")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompareFormat {
    Table,
    Json,
    /// Both recordings side by side on one HTML page with charts.
    Html,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Fentry,
    Kprobe,
    #[value(name = "tp_btf")]
    TpBtf,
    #[value(name = "raw_tp")]
    RawTp,
    Tracepoint,
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Fentry => Backend::Fentry,
            BackendArg::Kprobe => Backend::Kprobe,
            BackendArg::TpBtf => Backend::TpBtf,
            BackendArg::RawTp => Backend::RawTp,
            BackendArg::Tracepoint => Backend::Tracepoint,
        }
    }
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// External BTF file for kernels without /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "FILE")]
    btf: Option<PathBuf>,
    /// Use only this attach backend (default: the best one each hop allows).
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// A packet unseen for this long is considered gone (its next sighting starts anew).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    max_gap: Duration,
    /// After a gap this long between two hops, a packet's headers (IP ID,
    /// TCP sequence, ICMP sequence) are checked against where it started:
    /// another packet in a recycled sk_buff restarts (`track_fingerprint`).
    /// 0 turns the check off (a little less work per packet).
    #[arg(long, default_value = "10us", value_parser = parse_duration_or_off)]
    fingerprint_gap: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// No live status line on stderr (it is shown only on a terminal).
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Only follow packets matching this flow expression, applied in the
    /// kernel (pcap-filter subset: tcp, udp, icmp, ip, ip6, arp, proto N,
    /// [src|dst] host ADDR, [src|dst] net ADDR/LEN, [src|dst] port N,
    /// and, or, not, parentheses), e.g. 'udp and dst port 5001'.
    #[arg(long, value_name = "EXPR")]
    filter: Option<String>,
    /// Per-packet trace mode: every hop of every followed packet also goes
    /// to userspace as an event (bounded ring buffer; losses counted), and
    /// the recording keeps complete packet journeys (see --samples).
    #[arg(long)]
    trace: bool,
    /// Packet journeys (hops and times, never contents) the recording
    /// keeps in trace mode: the first N that complete, at most half from
    /// one origin device. Implies --trace.
    #[arg(long, value_name = "N")]
    samples: Option<usize>,
    /// Time NET_RX and NET_TX softirqs apart, with two more programs on
    /// irq:softirq_entry/exit (each softirq; up to one per packet, a third
    /// of the programs a forwarded packet runs). Default: all softirq time
    /// per CPU from /proc/stat, which costs nothing per packet but counts
    /// in 10 ms units (tick-sampled without CONFIG_IRQ_TIME_ACCOUNTING).
    #[arg(long)]
    softirq_vectors: bool,
    /// Count drops by kernel stack too (a BPF stack-trace map; nothing is
    /// sent per packet): the reports show each drop reason's top stacks,
    /// folded like `perf script | stackcollapse-perf.pl` (root first,
    /// `;`-separated), with the function that freed the packets; frames
    /// are named from /proc/kallsyms, module symbols as `name [module]`.
    #[arg(long)]
    drop_stacks: bool,
    /// Attach only these catalog hops (labels separated by commas, as
    /// `netprobe probes` lists them), e.g. --hops queue,xmit,consumed:
    /// fewer programs per packet, less overhead. Default: every hop this
    /// kernel offers.
    #[arg(long, value_name = "LABELS", value_delimiter = ',')]
    hops: Option<Vec<String>>,
    /// Follow one packet in N, decided where its tracking would start from
    /// a hash of its headers and data buffer (so a flow's packets are
    /// neither all in nor all out). A packet left out is decided once: its
    /// later hops only check it is still that packet. Packet counts are
    /// scaled by N and the report says they are sampled.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    sample: u32,
    /// Also attach the tracepoints modules define (openvswitch's
    /// ovs_action, ovs_upcall_tp). A program on a module's tracepoint holds
    /// the module loaded: `rmmod openvswitch` fails "in use" while netprobe
    /// runs. Without it those hops are left out (the module's function
    /// hops see the same packets) and an unloaded module's hops are
    /// detached, what they measured kept.
    #[arg(long)]
    pin_modules: bool,
    /// Benchmarks only (`cargo xtask bench`): the hop programs return at
    /// once, to measure what the tracepoints alone cost.
    #[arg(long, hide = true)]
    bench_empty_programs: bool,
    /// Benchmarks only: launder the skb pointer with a helper call per hop.
    #[arg(long, hide = true)]
    bench_probe_launder: bool,
    /// Benchmarks only: one clock read per hop (what the second costs).
    #[arg(long, hide = true)]
    bench_one_clock: bool,
    /// Benchmarks only: no CPU-accounting program (sched_switch).
    #[arg(long, hide = true)]
    bench_no_cpu: bool,
    /// Tests only: trace mode's ring buffer in bytes (a power of two
    /// times the page size).
    #[arg(long, hide = true, default_value_t = 0)]
    bench_ring_bytes: u32,
    /// Tests only: trace mode's reader starts this long after the ring is
    /// made (with a tiny ring, a forced overflow).
    #[arg(long, hide = true, value_parser = parse_duration)]
    bench_pause_reader: Option<Duration>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Record per-hop latencies until the duration ends or Ctrl-C.
    Record {
        /// How long to record (e.g. 10s, 2m); default: until Ctrl-C or SIGTERM.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Only follow packets first seen on these interfaces (NAME or NETNS/NAME; repeatable).
        #[arg(long = "iface", value_name = "IFACE")]
        ifaces: Vec<String>,
        /// Also write the recording (full-resolution histograms, coverage,
        /// host facts) to FILE, for `netprobe report` later.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Keep looking for hops whose module is not loaded yet (openvswitch,
        /// qeth...) and attach them when it is.
        #[arg(long)]
        wait_for_modules: bool,
        #[command(flatten)]
        probe: ProbeArgs,
        /// Follow a process already running (e.g. a benchmark or a QEMU
        /// guest): its threads' CPU is the `workload` role; the recording
        /// ends when it exits (or at --duration / Ctrl-C).
        #[arg(long, value_name = "PID", conflicts_with = "cgroup")]
        pid: Option<u32>,
        /// Follow the processes of a cgroup v2 (path under /sys/fs/cgroup,
        /// e.g. machine.slice/...): their CPU is the `workload` role.
        #[arg(long, value_name = "PATH")]
        cgroup: Option<String>,
        /// Transactions the workload completes (e.g. request/response pairs),
        /// for CPU per transaction; sockperf's own count is read from its
        /// output when it is the workload.
        #[arg(long, value_name = "N")]
        transactions: Option<u64>,
        /// A label the recording carries, KEY=VALUE (repeatable), e.g.
        /// --label conns=50 --label config=macvtap: what a benchmark sweep
        /// varies; `compare` orders and charts recordings by them.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// A workload to run: the recording lasts exactly as long as it runs
        /// (and at most --duration), and is tagged with it.
        #[arg(last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Live terminal view, refreshed every second: each hop pair's packet
    /// rate, p50 and p99 over the last second per direction, the costliest
    /// first, and CPU by role. q, Esc or Ctrl-C quits (probes detached).
    Top {
        /// Only follow packets first seen on these interfaces (NAME or NETNS/NAME; repeatable).
        #[arg(long = "iface", value_name = "IFACE")]
        ifaces: Vec<String>,
        /// Keep looking for hops whose module is not loaded yet and attach them when it is.
        #[arg(long)]
        wait_for_modules: bool,
        #[command(flatten)]
        probe: ProbeArgs,
    },
    /// Long-running Prometheus/OpenMetrics exporter of the always-on
    /// per-hop aggregates on /metrics (and /health), until SIGTERM or Ctrl-C.
    Serve {
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
        listen: String,
        /// Only follow packets first seen on these interfaces (NAME or NETNS/NAME; repeatable).
        #[arg(long = "iface", value_name = "IFACE")]
        ifaces: Vec<String>,
        /// The `host` label of every series (default: this machine's host name).
        #[arg(long)]
        host: Option<String>,
        /// Series per metric family; hop pairs and drops beyond it are
        /// folded into one series labelled "other".
        #[arg(long, default_value_t = 500)]
        max_series: usize,
        /// How often to check the loaded kernel modules; when they changed
        /// (openvswitch, qeth... loaded), hops not attached yet are tried again.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        rescan_every: Duration,
        /// TLS, client certificates and basic auth: a web configuration file
        /// in the Prometheus exporter-toolkit's format (node_exporter's
        /// --web.config.file).
        #[arg(long, value_name = "FILE")]
        web_config: Option<PathBuf>,
        #[command(flatten)]
        probe: ProbeArgs,
    },
    /// Print the report of a recording (`record -o FILE`) or of a report
    /// saved with `--format json`.
    Report {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Compare recordings hop by hop. Two unlabelled ones (e.g. macvtap
    /// vs ovs): matching hop pairs side by side, the rest by path stage.
    /// More, or labelled ones (`record --label conns=10 --label
    /// config=macvtap`): a sweep, one column per recording in label order
    /// and, in HTML, one chart per hop pair of latency against the label.
    Compare {
        #[arg(required = true, num_args = 2.., value_name = "RECORDING")]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: CompareFormat,
        /// A sweep's lines: the label whose values are set against each
        /// other across the sweep (e.g. --group-by config).
        #[arg(long, value_name = "KEY")]
        group_by: Option<String>,
        /// A sweep's x axis: the label it varies (default: the one label
        /// besides --group-by whose value differs between recordings).
        #[arg(long, value_name = "KEY")]
        sweep: Option<String>,
    },
    /// Show, for every hop of the catalog, the backend this kernel allows
    /// (proved by loading and attaching it for a moment) or why none.
    Probes {
        #[command(flatten)]
        probe: ProbeArgs,
        /// Also write this kernel's facts (kallsyms, BTF, tracepoints) to DIR.
        #[arg(long, value_name = "DIR")]
        save_facts: Option<PathBuf>,
    },
    /// Build the demo MacVTap topology in network namespaces, send real
    /// traffic through it while recording, print the breakdown, clean up.
    Demo {
        /// Host configuration: macvtap (OSA-like), bridge (tap + Linux
        /// bridge), ovs (tap + OVS kernel datapath, HiperSockets-like).
        #[arg(long, value_enum, default_value = "macvtap")]
        topology: Kind,
        /// A real QEMU guest (TCG) on a macvtap instead of the guest
        /// stand-in: the image in DIR (`cargo xtask guest-image`, or
        /// `cargo xtask demo --guest`); needs qemu-system-x86_64, iperf3
        /// and sockperf.
        #[arg(long, value_name = "DIR", conflicts_with = "topology")]
        guest: Option<PathBuf>,
        /// Build the topology, print where it is (NETPROBE_GUEST_NS=...,
        /// NETPROBE_PEER_NS=..., NETPROBE_IFACES=... for `record --iface`)
        /// and keep it, with no traffic and no recording, until Ctrl-C or
        /// SIGTERM: for benchmark runs of one's own (a sweep).
        #[arg(long, conflicts_with_all = ["guest", "output"])]
        hold: bool,
        /// The guest stand-in hands the macvtap to the kernel's vhost-net
        /// worker, as QEMU does with `vhost=on`, and plays the guest's
        /// virtio-net driver on its rings (macvtap topology; needs
        /// /dev/vhost-net: `modprobe vhost_net`).
        #[arg(long, conflicts_with = "guest")]
        vhost: bool,
        /// Also write the recording to FILE.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        probe: ProbeArgs,
    },
    /// Print the shell completion script for SHELL, made from these very
    /// definitions (the packages install bash, zsh and fish ones), e.g.
    /// `netprobe completions bash > /etc/bash_completion.d/netprobe`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Packaging: write the man pages (netprobe.1 and one per subcommand,
    /// roff) to DIR.
    #[command(hide = true)]
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            netprobe::say!("netprobe: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn options(p: &ProbeArgs, ifaces: Vec<String>, wait_for_modules: bool) -> Result<RecordOptions> {
    let hops = match &p.hops {
        Some(labels) => HopSet::of_labels(labels)?,
        None => HopSet::ALL,
    };
    Ok(RecordOptions {
        wait_for_modules,
        ifaces,
        btf_file: p.btf.clone(),
        backend: p.backend.map(Backend::from),
        max_gap: p.max_gap,
        fingerprint_gap: p.fingerprint_gap,
        trace: p.trace || p.samples.is_some(),
        samples: p.samples.unwrap_or(DEFAULT_SAMPLES),
        filter: p.filter.clone(),
        sample_every: p.sample,
        softirq_vectors: p.softirq_vectors,
        drop_stacks: p.drop_stacks,
        hops,
        pin_modules: p.pin_modules,
        spool_dir: None,
        bench: BenchSwitches {
            empty_programs: p.bench_empty_programs,
            probe_launder: p.bench_probe_launder,
            one_clock: p.bench_one_clock,
            no_cpu: p.bench_no_cpu,
            ring_bytes: p.bench_ring_bytes,
            reader_pause: p.bench_pause_reader.unwrap_or_default(),
        },
    })
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Record {
            duration,
            ifaces,
            wait_for_modules,
            output,
            probe,
            pid,
            cgroup,
            transactions,
            labels,
            command,
        } => {
            // Before anything is attached: a bad label fails at once.
            let labels = labels::parse_all(&labels)?;
            let run = RecordRun { duration, command, pid, cgroup, transactions, output, status: !probe.quiet, labels };
            let rec = session::record(&options(&probe, ifaces, wait_for_modules)?, &run)?;
            print(&rec, probe.format)
        }
        Cmd::Top { ifaces, wait_for_modules, probe } => {
            // Before anything is attached: a key press needs a terminal.
            if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
                anyhow::bail!("`netprobe top` needs a terminal; use `record` or `serve` otherwise");
            }
            let stop = Stop::install();
            let mut rec = session::record::Recorder::start(&options(&probe, ifaces, wait_for_modules)?)?;
            // The terminal is given back inside top::run on every way out;
            // rec is dropped (every probe detached) right after, error or not.
            let res = session::top::run(&mut rec, &session::serve::hostname(), stop);
            drop(rec);
            res
        }
        Cmd::Serve { listen, ifaces, host, max_series, rescan_every, web_config, probe } => {
            let host = host.unwrap_or_else(session::serve::hostname);
            let opts = ServeOptions { listen, host, max_series, rescan_every, web_config };
            let listener = session::serve::listen(&opts)?;
            let stop = Stop::install();
            let mut rec = session::record::Recorder::start(&options(&probe, ifaces, true)?)?;
            let res = session::serve::run(listener, &mut rec, &opts, stop);
            drop(rec);
            res
        }
        Cmd::Demo { topology, vhost, hold: true, .. } => session::demo::hold(topology, vhost),
        Cmd::Demo { topology, vhost, guest, output, probe, hold: false } => {
            let opts = options(&probe, Vec::new(), false)?;
            let rec = match guest {
                Some(dir) => session::demo::run_guest(&dir, output.as_deref(), &opts)?,
                None => session::demo::run(topology, vhost, output.as_deref(), &opts)?,
            };
            print(&rec, probe.format)
        }
        Cmd::Compare { files, format, group_by, sweep } => {
            let mut reports = Vec::new();
            for f in &files {
                reports.push((f.display().to_string(), load(f)?.report()?));
            }
            let unlabelled = reports.iter().all(|(_, r)| r.labels.is_empty());
            let mut out = std::io::stdout().lock();
            let res =
                if let ([(na, ra), (nb, rb)], true, None, None) = (reports.as_slice(), unlabelled, &group_by, &sweep) {
                    let c = compare(na, ra, nb, rb);
                    match format {
                        CompareFormat::Json => json(&mut out, &c),
                        CompareFormat::Table => render::compare_table::write(&c, &mut out),
                        CompareFormat::Html => render::compare_html::write(&c, &mut out),
                    }
                } else {
                    let s = analyze::sweep::sweep(&reports, group_by.as_deref(), sweep.as_deref())?;
                    match format {
                        CompareFormat::Json => json(&mut out, &s),
                        CompareFormat::Table => render::sweep_table::write(&s, &mut out),
                        CompareFormat::Html => render::sweep_html::write(&s, &mut out),
                    }
                };
            ignore_broken_pipe(res)
        }
        Cmd::Report { file, format } => match load(&file)? {
            Loaded::Recording(rec) => print(&rec, format),
            Loaded::Report(r) => {
                let mut out = std::io::stdout().lock();
                let res = render::write_report(&r, format, &mut out).with_context(|| file.display().to_string());
                ignore_broken_pipe(res)
            }
        },
        Cmd::Completions { shell } => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut Cli::command(), "netprobe", &mut out);
            ignore_broken_pipe(out.flush().map_err(Into::into))
        }
        Cmd::Man { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("cannot write the man pages to {}", dir.display()))
        }
        Cmd::Probes { probe, save_facts } => {
            let report = session::probes::run(&options(&probe, Vec::new(), false)?, save_facts.as_deref())?;
            let mut out = std::io::stdout().lock();
            match probe.format {
                Format::Json => {
                    serde_json::to_writer_pretty(
                        &mut out,
                        &serde_json::json!({
                            "kernel": report.kernel,
                            "hops": report.coverage,
                        }),
                    )?;
                    writeln!(out)?;
                }
                _ => render::table::write_probes(&report, &mut out)?,
            }
            Ok(())
        }
    }
}

/// Prints a recording in `format` on standard output.
fn print(rec: &Recording, format: Format) -> Result<()> {
    if format == Format::Perfetto && rec.samples.is_empty() {
        netprobe::say!(
            "netprobe: this recording kept no packet journeys (record with --trace): the trace has no slices"
        );
    }
    let analysis = analyze(rec)?;
    let mut out = std::io::stdout().lock();
    let res = render::write(&analysis, format, &mut out);
    ignore_broken_pipe(res.and_then(|()| out.flush().map_err(Into::into)))
}

/// What `report` and `compare` read: a recording, or a report saved as JSON.
enum Loaded {
    Recording(Box<Recording>),
    Report(Box<Report>),
}

impl Loaded {
    fn report(&self) -> Result<Report> {
        match self {
            Loaded::Recording(rec) => Ok(analyze(rec)?.report),
            Loaded::Report(r) => Ok((**r).clone()),
        }
    }
}

fn load(file: &std::path::Path) -> Result<Loaded> {
    let data = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    if looks_like_recording(&data) {
        let rec = Recording::from_bytes(&data).with_context(|| file.display().to_string())?;
        Ok(Loaded::Recording(Box::new(rec)))
    } else {
        serde_json::from_slice::<Report>(&data)
            .map(|r| Loaded::Report(Box::new(r)))
            .with_context(|| format!("{} is neither a netprobe recording nor a JSON report", file.display()))
    }
}

/// `value` as pretty JSON and a newline.
fn json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A closed pipe (`| head`) is a normal end of output, not an error.
fn ignore_broken_pipe(r: Result<()>) -> Result<()> {
    match r {
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                    // serde_json keeps the io::Error inside its own.
                    || c.downcast_ref::<serde_json::Error>()
                        .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
            }) =>
        {
            Ok(())
        }
        r => r,
    }
}

/// Parses durations like `10s`, `500ms`, `2m`, `1h` or plain seconds.
/// A duration, or `0` / `off` for a check that is turned off.
fn parse_duration_or_off(s: &str) -> Result<Duration, String> {
    match s.trim() {
        "0" | "off" => Ok(Duration::ZERO),
        _ => parse_duration(s).map_err(|e| format!("{e} (or 0 to turn the check off)")),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_man_pages_come_from_the_cli_definitions() {
        Cli::command().debug_assert();
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "netprobe", &mut script);
            let script = String::from_utf8(script).unwrap();
            assert!(script.contains("web-config") && script.contains("wait-for-modules"), "{shell}: {script}");
        }
        let dir = std::env::temp_dir().join(format!("netprobe-man-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        clap_mangen::generate_to(Cli::command(), &dir).unwrap();
        let mut pages: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        pages.sort();
        let serve = std::fs::read_to_string(dir.join("netprobe-serve.1")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // Every visible subcommand has its page; the packaging one does not.
        assert!(
            pages.contains(&"netprobe.1".to_owned()) && pages.contains(&"netprobe-record.1".to_owned()),
            "{pages:?}"
        );
        assert!(!pages.iter().any(|p| p == "netprobe-man.1" || p == "netprobe-help.1"), "{pages:?}");
        assert!(serve.starts_with(".ie") || serve.contains(".TH"), "not roff: {serve}");
        assert!(serve.contains("127.0.0.1:9464"), "the default listen address is documented: {serve}");
    }

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
}
