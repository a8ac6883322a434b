//! Attaches the planned hops on this kernel: for each hop, the first
//! candidate backend from `plan` that loads and attaches wins; every
//! refusal is recorded with the kernel's reason ([`AttachError`], typed,
//! the verifier's log kept). Function hops get a slot (a generic program
//! set) each. The result is the [`Probe`]: the one handle on the loaded
//! object (aggregates, retiring idle pairs, counters, the interface filter,
//! the journey ring's reader), whose `Ebpf` no other module sees. Dropping
//! it detaches everything.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::{
    programs::{
        fentry::FEntryLinkId, fexit::FExitLinkId, kprobe::KProbeLinkId, raw_trace_point::RawTracePointLinkId,
        tp_btf::BtfTracePointLinkId, trace_point::TracePointLinkId, BtfTracePoint, FEntry, FExit, KProbe,
        RawTracePoint, TracePoint,
    },
    Btf, Ebpf, EbpfLoader,
};
use netprobe_common::{
    hop, hop_flags, names, Backend, Config, SlotConfig, CPU_TRACEPOINTS, INDIRECT_SLOTS, MAX_SLOTS, SLOT_ARG,
};
use serde::Serialize;

use super::{
    catalog::{HopSet, Site, SkbArg},
    collect::{self, Snapshot},
    facts::KernelFacts,
    kernel,
    module_fentry::{self, ModuleLink},
    plan::{self, HopPlan, PlanOptions, SkbSource},
    trace::{Journeys, TraceReader, TraceStats},
};
use crate::model::report::{CoverageEntry, Detachment};

/// The BPF object built by `cargo xtask build`, embedded in the binary.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netprobe.bpf.o"));

/// What was chosen for one hop, and why not better.
#[derive(Clone, Debug, Serialize)]
pub struct Coverage {
    pub hop: &'static str,
    pub path: &'static str,
    pub site: String,
    /// The backend in use, if any.
    pub backend: Option<&'static str>,
    /// For function hops with entry/exit pairs: time inside is measured.
    pub time_inside: bool,
    pub skb_from: SkbSource,
    pub notes: Vec<String>,
    /// Times its module was unloaded mid-run (and when it came back).
    pub detached: Vec<Detachment>,
}

impl From<&Coverage> for CoverageEntry {
    fn from(c: &Coverage) -> Self {
        CoverageEntry {
            hop: c.hop.to_owned(),
            path: c.path.to_owned(),
            site: c.site.clone(),
            backend: c.backend.map(str::to_owned),
            time_inside: c.time_inside,
            notes: c.notes.clone(),
            detached: c.detached.clone(),
        }
    }
}

/// Why netprobe's object, or one program of it, could not be loaded or
/// attached. A program the kernel refused keeps the verifier's log.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("this netprobe binary was built without its BPF object; build it with `cargo xtask build`")]
    NoObject,
    #[error(
        "netprobe needs root, or the capabilities CAP_BPF and CAP_PERFMON (plus CAP_DAC_READ_SEARCH for tracefs): \
         run it with sudo, or `setcap cap_bpf,cap_perfmon,cap_dac_read_search+ep netprobe`"
    )]
    Privileges,
    #[error("loading netprobe's BPF object into the kernel failed")]
    Object(#[source] aya::EbpfError),
    #[error("program {0} missing from the object")]
    MissingProgram(String),
    /// The kernel refused the program outright (EPERM: fentry on these
    /// development machines, a lockdown, a missing capability).
    #[error("refused by the kernel (EPERM at load)")]
    Refused { verifier_log: String },
    /// The verifier rejected the program; its log says where.
    #[error("the verifier rejected it ({io_error}): {}", last_line(verifier_log))]
    Verifier { io_error: std::io::Error, verifier_log: String },
    #[error(transparent)]
    Program(aya::programs::ProgramError),
    /// What this kernel or this load lacks for the hop (no BTF, no slot...).
    #[error("{0}")]
    Unavailable(String),
}

impl From<aya::programs::ProgramError> for AttachError {
    fn from(e: aya::programs::ProgramError) -> Self {
        match e {
            aya::programs::ProgramError::LoadError { io_error, verifier_log } => {
                if io_error.raw_os_error() == Some(libc::EPERM) {
                    AttachError::Refused { verifier_log: verifier_log.to_string() }
                } else {
                    let verifier_log = verifier_log.to_string();
                    keep_verifier_log(&verifier_log);
                    AttachError::Verifier { io_error, verifier_log }
                }
            }
            other => AttachError::Program(other),
        }
    }
}

impl From<module_fentry::LoadError> for AttachError {
    fn from(e: module_fentry::LoadError) -> Self {
        use module_fentry::LoadError;
        match e {
            LoadError::Refused => AttachError::Refused { verifier_log: String::new() },
            LoadError::Verifier { io_error, verifier_log } => {
                keep_verifier_log(&verifier_log);
                AttachError::Verifier { io_error, verifier_log }
            }
            LoadError::MissingProgram(n) => AttachError::MissingProgram(n),
            LoadError::Unavailable(why) => AttachError::Unavailable(why),
        }
    }
}

impl From<aya::maps::MapError> for AttachError {
    fn from(e: aya::maps::MapError) -> Self {
        AttachError::Unavailable(e.to_string())
    }
}

impl AttachError {
    /// One line for a coverage note: the error's first line, at most 160
    /// characters.
    pub fn brief(&self) -> String {
        let s = self.to_string();
        let l = s.lines().next().unwrap_or_default();
        if l.len() > 160 {
            format!("{}...", &l[..l.floor_char_boundary(160)])
        } else {
            l.to_owned()
        }
    }
}

/// `NETPROBE_MODULE_FENTRY=1`: fentry offered on module functions on a
/// kernel before [`plan::MODULE_FENTRY_FROM`].
fn module_fentry_asked() -> bool {
    std::env::var_os("NETPROBE_MODULE_FENTRY").is_some_and(|v| v == "1")
}

