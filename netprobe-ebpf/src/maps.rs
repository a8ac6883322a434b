//! Every map of the BPF object (named as in `netprobe_common::names`),
//! and the counters of `NP_COUNTERS` every other module bumps.
//!
//! Map keys and values are passed by reference on purpose: by value they
//! would be copied onto the 512-byte BPF stack (a histogram is 4.7 KiB).

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use netprobe_common::{
    counter, hist::Hist, CpuTime, DevInfo, DropKey, EntryKey, JourneyRecord, PairKey, PairSlot, TrackState,
    EVENTS_BYTES, PAIR_SLOTS, TRACK_SLOTS,
};

/// The packets being followed: one [`TrackState`] per slot of a hash
/// of the skb address (direct-mapped).
#[map(name = "NP_TRACK")]
pub(crate) static NP_TRACK: Array<TrackState> = Array::with_max_entries(TRACK_SLOTS, 0);

// Histograms are 4.7 KiB per CPU: allocated on first use (BPF_F_NO_PREALLOC),
// not for every possible entry on every CPU up front.
#[map(name = "NP_HOPS")]
pub(crate) static NP_HOPS: PerCpuHashMap<PairKey, Hist> = PerCpuHashMap::with_max_entries(2048, BPF_F_NO_PREALLOC);

#[map(name = "NP_PAIRS")]
pub(crate) static NP_PAIRS: PerCpuArray<PairSlot> = PerCpuArray::with_max_entries(PAIR_SLOTS, 0);

/// Trace mode's per-packet events (bounded; losses counted).
#[map(name = "NP_EVENTS")]
pub(crate) static NP_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Trace mode: the journey so far of the packet in the same `NP_TRACK`
/// slot. The loader sizes it to one entry when not tracing (every lookup
/// past it fails, and nothing is gathered).
#[map(name = "NP_JOURNEY")]
pub(crate) static NP_JOURNEY: Array<JourneyRecord> = Array::with_max_entries(TRACK_SLOTS, 0);

#[map(name = "NP_DROPS")]
pub(crate) static NP_DROPS: PerCpuHashMap<DropKey, u64> = PerCpuHashMap::with_max_entries(2048, 0);

#[map(name = "NP_DEVS")]
pub(crate) static NP_DEVS: HashMap<u64, DevInfo> = HashMap::with_max_entries(1024, 0);

#[map(name = "NP_FILTER")]
pub(crate) static NP_FILTER: HashMap<u64, u8> = HashMap::with_max_entries(256, 0);

#[map(name = "NP_COUNTERS")]
pub(crate) static NP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Entry times of function hops awaiting their return (bounded: LRU).
#[map(name = "NP_ENTRY")]
pub(crate) static NP_ENTRY: LruHashMap<EntryKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// Time spent inside each hop function, from entry/exit pairs.
#[map(name = "NP_FUNCS")]
pub(crate) static NP_FUNCS: PerCpuHashMap<u32, Hist> = PerCpuHashMap::with_max_entries(256, BPF_F_NO_PREALLOC);

/// One word per CPU where `kernel::scalar_of` turns a typed pointer
/// into a number.
#[map(name = "NP_SCRATCH")]
pub(crate) static NP_SCRATCH: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// One all-zero histogram, the initial value of a new hop-pair aggregate
/// (too large for the BPF stack). Never written.
#[map(name = "NP_ZERO")]
pub(crate) static NP_ZERO: PerCpuArray<Hist> = PerCpuArray::with_max_entries(1, 0);

/// On-CPU time per thread.
#[map(name = "NP_CPU")]
pub(crate) static NP_CPU: LruHashMap<u64, CpuTime> = LruHashMap::with_max_entries(16384, 0);

/// Index 0: time of the last switch on this CPU.
#[map(name = "NP_CPU_LAST")]
pub(crate) static NP_CPU_LAST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Indices 0..16: softirq ns by vector; 16: entry time of the running one.
#[map(name = "NP_SOFTIRQ")]
pub(crate) static NP_SOFTIRQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(17, 0);

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
