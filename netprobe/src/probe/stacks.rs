//! Kernel stacks of drops (`--drop-stacks`): the addresses the kernel kept
//! in `NP_DROP_STACKS` named from /proc/kallsyms (module symbols included,
//! as `name [module]`), the frames of the tracing machinery itself cut
//! off, and folded the way `perf script | stackcollapse-perf.pl` folds a
//! stack (root first, `;`-separated), so flame-graph tools read them.
//! Parsing and folding are pure functions of text and numbers; only
//! [`Kallsyms::load`] reads /proc.

use anyhow::{bail, Context, Result};

/// Text symbols of the running kernel and its modules, by address.
#[derive(Clone, Debug, Default)]
pub struct Kallsyms {
    /// (start address, name, module or empty), sorted by address.
    syms: Vec<(u64, String, String)>,
}

impl Kallsyms {
    /// Reads /proc/kallsyms. Fails with what to do when the kernel hides
    /// the addresses (kptr_restrict) or has no symbols.
    pub fn load() -> Result<Kallsyms> {
        let text = std::fs::read_to_string("/proc/kallsyms")
            .context("--drop-stacks names stack frames from /proc/kallsyms, which could not be read")?;
        let k = Kallsyms::parse(&text);
        if k.syms.is_empty() {
            bail!(
                "/proc/kallsyms lists no kernel text symbols with an address: --drop-stacks cannot name stack \
                 frames (run as root, and with `sysctl kernel.kptr_restrict=0` if addresses read as zero; \
                 the kernel needs CONFIG_KALLSYMS), or record without --drop-stacks"
            );
        }
        Ok(k)
    }

    /// Parses kallsyms text: `ADDR TYPE NAME[\t[MODULE]]` per line. Keeps
    /// text symbols (types t, T, w, W) with a nonzero address; anything
    /// else (data, absolute symbols, zeroed addresses) cannot name a
    /// return address.
    pub fn parse(text: &str) -> Kallsyms {
        let mut syms: Vec<(u64, String, String)> = text
            .lines()
            .filter_map(|line| {
                let (sym, module) = match line.split_once('\t') {
                    Some((s, m)) => (s, m.trim().trim_start_matches('[').trim_end_matches(']')),
                    None => (line, ""),
                };
                let mut f = sym.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok().filter(|&a| a != 0)?;
                let kind = f.next()?;
                let name = f.next()?;
                matches!(kind, "t" | "T" | "w" | "W").then(|| (addr, name.to_owned(), module.to_owned()))
            })
            .collect();
        syms.sort_by_key(|s| s.0);
        Kallsyms { syms }
    }

    /// The function holding `addr`: `name` or `name [module]`; the address
    /// in hex when it lies before every symbol.
    pub fn name(&self, addr: u64) -> String {
        let i = self.syms.partition_point(|s| s.0 <= addr);
        match i.checked_sub(1).map(|i| &self.syms[i]) {
            Some((_, name, m)) if m.is_empty() => name.clone(),
            Some((_, name, m)) => format!("{name} [{m}]"),
            None => format!("0x{addr:x}"),
        }
    }

    /// A stack's frames named, innermost first, with the innermost frames
    /// that belong to the tracing of the drop itself (the BPF program, the
    /// tracepoint's glue, the stack helper) removed: the first frame left
    /// is the kernel function that hit the `kfree_skb` tracepoint. They
    /// are cut through the outermost glue frame among the innermost
    /// [`TRACING_DEPTH`], so a BPF program the symbols do not list
    /// (`net.core.bpf_jit_kallsyms=0`), named after whatever precedes it,
    /// goes too.
    /// BPF trampolines (`bpf_trampoline_<id> [bpf]`: fentry/fexit
    /// programs, netprobe's own function hops among them) are left out
    /// wherever they are: they are not where the packet went.
    pub fn frames(&self, ips: &[u64]) -> Vec<String> {
        let named: Vec<String> = ips.iter().take_while(|&&ip| ip != 0).map(|&ip| self.name(ip)).collect();
        let skip = named.iter().take(TRACING_DEPTH).rposition(|f| is_tracing_frame(f)).map_or(0, |i| i + 1);
        named[skip..].iter().filter(|f| !f.starts_with("bpf_trampoline_")).cloned().collect()
    }
}

/// Innermost frames where the tracing machinery's own are looked for: a
/// BPF program, the helper, and the tracepoint's glue (raw: `bpf_trace_run4`,
/// `__traceiter_kfree_skb`; classic: `trace_call_bpf`,
/// `perf_trace_run_bpf_submit`, `perf_trace_kfree_skb`), with room.
const TRACING_DEPTH: usize = 8;

/// Frames of the tracing machinery between the drop and netprobe's
/// program: BPF programs, tracepoint glue, the stack helper. (Not BPF
/// trampolines: an fentry hop's trampoline sits in the middle of a stack,
/// and cutting through it would cut the stack's innermost real frames.)
fn is_tracing_frame(f: &str) -> bool {
    const PREFIXES: [&str; 12] = [
        "bpf_prog_",
        "bpf_trace_run",
        "__bpf_trace_",
        "__traceiter_",
        "perf_trace_",
        "trace_event_raw_event_",
        "bpf_get_stackid",
        "__bpf_get_stackid",
        "bpf_get_stack",
        "perf_callchain",
        "get_perf_callchain",
        "trace_call_bpf",
    ];
    f.starts_with("0x") || PREFIXES.iter().any(|p| f.starts_with(p))
}

