//! Kernel-function hops: generic programs in numbered slots, one set per
//! backend (fentry+fexit, kprobe+kretprobe). The loader assigns each slot a
//! hop and the position of its skb argument (`Config::slots`), loads the
//! slot's programs for that function and attaches them. The skb position
//! is read from the frozen `.rodata` config, so the verifier knows it and
//! checks only the argument access that is actually taken.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
    EbpfContext,
};
use netprobe_common::{is_program_name, Backend, SlotConfig, INDIRECT_SLOTS, MAX_SLOTS, SLOT_ARG};

use crate::{
    config::slot,
    tracking::{slot_entry, slot_return},
};

/// The skb of slot `n`'s function: argument `SLOT_ARG[n]`, a constant, so
/// only that context read is compiled (the verifier accepts context reads
/// at constant offsets only).
macro_rules! skb_arg {
    ($n:literal, $s:ident, $read:expr) => {{
        const POS: u8 = SLOT_ARG[$n];
        if $s.skb_arg == SlotConfig::NO_SKB {
            0
        } else {
            let read = $read;
            let raw: u64 = match POS {
                0 => read(0),
                1 => read(1),
                2 => read(2),
                3 => read(3),
                4 => read(4),
                _ => 0,
            };
            deref_skb($s, raw)
        }
    }};
}

/// The skb itself, dereferenced for `struct sk_buff **` parameters.
#[inline(always)]
fn deref_skb(s: SlotConfig, raw: u64) -> u64 {
    if s.skb_indirect != 0 && raw >= 4096 {
        // SAFETY: bpf_probe_read_kernel is a fault-safe copy: a bad
        // address fails (then no skb), it never faults.
        unsafe { bpf_probe_read_kernel(raw as *const u64) }.unwrap_or(0)
    } else {
        raw
    }
}

/// Argument `i` of an fentry program's function as a number
/// (bpf_get_func_arg, Linux 5.17), 0 if it has none.
#[inline(always)]
fn func_arg(ctx: &FEntryContext, i: u32) -> u64 {
    let mut v = 0u64;
    // SAFETY: the helper writes one u64 to `v`, or fails and leaves it.
    unsafe { aya_ebpf::helpers::bpf_get_func_arg(ctx.as_ptr(), i, &mut v) };
    v
}

/// The slots' programs, named `<backend prefix>_<slot>` as the loader
/// forms the names (checked at compile time against `Backend`'s prefixes).
macro_rules! slots {
    ($($n:literal => $fentry:ident, $fexit:ident, $kprobe:ident, $kretprobe:ident;)*) => {
        const _: () = assert!([$($n),*].len() == MAX_SLOTS, "one line per slot");
        $(
        const _: () = assert!(
            is_program_name(stringify!($fentry), Backend::Fentry.prefix(), stringify!($n).as_bytes())
                && is_program_name(stringify!($kprobe), Backend::Kprobe.prefix(), stringify!($n).as_bytes())
                && matches!(Backend::Fentry.exit_prefix(), Some(p) if is_program_name(stringify!($fexit), p, stringify!($n).as_bytes()))
                && matches!(Backend::Kprobe.exit_prefix(), Some(p) if is_program_name(stringify!($kretprobe), p, stringify!($n).as_bytes())),
            "a slot program is not named <backend prefix>_<slot>"
        );
        #[fentry]
        fn $fentry(ctx: FEntryContext) -> u32 {
            let s = slot($n);
            // A `struct sk_buff **` parameter (the rx_handlers: tap,
            // macvlan, bridge, OVS) is read untyped, in the first
            // INDIRECT_SLOTS slots only: Linux 6.1's verifier refuses a
            // typed context read of a pointer to a pointer ("invalid
            // bpf_context access off=0 size=8"), and the skb read through
            // it is a number, read as kprobes read it. The config is
            // frozen, so only one of the two paths is verified.
            if $n < INDIRECT_SLOTS && s.skb_indirect != 0 {
                let read = |i: usize| func_arg(&ctx, i as u32);
                slot_entry::<false>(s.hop, skb_arg!($n, s, read), || read(0));
            } else {
                slot_entry::<true>(s.hop, skb_arg!($n, s, |i| ctx.arg::<u64>(i)), || ctx.arg::<u64>(0));
            }
            0
        }

        #[fexit]
        fn $fexit(_ctx: FExitContext) -> u32 {
            slot_return(slot($n).hop);
            0
        }

        #[kprobe]
        fn $kprobe(ctx: ProbeContext) -> u32 {
            let s = slot($n);
            slot_entry::<false>(s.hop, skb_arg!($n, s, |i| ctx.arg::<u64>(i).unwrap_or(0)), || ctx.arg::<u64>(0).unwrap_or(0));
            0
        }

        #[kretprobe]
        fn $kretprobe(_ctx: RetProbeContext) -> u32 {
            slot_return(slot($n).hop);
            0
        }
    )*};
}

