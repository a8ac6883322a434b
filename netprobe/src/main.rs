//! The netprobe command line: argument parsing and output selection only.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use netprobe::{
    demo::{self, Topology},
    record::{self, parse_duration, RecordOptions, Recorder},
    recording::Recording,
    report::{self, Format, Report},
};
use netprobe_common::Backend;

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
    /// Attach only these catalog hops (labels separated by commas, as
    /// `netprobe probes` lists them), e.g. --hops queue,xmit,consumed:
    /// fewer programs per packet, less overhead. Default: every hop this
    /// kernel offers.
    #[arg(long, value_name = "LABELS", value_delimiter = ',')]
    hops: Option<Vec<String>>,
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
    /// Compare two recordings hop by hop (e.g. macvtap vs ovs): matching
    /// hop pairs side by side, the rest by path stage.
    Compare {
        a: PathBuf,
        b: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        format: CompareFormat,
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
        topology: demo::Kind,
        /// Also write the recording to FILE.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        probe: ProbeArgs,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netprobe: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn options(p: &ProbeArgs, ifaces: Vec<String>) -> Result<RecordOptions> {
    let hops = match &p.hops {
        Some(labels) => netprobe::catalog::HopSet::of_labels(labels)?,
        None => netprobe::catalog::HopSet::ALL,
    };
    Ok(RecordOptions {
        wait_for_modules: false,
        ifaces,
        btf_file: p.btf.clone(),
        backend: p.backend.map(Backend::from),
        max_gap: p.max_gap,
        trace: p.trace || p.samples.is_some(),
        samples: p.samples.unwrap_or(record::DEFAULT_SAMPLES),
        filter: p.filter.clone(),
        softirq_vectors: p.softirq_vectors,
        hops,
        spool_dir: None,
    })
}

/// Where a recording's time series waits to be written: the output
/// file's directory (on the same disk, not in a memory-backed /tmp), else
/// the temporary directory.
fn spool_dir(output: Option<&std::path::Path>) -> std::path::PathBuf {
    match output.map(|o| o.parent()) {
        Some(Some(d)) if !d.as_os_str().is_empty() => d.to_path_buf(),
        Some(_) => ".".into(),
        None => std::env::temp_dir(),
    }
}

