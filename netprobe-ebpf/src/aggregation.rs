//! The always-on aggregates: hop-pair latency histograms (the per-CPU
//! `NP_PAIRS` cache in front of `NP_HOPS`), drops by reason (`NP_DROPS`)
//! and, with `--drop-stacks`, by kernel stack too (`NP_DROP_STACK_COUNTS`),
//! time inside hop functions (`NP_ENTRY`, `NP_FUNCS`), and the description
//! of each device the first time it appears in a pair (`NP_DEVS`).
//!
//! Every pointer a map lookup returns here points into the map's value for
//! this key (per-CPU maps: this CPU's copy), valid while the program runs;
//! per-CPU values are written only on their CPU, so the `&mut` made of one
//! is not shared with another CPU (a program nesting on this CPU, an
//! interrupt, can at worst lose or tear one sample).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, generated::bpf_probe_read_kernel_str},
};
use netprobe_common::{
    counter,
    hist::{bucket_of, Hist, BUCKETS},
    name_key, pair_slot, DevInfo, DropKey, DropStackKey, EntryKey, PairKey,
};

use crate::{
    config,
    kernel::{read_u32, read_u64, Dev},
    maps::{bump, NP_DEVS, NP_DROPS, NP_DROP_STACK_COUNTS, NP_ENTRY, NP_FUNCS, NP_HOPS, NP_PAIRS, NP_ZERO},
};

/// Records what a `struct net_device *` is (name, ifindex, namespace,
/// link kind), the first time it appears in an aggregate (slow path only).
#[inline(never)]
fn note_dev_ptr(p: u64) {
    if p == 0 || NP_DEVS.get_ptr(&p).is_some() {
        return;
    }
    let c = config::reader();
    let name_off = c.get(|c| &c.off.dev_name) as u64;
    let ifx = c.get(|c| &c.off.dev_ifindex) as u64;
    let ndnet = c.get(|c| &c.off.dev_nd_net) as u64;
    let inum = c.get(|c| &c.off.net_ns_inum) as u64;
    let ops_off = c.get(|c| &c.off.dev_link_ops) as u64;
    let kind_off = c.get(|c| &c.off.link_ops_kind) as u64;
    let mut info = DevInfo::default();
    // SAFETY: bpf_probe_read_kernel is a fault-safe copy into a local
    // array; a bad address fails (counted), it never faults.
    if let Ok(n) = unsafe { bpf_probe_read_kernel((p + name_off) as *const [u8; 16]) } {
        info.name = n;
    } else {
        bump(counter::READ_FAILED);
    }
    info.ifindex = read_u32(p + ifx);
    info.netns = read_u32(read_u64(p + ndnet) + inum);
    if ops_off != 0 {
        let ops = read_u64(p + ops_off);
        let kind = read_u64(ops + kind_off);
        if kind >= 4096 {
            // The raw helper: aya's slice-returning wrapper has a panic path.
            // SAFETY: writes at most 16 bytes, the size of `info.kind`;
            // the source is read fault-safely (a bad address fails).
            unsafe { bpf_probe_read_kernel_str(info.kind.as_mut_ptr().cast(), 16, kind as *const _) };
        }
    }
    let _ = NP_DEVS.insert(&p, &info, BPF_NOEXIST as u64);
}

/// Records a classic tracepoint's device name under its name key.
#[inline(never)]
fn note_dev_name(name: &[u8; 16]) {
    let key = name_key(name);
    if NP_DEVS.get_ptr(&key).is_some() {
        return;
    }
    let info = DevInfo { name: *name, ..DevInfo::default() };
    let _ = NP_DEVS.insert(&key, &info, BPF_NOEXIST as u64);
}

/// Adds one hop-pair sample (`gap` ns) to the pair's histogram on this CPU.
///
/// A BPF subprogram, not inlined: every hop program reaches it from many
/// paths, and inlined it was most of each program's instructions (and of
/// what the loader holds in memory while it links them).
#[inline(never)]
pub(crate) fn aggregate(key: &PairKey, gap: u64, dev: Dev<'_>) {
    // The per-CPU pair cache first: an inlined array lookup.
    if let Some(slot) = NP_PAIRS.get_ptr_mut(pair_slot(key.origin, key.from_dev, key.from_hop, key.to_hop)) {
        // SAFETY: this CPU's element of NP_PAIRS (see the module's note).
        let slot = unsafe { &mut *slot };
        let k = &slot.key;
        let same = k.origin == key.origin
            && k.from_dev == key.from_dev
            && k.to_dev == key.to_dev
            && k.from_hop == key.from_hop
            && k.to_hop == key.to_hop
            && k.origin_hop == key.origin_hop;
        if same {
            add_sample(&mut slot.hist, gap);
            return;
        }
        if k.from_hop == 0 && k.to_hop == 0 {
            // Free on this CPU: claim it (first sample of the pair here).
            slot.key = *key;
            note_new_pair(key, dev);
            add_sample(&mut slot.hist, gap);
            return;
        }
    }
    // Taken by another pair: the hash map behind it.
    let h = match NP_HOPS.get_ptr_mut(key) {
        Some(h) => h,
        None => {
            let h = new_pair(key, dev);
            if h.is_null() {
                bump(counter::PAIR_LOST);
                return;
            }
            h
        }
    };
    // SAFETY: non-null, this CPU's value of NP_HOPS (see the module's note).
    add_sample(unsafe { &mut *h }, gap);
}