slots! {
    0 => fentry_0, fexit_0, kprobe_0, kretprobe_0;
    1 => fentry_1, fexit_1, kprobe_1, kretprobe_1;
    2 => fentry_2, fexit_2, kprobe_2, kretprobe_2;
    3 => fentry_3, fexit_3, kprobe_3, kretprobe_3;
    4 => fentry_4, fexit_4, kprobe_4, kretprobe_4;
    5 => fentry_5, fexit_5, kprobe_5, kretprobe_5;
    6 => fentry_6, fexit_6, kprobe_6, kretprobe_6;
    7 => fentry_7, fexit_7, kprobe_7, kretprobe_7;
    8 => fentry_8, fexit_8, kprobe_8, kretprobe_8;
    9 => fentry_9, fexit_9, kprobe_9, kretprobe_9;
    10 => fentry_10, fexit_10, kprobe_10, kretprobe_10;
    11 => fentry_11, fexit_11, kprobe_11, kretprobe_11;
    12 => fentry_12, fexit_12, kprobe_12, kretprobe_12;
    13 => fentry_13, fexit_13, kprobe_13, kretprobe_13;
    14 => fentry_14, fexit_14, kprobe_14, kretprobe_14;
    15 => fentry_15, fexit_15, kprobe_15, kretprobe_15;
    16 => fentry_16, fexit_16, kprobe_16, kretprobe_16;
    17 => fentry_17, fexit_17, kprobe_17, kretprobe_17;
    18 => fentry_18, fexit_18, kprobe_18, kretprobe_18;
    19 => fentry_19, fexit_19, kprobe_19, kretprobe_19;
    20 => fentry_20, fexit_20, kprobe_20, kretprobe_20;
    21 => fentry_21, fexit_21, kprobe_21, kretprobe_21;
    22 => fentry_22, fexit_22, kprobe_22, kretprobe_22;
    23 => fentry_23, fexit_23, kprobe_23, kretprobe_23;
    24 => fentry_24, fexit_24, kprobe_24, kretprobe_24;
    25 => fentry_25, fexit_25, kprobe_25, kretprobe_25;
    26 => fentry_26, fexit_26, kprobe_26, kretprobe_26;
    27 => fentry_27, fexit_27, kprobe_27, kretprobe_27;
    28 => fentry_28, fexit_28, kprobe_28, kretprobe_28;
    29 => fentry_29, fexit_29, kprobe_29, kretprobe_29;
    30 => fentry_30, fexit_30, kprobe_30, kretprobe_30;
    31 => fentry_31, fexit_31, kprobe_31, kretprobe_31;
    32 => fentry_32, fexit_32, kprobe_32, kretprobe_32;
    33 => fentry_33, fexit_33, kprobe_33, kretprobe_33;
    34 => fentry_34, fexit_34, kprobe_34, kretprobe_34;
    35 => fentry_35, fexit_35, kprobe_35, kretprobe_35;
    36 => fentry_36, fexit_36, kprobe_36, kretprobe_36;
    37 => fentry_37, fexit_37, kprobe_37, kretprobe_37;
    38 => fentry_38, fexit_38, kprobe_38, kretprobe_38;
    39 => fentry_39, fexit_39, kprobe_39, kretprobe_39;
    40 => fentry_40, fexit_40, kprobe_40, kretprobe_40;
    41 => fentry_41, fexit_41, kprobe_41, kretprobe_41;
    42 => fentry_42, fexit_42, kprobe_42, kretprobe_42;
    43 => fentry_43, fexit_43, kprobe_43, kretprobe_43;
    44 => fentry_44, fexit_44, kprobe_44, kretprobe_44;
    45 => fentry_45, fexit_45, kprobe_45, kretprobe_45;
    46 => fentry_46, fexit_46, kprobe_46, kretprobe_46;
    47 => fentry_47, fexit_47, kprobe_47, kretprobe_47;
}
