//! Decides how each catalog hop is attached on this kernel and attaches it:
//! tp_btf where the kernel has BTF, else raw_tp, else a classic tracefs
//! tracepoint. Each choice is proved by a trial load, never assumed from a
//! version number; every hop ends with a backend or the reasons it has none.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use aya::{
    programs::{BtfTracePoint, RawTracePoint, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use netprobe_common::{hop_flags, names, Backend, Config, MAX_HOPS};
use serde::Serialize;

use crate::{catalog, kernel};

/// The BPF object built by `cargo xtask build`, embedded in the binary.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netprobe.bpf.o"));

/// What was chosen for one hop.
#[derive(Clone, Debug, Serialize)]
pub struct Coverage {
    pub hop: &'static str,
    pub tracepoint: String,
    /// The backend in use, if any.
    pub backend: Option<&'static str>,
    /// Why each better backend was not used (or why none was).
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct AttachOptions {
    pub btf_file: Option<PathBuf>,
    /// Force a backend (for tests and comparisons); None = best available.
    pub backend: Option<Backend>,
    pub max_gap_ns: u64,
    pub filter_enabled: bool,
}

/// Loaded and attached programs; dropping it detaches everything.
pub struct Attached {
    pub ebpf: Ebpf,
    pub coverage: Vec<Coverage>,
    pub drop_reasons: std::collections::BTreeMap<u32, String>,
    /// Classic tracepoints identify devices by name only.
    pub classic_only: bool,
}

fn check_privileges() -> Result<()> {
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

pub fn attach(opts: &AttachOptions) -> Result<Attached> {
    if BPF_OBJECT.is_empty() {
        bail!("this netprobe binary was built without its BPF object; build it with `cargo xtask build`");
    }
    check_privileges()?;
    let btf_rs = kernel::load_btf(opts.btf_file.as_deref())?;
    let mut config = Config::zeroed();
    config.max_gap_ns = opts.max_gap_ns;
    config.filter_enabled = opts.filter_enabled as u32;
    let mut notes_all: Vec<String> = Vec::new();
    let mut drop_reasons = Default::default();
    if let Some(btf) = &btf_rs {
        match kernel::offsets(btf) {
            Ok(o) => config.off = o,
            Err(e) => notes_all.push(format!("struct offsets unavailable from BTF: {e:#}")),
        }
        drop_reasons = kernel::drop_reasons_from_btf(btf);
    }
    let aya_btf = match &opts.btf_file {
        Some(p) => Some(
            Btf::parse_file(p, aya::Endianness::default())
                .with_context(|| format!("parsing {}", p.display()))?,
        ),
        None => Btf::from_sys_fs().ok(),
    };

    // Classic tracepoints need tracefs and its format files; read them for
    // every hop up front (cheap) so a fallback needs no second load.
    let tracefs = kernel::tracefs();
    for h in catalog::HOPS {
        config.hop_flags[h.id as usize] = h.flags | hop_flags::ENABLED;
        if let Ok(fs) = &tracefs {
            if let Ok(fmt) = kernel::read_format(fs, h.tracepoint.category, h.tracepoint.name) {
                if let Ok(c) = fmt.classic_fields() {
                    config.classic[h.id as usize] = c;
                }
                if h.flags & hop_flags::DROP != 0 && drop_reasons.is_empty() {
                    drop_reasons = fmt.symbols();
                }
            }
        }
    }
    debug_assert!(catalog::HOPS.iter().all(|h| (h.id as usize) < MAX_HOPS));

    let mut ebpf = EbpfLoader::new()
        .btf(aya_btf.as_ref())
        .override_global(names::CONFIG, &config, true)
        .load(BPF_OBJECT)
        .context("loading netprobe's BPF object into the kernel failed")?;

    let mut coverage = Vec::new();
    let mut classic_used = false;
    let mut ptr_used = false;
    for h in catalog::HOPS {
        let tp = h.tracepoint;
        let mut notes = Vec::new();
        let mut chosen = None;
        for backend in Backend::ALL {
            if opts.backend.is_some_and(|b| b != backend) {
                continue;
            }
            let prog = format!("{}_{}", backend.prefix(), tp.name);
            let res: Result<()> = (|| {
                let p = ebpf
                    .program_mut(&prog)
                    .with_context(|| format!("program {prog} missing from the object"))?;
                match backend {
                    Backend::TpBtf => {
                        let btf = aya_btf
                            .as_ref()
                            .context("the kernel has no BTF (pass --btf FILE)")?;
                        if config.off.valid == 0 {
                            bail!("struct offsets unknown (no usable BTF)");
                        }
                        let p: &mut BtfTracePoint = p.try_into()?;
                        p.load(tp.name, btf)?;
                        p.attach()?;
                    }
                    Backend::RawTp => {
                        if config.off.valid == 0 {
                            bail!("struct offsets unknown (no BTF; pass --btf FILE)");
                        }
                        let p: &mut RawTracePoint = p.try_into()?;
                        p.load()?;
                        p.attach(tp.name)?;
                    }
                    Backend::Tracepoint => {
                        if let Err(e) = &tracefs {
                            bail!("{e:#}");
                        }
                        if config.classic[h.id as usize].skbaddr == 0 {
                            bail!("no tracefs format for {}/{}", tp.category, tp.name);
                        }
                        let p: &mut TracePoint = p.try_into()?;
                        p.load()?;
                        p.attach(tp.category, tp.name)?;
                    }
                }
                Ok(())
            })();
            match res {
                Ok(()) => {
                    chosen = Some(backend);
                    break;
                }
                Err(e) => notes.push(format!(
                    "{}: {}",
                    backend.label(),
                    first_line(&format!("{e:#}"))
                )),
            }
        }
        match chosen {
            Some(Backend::Tracepoint) => classic_used = true,
            Some(_) => ptr_used = true,
            None => {}
        }
        coverage.push(Coverage {
            hop: h.label,
            tracepoint: format!("{}:{}", tp.category, tp.name),
            backend: chosen.map(Backend::label),
            notes,
        });
    }
    if classic_used && ptr_used && std::env::var_os("NETPROBE_DEBUG_MIX").is_none() {
        // Device keys differ between the two kinds (pointer vs name hash),
        // so a packet could not be followed across them: refuse the mix.
        bail!(
            "some hops attached only as classic tracepoints and others with BTF; \
             rerun with --backend tracepoint (or fix the BTF problem: {notes_all:?})"
        );
    }
    if coverage.iter().all(|c| c.backend.is_none()) {
        let why: Vec<String> = coverage.iter().flat_map(|c| c.notes.clone()).collect();
        bail!(
            "no hop could be attached on this kernel: {}",
            why.join("; ")
        );
    }
    Ok(Attached {
        ebpf,
        coverage,
        drop_reasons,
        classic_only: classic_used,
    })
}

fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or_default();
    if l.len() > 200 {
        format!("{}...", &l[..200])
    } else {
        l.to_owned()
    }
}
