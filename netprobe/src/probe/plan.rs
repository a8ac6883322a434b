//! Decides, per catalog hop, which attach backends to try on a kernel and
//! in what order, from the kernel's facts alone (no kernel calls): the one
//! place that knows the preference fentry > kprobe for functions and
//! tp_btf > raw_tp > classic for tracepoints, and every reason a backend is
//! ruled out. `attach` then proves the first candidate that loads.

use netprobe_common::Backend;
use serde::Serialize;

use super::{
    catalog::{self, Hop, Site, SkbArg},
    facts::KernelFacts,
};

#[derive(Clone, Debug)]
pub struct HopPlan {
    pub hop: &'static Hop,
    /// Backends to try, best first; empty when the hop cannot be observed.
    pub candidates: Vec<Backend>,
    /// Where the skb is (function hops): from BTF where it has a record.
    pub skb: SkbArg,
    pub skb_from: SkbSource,
    /// Why better backends (or all) are ruled out.
    pub notes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkbSource {
    Btf,
    Catalog,
    NotApplicable,
}

/// What a run may use beyond the kernel's own facts.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlanOptions {
    /// Only this backend.
    pub only: Option<Backend>,
    /// Struct offsets are known (kernel BTF or `--btf FILE`).
    pub offsets: bool,
    /// tracefs is usable.
    pub tracefs: bool,
    /// The hops to attach (`--hops`); the others are planned with no
    /// candidate and say why.
    pub hops: catalog::HopSet,
    /// Also attach tracepoints defined in modules (`--pin-modules`), which
    /// hold their module loaded while attached, and fentry on module
    /// functions where modules are followed.
    pub pin_modules: bool,
    /// The run follows modules unloaded and loaded again (`serve`, `record
    /// --wait-for-modules`): nothing it attaches may hold a module loaded
    /// unless `pin_modules`.
    pub follow_modules: bool,
    /// fentry is offered on a module's functions on a kernel before 6.6
    /// (`NETPROBE_MODULE_FENTRY=1`, or `--backend fentry`): see
    /// [`MODULE_FENTRY_FROM`].
    pub module_fentry: bool,
}

/// The first kernel on which fentry is offered on a module's functions by
/// default. On Debian's 6.1 in the lab, after fentry programs on
/// openvswitch's functions were detached, the module unloaded and loaded
/// again and kprobes put on it, the next packet called address 0: on
/// 2026-12-06 twice with its rx_handler among the fentry hops (from the
/// rx_handler call), on 2026-12-08 once without (from
/// `ovs_vport_receive`). The cause is not known, and 6.2 to 6.5 were
/// never tried; 6.6 is the next long-term kernel. Untested there too.
pub const MODULE_FENTRY_FROM: (u32, u32) = (6, 6);