/// With `NETPROBE_VERIFIER_LOG=FILE`, every rejected program's whole
/// verifier log is appended to FILE: a hop's note keeps only the last
/// line, and where the verifier got lost is in the lines before it.
fn keep_verifier_log(log: &str) {
    let Some(path) = std::env::var_os("NETPROBE_VERIFIER_LOG") else { return };
    use std::io::Write;
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "--- a rejected program's verifier log\n{log}"));
    if let Err(e) = written {
        eprintln!("netprobe: NETPROBE_VERIFIER_LOG={}: {e}", std::path::Path::new(&path).display());
    }
}

/// The verifier log's last non-empty line that says what it rejected
/// (not its closing statistics: "processed N insns ...", "verification
/// time ...", "stack depth ...").
fn last_line(log: &str) -> &str {
    log.lines()
        .rev()
        .map(str::trim)
        .find(|l| {
            !l.is_empty()
                && !l.starts_with("processed ")
                && !l.starts_with("verification time")
                && !l.starts_with("stack depth")
        })
        .unwrap_or("no verifier output")
}

/// What `cargo xtask bench` and the tests switch on to measure parts of
/// netprobe itself; never used by the profiler's own commands.
#[derive(Clone, Copy, Debug, Default)]
pub struct BenchSwitches {
    /// Trace mode's ring buffer in bytes (a power of two times the page
    /// size) instead of [`netprobe_common::EVENTS_BYTES`]; 0: the default.
    pub ring_bytes: u32,
    /// Trace mode's reader starts draining only this long after the ring
    /// was made: with a tiny ring, a forced overflow.
    pub reader_pause: std::time::Duration,
    /// The hop programs return at once: what any tool with programs on
    /// these tracepoints pays before doing any work.
    pub empty_programs: bool,
    /// The skb pointer laundered with a helper call per hop, as before.
    pub probe_launder: bool,
    /// One clock read per hop instead of two.
    pub one_clock: bool,
    /// No CPU-accounting program (sched_switch).
    pub no_cpu: bool,
}

#[derive(Clone, Debug, Default)]
pub struct AttachOptions {
    pub btf_file: Option<PathBuf>,
    /// Force a backend (for tests and comparisons); None = best available.
    pub backend: Option<Backend>,
    pub max_gap_ns: u64,
    /// `--fingerprint-gap`: after a gap this long a tracked packet's
    /// headers are checked against where it started (0: never).
    pub fingerprint_gap_ns: u32,
    pub filter_enabled: bool,
    /// The compiled `--filter` expression, if any.
    pub flow: Option<netprobe_common::FlowFilter>,
    /// `--sample N` (0 or 1: every packet).
    pub sample_every: u32,
    /// Per-packet trace mode (events on `NP_EVENTS`).
    pub trace: bool,
    /// Keep what a later rescan needs (the parsed kernel BTF, ~30 MiB).
    pub rescan: bool,
    /// Time NET_RX and NET_TX softirqs with programs on
    /// `irq:softirq_entry/exit` (two more programs per softirq, which is
    /// up to one per packet); without, softirq time is read from /proc/stat.
    pub softirq_vectors: bool,
    /// The catalog hops to attach (`--hops`).
    pub hops: HopSet,
    /// Also attach tracepoints defined in modules, which hold them loaded
    /// (`--pin-modules`).
    pub pin_modules: bool,
    /// Trace mode: how many complete journeys the reader keeps, and the
    /// CLOCK_MONOTONIC ns their times count from.
    pub samples: usize,
    pub trace_base_ns: u64,
    /// Bench-only switches (`cargo xtask bench`).
    pub bench: BenchSwitches,
    /// `--drop-stacks`: count drops by kernel stack too (a stack-trace map
    /// read and named from /proc/kallsyms at each snapshot).
    pub drop_stacks: bool,
}

/// netprobe's loaded and attached programs, and the one way to their maps;
/// dropping it detaches everything.
pub struct Probe {
    ebpf: Ebpf,
    coverage: Vec<Coverage>,
    drop_reasons: BTreeMap<u32, String>,
    /// Tracepoint hops use classic tracepoints: devices are known by name.
    classic_only: bool,
    /// Whether this kernel loaded an fentry program (Some(true)), refused
    /// one (Some(false)), or none was tried.
    fentry_allowed: Option<bool>,
    /// Trace mode's reader of the journey ring, started before the first
    /// program was attached.
    trace: Option<TraceReader>,
    facts: KernelFacts,
    config: Config,
    /// Function hop id -> its program slot.
    slots: BTreeMap<u8, usize>,
    /// aya's parse of the kernel's BTF, for loading tp_btf and fentry
    /// programs: held only while attaching (a rescan parses it again, so a
    /// long-running serve does not keep ~10 MB it rarely needs).
    btf: Option<Btf>,
    btf_file: Option<PathBuf>,
    plan_opts: PlanOptions,
    /// CPU accounting programs attached, and what could not be.
    cpu_backends: Vec<String>,
    cpu_notes: Vec<String>,
    /// Each attached hop's links, so a hop can be detached alone (its
    /// module unloaded) and attached again later.
    links: BTreeMap<u8, Vec<HopLink>>,
    /// The loaded modules (/proc/modules: name -> state and load address)
    /// at the last look for modules gone, and at the last rescan.
    modules: BTreeMap<String, String>,
    rescanned_modules: BTreeMap<String, String>,
    /// `--drop-stacks`: names the stacks of drops (behind a lock: a
    /// snapshot takes `&self` and caches the names it made).
    stack_namer: Option<std::sync::Mutex<collect::StackNamer>>,
    /// fentry on module functions, which aya cannot load.
    module_fentry: module_fentry::Loader,
}

/// One attachment of a hop's program: the program's name and aya's link.
enum HopLink {
    KProbe(String, KProbeLinkId),
    FEntry(String, FEntryLinkId),
    FExit(String, FExitLinkId),
    TpBtf(String, BtfTracePointLinkId),
    RawTp(String, RawTracePointLinkId),
    Tracepoint(String, TracePointLinkId),
    /// fentry or fexit on a module's function (`module_fentry`): dropping
    /// it detaches and unloads it.
    Module(ModuleLink),
}