/// Functions that only free an sk_buff on someone else's behalf: the
/// function that freed a packet is the first frame outside them.
const FREE_HELPERS: [&str; 8] = [
    "kfree_skb",
    "kfree_skb_reason",
    "sk_skb_reason_drop",
    "kfree_skb_list_reason",
    "__kfree_skb",
    "kfree_skb_partial",
    "kfree_skb_list",
    "skb_release_data",
];

/// The function that freed the packet, from its frames innermost first:
/// the first that is not a generic free helper (else the innermost).
pub fn freed_by(frames_innermost_first: &[String]) -> String {
    frames_innermost_first
        .iter()
        .find(|f| !FREE_HELPERS.contains(&f.as_str()))
        .or(frames_innermost_first.first())
        .cloned()
        .unwrap_or_default()
}

/// Folds a stack as `stackcollapse-perf.pl` does: root first, frames
/// joined by `;` (a `;` inside a name, which kernel names never have,
/// would become `:`).
pub fn fold(frames_innermost_first: &[String]) -> String {
    frames_innermost_first.iter().rev().map(|f| f.replace(';', ":")).collect::<Vec<_>>().join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = "\
ffffffff81000000 T _stext
ffffffff81a00000 T sk_skb_reason_drop
ffffffff81a00200 t ip_error
ffffffff81a00400 T ip_rcv_finish_core
ffffffff81a00800 d some_data
ffffffff81b00000 T __bpf_trace_kfree_skb
ffffffff81b00100 T bpf_trace_run4
0000000000000000 T hidden_address
ffffffffc0a00000 t nft_do_chain\t[nf_tables]
ffffffffc0900000 T nf_hook_slow_mod\t[nf_hook]
ffffffffa0001000 t bpf_prog_0123456789abcdef_tp_kfree_skb\t[bpf]
ffffffffa0002000 t bpf_trampoline_6442485640\t[bpf]
";

    #[test]
    fn kallsyms_text_symbols_with_modules_sorted() {
        let k = Kallsyms::parse(FIXTURE);
        // Data and zero-address symbols are left out.
        assert_eq!(k.syms.len(), 10);
        assert!(k.syms.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(k.name(0xffffffff81a00210), "ip_error");
        assert_eq!(k.name(0xffffffff81a00200), "ip_error");
        assert_eq!(k.name(0xffffffff81a001ff), "sk_skb_reason_drop");
        assert_eq!(k.name(0xffffffffc0a00044), "nft_do_chain [nf_tables]");
        assert_eq!(k.name(0xffffffffc0900010), "nf_hook_slow_mod [nf_hook]");
        assert_eq!(k.name(0x1000), "0x1000");
        // A data symbol does not shadow the function before it.
        assert_eq!(k.name(0xffffffff81a00900), "ip_rcv_finish_core");
    }

    #[test]
    fn tracing_frames_cut_and_folded_root_first() {
        let k = Kallsyms::parse(FIXTURE);
        let ips = [
            0xffffffffa0001010, // the BPF program
            0xffffffff81b00120, // bpf_trace_run4
            0xffffffff81b00010, // __bpf_trace_kfree_skb
            0xffffffff81a00010, // sk_skb_reason_drop
            0xffffffff81a00220, // ip_error
            0xffffffff81a00410, // ip_rcv_finish_core
            0,
            0xffffffff81a00220, // past the end marker: ignored
        ];
        let frames = k.frames(&ips);
        assert_eq!(frames, ["sk_skb_reason_drop", "ip_error", "ip_rcv_finish_core"]);
        assert_eq!(fold(&frames), "ip_rcv_finish_core;ip_error;sk_skb_reason_drop");
        assert_eq!(freed_by(&frames), "ip_error");
        // An fentry hop's trampoline among the innermost frames (Debian's
        // 6.1 in the lab: ip_rcv's) is left out, and cuts nothing.
        let fentry = k.frames(&[
            0xffffffffa0001010, // the BPF program
            0xffffffff81b00120, // bpf_trace_run4
            0xffffffff81a00010, // sk_skb_reason_drop
            0xffffffff81a00220, // ip_error
            0xffffffffa0002010, // a BPF trampoline
            0xffffffff81a00410, // ip_rcv_finish_core
        ]);
        assert_eq!(fentry, ["sk_skb_reason_drop", "ip_error", "ip_rcv_finish_core"]);
        // A BPF program that kallsyms does not list takes its neighbour's
        // name; the glue frames outside it still say where to cut.
        let unlisted = k.frames(&[0xffffffff81a00900, 0xffffffff81b00120, 0xffffffff81a00010, 0xffffffff81a00220]);
        assert_eq!(unlisted, ["sk_skb_reason_drop", "ip_error"]);
        let module = k.frames(&[0xffffffff81a00010, 0xffffffffc0a00001]);
        assert_eq!(fold(&module), "nft_do_chain [nf_tables];sk_skb_reason_drop");
        assert_eq!(freed_by(&["kfree_skb_reason".to_owned()]), "kfree_skb_reason");
        assert_eq!(fold(&[]), "");
    }
}
