//! Attaches the planned hops on this kernel: for each hop, the first
//! candidate backend from `plan` that loads and attaches wins; every
//! refusal is recorded with the kernel's reason. Function hops get a slot
//! (a generic program set) each. Dropping [`Attached`] detaches everything.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{bail, Context, Result};
use aya::{
    programs::{BtfTracePoint, FEntry, FExit, KProbe, RawTracePoint, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use netprobe_common::{hop_flags, names, Backend, Config, SlotConfig, CPU_TRACEPOINTS, MAX_SLOTS, SLOT_ARG};
use serde::Serialize;

use crate::{
    catalog::{Site, SkbArg},
    facts::KernelFacts,
    kernel,
    plan::{self, HopPlan, PlanOptions, SkbSource},
};

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
}

#[derive(Clone, Debug, Default)]
pub struct AttachOptions {
    pub btf_file: Option<PathBuf>,
    /// Force a backend (for tests and comparisons); None = best available.
    pub backend: Option<Backend>,
    pub max_gap_ns: u64,
    pub filter_enabled: bool,
    /// The compiled `--filter` expression, if any.
    pub flow: Option<netprobe_common::FlowFilter>,
    /// Per-packet trace mode (events on `NP_EVENTS`).
    pub trace: bool,
    /// Keep what a later rescan needs (the parsed kernel BTF, ~30 MiB).
    pub rescan: bool,
    /// Time NET_RX and NET_TX softirqs with programs on
    /// `irq:softirq_entry/exit` (two more programs per softirq, which is
    /// up to one per packet); without, softirq time is read from /proc/stat.
    pub softirq_vectors: bool,
    /// The catalog hops to attach (`--hops`).
    pub hops: crate::catalog::HopSet,
}

/// Loaded and attached programs; dropping it detaches everything.
pub struct Attached {
    pub ebpf: Ebpf,
    pub coverage: Vec<Coverage>,
    pub drop_reasons: BTreeMap<u32, String>,
    /// Tracepoint hops use classic tracepoints: devices are known by name.
    pub classic_only: bool,
    pub facts: KernelFacts,
    config: Config,
    /// Function hop id -> its program slot.
    slots: BTreeMap<u8, usize>,
    btf: Option<Btf>,
    plan_opts: PlanOptions,
    /// The BTF used to load tp_btf programs (kept until attach is done).
    btf_for_load: Option<Btf>,
    /// CPU accounting programs attached, and what could not be.
    pub cpu_backends: Vec<String>,
    pub cpu_notes: Vec<String>,
}

pub fn check_privileges() -> Result<()> {
    // CAP_BPF (39) and CAP_PERFMON (38), or CAP_SYS_ADMIN (21).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |c: u32| eff & (1 << c) != 0;
    if !(has(21) || (has(39) && has(38))) {
        bail!(
            "netprobe needs root, or the capabilities CAP_BPF and CAP_PERFMON (plus CAP_DAC_READ_SEARCH for tracefs): \
             run it with sudo, or `setcap cap_bpf,cap_perfmon,cap_dac_read_search+ep netprobe`"
        );
    }
    Ok(())
}

/// Loads netprobe's object, calls `loaded` (before any program is attached:
/// the place to start draining a map the programs will fill), then attaches
/// every hop it can.
pub fn attach(opts: &AttachOptions, loaded: &mut dyn FnMut(&mut Ebpf) -> Result<()>) -> Result<Attached> {
    if BPF_OBJECT.is_empty() {
        bail!("this netprobe binary was built without its BPF object; build it with `cargo xtask build`");
    }
    check_privileges()?;
    let facts = KernelFacts::live()?;
    let btf_rs = kernel::load_btf(opts.btf_file.as_deref())?;
    let mut config = Config::zeroed();
    config.max_gap_ns = opts.max_gap_ns;
    config.filter_enabled = opts.filter_enabled as u32;
    config.trace = opts.trace as u32;
    // Bench switches (`cargo xtask bench`): the same programs on the same
    // tracepoints returning at once; the old pointer laundering.
    for (var, bit) in [
        ("NETPROBE_EMPTY_PROGRAMS", netprobe_common::bench::EMPTY),
        ("NETPROBE_PROBE_LAUNDER", netprobe_common::bench::PROBE_LAUNDER),
    ] {
        if std::env::var_os(var).is_some() {
            config.bench |= bit;
        }
    }
    let mut drop_reasons = BTreeMap::new();
    let mut global_notes = Vec::new();
    if let Some(btf) = &btf_rs {
        match kernel::offsets(btf) {
            Ok(o) => config.off = o,
            Err(e) => global_notes.push(format!("struct offsets unavailable from BTF: {e:#}")),
        }
        drop_reasons = kernel::drop_reasons_from_btf(btf);
    }
    if let Some(flow) = opts.flow {
        if config.off.valid == 0 {
            bail!(
                "--filter reads packet headers through struct sk_buff, whose layout comes from BTF, and this kernel                  has none (/sys/kernel/btf/vmlinux): pass --btf FILE with this kernel's BTF, or record without                  --filter (--iface still works)"
            );
        }
        config.flow = flow;
    }
    let aya_btf = match &opts.btf_file {
        Some(p) => Some(
            Btf::parse_file(p, aya::Endianness::default())
                .with_context(|| format!("parsing BTF file {}", p.display()))?,
        ),
        None => Btf::from_sys_fs().ok(),
    };
    let tracefs = kernel::tracefs();
    let plans = plan::plan(
        &facts,
        PlanOptions { only: opts.backend, offsets: config.off.valid != 0, tracefs: tracefs.is_ok(), hops: opts.hops },
    );

    // Per-hop configuration, and classic tracepoint fields, before loading.
    let mut slots: BTreeMap<u8, usize> = BTreeMap::new();
    for p in &plans {
        let h = p.hop;
        // Every hop is configured, attached or not, so one whose module
        // loads later can still be attached by a rescan.
        config.hop_flags[h.id as usize] = h.flags | hop_flags::ENABLED;
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
            Site::Function { .. } => {
                // A slot whose compiled-in argument position is the skb's;
                // functions without an skb prefer slots that read none.
                let want = match p.skb {
                    SkbArg::None => SlotConfig::NO_SKB,
                    SkbArg::Arg(i) | SkbArg::Indirect(i) => i,
                };
                let free = |n: &usize| !slots.values().any(|v| v == n);
                let n = (0..MAX_SLOTS)
                    .filter(free)
                    .find(|&n| SLOT_ARG[n] == want)
                    .or_else(|| (want == SlotConfig::NO_SKB).then(|| (0..MAX_SLOTS).find(free)).flatten());
                let Some(n) = n else { continue };
                slots.insert(h.id, n);
                config.slots[n] = SlotConfig {
                    hop: h.id,
                    skb_arg: want,
                    skb_indirect: matches!(p.skb, SkbArg::Indirect(_)) as u8,
                    _pad: 0,
                };
            }
        }
    }

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
        .map_max_entries(names::EVENTS, if opts.trace { netprobe_common::EVENTS_BYTES } else { page_size() })
        .load(BPF_OBJECT)
        .context("loading netprobe's BPF object into the kernel failed")?;
    loaded(&mut ebpf)?;

    let plan_opts =
        PlanOptions { only: opts.backend, offsets: config.off.valid != 0, tracefs: tracefs.is_ok(), hops: opts.hops };
    let mut att = Attached {
        ebpf,
        coverage: Vec::new(),
        drop_reasons,
        classic_only: false,
        facts,
        config,
        slots,
        btf: aya_btf.clone(),
        plan_opts,
        btf_for_load: aya_btf,
        cpu_backends: Vec::new(),
        cpu_notes: Vec::new(),
    };
    for p in &plans {
        let c = att.attach_hop(p);
        att.coverage.push(c);
    }
    // CPU accounting (not a packet hop): the best backend that loads.
    // The softirq pair only when asked: at one softirq per packet it is a
    // third of the programs run per packet (see README, Performance).
    // (NETPROBE_NO_CPU: none of it, for the bench.)
    let cpu = if std::env::var_os("NETPROBE_NO_CPU").is_some() { &[][..] } else { &CPU_TRACEPOINTS[..] };
    for &(category, name) in cpu {
        if category == "irq" && !opts.softirq_vectors {
            continue;
        }
        let mut why = Vec::new();
        let ok = Backend::TRACEPOINT.into_iter().find(|&b| {
            match attach_tracepoint(&mut att.ebpf, b, category, name, att.btf_for_load.as_ref()) {
                Ok(()) => true,
                Err(e) => {
                    why.push(format!("{}: {}", b.label(), first_line(&format!("{e:#}"))));
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
        bail!(
            "some tracepoint hops attached only as classic tracepoints and others with BTF; \
             rerun with --backend tracepoint{}",
            if global_notes.is_empty() { String::new() } else { format!(" ({})", global_notes.join("; ")) }
        );
    }
    if att.coverage.iter().all(|c| c.backend.is_none()) {
        let why: Vec<String> = att.coverage.iter().flat_map(|c| c.notes.clone()).collect();
        bail!("no hop could be attached on this kernel: {}", why.join("; "));
    }
    att.btf_for_load = None;
    if !opts.rescan {
        att.btf = None;
    }
    // Parsing BTF (vmlinux and module BTF, twice: btf-rs and aya) peaks at
    // ~90 MiB of heap that is free again now; hand it back to the system so
    // a long recording's RSS is what it really holds.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    Ok(att)
}

impl Attached {
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
                        Err(anyhow::anyhow!("its tracefs format was unknown when netprobe loaded"))
                    } else {
                        attach_tracepoint(&mut self.ebpf, backend, t.category, t.name, self.btf.as_ref())
                    }
                }
                Site::Function { name, .. } => match self.slots.get(&p.hop.id) {
                    Some(&slot) => {
                        attach_function(&mut self.ebpf, backend, slot, name, self.btf.as_ref()).map(|exit| {
                            time_inside = exit.is_ok();
                            if let Err(e) = exit {
                                notes.push(format!("{}: return side not attached: {e}", backend.label()));
                            }
                        })
                    }
                    None => Err(anyhow::anyhow!("no free function slot reads the skb from this argument")),
                },
            };
            match res {
                Ok(()) => {
                    chosen = Some(backend);
                    break;
                }
                Err(e) => {
                    if std::env::var_os("NETPROBE_DEBUG").is_some() {
                        eprintln!("netprobe: {} via {}: {e:#}", p.hop.label, backend.label());
                    }
                    notes.push(format!("{}: {}", backend.label(), first_line(&format!("{e:#}"))))
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
        }
    }

    /// Re-reads the kernel's facts and attaches the hops that could not be
    /// before (a module loaded since). Returns the hops newly attached.
    pub fn rescan(&mut self) -> Result<Vec<&'static str>> {
        let facts = KernelFacts::live()?;
        let plans = plan::plan(&facts, self.plan_opts);
        let mut added = Vec::new();
        for p in &plans {
            let Some(i) = self.coverage.iter().position(|c| c.hop == p.hop.label) else {
                continue;
            };
            if self.coverage[i].backend.is_some() || p.candidates.is_empty() {
                continue;
            }
            let c = self.attach_hop(p);
            if c.backend.is_some() {
                added.push(p.hop.label);
            }
            self.coverage[i] = c;
        }
        self.facts = facts;
        Ok(added)
    }
}