impl HopLink {
    /// Detaches it. fentry/fexit and tp_btf programs are also unloaded:
    /// they were loaded against the BTF of a module that is gone, and a
    /// later attach loads them against the new one.
    fn detach(self, ebpf: &mut Ebpf) -> Result<(), AttachError> {
        fn prog<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program, AttachError> {
            ebpf.program_mut(name).ok_or_else(|| AttachError::MissingProgram(name.to_owned()))
        }
        match self {
            HopLink::KProbe(n, id) => <&mut KProbe>::try_from(prog(ebpf, &n)?)?.detach(id)?,
            HopLink::RawTp(n, id) => <&mut RawTracePoint>::try_from(prog(ebpf, &n)?)?.detach(id)?,
            HopLink::Tracepoint(n, id) => <&mut TracePoint>::try_from(prog(ebpf, &n)?)?.detach(id)?,
            HopLink::FEntry(n, id) => {
                let p = <&mut FEntry>::try_from(prog(ebpf, &n)?)?;
                p.detach(id)?;
                p.unload()?;
            }
            HopLink::FExit(n, id) => {
                let p = <&mut FExit>::try_from(prog(ebpf, &n)?)?;
                p.detach(id)?;
                p.unload()?;
            }
            HopLink::TpBtf(n, id) => {
                let p = <&mut BtfTracePoint>::try_from(prog(ebpf, &n)?)?;
                p.detach(id)?;
                p.unload()?;
            }
            HopLink::Module(link) => drop(link),
        }
        Ok(())
    }
}

/// The loaded modules with their state and load address, from
/// /proc/modules (`openvswitch 192512 0 - Live 0xffffffffc064f000`): an
/// address that changed is a module unloaded and loaded again.
pub fn loaded_modules() -> BTreeMap<String, String> {
    parse_modules(&std::fs::read_to_string("/proc/modules").unwrap_or_default())
}

fn parse_modules(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.get(4..).unwrap_or_default().join(" ")))
        })
        .collect()
}

/// Modules of `before` that are gone in `now`: absent, unloading, or
/// loaded again at another address (between two looks). A module still
/// loading then live is the same module.
fn gone_modules(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let addr = |v: &str| v.split_whitespace().last().unwrap_or_default().to_owned();
    before
        .iter()
        .filter(|(m, was)| match now.get(*m) {
            None => true,
            Some(v) => v.starts_with("Unloading") || addr(v) != addr(was),
        })
        .map(|(m, _)| m.clone())
        .collect()
}

pub fn check_privileges() -> Result<(), AttachError> {
    // CAP_BPF (39) and CAP_PERFMON (38), or CAP_SYS_ADMIN (21).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |c: u32| eff & (1 << c) != 0;
    if !(has(21) || (has(39) && has(38))) {
        return Err(AttachError::Privileges);
    }
    Ok(())
}

