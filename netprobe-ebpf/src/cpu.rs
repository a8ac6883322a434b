//! CPU accounting, beside the packet hops: on-CPU time per thread from
//! `sched:sched_switch` (the thread leaving the CPU is the current one, so
//! no argument is read) and softirq time per vector from
//! `irq:softirq_entry/exit`. Userspace gives threads their roles (vCPU,
//! vhost, ksoftirqd, OVS handler, workload). The tracepoints and their
//! programs' names are listed once, in `netprobe_common::cpu_tracepoints!`.
//!
//! The maps' values (`NP_CPU_LAST`, `NP_SOFTIRQ`: per-CPU arrays;
//! `NP_CPU`: keyed by thread, so written by the CPU that thread runs on)
//! are valid while the program runs and written by one CPU at a time.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use netprobe_common::CpuTime;

use crate::{
    config,
    maps::{NP_CPU, NP_CPU_LAST, NP_SOFTIRQ},
};

#[inline(always)]
fn switched() {
    if config::empty() {
        return;
    }
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(last) = NP_CPU_LAST.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's element of NP_CPU_LAST (see the module's note).
    let last = unsafe { &mut *last };
    let since = if *last == 0 { 0 } else { now.wrapping_sub(*last) };
    *last = now;
    if since == 0 {
        return;
    }
    let id = bpf_get_current_pid_tgid();
    if id as u32 == 0 {
        return; // the idle task
    }
    match NP_CPU.get_ptr_mut(&id) {
        // The name too: a thread may have exec'd since (ip netns exec ...).
        // SAFETY: the running thread's NP_CPU value (see the module's note).
        Some(c) => unsafe {
            (*c).ns += since;
            if let Ok(comm) = bpf_get_current_comm() {
                (*c).comm = comm;
            }
        },
        None => {
            let c = CpuTime { ns: since, comm: bpf_get_current_comm().unwrap_or([0; 16]) };
            let _ = NP_CPU.insert(&id, &c, 0);
        }
    }
}

#[inline(always)]
fn softirq(vec: u32, entry: bool) {
    if config::empty() {
        return;
    }
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(t0) = NP_SOFTIRQ.get_ptr_mut(16) else { return };
    if entry {
        // SAFETY: this CPU's element 16 of NP_SOFTIRQ (see the module's note).
        unsafe { *t0 = now };
        return;
    }
    // SAFETY: as above.
    let start = unsafe { *t0 };
    if start == 0 || vec >= 16 {
        return;
    }
    if let Some(acc) = NP_SOFTIRQ.get_ptr_mut(vec) {
        // SAFETY: this CPU's element `vec` of NP_SOFTIRQ (see the module's note).
        unsafe { *acc += now.wrapping_sub(start) };
    }
}

/// `vec` of a classic softirq record, at the offset its format file gives.
#[inline(always)]
fn classic_vec(ctx: &TracePointContext) -> u32 {
    let off = config::get(|c| &c.softirq_vec_off) as usize;
    if off == 0 {
        return u32::MAX;
    }
    // SAFETY: `read_at` copies from the tracepoint record with
    // bpf_probe_read_kernel: fault-safe, an offset past the record fails.
    unsafe { ctx.read_at::<u32>(off) }.unwrap_or(u32::MAX)
}

/// What each CPU tracepoint does, given how its backend reads `vec` (a
/// tracepoint of the list without an arm here does not compile).
macro_rules! on {
    ("sched_switch", $vec:expr) => {
        switched()
    };
    ("softirq_entry", $vec:expr) => {
        softirq($vec, true)
    };
    ("softirq_exit", $vec:expr) => {
        softirq($vec, false)
    };
}

// (`_ctx`: sched_switch's programs read nothing from it.)
macro_rules! cpu_programs {
    ($($cat:tt, $tp:tt, $btf:ident, $raw:ident, $classic:ident;)*) => {$(
        #[btf_tracepoint(function = $tp)]
        fn $btf(_ctx: BtfTracePointContext) -> i32 {
            on!($tp, _ctx.arg(0));
            0
        }

        #[raw_tracepoint(tracepoint = $tp)]
        fn $raw(_ctx: RawTracePointContext) -> i32 {
            on!($tp, _ctx.arg(0));
            0
        }

        #[tracepoint(category = $cat, name = $tp)]
        fn $classic(_ctx: TracePointContext) -> u32 {
            on!($tp, classic_vec(&_ctx));
            0
        }
    )*};
}

netprobe_common::cpu_tracepoints!(cpu_programs);