/// Prints a recording in `format` on standard output.
fn print(rec: &Recording, format: Format) -> Result<()> {
    if format == Format::Perfetto && rec.samples.is_empty() {
        eprintln!("netprobe: this recording kept no packet journeys (record with --trace): the trace has no slices");
    }
    let mut out = std::io::stdout().lock();
    let res = report::write(rec, format, &mut out);
    ignore_broken_pipe(res.and_then(|()| out.flush().map_err(Into::into)))
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Record { duration, ifaces, wait_for_modules, output, probe, pid, cgroup, transactions, command } => {
            if let Some(path) = &output {
                check_writable(path)?;
            }
            if !command.is_empty() && (pid.is_some() || cgroup.is_some()) {
                anyhow::bail!("give either a workload command (-- CMD ARGS) or --pid/--cgroup, not both");
            }
            // Unknown PID or cgroup: fail before anything is attached.
            let mut workload = match (pid, &cgroup) {
                (Some(p), _) => Some(record::Workload::attach_pid(p, transactions)?),
                (None, Some(c)) => Some(record::Workload::cgroup(c, transactions)?),
                (None, None) => None,
            };
            let mut rec = Recorder::start(&RecordOptions {
                wait_for_modules,
                spool_dir: Some(spool_dir(output.as_deref())),
                ..options(&probe, ifaces)?
            })?;
            let until = match (&duration, command.is_empty(), &workload) {
                (_, false, _) => format!("while `{}` runs", command.join(" ")),
                (_, true, Some(_)) if pid.is_some() => format!("while PID {} runs", pid.unwrap_or_default()),
                (Some(d), true, _) => format!("for {:.1} s", d.as_secs_f64()),
                (None, true, _) => "until Ctrl-C".to_owned(),
            };
            eprintln!("netprobe: recording {until}; Ctrl-C to stop early");
            if !command.is_empty() {
                workload = Some(record::Workload::start(&command, transactions)?);
            }
            if let Some(w) = workload.as_mut() {
                rec.set_workload(w.refresh());
            }
            let done = workload.as_mut().and_then(record::Workload::take_done);
            let status = !probe.quiet && std::io::stderr().is_terminal();
            let interrupted = record::wait_for(
                duration,
                done,
                Some(&mut || {
                    if wait_for_modules {
                        rec.rescan();
                    }
                    if let Some(w) = workload.as_mut() {
                        rec.set_workload(w.refresh());
                    }
                    rec.sample();
                    if status {
                        rec.status_line(duration);
                    }
                }),
            )?;
            if status {
                eprintln!();
            }
            // A second Ctrl-C from now on ends netprobe at once; the
            // recording is written by rename, so FILE is whole or untouched.
            // SAFETY: restoring the default disposition of SIGINT.
            unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
            if let Some(w) = workload {
                rec.set_workload(w.finish());
            }
            let recording = rec.recording(interrupted)?;
            if let Some(path) = &output {
                recording.write(path)?;
                eprintln!("netprobe: recording written to {}", path.display());
            }
            print(&recording, probe.format)
        }
        Cmd::Top { ifaces, wait_for_modules, probe } => {
            // Before anything is attached: a key press needs a terminal.
            if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
                anyhow::bail!("`netprobe top` needs a terminal; use `record` or `serve` otherwise");
            }
            let stop = record::stop_on_signals();
            let mut rec = Recorder::start(&RecordOptions { wait_for_modules, ..options(&probe, ifaces)? })?;
            // The terminal is given back inside top::run on every way out;
            // rec is dropped (every probe detached) right after, error or not.
            let res = netprobe::top::run(&mut rec, &netprobe::serve::hostname(), stop);
            drop(rec);
            res
        }
        Cmd::Serve { listen, ifaces, host, max_series, rescan_every, probe } => {
            let opts = netprobe::serve::ServeOptions {
                listen,
                host: host.unwrap_or_else(netprobe::serve::hostname),
                max_series,
                rescan_every,
            };
            let server = netprobe::serve::listen(&opts)?;
            let stop = record::stop_on_signals();
            let mut rec = Recorder::start(&RecordOptions { wait_for_modules: true, ..options(&probe, ifaces)? })?;
            let res = netprobe::serve::run(&server, &mut rec, &opts, stop);
            drop(rec);
            res
        }
        Cmd::Demo { topology, output, probe } => {
            if let Some(path) = &output {
                check_writable(path)?;
            }
            run_demo(topology, output.as_deref(), &probe)
        }
        Cmd::Compare { a, b, format } => {
            let (ra, rb) = (load(&a)?.report()?, load(&b)?.report()?);
            let c = netprobe::compare::compare(&a.display().to_string(), &ra, &b.display().to_string(), &rb);
            let mut out = std::io::stdout().lock();
            let res = match format {
                CompareFormat::Json => serde_json::to_writer_pretty(&mut out, &c)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| writeln!(out).map_err(Into::into)),
                CompareFormat::Table => netprobe::compare::write_table(&c, &mut out),
                CompareFormat::Html => report::compare_html::write(&c, &ra, &rb, &mut out),
            };
            ignore_broken_pipe(res)
        }
        Cmd::Report { file, format } => match load(&file)? {
            Loaded::Recording(rec) => print(&rec, format),
            Loaded::Report(r) => {
                let mut out = std::io::stdout().lock();
                let res = report::write_report(&r, format, &mut out).with_context(|| file.display().to_string());
                ignore_broken_pipe(res)
            }
        },
        Cmd::Probes { probe, save_facts } => {
            let rec = Recorder::start(&options(&probe, Vec::new())?)?;
            let report = rec.report(false)?;
            drop(rec);
            if let Some(dir) = save_facts {
                // What only a trial load shows: does the kernel allow fentry?
                let mut facts = netprobe::facts::KernelFacts::live()?;
                let fentry_notes = report.coverage.iter().flat_map(|c| c.notes.iter());
                if report.coverage.iter().any(|c| c.backend.as_deref() == Some("fentry")) {
                    facts.fentry = Some(true);
                } else if fentry_notes.clone().any(|n| n.starts_with("fentry: refused")) {
                    facts.fentry = Some(false);
                }
                facts.save(&dir)?;
                eprintln!("netprobe: kernel facts written to {}", dir.display());
            }
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
                _ => report::table::write_probes(&report, &mut out)?,
            }
            Ok(())
        }
    }
}