#[inline(always)]
fn add_sample(h: &mut Hist, v: u64) {
    h.count += 1;
    h.sum_ns += v;
    if v > h.max_ns {
        h.max_ns = v;
    }
    if h.min_ns == 0 || v < h.min_ns {
        h.min_ns = v;
    }
    let b = bucket_of(v);
    if b < BUCKETS {
        h.buckets[b] += 1;
    }
}

/// Entry of a function hop: remember when, for its time inside.
#[inline(always)]
pub(crate) fn fn_entered(hop: u8) {
    let key = EntryKey { pid_tgid: aya_ebpf::helpers::bpf_get_current_pid_tgid(), hop: hop as u32, _pad: 0 };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = NP_ENTRY.insert(&key, &now, 0);
}

/// Return of a function hop: add the time inside to its histogram.
#[inline(always)]
pub(crate) fn fn_returned(hop: u8) {
    let key = EntryKey { pid_tgid: aya_ebpf::helpers::bpf_get_current_pid_tgid(), hop: hop as u32, _pad: 0 };
    let Some(t0) = NP_ENTRY.get_ptr(&key) else {
        bump(counter::EXIT_UNMATCHED);
        return;
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions; `t0` is the value of
    // a live NP_ENTRY element, read before the element is removed.
    let took = unsafe { bpf_ktime_get_ns() }.wrapping_sub(unsafe { *t0 });
    let _ = NP_ENTRY.remove(&key);
    let id = hop as u32;
    let h = match NP_FUNCS.get_ptr_mut(&id) {
        Some(h) => h,
        None => {
            let Some(zero) = NP_ZERO.get_ptr(0) else {
                return;
            };
            // SAFETY: NP_ZERO's element, valid and never written.
            let _ = NP_FUNCS.insert(&id, unsafe { &*zero }, BPF_NOEXIST as u64);
            match NP_FUNCS.get_ptr_mut(&id) {
                Some(h) => h,
                None => {
                    bump(counter::PAIR_LOST);
                    return;
                }
            }
        }
    };
    // SAFETY: this CPU's value of NP_FUNCS (see the module's note).
    add_sample(unsafe { &mut *h }, took);
}

/// Slow path of [`aggregate`]: the first sample of a hop pair on this CPU.
/// Returns null when the map is full. (Inlined into [`aggregate`], which
/// is itself out of line: one copy per program.)
#[inline(always)]
fn new_pair(key: &PairKey, dev: Dev<'_>) -> *mut Hist {
    let Some(zero) = NP_ZERO.get_ptr(0) else {
        return core::ptr::null_mut();
    };
    // SAFETY: NP_ZERO's element, valid and never written.
    let _ = NP_HOPS.insert(key, unsafe { &*zero }, BPF_NOEXIST as u64);
    note_new_pair(key, dev);
    NP_HOPS.get_ptr_mut(key).unwrap_or(core::ptr::null_mut())
}

/// Describes the devices of a pair seen for the first time (on this CPU).
#[inline(always)]
fn note_new_pair(key: &PairKey, dev: Dev<'_>) {
    match dev {
        Dev::Ptr(p) => note_dev_ptr(p),
        Dev::Name(n) => note_dev_name(n),
        Dev::None => {}
    }
    if key.from_dev & netprobe_common::NAME_KEY_BIT == 0 {
        note_dev_ptr(key.from_dev);
    }
    if key.origin & netprobe_common::NAME_KEY_BIT == 0 {
        note_dev_ptr(key.origin);
    }
}

/// `--drop-stacks`: counts a drop by its key and kernel stack id on this
/// CPU (`NP_DROP_STACK_COUNTS`).
#[inline(never)]
pub(crate) fn count_drop_stack(key: &DropStackKey) {
    if let Some(c) = NP_DROP_STACK_COUNTS.get_ptr_mut(key) {
        // SAFETY: this CPU's value of NP_DROP_STACK_COUNTS (see the module's note).
        unsafe { *c += 1 };
        return;
    }
    if NP_DROP_STACK_COUNTS.insert(key, 1u64, BPF_NOEXIST as u64).is_err() {
        match NP_DROP_STACK_COUNTS.get_ptr_mut(key) {
            // SAFETY: as above.
            Some(c) => unsafe { *c += 1 },
            None => bump(counter::DROP_STACK_LOST),
        }
    }
}

/// Counts a drop by (origin, last device, reason, last hop) on this CPU.
#[inline(never)]
pub(crate) fn count_drop(key: &DropKey) {
    if let Some(c) = NP_DROPS.get_ptr_mut(key) {
        // SAFETY: this CPU's value of NP_DROPS (see the module's note).
        unsafe { *c += 1 };
        return;
    }
    if NP_DROPS.insert(key, 1u64, BPF_NOEXIST as u64).is_err() {
        // Lost a race with another insert of the same key, or the map is full.
        match NP_DROPS.get_ptr_mut(key) {
            // SAFETY: as above.
            Some(c) => unsafe { *c += 1 },
            None => bump(counter::DROP_LOST),
        }
    }
}