/// Whether `release` (`uname -r`) is `major.minor` or later; false when it
/// cannot be read.
fn kernel_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).map(|x| x.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

pub fn plan(facts: &KernelFacts, opts: PlanOptions) -> Vec<HopPlan> {
    let mut plans: Vec<HopPlan> = catalog::HOPS.iter().map(|h| plan_hop(h, facts, opts)).collect();
    if !opts.pin_modules {
        // A program on a module's tracepoint holds the module loaded. Where
        // the module's function hops can attach (they see the same
        // packets; by kprobe they do not hold it, by fentry they already
        // do), its tracepoints are left out. Where they cannot (a tracepoint-only kernel), the
        // tracepoints are the only view of that path: attached, and said.
        let functions_attach = |m: &str| {
            plans.iter().any(|p| {
                matches!(p.hop.site, Site::Function { .. }) && p.hop.module() == Some(m) && !p.candidates.is_empty()
            })
        };
        let unpinned: Vec<(usize, bool)> = plans
            .iter()
            .enumerate()
            .filter(|(_, p)| p.hop.is_module_tracepoint() && !p.candidates.is_empty())
            .map(|(i, p)| (i, functions_attach(p.hop.module().unwrap_or_default())))
            .collect();
        for (i, leave_out) in unpinned {
            let p = &mut plans[i];
            let m = p.hop.module().unwrap_or_default();
            if leave_out {
                p.candidates.clear();
                p.notes.push(format!(
                    "not attached: a program on a tracepoint of module {m} holds the module loaded (rmmod {m} would \
                     fail \"in use\" while netprobe runs); its function hops see the same packets; --pin-modules \
                     attaches it"
                ));
            } else {
                p.notes.push(format!(
                    "holds module {m} loaded while attached (rmmod {m} fails \"in use\"): this kernel attaches no \
                     function hop of {m}, so its tracepoints are the only view of that path"
                ));
            }
        }
    }
    plans
}

fn plan_hop(hop: &'static Hop, f: &KernelFacts, opts: PlanOptions) -> HopPlan {
    let mut notes = Vec::new();
    let mut candidates = Vec::new();
    let mut skb = SkbArg::None;
    let mut skb_from = SkbSource::NotApplicable;
    match hop.site {
        Site::Function { name, module, skb: default_skb } => {
            skb = default_skb;
            skb_from = SkbSource::Catalog;
            if !f.symbols.contains_key(name) {
                let why = match module {
                    Some(m) if !module_present(f, m) => {
                        format!("module {m} not loaded (or not built): load it, or record with --wait-for-modules")
                    }
                    _ => format!("function {name} not in /proc/kallsyms: inlined or not built into this kernel"),
                };
                notes.push(why);
            } else {
                if let Some(b) = f.btf_funcs.get(name) {
                    skb = *b;
                    skb_from = SkbSource::Btf;
                }
                // fentry: BTF function record and a kernel that allows it;
                // on a module's function it holds the module loaded (the
                // kernel's trampoline takes a reference).
                let in_module = f.symbols.get(name).and_then(|m| m.as_deref());
                if let Some(m) = in_module.filter(|_| opts.follow_modules && !opts.pin_modules) {
                    notes.push(format!(
                        "fentry: not tried: it would hold module {m} loaded, and this run follows modules \
                         unloaded and loaded again (--pin-modules allows it)"
                    ));
                } else if !f.btf {
                    notes.push("fentry: the kernel has no BTF".to_owned());
                } else if !f.btf_funcs.contains_key(name) {
                    notes.push(format!("fentry: no BTF record for {name}"));
                } else if in_module.is_some() && matches!(skb, SkbArg::Indirect(_)) {
                    // Seen in the lab (Debian 6.1.0-57, 2026-12-06), twice:
                    // fentry on openvswitch's netdev_frame_hook under
                    // traffic, detached; the module unloaded and loaded
                    // again; kprobes put on it; the next packet called
                    // address 0 from the rx_handler call. With kprobes on
                    // the rx_handlers and fentry on the module's other
                    // functions the same sequence passed.
                    notes.push(format!(
                        "fentry: not offered: {name} is a module's rx_handler (struct sk_buff **), and after such a \
                         program, unloading and loading the module again crashed Debian 6.1's kernel in the lab"
                    ));
                } else if in_module.is_some()
                    && !opts.module_fentry
                    && opts.only != Some(Backend::Fentry)
                    && !kernel_at_least(&f.release, MODULE_FENTRY_FROM)
                {
                    notes.push(format!(
                        "fentry: not offered on a module's function before Linux {}.{}: after such programs, \
                         unloading and loading the module again crashed Debian 6.1's kernel in the lab \
                         (NETPROBE_MODULE_FENTRY=1 or --backend fentry offers it)",
                        MODULE_FENTRY_FROM.0, MODULE_FENTRY_FROM.1
                    ));
                } else if f.fentry == Some(false) {
                    notes.push("fentry: refused by this kernel".to_owned());
                } else {
                    candidates.push(Backend::Fentry);
                }
                if f.kprobes {
                    candidates.push(Backend::Kprobe);
                } else {
                    notes.push("kprobe: the kernel has no kprobes (CONFIG_KPROBES off)".to_owned());
                }
                if skb != SkbArg::None && !opts.offsets {
                    notes.push(
                        "no BTF: packets seen here are followed by skb address only, without their device".to_owned(),
                    );
                }
            }
        }
        Site::Tracepoint(t) => {
            let id = format!("{}:{}", t.category, t.name);
            if !f.tracepoints.contains(&id) {
                notes.push(match t.category {
                    "openvswitch" if !module_present(f, "openvswitch") => {
                        "module openvswitch not loaded (or not built): load it, or record with --wait-for-modules"
                            .to_owned()
                    }
                    _ => format!("tracepoint {id} not in this kernel"),
                });
            } else {
                if !f.btf {
                    notes.push("tp_btf: the kernel has no BTF".to_owned());
                } else if !opts.offsets {
                    notes.push("tp_btf: struct offsets unavailable".to_owned());
                } else {
                    candidates.push(Backend::TpBtf);
                }
                if opts.offsets {
                    candidates.push(Backend::RawTp);
                } else {
                    notes.push("raw_tp: needs struct offsets from BTF (or --btf FILE)".to_owned());
                }
                if opts.tracefs {
                    candidates.push(Backend::Tracepoint);
                } else {
                    notes.push("tracepoint: tracefs unavailable".to_owned());
                }
            }
        }
    }
    if let Some(only) = opts.only {
        if candidates.contains(&only) {
            candidates.retain(|b| *b == only);
        } else {
            if !candidates.is_empty() {
                notes.push(format!("{} not possible here; --backend excludes the others", only.label()));
            }
            candidates.clear();
        }
    }
    if !opts.hops.contains(hop.id) {
        candidates.clear();
        notes = vec!["left out by --hops".to_owned()];
    }
    HopPlan { hop, candidates, skb, skb_from, notes }
}

/// A module is there when it is loaded, built in, or any catalog function
/// it defines is in kallsyms.
fn module_present(f: &KernelFacts, m: &str) -> bool {
    f.modules.contains(m)
        || catalog::functions().any(|(_, name, module)| module == Some(m) && f.symbols.contains_key(name))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn fixture(name: &str) -> KernelFacts {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_data/kernels").join(name);
        KernelFacts::from_dir(&dir).unwrap_or_else(|e| panic!("fixture {name}: {e:#}"))
    }

    fn chosen(plans: &[HopPlan], label: &str) -> (Option<Backend>, Vec<String>) {
        let p = plans.iter().find(|p| p.hop.label == label).unwrap_or_else(|| panic!("no hop {label}"));
        (p.candidates.first().copied(), p.notes.clone())
    }

    fn with_btf(f: &KernelFacts) -> PlanOptions {
        PlanOptions {
            only: None,
            offsets: f.btf,
            tracefs: true,
            hops: catalog::HopSet::ALL,
            pin_modules: false,
            follow_modules: false,
            module_fentry: true,
        }
    }

    #[test]
    fn this_dev_kernel_tracepoints_only_fentry_refused_no_kprobes() {
        let f = fixture("dev-6.18");
        let plans = plan(&f, with_btf(&f));
        for tp in ["queue", "xmit", "netif_rx", "receive", "gro", "copy_out", "consumed", "dropped"] {
            assert_eq!(chosen(&plans, tp).0, Some(Backend::TpBtf), "{tp}");
        }
        for func in ["tap_enqueue", "tap_read", "macvlan_rx", "macvlan_xmit", "tun_xmit", "br_rx", "ip_rcv"] {
            let (b, notes) = chosen(&plans, func);
            assert_eq!(b, None, "{func}");
            assert!(notes.iter().any(|n| n.contains("fentry: refused")), "{func}: {notes:?}");
            assert!(notes.iter().any(|n| n.contains("no kprobes")), "{func}: {notes:?}");
        }
        for ovs in ["ovs_flow_lookup", "ovs_upcall", "ovs_action"] {
            let (b, notes) = chosen(&plans, ovs);
            assert_eq!(b, None);
            assert!(notes[0].contains("module openvswitch not loaded"), "{ovs}: {notes:?}");
        }
        assert!(chosen(&plans, "qeth_l2_xmit").1[0].contains("module qeth_l2 not loaded"));
        // The skb position comes from BTF where the kernel has a record.
        let rx = plans.iter().find(|p| p.hop.label == "macvlan_rx").unwrap();
        assert_eq!((rx.skb, rx.skb_from), (SkbArg::Indirect(0), SkbSource::Btf));
        // Without struct offsets only classic tracepoints remain.
        let plans = plan(&f, PlanOptions { offsets: false, ..with_btf(&f) });
        assert_eq!(chosen(&plans, "queue").0, Some(Backend::Tracepoint));
    }

    #[test]
    fn forcing_a_backend_keeps_only_it() {
        let f = fixture("dev-6.18");
        let plans = plan(&f, PlanOptions { only: Some(Backend::RawTp), ..with_btf(&f) });
        assert_eq!(chosen(&plans, "queue").0, Some(Backend::RawTp));
        assert!(plans.iter().all(|p| p.candidates.iter().all(|b| *b == Backend::RawTp)));
    }

    /// On a kernel that attaches no function hop (no kprobes, fentry
    /// refused), openvswitch's tracepoints are the only view of the OVS
    /// path: attached by default, with a note that they hold the module.
    #[test]
    fn module_tracepoints_are_kept_where_no_function_hop_of_the_module_attaches() {
        let mut f = fixture("debian-6.1-amd64");
        f.kprobes = false;
        f.fentry = Some(false);
        let plans = plan(&f, with_btf(&f));
        assert!(chosen(&plans, "ovs_upcall").0.is_none(), "no function hop can attach here");
        for tp in ["ovs_action", "ovs_upcall_tp"] {
            let (b, notes) = chosen(&plans, tp);
            assert_eq!(b, Some(Backend::TpBtf), "{tp}");
            assert!(
                notes.iter().any(|n| n.contains("holds module openvswitch") && n.contains("only view")),
                "{notes:?}"
            );
        }
    }

    /// fentry on a module's function holds the module loaded: a run that
    /// follows modules (serve, --wait-for-modules) takes kprobes there,
    /// unless --pin-modules; vmlinux's functions keep fentry.
    #[test]
    fn following_modules_keeps_fentry_off_module_functions_unless_pinned() {
        let f = fixture("debian-6.1-amd64");
        let follow = PlanOptions { follow_modules: true, ..with_btf(&f) };
        let plans = plan(&f, follow);
        let p = |plans: &[HopPlan], h: &str| plans.iter().find(|p| p.hop.label == h).unwrap().clone();
        for h in ["tap_read", "ovs_upcall", "vhost_tx"] {
            let hp = p(&plans, h);
            assert_eq!(hp.candidates, vec![Backend::Kprobe], "{h}: {:?}", hp.notes);
            assert!(hp.notes.iter().any(|n| n.contains("would hold module") && n.contains("--pin-modules")), "{h}");
            let pinned = plan(&f, PlanOptions { pin_modules: true, ..follow });
            assert_eq!(p(&pinned, h).candidates, vec![Backend::Fentry, Backend::Kprobe], "{h} pinned");
            assert_eq!(p(&plan(&f, with_btf(&f)), h).candidates, vec![Backend::Fentry, Backend::Kprobe], "{h}");
        }
        assert_eq!(p(&plans, "ip_rcv").candidates, vec![Backend::Fentry, Backend::Kprobe]);
    }

    /// Before Linux 6.6 a module's functions get kprobes unless fentry is
    /// asked for (NETPROBE_MODULE_FENTRY=1, or --backend fentry), said
    /// why; vmlinux's keep fentry; from 6.6 it is offered.
    #[test]
    fn module_functions_get_fentry_before_6_6_only_when_asked() {
        let mut f = fixture("debian-6.1-amd64");
        assert!(f.release.starts_with("6.1."), "{}", f.release);
        let default = PlanOptions { module_fentry: false, ..with_btf(&f) };
        let p = |plans: &[HopPlan], h: &str| plans.iter().find(|p| p.hop.label == h).unwrap().clone();
        let plans = plan(&f, default);
        for h in ["tap_read", "ovs_upcall", "br_forward", "vhost_tx"] {
            let hp = p(&plans, h);
            assert_eq!(hp.candidates, vec![Backend::Kprobe], "{h}: {:?}", hp.notes);
            assert!(hp.notes.iter().any(|n| n.contains("before Linux 6.6") && n.contains("NETPROBE_MODULE_FENTRY")));
            let only = plan(&f, PlanOptions { only: Some(Backend::Fentry), ..default });
            assert_eq!(p(&only, h).candidates, vec![Backend::Fentry], "{h} with --backend fentry");
        }
        assert_eq!(p(&plans, "ip_rcv").candidates, vec![Backend::Fentry, Backend::Kprobe]);
        f.release = "6.6.58-amd64".into();
        assert_eq!(p(&plan(&f, default), "tap_read").candidates, vec![Backend::Fentry, Backend::Kprobe]);
        assert!(super::kernel_at_least("6.18.0", (6, 6)) && super::kernel_at_least("7.0", (6, 6)));
        assert!(!super::kernel_at_least("6.5.13", (6, 6)) && !super::kernel_at_least("", (6, 6)));
    }

    #[test]
    fn debian_amd64_functions_fentry_first_then_kprobe_with_skb_from_btf() {
        let f = fixture("debian-6.1-amd64");
        let plans = plan(&f, with_btf(&f));
        for tp in ["queue", "xmit", "receive", "copy_out", "dropped"] {
            assert_eq!(chosen(&plans, tp).0, Some(Backend::TpBtf), "{tp}");
        }
        // openvswitch's own tracepoints would hold the module loaded: left
        // out unless asked, and said why.
        for tp in ["ovs_action", "ovs_upcall_tp"] {
            let (b, notes) = chosen(&plans, tp);
            assert_eq!(b, None, "{tp}");
            assert!(notes.iter().any(|n| n.contains("rmmod openvswitch") && n.contains("--pin-modules")), "{notes:?}");
            let pinned = plan(&f, PlanOptions { pin_modules: true, ..with_btf(&f) });
            assert_eq!(chosen(&pinned, tp).0, Some(Backend::TpBtf), "{tp} with --pin-modules");
        }
        // Function hops of a module do not pin it (kprobes are marked gone
        // on unload): attached by default.
        assert!(chosen(&plans, "ovs_upcall").0.is_some());
        for func in [
            "ip_rcv",
            "tap_enqueue",
            "tap_read",
            "macvlan_rx",
            "macvlan_xmit",
            "tun_xmit",
            "vhost_tx",
            "vhost_rx",
            "tap_sendmsg",
            "ovs_rx_hook",
            "ovs_vport_rx",
            "ovs_flow_lookup",
            "ovs_upcall",
            "ovs_execute",
            "ovs_output",
            "ovs_vport_send",
            "br_rx",
            "br_forward",
            "br_xmit",
        ] {
            let p = plans.iter().find(|p| p.hop.label == func).unwrap();
            // A module's rx_handlers: kprobe only (see plan_hop), said why.
            if p.skb == SkbArg::Indirect(0) {
                assert_eq!(p.candidates, vec![Backend::Kprobe], "{func}: {:?}", p.notes);
                assert!(p.notes.iter().any(|n| n.contains("rx_handler") && n.contains("crashed")), "{func}");
            } else {
                assert_eq!(p.candidates, vec![Backend::Fentry, Backend::Kprobe], "{func}: {:?}", p.notes);
            }
        }
        let indirect: Vec<&str> = plans.iter().filter(|p| p.skb == SkbArg::Indirect(0)).map(|p| p.hop.label).collect();
        assert_eq!(indirect, ["tap_enqueue", "macvlan_rx", "ovs_rx_hook", "br_rx"]);
        let hook = plans.iter().find(|p| p.hop.label == "ovs_rx_hook").unwrap();
        assert_eq!((hook.skb, hook.skb_from), (SkbArg::Indirect(0), SkbSource::Btf));
        let send = plans.iter().find(|p| p.hop.label == "ovs_vport_send").unwrap();
        assert_eq!((send.skb, send.skb_from), (SkbArg::Arg(1), SkbSource::Btf));
        // Inlined in this build, and s390-only: both said plainly.
        assert!(chosen(&plans, "macvlan_fwd").1[0].contains("inlined"));
        assert!(chosen(&plans, "qeth_l2_xmit").1[0].contains("module qeth_l2 not loaded"));
    }

    #[test]
    fn debian_s390x_without_btf_classic_tracepoints_and_kprobes_for_qeth() {
        let f = fixture("debian-6.1-s390x");
        assert!(!f.btf);
        let plans = plan(&f, with_btf(&f));
        for tp in ["queue", "xmit", "netif_rx", "receive", "gro", "copy_out", "consumed", "dropped"] {
            let (b, notes) = chosen(&plans, tp);
            assert_eq!(b, Some(Backend::Tracepoint), "{tp}");
            assert!(notes.iter().any(|n| n.contains("tp_btf: the kernel has no BTF")), "{notes:?}");
        }
        for func in [
            "qeth_l2_xmit",
            "qeth_l3_xmit",
            "qeth_xmit",
            "qeth_fill_buffer",
            "qeth_flush",
            "qeth_iqd_select_queue",
            "qeth_tx_poll",
            "qeth_notify_skbs",
            "qeth_rx_poll",
            "qeth_rx_refill",
            "tap_enqueue",
            "macvlan_rx",
        ] {
            let p = plans.iter().find(|p| p.hop.label == func).unwrap();
            assert_eq!(p.candidates, vec![Backend::Kprobe], "{func}: {:?}", p.notes);
            assert!(p.notes.iter().any(|n| n == "fentry: the kernel has no BTF"), "{func}");
        }
        // No BTF: the skb position is the catalog's (Linux 6.1).
        let iqd = plans.iter().find(|p| p.hop.label == "qeth_iqd_select_queue").unwrap();
        assert_eq!((iqd.skb, iqd.skb_from), (SkbArg::Arg(1), SkbSource::Catalog));
        for inlined in ["qeth_extract_skb", "qeth_tx_complete"] {
            assert!(chosen(&plans, inlined).1[0].contains("inlined"), "{inlined}");
        }
        assert!(chosen(&plans, "ovs_flow_lookup").1[0].contains("module openvswitch not loaded"));
    }
}