fn run_demo(kind: demo::Kind, output: Option<&std::path::Path>, probe: &ProbeArgs) -> Result<()> {
    eprintln!("netprobe demo: building the {kind:?} topology in network namespaces");
    let topo = std::sync::Arc::new(Topology::create_kind(kind)?);
    let rec = Recorder::start(&RecordOptions { spool_dir: Some(spool_dir(output)), ..options(probe, topo.ifaces())? })?;
    eprintln!(
        "netprobe demo: guest {} <-> {kind:?} {} / {} <-> peer {}; sending ICMP, TCP, UDP (Ctrl-C stops early)",
        demo::GUEST_ADDR,
        topo.macvtap,
        topo.uplink,
        demo::PEER_ADDR
    );
    // Traffic runs on its own thread so Ctrl-C/SIGTERM still reach the
    // recorder and the topology is torn down (by its Drop) either way.
    let (tx, rx) = std::sync::mpsc::channel();
    let t = topo.clone();
    let traffic = std::thread::spawn(move || -> Result<()> {
        if t.kind == demo::Kind::Ovs {
            // No flows yet: these miss in the datapath and are upcalled
            // (no ovs-vswitchd answers, so they are dropped).
            let replies = t.ping(3, "0.1").context("ping")?;
            eprintln!("  ping before any OVS flow: {replies}/3 replies (flow misses, upcalls)");
            t.add_ovs_flows()?;
        }
        let replies = t.ping(20, "0.05").context("ping")?;
        eprintln!("  ping: {replies}/20 replies");
        if std::process::Command::new("iperf3").arg("--version").output().is_ok_and(|o| o.status.success()) {
            let tcp = t.iperf3(2, false).context("iperf3 TCP")?;
            eprintln!("  iperf3 TCP: {}", last_summary(&tcp));
            let udp = t.iperf3(2, true).context("iperf3 UDP")?;
            eprintln!("  iperf3 UDP: {}", last_summary(&udp));
        } else {
            // Minimal hosts (the s390x lab): UDP without a bulk tool.
            t.udp_burst(demo::PEER_ADDR, 9, 200, Duration::from_millis(1))?;
            eprintln!("  iperf3 not installed: 200 UDP datagrams to the peer instead of TCP/UDP bulk runs");
        }
        t.udp_burst(demo::BLACKHOLE_ADDR, 9, 50, Duration::from_millis(2))?;
        eprintln!("  50 UDP datagrams to {} (blackholed in the peer)", demo::BLACKHOLE_ADDR);
        std::thread::sleep(Duration::from_millis(200));
        drop(tx);
        Ok(())
    });
    let mut rec = rec;
    let interrupted = record::wait_for(None, Some(rx), Some(&mut || rec.sample()))?;
    let recording = rec.recording(interrupted)?;
    drop(rec);
    if let Some(path) = output {
        recording.write(path)?;
        eprintln!("netprobe demo: recording written to {}", path.display());
    }
    if !interrupted {
        traffic.join().map_err(|_| anyhow::anyhow!("traffic thread panicked"))??;
    }
    drop(topo);
    print(&recording, probe.format)
}

fn last_summary(iperf: &str) -> String {
    iperf
        .lines()
        .rev()
        .find(|l| l.contains("receiver") || l.contains("sender"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Fails early, before anything is attached, when the output cannot be
/// written.
fn check_writable(path: &std::path::Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        anyhow::bail!(
            "{} is a symbolic link; netprobe does not write through links (choose another path)",
            path.display()
        );
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: access(2) with a valid C string.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        anyhow::bail!(
            "cannot write the recording to {}: directory {} is not writable ({})",
            path.display(),
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// What `report` and `compare` read: a recording, or a report saved as JSON.
enum Loaded {
    Recording(Box<Recording>),
    Report(Box<Report>),
}

impl Loaded {
    fn report(&self) -> Result<Report> {
        match self {
            Loaded::Recording(rec) => rec.report(),
            Loaded::Report(r) => Ok((**r).clone()),
        }
    }
}

fn load(file: &std::path::Path) -> Result<Loaded> {
    let data = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    if netprobe::recording::looks_like_recording(&data) {
        let rec = Recording::from_bytes(&data).with_context(|| file.display().to_string())?;
        Ok(Loaded::Recording(Box::new(rec)))
    } else {
        serde_json::from_slice::<Report>(&data)
            .map(|r| Loaded::Report(Box::new(r)))
            .with_context(|| format!("{} is neither a netprobe recording nor a JSON report", file.display()))
    }
}

/// A closed pipe (`| head`) is a normal end of output, not an error.
fn ignore_broken_pipe(r: Result<()>) -> Result<()> {
    match r {
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(())
        }
        r => r,
    }
}
