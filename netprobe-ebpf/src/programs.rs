//! Program entry points: one per (hop, backend). Each is a thin shell over
//! [`crate::tracking::ptr_hop`] or [`crate::tracking::classic_hop`]; the
//! loader picks one backend per hop and loads only that program.
//! (Kernel-function hops are in `functions`.) The hops and their programs'
//! names are listed once, in `netprobe_common::tracepoint_hops!`, named
//! `<backend prefix>_<tracepoint>` (see `netprobe_common::Backend::prefix`).

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use netprobe_common::hop;

use crate::tracking::{classic_hop, drop_stack_id, ptr_hop};

/// A program may only read the arguments its tracepoint has (the verifier
/// refuses tp_btf loads, the kernel raw_tp attaches, that read past them),
/// so each hop names the ones it needs: `[skb]`, `[skb, dev]` (argument 1
/// is the device) or `[skb, _, reason]` (argument 2 is the drop reason).
macro_rules! args {
    ($ctx:ident, [skb]) => {
        ($ctx.arg(0), 0, 0)
    };
    ($ctx:ident, [skb, dev]) => {
        ($ctx.arg(0), $ctx.arg(1), 0)
    };
    ($ctx:ident, [skb, _, reason]) => {
        ($ctx.arg(0), 0, $ctx.arg(2))
    };
    ($ctx:ident, [_, skb]) => {
        ($ctx.arg(1), 0, 0)
    };
}

macro_rules! hop_programs {
    ($($hop:ident, $cat:tt, $tp:tt, $args:tt, $btf:ident, $raw:ident, $classic:ident;)*) => {$(
        #[btf_tracepoint(function = $tp)]
        fn $btf(ctx: BtfTracePointContext) -> i32 {
            let (skb, a1, a2) = args!(ctx, $args);
            ptr_hop::<true>(hop::$hop, skb, a1, a2, || drop_stack_id(&ctx));
            0
        }

        #[raw_tracepoint(tracepoint = $tp)]
        fn $raw(ctx: RawTracePointContext) -> i32 {
            let (skb, a1, a2) = args!(ctx, $args);
            ptr_hop::<false>(hop::$hop, skb, a1, a2, || drop_stack_id(&ctx));
            0
        }

        // Written out rather than through aya's `#[tracepoint]`: its entry
        // calls the body as a function and drops the result, so LLVM may
        // leave any register in R0 at the body's exit; Linux 6.18 refused
        // a body that exited with a stack address there ("cannot return
        // stack pointer to the caller"). Here the hop is inlined into the
        // entry, which returns 0 itself.
        #[unsafe(no_mangle)]
        #[unsafe(link_section = concat!("tracepoint/", $cat, "/", $tp))]
        fn $classic(ctx: *mut core::ffi::c_void) -> u32 {
            classic_hop(&TracePointContext::new(ctx), hop::$hop);
            0
        }
    )*};
}

netprobe_common::tracepoint_hops!(hop_programs);
