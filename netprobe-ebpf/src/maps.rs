//! Every map of the BPF object, declared under its name from
//! `netprobe_common::names` (through `bpf_map!`, so the loader and the
//! programs name each map from one list), and the counters of
//! `NP_COUNTERS` every other module bumps.
//!
//! Map keys and values are passed by reference on purpose: by value they
//! would be copied onto the 512-byte BPF stack (a histogram is 4.7 KiB).

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
};
use netprobe_common::{
    bpf_map, counter, hist::Hist, CpuTime, DevInfo, DropKey, DropStackKey, EntryKey, JourneyRecord, PairKey, PairSlot,
    ThreadChain, TrackState, DROP_STACK_COUNT_ENTRIES, DROP_STACK_ENTRIES, EVENTS_BYTES, PAIR_SLOTS, TRACK_SLOTS,
};

bpf_map! {
    /// The packets being followed: one [`TrackState`] per slot of a hash
    /// of the skb address (direct-mapped).
    pub(crate) TRACK: Array<TrackState> = Array::with_max_entries(TRACK_SLOTS, 0)
}

bpf_map! {
    // Histograms are 4.7 KiB per CPU: allocated on first use (BPF_F_NO_PREALLOC),
    // not for every possible entry on every CPU up front.
    pub(crate) HOPS: PerCpuHashMap<PairKey, Hist> = PerCpuHashMap::with_max_entries(2048, BPF_F_NO_PREALLOC)
}

bpf_map! {
    pub(crate) PAIRS: PerCpuArray<PairSlot> = PerCpuArray::with_max_entries(PAIR_SLOTS, 0)
}

bpf_map! {
    /// Trace mode's per-packet events (bounded; losses counted).
    pub(crate) EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0)
}

bpf_map! {
    /// Trace mode: the journey so far of the packet in the same `NP_TRACK`
    /// slot. The loader sizes it to one entry when not tracing (every lookup
    /// past it fails, and nothing is gathered).
    pub(crate) JOURNEY: Array<JourneyRecord> = Array::with_max_entries(TRACK_SLOTS, 0)
}

bpf_map! {
    pub(crate) DROPS: PerCpuHashMap<DropKey, u64> = PerCpuHashMap::with_max_entries(2048, 0)
}

bpf_map! {
    /// `--drop-stacks`: the kernel stacks of drops. The loader sizes it to
    /// one entry otherwise (nothing is written then).
    pub(crate) DROP_STACKS: StackTrace = StackTrace::with_max_entries(DROP_STACK_ENTRIES, 0)
}

bpf_map! {
    /// `--drop-stacks`: drops per (drop key, stack id) (one entry otherwise).
    pub(crate) DROP_STACK_COUNTS: PerCpuHashMap<DropStackKey, u64> =
        PerCpuHashMap::with_max_entries(DROP_STACK_COUNT_ENTRIES, 0)
}

bpf_map! {
    pub(crate) DEVS: HashMap<u64, DevInfo> = HashMap::with_max_entries(1024, 0)
}

bpf_map! {
    pub(crate) FILTER: HashMap<u64, u8> = HashMap::with_max_entries(256, 0)
}

bpf_map! {
    pub(crate) COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0)
}

bpf_map! {
    /// Entry times of function hops awaiting their return (bounded: LRU).
    pub(crate) ENTRY: LruHashMap<EntryKey, u64> = LruHashMap::with_max_entries(16384, 0)
}

bpf_map! {
    /// Time spent inside each hop function, from entry/exit pairs.
    pub(crate) FUNCS: PerCpuHashMap<u32, Hist> = PerCpuHashMap::with_max_entries(256, BPF_F_NO_PREALLOC)
}

bpf_map! {
    /// One word per CPU where `kernel::scalar_of` turns a typed pointer
    /// into a number.
    pub(crate) SCRATCH: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0)
}

bpf_map! {
    /// One all-zero histogram, the initial value of a new hop-pair aggregate
    /// (too large for the BPF stack). Never written.
    pub(crate) ZERO: PerCpuArray<Hist> = PerCpuArray::with_max_entries(1, 0)
}

bpf_map! {
    /// On-CPU time per thread.
    pub(crate) CPU: LruHashMap<u64, CpuTime> = LruHashMap::with_max_entries(16384, 0)
}

bpf_map! {
    /// Index 0: time of the last switch on this CPU.
    pub(crate) CPU_LAST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0)
}

bpf_map! {
    /// Indices 0..16: softirq ns by vector; 16: entry time of the running one.
    pub(crate) SOFTIRQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(17, 0)
}

bpf_map! {
    /// Thread chains: the first pending kick of each work item, by the
    /// work item's address (bounded: LRU; a kick evicted before its worker
    /// runs is counted as missed there).
    pub(crate) KICKS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0)
}

bpf_map! {
    /// Thread chains: this CPU's (`chain`).
    pub(crate) CHAIN: PerCpuArray<ThreadChain> = PerCpuArray::with_max_entries(1, 0)
}

/// Adds one to counter `idx` of `NP_COUNTERS` on this CPU.
#[inline(always)]
pub(crate) fn bump(idx: u32) {
    add(idx, 1);
}

/// Adds `n` to counter `idx` of `NP_COUNTERS` on this CPU.
#[inline(always)]
pub(crate) fn add(idx: u32, n: u64) {
    if let Some(c) = NP_COUNTERS.get_ptr_mut(idx) {
        // SAFETY: a per-CPU array element, valid while the program runs and
        // written only on this CPU; a program nesting here (an interrupt)
        // can at worst lose one count, as any per-CPU counter.
        unsafe { *c += n };
    }
}