/// Loads netprobe's object, starts trace mode's reader (before any program
/// is attached: attaching every hop takes a while, each load verified and
/// refused backends tried first, and at a million events a second the
/// ring would fill in the meantime), then attaches every hop it can.
pub fn attach(opts: &AttachOptions) -> Result<Probe> {
    if BPF_OBJECT.is_empty() {
        return Err(AttachError::NoObject.into());
    }
    check_privileges()?;
    let facts = KernelFacts::live()?;
    let mut config = Config::zeroed();
    config.max_gap_ns = opts.max_gap_ns;
    config.direct_gap_ns = super::catalog::DIRECT_GAP_NS;
    config.filter_enabled = opts.filter_enabled as u32;
    config.trace = opts.trace as u32;
    config.sample_every = opts.sample_every;
    config.fingerprint_gap_ns = opts.fingerprint_gap_ns;
    // Bench switches (`cargo xtask bench`): the same programs on the same
    // tracepoints returning at once; the old pointer laundering.
    if opts.bench.empty_programs {
        config.bench |= netprobe_common::bench::EMPTY;
    }
    if opts.bench.probe_launder {
        config.bench |= netprobe_common::bench::PROBE_LAUNDER;
    }
    if opts.bench.one_clock {
        config.bench |= netprobe_common::bench::ONE_CLOCK;
    }
    let stack_namer = if opts.drop_stacks {
        if let Some(why) = stack_depth_refused() {
            bail!("--drop-stacks cannot keep kernel stacks: {why}");
        }
        config.drop_stacks = 1;
        Some(std::sync::Mutex::new(collect::StackNamer::new()?))
    } else {
        None
    };
    let mut drop_reasons = BTreeMap::new();
    let mut global_notes = Vec::new();
    // btf-rs's parse (about 28 MB for a distribution kernel) is dropped here,
    // before aya parses the same BTF for loading.
    let mut vhost_wait_to_work = Err(anyhow::anyhow!("the kernel has no BTF"));
    if let Some(btf) = kernel::load_btf(opts.btf_file.as_deref())? {
        match kernel::offsets(&btf) {
            Ok(o) => config.off = o,
            Err(e) => global_notes.push(format!("struct offsets unavailable from BTF: {e:#}")),
        }
        drop_reasons = kernel::drop_reasons_from_btf(&btf);
        vhost_wait_to_work = kernel::vhost_wait_to_work(&btf);
    }
    if let Some(flow) = opts.flow {
        if config.off.valid == 0 {
            bail!(
                "--filter reads packet headers through struct sk_buff, whose layout comes from BTF, and this kernel                  has none (/sys/kernel/btf/vmlinux): pass --btf FILE with this kernel's BTF, or record without                  --filter (--iface still works)"
            );
        }
        config.flow = flow;
    }
    let aya_btf = aya_btf(opts.btf_file.as_deref())?;
    let tracefs = kernel::tracefs();
    let plans = plan::plan(
        &facts,
        PlanOptions {
            only: opts.backend,
            offsets: config.off.valid != 0,
            tracefs: tracefs.is_ok(),
            hops: opts.hops,
            pin_modules: opts.pin_modules,
            follow_modules: opts.rescan,
            module_fentry: module_fentry_asked(),
        },
    );

    chain_config(&mut config, &plans, opts, &facts, vhost_wait_to_work, &mut global_notes);

    // Per-hop configuration, and classic tracepoint fields, before loading.
    for p in &plans {
        let h = p.hop;
        // Every hop is configured, attached or not, so one whose module
        // loads later can still be attached by a rescan.
        config.hop_flags[h.id as usize] = h.flags | hop_flags::ENABLED;
        // A succession rule holds only where its expected hop is followed.
        for (rule, next) in
            [(hop_flags::NEXT_XMIT, hop::NET_DEV_START_XMIT), (hop_flags::NEXT_RECEIVE, hop::NETIF_RECEIVE_SKB)]
        {
            if !opts.hops.contains(next) {
                config.hop_flags[h.id as usize] &= !rule;
            }
        }
        match h.site {
            Site::Tracepoint(t) => {
                if let Ok(fs) = &tracefs {
                    if let Ok(fmt) = kernel::read_format(fs, t.category, t.name) {
                        if let Ok(c) = fmt.classic_fields() {
                            config.classic[h.id as usize] = c;
                        }
                        if h.flags & hop_flags::DROP != 0 && drop_reasons.is_empty() {
                            drop_reasons = fmt.symbols();
                        }
                    }
                }
            }
            Site::Function { .. } => {}
        }
    }
    let slots = assign_slots(&plans, &mut config);

    if let Ok(fs) = &tracefs {
        if let Ok(fmt) = kernel::read_format(fs, "irq", "softirq_entry") {
            config.softirq_vec_off = fmt.fields.get("vec").map_or(0, |f| f.0 as u32);
        }
    }

    let mut ebpf = EbpfLoader::new()
        .btf(aya_btf.as_ref())
        .override_global(names::CONFIG, &config, true)
        // Journeys are gathered and sent only in trace mode (8 MiB for
        // every slot, a 16 MiB ring); otherwise one entry and one page.
        .map_max_entries(names::JOURNEY, if opts.trace { netprobe_common::TRACK_SLOTS } else { 1 })
        .map_max_entries(
            names::EVENTS,
            match (opts.trace, opts.bench.ring_bytes) {
                (true, 0) => netprobe_common::EVENTS_BYTES,
                (true, n) => n,
                (false, _) => page_size(),
            },
        )
        // The drop stacks' map holds ~8.5 MiB with --drop-stacks, one
        // stack otherwise (never written then).
        .map_max_entries(names::DROP_STACKS, if opts.drop_stacks { netprobe_common::DROP_STACK_ENTRIES } else { 1 })
        .map_max_entries(
            names::DROP_STACK_COUNTS,
            if opts.drop_stacks { netprobe_common::DROP_STACK_COUNT_ENTRIES } else { 1 },
        )
        .load(BPF_OBJECT)
        .map_err(AttachError::Object)
        .map_err(|e| {
            let e = anyhow::Error::from(e);
            if let Some(why) = stack_depth_refused() {
                e.context(why)
            } else if opts.drop_stacks {
                e.context(
                    "--drop-stacks needs BPF stack-trace maps (BPF_MAP_TYPE_STACK_TRACE: CONFIG_PERF_EVENTS and \
                     CONFIG_BPF_EVENTS) and ~9 MiB of locked memory for them; record without --drop-stacks if \
                     this kernel has none",
                )
            } else {
                e
            }
        })?;
    // Before a map is taken out of the object: the module fentry loader
    // points its programs at every one.
    let module_fentry = module_fentry::Loader::new(BPF_OBJECT, module_fentry::MapFds::of(&ebpf));
    let trace = if opts.trace {
        let map = ebpf.take_map(names::EVENTS).context("map NP_EVENTS missing")?;
        let ring = aya::maps::RingBuf::try_from(map)?;
        Some(TraceReader::start(ring, Journeys::new(opts.trace_base_ns, opts.samples), opts.bench.reader_pause)?)
    } else {
        None
    };

    let plan_opts = PlanOptions {
        only: opts.backend,
        offsets: config.off.valid != 0,
        tracefs: tracefs.is_ok(),
        hops: opts.hops,
        pin_modules: opts.pin_modules,
        follow_modules: opts.rescan,
        module_fentry: module_fentry_asked(),
    };
    let modules = loaded_modules();
    let mut att = Probe {
        ebpf,
        coverage: Vec::new(),
        drop_reasons,
        classic_only: false,
        fentry_allowed: None,
        trace,
        facts,
        config,
        slots,
        btf: aya_btf,
        btf_file: opts.btf_file.clone(),
        plan_opts,
        cpu_backends: Vec::new(),
        cpu_notes: Vec::new(),
        links: BTreeMap::new(),
        rescanned_modules: modules.clone(),
        modules,
        stack_namer,
        module_fentry,
    };
    for p in &plans {
        let c = att.attach_hop(p);
        att.coverage.push(c);
    }
    att.module_fentry.done();
    // CPU accounting (not a packet hop): the best backend that loads.
    // The softirq pair only when asked: at one softirq per packet it is a
    // third of the programs run per packet (see README, Performance).
    // (BenchSwitches::no_cpu: none of it, for the bench.)
    let cpu = if opts.bench.no_cpu { &[][..] } else { &CPU_TRACEPOINTS[..] };
    for &(category, name) in cpu {
        if category == "irq" && !opts.softirq_vectors {
            continue;
        }
        let mut why = Vec::new();
        let ok = Backend::TRACEPOINT.into_iter().find(|&b| {
            match attach_tracepoint(&mut att.ebpf, b, category, name, att.btf.as_ref()) {
                Ok(_) => true,
                Err(e) => {
                    why.push(format!("{}: {}", b.label(), e.brief()));
                    false
                }
            }
        });
        match ok {
            Some(b) => att.cpu_backends.push(format!("{category}:{name} ({})", b.label())),
            None => att.cpu_notes.push(format!("{category}:{name} not attached: {}", why.join("; "))),
        }
    }
    let classic_used = att.coverage.iter().any(|c| c.backend == Some(Backend::Tracepoint.label()));
    let ptr_tracepoints = att
        .coverage
        .iter()
        .any(|c| matches!(c.backend, Some(b) if b == Backend::TpBtf.label() || b == Backend::RawTp.label()));
    att.classic_only = classic_used;
    if classic_used && ptr_tracepoints {
        // Device keys differ between the two kinds (pointer vs name hash),
        // so a packet could not be followed across them: refuse the mix.
        // Name the classic ones and why BTF failed there (a verifier
        // refusal is a bug to report, with its log).
        let classic: Vec<String> = att
            .coverage
            .iter()
            .filter(|c| c.backend == Some(Backend::Tracepoint.label()))
            .map(|c| format!("{} ({})", c.hop, c.notes.join("; ")))
            .collect();
        bail!(
            "some tracepoint hops attached only as classic tracepoints and others with BTF; \
             rerun with --backend tracepoint{}. Classic: {}",
            if global_notes.is_empty() { String::new() } else { format!(" ({})", global_notes.join("; ")) },
            classic.join(", ")
        );
    }
    if att.coverage.iter().all(|c| c.backend.is_none()) {
        let why: Vec<String> = att.coverage.iter().flat_map(|c| c.notes.clone()).collect();
        bail!("no hop could be attached on this kernel: {}", why.join("; "));
    }
    att.btf = None;
    // Parsing BTF (vmlinux and module BTF, twice: btf-rs and aya) peaks at
    // ~90 MiB of heap that is free again now; hand it back to the system so
    // a long recording's RSS is what it really holds.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    Ok(att)
}