fn attach_tracepoint(ebpf: &mut Ebpf, backend: Backend, category: &str, name: &str, btf: Option<&Btf>) -> Result<()> {
    let prog = format!("{}_{name}", backend.prefix());
    let p = ebpf.program_mut(&prog).with_context(|| format!("program {prog} missing from the object"))?;
    match backend {
        Backend::TpBtf => {
            let p: &mut BtfTracePoint = p.try_into()?;
            p.load(name, btf.context("no BTF")?)?;
            p.attach()?;
        }
        Backend::RawTp => {
            let p: &mut RawTracePoint = p.try_into()?;
            p.load()?;
            p.attach(name)?;
        }
        Backend::Tracepoint => {
            let p: &mut TracePoint = p.try_into()?;
            p.load()?;
            p.attach(category, name)?;
        }
        other => bail!("{} is not a tracepoint backend", other.label()),
    }
    Ok(())
}

/// Attaches slot `slot`'s entry program to `func`; the outer result is the
/// entry side (decides the backend), the inner one the return side.
fn attach_function(
    ebpf: &mut Ebpf,
    backend: Backend,
    slot: usize,
    func: &str,
    btf: Option<&Btf>,
) -> Result<Result<(), String>> {
    let entry = format!("{}_{slot}", backend.prefix());
    let exit = format!("{}_{slot}", backend.exit_prefix().context("not a function backend")?);
    match backend {
        Backend::Fentry => {
            let btf = btf.context("no BTF")?;
            let p: &mut FEntry = ebpf.program_mut(&entry).context("slot program missing")?.try_into()?;
            p.load(func, btf)?;
            p.attach()?;
            let r: Result<()> = (|| {
                let p: &mut FExit = ebpf.program_mut(&exit).context("slot program missing")?.try_into()?;
                p.load(func, btf)?;
                p.attach()?;
                Ok(())
            })();
            Ok(r.map_err(|e| first_line(&format!("{e:#}"))))
        }
        Backend::Kprobe => {
            let p: &mut KProbe = ebpf.program_mut(&entry).context("slot program missing")?.try_into()?;
            p.load()?;
            p.attach(func, 0)?;
            let r: Result<()> = (|| {
                let p: &mut KProbe = ebpf.program_mut(&exit).context("slot program missing")?.try_into()?;
                p.load()?;
                p.attach(func, 0)?;
                Ok(())
            })();
            Ok(r.map_err(|e| first_line(&format!("{e:#}"))))
        }
        other => bail!("{} is not a function backend", other.label()),
    }
}

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

fn first_line(s: &str) -> String {
    if s.contains("Operation not permitted") && s.contains("BPF_PROG_LOAD") {
        return "refused by the kernel (EPERM at load)".to_owned();
    }
    let l = s.lines().next().unwrap_or_default();
    let l = l.split(". Verifier output: :").next().unwrap_or(l);
    if l.len() > 160 {
        format!("{}...", &l[..160])
    } else {
        l.to_owned()
    }
}