impl Probe {
    /// The hops as planned and attached, with why each has no better
    /// backend (or none).
    pub fn coverage(&self) -> &[Coverage] {
        &self.coverage
    }

    /// Hops attached right now.
    pub fn hops_attached(&self) -> usize {
        self.coverage.iter().filter(|c| c.backend.is_some()).count()
    }

    /// Kernel drop reason names by code (from BTF or tracefs).
    pub fn drop_reasons(&self) -> &BTreeMap<u32, String> {
        &self.drop_reasons
    }

    /// Whether this kernel allowed fentry, as the attach attempts showed
    /// (None: none was tried).
    pub fn fentry_allowed(&self) -> Option<bool> {
        self.fentry_allowed
    }

    /// The kernel facts the plan was made from.
    pub fn facts(&self) -> &KernelFacts {
        &self.facts
    }

    /// The kernel's aggregates now (with `--drop-stacks`, the drops by
    /// stack and each stack's frames, named).
    pub fn snapshot(&self) -> Result<Snapshot> {
        let mut s = collect::snapshot(&self.ebpf)?;
        if let Some(namer) = &self.stack_namer {
            let mut namer = namer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            collect::drop_stacks(&self.ebpf, &mut namer, &mut s)?;
        }
        Ok(s)
    }

    /// Whether drops are counted by kernel stack (`--drop-stacks`).
    pub fn drop_stacks(&self) -> bool {
        self.stack_namer.is_some()
    }

    /// Only the tracking and loss counters (cheap: for a status line).
    pub fn counters(&self) -> Result<[u64; netprobe_common::counter::COUNT as usize]> {
        collect::counters(&self.ebpf)
    }

    /// Moves idle hop pairs out of the kernel's hash map; see
    /// [`collect::retire`].
    pub fn retire(
        &mut self,
        keys: &[netprobe_common::PairKey],
    ) -> Result<BTreeMap<netprobe_common::PairKey, netprobe_common::hist::Hist>> {
        collect::retire(&mut self.ebpf, keys)
    }

    /// Follows only packets first seen on these interfaces: (name,
    /// namespace inode, ifindex) each. Classic tracepoints know devices by
    /// name only, the others by namespace and index.
    pub fn restrict_to(&mut self, ifaces: &[(String, u32, u32)]) -> Result<()> {
        let mut filter: aya::maps::HashMap<_, u64, u8> =
            aya::maps::HashMap::try_from(self.ebpf.map_mut(names::FILTER).context("map NP_FILTER missing")?)?;
        for (name, inum, ifindex) in ifaces {
            let key = if self.classic_only {
                netprobe_common::name_key(&name16(name))
            } else {
                ((*inum as u64) << 32) | *ifindex as u64
            };
            filter.insert(key, 1, 0)?;
        }
        Ok(())
    }

    /// Trace mode, at the end of a recording: detaches every hop, waits
    /// out the runs already under way, then stops the journey ring's
    /// reader after it drained the ring. The aggregates, the ring and the
    /// journeys in flight are then one cut: a packet that came after the
    /// last drain (an IPv6 router solicitation, say) would otherwise add
    /// hop-pair samples whose events are counted nowhere. Returns the
    /// reader's totals, plus the events still being gathered in the kernel.
    pub fn finish_trace(&mut self) -> Option<(TraceStats, Option<u64>)> {
        self.trace.as_ref()?;
        for link in std::mem::take(&mut self.links).into_values().flatten() {
            // Best effort: what is not detached here is when the programs
            // are unloaded.
            let _ = link.detach(&mut self.ebpf);
        }
        // A program already running when it was detached finishes within
        // an RCU grace period.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let stats = self.trace.as_mut()?.finish();
        Some((stats, collect::journey_events_in_flight(&self.ebpf).ok()))
    }

    /// Tries a hop's candidate backends in order; the first that loads and
    /// attaches wins. Returns its coverage entry.
    fn attach_hop(&mut self, p: &HopPlan) -> Coverage {
        let mut notes = p.notes.clone();
        let mut chosen = None;
        let mut time_inside = false;
        for &backend in &p.candidates {
            let res = match p.hop.site {
                Site::Tracepoint(t) => {
                    if backend == Backend::Tracepoint && self.config.classic[p.hop.id as usize].skbaddr == 0 {
                        Err(AttachError::Unavailable("its tracefs format was unknown when netprobe loaded".into()))
                    } else {
                        attach_tracepoint(&mut self.ebpf, backend, t.category, t.name, self.btf.as_ref())
                            .map(|link| self.links.entry(p.hop.id).or_default().push(link))
                    }
                }
                Site::Function { name, .. } => match self.slots.get(&p.hop.id) {
                    Some(&slot) => {
                        let target = FunctionTarget {
                            func: name,
                            module: self.facts.symbols.get(name).cloned().flatten(),
                            module_btf_id: self.facts.module_btf_ids.get(name).copied(),
                        };
                        let loaders = Loaders { btf: self.btf.as_ref(), module_fentry: &mut self.module_fentry };
                        attach_function(&mut self.ebpf, backend, slot, &target, loaders).map(|(entry, exit)| {
                            let links = self.links.entry(p.hop.id).or_default();
                            links.push(entry);
                            time_inside = exit.is_ok();
                            match exit {
                                Ok(link) => links.push(link),
                                Err(e) => notes.push(format!("{}: return side not attached: {e}", backend.label())),
                            }
                        })
                    }
                    None => {
                        Err(AttachError::Unavailable("no free function slot reads the skb from this argument".into()))
                    }
                },
            };
            match res {
                Ok(()) => {
                    if backend == Backend::Fentry {
                        self.fentry_allowed = Some(true);
                        let in_module = match p.hop.site {
                            Site::Function { name, .. } => self.facts.symbols.get(name).cloned().flatten(),
                            Site::Tracepoint(_) => None,
                        };
                        if let Some(m) = in_module {
                            notes.push(format!(
                                "fentry: holds module {m} loaded while attached (rmmod {m} fails \"in use\" until \
                                 netprobe exits; --wait-for-modules takes kprobes, which do not)"
                            ));
                        }
                    }
                    chosen = Some(backend);
                    break;
                }
                Err(e) => {
                    if backend == Backend::Fentry && matches!(e, AttachError::Refused { .. }) {
                        self.fentry_allowed = Some(false);
                    }
                    notes.push(format!("{}: {}", backend.label(), e.brief()))
                }
            }
        }
        Coverage {
            hop: p.hop.label,
            path: p.hop.path.label(),
            site: p.hop.site_label(),
            backend: chosen.map(Backend::label),
            time_inside,
            skb_from: p.skb_from,
            notes,
            detached: Vec::new(),
        }
    }

    /// Detaches the hops of modules unloaded since the last look (gone
    /// from /proc/modules, or loaded again at another address), `at_s`
    /// seconds into the run: their kprobes would never fire again, and
    /// their slots are free for the module's next load. What they measured
    /// stays in the maps. Returns each module gone with its hops.
    pub fn release_gone_modules(&mut self, at_s: f64) -> Vec<(String, Vec<&'static str>)> {
        let now = loaded_modules();
        let gone = gone_modules(&self.modules, &now);
        self.modules = now;
        let mut released = Vec::new();
        for m in gone {
            let mut hops = Vec::new();
            for c in &mut self.coverage {
                let Some(hop) = super::catalog::HOPS.iter().find(|h| h.label == c.hop) else { continue };
                if c.backend.is_none() || hop.module() != Some(m.as_str()) {
                    continue;
                }
                let mut failed = Vec::new();
                for link in self.links.remove(&hop.id).unwrap_or_default() {
                    if let Err(e) = link.detach(&mut self.ebpf) {
                        failed.push(e.brief());
                    }
                }
                let was = c.backend.take().unwrap_or_default();
                c.time_inside = false;
                c.notes.push(format!("{was}: detached at +{at_s:.1} s, module {m} unloaded"));
                if !failed.is_empty() {
                    c.notes.push(format!("detaching: {}", failed.join("; ")));
                }
                c.detached.push(Detachment { module: m.clone(), detached_at_s: at_s, reattached_at_s: None });
                hops.push(c.hop);
            }
            if !hops.is_empty() {
                released.push((m, hops));
            }
        }
        released
    }

    /// Re-reads the kernel's facts and attaches the hops that could not be
    /// before (a module loaded since, also one unloaded mid-run: its
    /// detachment gets `at_s` as the time it came back). Returns the hops
    /// newly attached.
    pub fn rescan(&mut self, at_s: f64) -> Result<Vec<&'static str>> {
        // Reading the facts again (kallsyms, BTF) costs ~0.4 s of CPU: only
        // when a module was loaded, unloaded or changed state since.
        let modules = loaded_modules();
        if modules == self.rescanned_modules {
            return Ok(Vec::new());
        }
        self.rescanned_modules = modules;
        // The new facts before attaching: a module loaded since has its
        // functions' module and BTF ids only there (fentry needs both).
        self.facts = KernelFacts::live()?;
        let plans = plan::plan(&self.facts, self.plan_opts);
        let mut added = Vec::new();
        if plans.iter().any(|p| !p.candidates.is_empty() && !self.attached(p.hop.label)) {
            self.btf = aya_btf(self.btf_file.as_deref())?;
        }
        for p in &plans {
            let Some(i) = self.coverage.iter().position(|c| c.hop == p.hop.label) else {
                continue;
            };
            if self.coverage[i].backend.is_some() || p.candidates.is_empty() {
                continue;
            }
            let mut c = self.attach_hop(p);
            c.detached = std::mem::take(&mut self.coverage[i].detached);
            if c.backend.is_some() {
                added.push(p.hop.label);
                if let Some(d) = c.detached.last_mut().filter(|d| d.reattached_at_s.is_none()) {
                    d.reattached_at_s = Some(at_s);
                }
            }
            self.coverage[i] = c;
        }
        self.btf = None;
        self.module_fentry.done();
        Ok(added)
    }

    fn attached(&self, hop: &str) -> bool {
        self.coverage.iter().any(|c| c.hop == hop && c.backend.is_some())
    }
}

/// aya's parse of the BTF file given, or of the running kernel's (none
/// where the kernel has no BTF).
/// The function hops' program slots (hop id -> slot), set in `config`:
/// those with an skb pick first; then those without one take slots that
/// read none, else any left. (In catalog order they took the slots the
/// bridge's hops need: 23 hops without an skb for 14 such slots.)
fn assign_slots(plans: &[HopPlan], config: &mut Config) -> BTreeMap<u8, usize> {
    let mut slots = BTreeMap::new();
    for with_skb in [true, false] {
        for p in plans.iter().filter(|p| p.hop.is_function() && (p.skb != SkbArg::None) == with_skb) {
            assign_slot(p, &mut slots, config);
        }
    }
    slots
}

/// Gives function hop `p` a free slot whose compiled-in argument position
/// is its skb's (functions without an skb: one that reads none, else any);
/// none left, the hop gets no slot (and is not attached).
fn assign_slot(p: &HopPlan, slots: &mut BTreeMap<u8, usize>, config: &mut Config) {
    let want = match p.skb {
        SkbArg::None => SlotConfig::NO_SKB,
        SkbArg::Arg(i) | SkbArg::Indirect(i) => i,
    };
    let free = |n: &usize| !slots.values().any(|v| v == n);
    // A `struct sk_buff **` takes a slot whose fentry program can read
    // one (the first INDIRECT_SLOTS), and the others leave those to it.
    let indirect = matches!(p.skb, SkbArg::Indirect(_));
    let mut order: Vec<usize> = (0..MAX_SLOTS).collect();
    order.sort_by_key(|&n| (n < INDIRECT_SLOTS) != indirect);
    let n = order
        .into_iter()
        .filter(free)
        .find(|&n| SLOT_ARG[n] == want)
        .or_else(|| (want == SlotConfig::NO_SKB).then(|| (0..MAX_SLOTS).find(free)).flatten());
    let Some(n) = n else { return };
    slots.insert(p.hop.id, n);
    config.slots[n] =
        SlotConfig { hop: p.hop.id, skb_arg: want, skb_indirect: matches!(p.skb, SkbArg::Indirect(_)) as u8, _pad: 0 };
}

/// Thread chains (netprobe-ebpf's `chain`): on where a chain hop can be
/// attached now, or later by a rescan (`--wait-for-modules`: vhost_net is
/// loaded when the first guest starts). The kick is timed only where the
/// vhost module's BTF gives `struct vhost_poll`'s layout now.
fn chain_config(
    config: &mut Config,
    plans: &[HopPlan],
    opts: &AttachOptions,
    f: &KernelFacts,
    vhost_wait_to_work: Result<u32>,
    notes: &mut Vec<String>,
) {
    let chain_hops = || plans.iter().filter(|p| p.hop.flags & hop_flags::CHAIN != 0 && opts.hops.contains(p.hop.id));
    // Only a trial load tells whether fentry is allowed, after the
    // configuration is frozen: kprobes decide. (A kernel with fentry and
    // no kprobes, like this development VM, which refuses fentry too,
    // runs without chains: every hop where an skb's tracking starts would
    // otherwise look for a chain that never comes.)
    if !f.kprobes || !chain_hops().any(|p| p.candidates.contains(&Backend::Kprobe) || opts.rescan) {
        return;
    }
    config.chains = 1;
    let Some(kick) = chain_hops().find(|p| p.hop.flags & hop_flags::CHAIN_KICK != 0) else { return };
    config.chain_kick_hop = u32::from(kick.hop.id);
    match vhost_wait_to_work {
        Ok(d) => config.vhost_wait_to_work = d,
        Err(e) => notes.push(format!("vhost_kick: the kick is not timed: {e:#}")),
    }
}

fn aya_btf(file: Option<&Path>) -> Result<Option<Btf>> {
    Ok(match file {
        Some(p) => Some(
            Btf::parse_file(p, aya::Endianness::default())
                .with_context(|| format!("parsing BTF file {}", p.display()))?,
        ),
        None => Btf::from_sys_fs().ok(),
    })
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    backend: Backend,
    category: &str,
    name: &str,
    btf: Option<&Btf>,
) -> Result<HopLink, AttachError> {
    let prog = format!("{}_{name}", backend.prefix());
    let p = ebpf.program_mut(&prog).ok_or_else(|| AttachError::MissingProgram(prog.clone()))?;
    // A program stays loaded when its hop is detached (module unloaded),
    // except where the load named the target's BTF (tp_btf): loaded again.
    Ok(match backend {
        Backend::TpBtf => {
            let p: &mut BtfTracePoint = p.try_into()?;
            if p.fd().is_err() {
                p.load(name, btf.ok_or_else(no_btf)?)?;
            }
            HopLink::TpBtf(prog, p.attach()?)
        }
        Backend::RawTp => {
            let p: &mut RawTracePoint = p.try_into()?;
            if p.fd().is_err() {
                p.load()?;
            }
            HopLink::RawTp(prog, p.attach(name)?)
        }
        Backend::Tracepoint => {
            let p: &mut TracePoint = p.try_into()?;
            if p.fd().is_err() {
                p.load()?;
            }
            HopLink::Tracepoint(prog, p.attach(category, name)?)
        }
        other => return Err(AttachError::Unavailable(format!("{} is not a tracepoint backend", other.label()))),
    })
}

/// A device name as the kernel keeps it: NUL-padded, at most 15 bytes.
fn name16(s: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    let b = &s.as_bytes()[..s.len().min(15)];
    n[..b.len()].copy_from_slice(b);
    n
}

fn no_btf() -> AttachError {
    AttachError::Unavailable("no BTF".into())
}

/// A function hop's target: the function, its module (None: vmlinux) and
/// its id in that module's BTF.
struct FunctionTarget<'a> {
    func: &'a str,
    module: Option<String>,
    module_btf_id: Option<u32>,
}

/// What loads fentry programs: aya, against vmlinux's BTF, and netprobe's
/// own loader for module functions.
struct Loaders<'a> {
    btf: Option<&'a Btf>,
    module_fentry: &'a mut module_fentry::Loader,
}

/// Attaches slot `slot`'s entry program to the target; the outer result is
/// the entry side (decides the backend), the inner one the return side. A
/// program still loaded from an earlier attach (a kprobe slot whose module
/// was unloaded) is attached again as it is.
fn attach_function(
    ebpf: &mut Ebpf,
    backend: Backend,
    slot: usize,
    target: &FunctionTarget,
    loaders: Loaders,
) -> Result<(HopLink, Result<HopLink, String>), AttachError> {
    let func = target.func;
    let entry = format!("{}_{slot}", backend.prefix());
    let Some(exit_prefix) = backend.exit_prefix() else {
        return Err(AttachError::Unavailable(format!("{} is not a function backend", backend.label())));
    };
    let exit = format!("{exit_prefix}_{slot}");
    let program = |ebpf: &mut Ebpf, name: &str| {
        ebpf.program_mut(name).map(|_| ()).ok_or_else(|| AttachError::MissingProgram(name.to_owned()))
    };
    program(ebpf, &entry)?;
    program(ebpf, &exit)?;
    let exit_side = |r: Result<HopLink, AttachError>| r.map_err(|e| e.brief());
    match backend {
        // aya loads fentry against vmlinux's BTF only.
        Backend::Fentry if target.module.is_some() => {
            let module = target.module.as_deref().unwrap_or_default();
            let id = target.module_btf_id.ok_or_else(|| {
                AttachError::Unavailable(format!("no BTF record for {func} in module {module}'s BTF"))
            })?;
            let loader = loaders.module_fentry;
            let link = HopLink::Module(loader.attach(&entry, module, func, id)?);
            let exit = loader.attach(&exit, module, func, id).map(HopLink::Module).map_err(AttachError::from);
            Ok((link, exit_side(exit)))
        }
        Backend::Fentry => {
            let btf = loaders.btf.ok_or_else(no_btf)?;
            let p: &mut FEntry = ebpf.program_mut(&entry).expect("checked above").try_into()?;
            if p.fd().is_err() {
                p.load(func, btf)?;
            }
            let link = HopLink::FEntry(entry, p.attach()?);
            let p: Result<&mut FExit, _> = ebpf.program_mut(&exit).expect("checked above").try_into();
            Ok((
                link,
                exit_side(p.map_err(AttachError::from).and_then(|p| {
                    if p.fd().is_err() {
                        p.load(func, btf)?;
                    }
                    Ok(HopLink::FExit(exit.clone(), p.attach()?))
                })),
            ))
        }
        Backend::Kprobe => {
            let p: &mut KProbe = ebpf.program_mut(&entry).expect("checked above").try_into()?;
            if p.fd().is_err() {
                p.load()?;
            }
            let link = HopLink::KProbe(entry, p.attach(func, 0)?);
            let p: Result<&mut KProbe, _> = ebpf.program_mut(&exit).expect("checked above").try_into();
            Ok((
                link,
                exit_side(p.map_err(AttachError::from).and_then(|p| {
                    if p.fd().is_err() {
                        p.load()?;
                    }
                    Ok(HopLink::KProbe(exit.clone(), p.attach(func, 0)?))
                })),
            ))
        }
        other => Err(AttachError::Unavailable(format!("{} is not a function backend", other.label()))),
    }
}

/// A stack-trace map of 127-frame stacks (aya's `StackTrace`, in the
/// object whether `--drop-stacks` is given or not) can only be made when
/// `kernel.perf_event_max_stack` allows that depth: what to do if not.
fn stack_depth_refused() -> Option<String> {
    let path = "/proc/sys/kernel/perf_event_max_stack";
    let depth: u32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    (depth < STACK_DEPTH).then(|| {
        format!(
            "netprobe's BPF object has a stack-trace map of {STACK_DEPTH}-frame kernel stacks (--drop-stacks), \
             and this kernel allows {depth} ({path}): run `sysctl kernel.perf_event_max_stack={STACK_DEPTH}`"
        )
    })
}

/// Frames per stack in `NP_DROP_STACKS`: PERF_MAX_STACK_DEPTH, the depth
/// of aya-ebpf's `StackTrace` map.
const STACK_DEPTH: u32 = 127;

/// The smallest ring buffer the kernel takes: one page.
fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u32
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On Debian's amd64 kernel every function hop gets a slot that reads
    /// its skb where it is, and each `struct sk_buff **` (the four
    /// rx_handlers) one whose fentry program can read it.
    #[test]
    fn slots_read_each_skb_where_it_is_and_rx_handlers_get_indirect_ones() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/kernels/debian-6.1-amd64");
        let f = KernelFacts::from_dir(&dir).unwrap();
        let plans = plan::plan(
            &f,
            PlanOptions {
                only: None,
                offsets: true,
                tracefs: true,
                hops: HopSet::ALL,
                pin_modules: false,
                follow_modules: false,
                module_fentry: true,
            },
        );
        let mut config = Config::zeroed();
        let slots = assign_slots(&plans, &mut config);
        let mut indirect = Vec::new();
        for p in plans.iter().filter(|p| p.hop.is_function() && !p.candidates.is_empty()) {
            let n = *slots.get(&p.hop.id).unwrap_or_else(|| panic!("{} has no slot", p.hop.label));
            match p.skb {
                SkbArg::Arg(i) => assert_eq!(SLOT_ARG[n], i, "{}", p.hop.label),
                SkbArg::Indirect(i) => {
                    assert!(n < INDIRECT_SLOTS && SLOT_ARG[n] == i, "{}: slot {n}", p.hop.label);
                    assert_eq!(config.slots[n].skb_indirect, 1);
                    indirect.push(p.hop.label);
                }
                SkbArg::None => {}
            }
        }
        indirect.sort();
        assert_eq!(indirect, ["br_rx", "macvlan_rx", "ovs_rx_hook", "tap_enqueue"]);
    }

    #[test]
    fn the_verifier_logs_reason_not_its_statistics() {
        // The tail of Debian 6.1's log for a refused hop program (lab).
        let log = "2019: (0f) r0 += r2                   ; R0_w=scalar()\n\
                   2020: (79) r1 = *(u64 *)(r0 +32)\n\
                   R0 invalid mem access 'scalar'\n\
                   verification time 323982 usec\n\
                   stack depth 176+0+0+88+0+0+0+0\n\
                   processed 11668 insns (limit 1000000) max_states_per_insn 8 total_states 862\n\n";
        assert_eq!(last_line(log), "R0 invalid mem access 'scalar'");
        assert_eq!(last_line("\n  \n"), "no verifier output");
    }

    #[test]
    fn modules_gone_unloading_or_loaded_again_elsewhere() {
        // /proc/modules lines as Debian's 6.1 kernel printed them in the lab.
        let before = parse_modules(
            "openvswitch 192512 0 - Live 0xffffffffc064f000\n\
             tun 61440 1 vhost_net, Live 0xffffffffc0566000\n\
             tap 32768 2 vhost_net,macvtap, Live 0xffffffffc054a000\n",
        );
        assert_eq!(before["openvswitch"], "Live 0xffffffffc064f000");
        assert!(gone_modules(&before, &before).is_empty());
        let mut now = before.clone();
        now.remove("openvswitch");
        now.insert("tun".into(), "Unloading 0xffffffffc0566000".into());
        now.insert("tap".into(), "Live 0xffffffffc0700000".into());
        assert_eq!(gone_modules(&before, &now), ["openvswitch", "tap", "tun"]);
        // Loading, then live at the same address: the same module.
        let loading = parse_modules("openvswitch 192512 0 - Loading 0xffffffffc064f000\n");
        let live = parse_modules("openvswitch 192512 0 - Live 0xffffffffc064f000\n");
        assert!(gone_modules(&loading, &live).is_empty());
    }
}
