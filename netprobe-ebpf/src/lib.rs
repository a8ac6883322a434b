//! netprobe's kernel programs.
//!
//! Every hop program, whatever its attach backend, ends in [`track`]: the
//! packet is identified by its skb address; the time since its previous hop
//! is added to the histogram of that (previous hop, hop, devices) pair in a
//! per-CPU map, so the always-on mode sends nothing per packet to userspace.
//! Struct offsets, per-hop flags and tracefs field offsets come from the
//! loader at load time (`NP_CONFIG`); nothing about the kernel's layout is
//! compiled in.
//!
//! `cargo xtask build` compiles this crate with `--cfg netprobe_bpf`: only
//! then is it `no_std` with its own panic handler. Without it (cargo
//! check, clippy, test) it is an ordinary library, so workspace-wide
//! feature unification cannot bring std in twice.
#![cfg_attr(netprobe_bpf, no_std)]
// Map keys and values are passed by reference on purpose: by value they
// would be copied onto the 512-byte BPF stack (a histogram is 4.7 KiB).
#![allow(clippy::needless_borrows_for_generic_args, reason = "see above")]

pub mod cpu;
pub mod functions;
pub mod programs;

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, generated::bpf_probe_read_kernel_str},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use netprobe_common::{
    counter,
    hist::{bucket_of, Hist, BUCKETS},
    hop, hop_flags, journey, name_key, pair_slot, track_slot, Config, DevInfo, DropKey, EntryKey, FlowFields,
    JourneyHop, JourneyRecord, PairKey, PairSlot, TrackState, EVENTS_BYTES, JOURNEY_HOPS, MAX_HOPS, PAIR_SLOTS,
    TRACK_SLOTS,
};

/// Load-time configuration, written by the loader before loading.
#[unsafe(no_mangle)]
static NP_CONFIG: Config = Config::zeroed();

#[map(name = "NP_TRACK")]
static NP_TRACK: Array<TrackState> = Array::with_max_entries(TRACK_SLOTS, 0);

#[map(name = "NP_HOPS")]
// Histograms are 4.7 KiB per CPU: allocated on first use (BPF_F_NO_PREALLOC),
// not for every possible entry on every CPU up front.
static NP_HOPS: PerCpuHashMap<PairKey, Hist> = PerCpuHashMap::with_max_entries(2048, BPF_F_NO_PREALLOC);

#[map(name = "NP_PAIRS")]
static NP_PAIRS: PerCpuArray<PairSlot> = PerCpuArray::with_max_entries(PAIR_SLOTS, 0);

/// Trace mode's per-packet events (bounded; losses counted).
#[map(name = "NP_EVENTS")]
static NP_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Trace mode: the journey so far of the packet in the same `NP_TRACK`
/// slot. The loader sizes it to one entry when not tracing (every lookup
/// past it fails, and nothing is gathered).
#[map(name = "NP_JOURNEY")]
static NP_JOURNEY: Array<JourneyRecord> = Array::with_max_entries(TRACK_SLOTS, 0);

#[map(name = "NP_DROPS")]
static NP_DROPS: PerCpuHashMap<DropKey, u64> = PerCpuHashMap::with_max_entries(2048, 0);

#[map(name = "NP_DEVS")]
static NP_DEVS: HashMap<u64, DevInfo> = HashMap::with_max_entries(1024, 0);

#[map(name = "NP_FILTER")]
static NP_FILTER: HashMap<u64, u8> = HashMap::with_max_entries(256, 0);

#[map(name = "NP_COUNTERS")]
static NP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Entry times of function hops awaiting their return (bounded: LRU).
#[map(name = "NP_ENTRY")]
static NP_ENTRY: LruHashMap<EntryKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// Time spent inside each hop function, from entry/exit pairs.
#[map(name = "NP_FUNCS")]
static NP_FUNCS: PerCpuHashMap<u32, Hist> = PerCpuHashMap::with_max_entries(256, BPF_F_NO_PREALLOC);

/// One word per CPU where [`scalar_of`] turns a typed pointer into a number.
#[map(name = "NP_SCRATCH")]
static NP_SCRATCH: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// One all-zero histogram, the initial value of a new hop-pair aggregate
/// (too large for the BPF stack). Never written.
#[map(name = "NP_ZERO")]
static NP_ZERO: PerCpuArray<Hist> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn cfg() -> &'static Config {
    // The loader rewrites NP_CONFIG in the object before loading; read it
    // through a volatile pointer so the compiler cannot fold the zeroes in.
    unsafe { &*core::ptr::read_volatile(&&raw const NP_CONFIG) }
}

/// `Config::bench` bits (0 in normal use).
#[inline(always)]
pub(crate) fn bench_bits() -> u32 {
    unsafe { core::ptr::read_volatile(&cfg().bench) }
}

/// The bench's floor: programs that return at once.
#[inline(always)]
pub(crate) fn empty() -> bool {
    bench_bits() & netprobe_common::bench::EMPTY != 0
}

#[inline(always)]
fn flags_of(hop: u8) -> u16 {
    let i = hop as usize;
    if i < MAX_HOPS {
        unsafe { core::ptr::read_volatile(&cfg().hop_flags[i]) }
    } else {
        0
    }
}

#[inline(always)]
fn bump(idx: u32) {
    if let Some(c) = NP_COUNTERS.get_ptr_mut(idx) {
        unsafe { *c += 1 };
    }
}

/// A kernel read: a plain load where the verifier knows the pointer's BTF
/// type (tp_btf and fentry arguments: it checks the field and the JIT
/// makes the load fault-safe, no helper call), else bpf_probe_read_kernel.
#[inline(always)]
fn load_u64<const DIRECT: bool>(addr: u64) -> u64 {
    if DIRECT {
        if addr < 4096 {
            return 0;
        }
        unsafe { core::ptr::read_volatile(addr as *const u64) }
    } else {
        read_u64(addr)
    }
}

#[inline(always)]
fn read_u64(addr: u64) -> u64 {
    if addr < 4096 {
        return 0;
    }
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.unwrap_or(0)
}

#[inline(always)]
fn read_u32(addr: u64) -> u32 {
    if addr < 4096 {
        return 0;
    }
    unsafe { bpf_probe_read_kernel(addr as *const u32) }.unwrap_or(0)
}

/// Where a hop's device comes from, decides how the device key is formed
/// and how the device is described.
#[derive(Clone, Copy)]
enum Dev<'a> {
    /// A `struct net_device *` (BTF-typed and raw tracepoints).
    Ptr(u64),
    /// A device name from a classic tracepoint record; the key is its hash.
    Name(&'a [u8; 16]),
    None,
}

impl Dev<'_> {
    #[inline(always)]
    fn key(&self) -> u64 {
        match self {
            Dev::Ptr(p) => *p,
            Dev::Name(n) => name_key(n),
            Dev::None => 0,
        }
    }
}

/// Key used in `NP_FILTER`: (netns inode << 32 | ifindex) for device
/// pointers, the name key for classic tracepoints.
#[inline(always)]
fn filter_key(dev: Dev<'_>) -> u64 {
    match dev {
        Dev::Ptr(p) => {
            let off = &cfg().off;
            let ifindex = read_u32(p + unsafe { core::ptr::read_volatile(&off.dev_ifindex) } as u64);
            let net = read_u64(p + unsafe { core::ptr::read_volatile(&off.dev_nd_net) } as u64);
            let inum = read_u32(net + unsafe { core::ptr::read_volatile(&off.net_ns_inum) } as u64);
            ((inum as u64) << 32) | ifindex as u64
        }
        other => other.key(),
    }
}

/// Whether a packet first seen on `dev` is to be followed: its device
/// is among `--iface`'s, and its headers pass `--filter`.
#[inline(always)]
fn passes_filter(dev: Dev<'_>, skb: u64, head: u64) -> bool {
    let enabled = unsafe { core::ptr::read_volatile(&cfg().filter_enabled) };
    if enabled != 0 && NP_FILTER.get_ptr(&filter_key(dev)).is_none() {
        return false;
    }
    if unsafe { core::ptr::read_volatile(&cfg().flow.enabled) } == 0 {
        return true;
    }
    if flow_passes(skb, head) != 0 {
        return true;
    }
    bump(counter::FLOW_EXCLUDED);
    false
}

#[inline(always)]
fn read_bytes<const N: usize>(addr: u64) -> Option<[u8; N]> {
    if addr < 4096 {
        return None;
    }
    unsafe { bpf_probe_read_kernel(addr as *const [u8; N]) }.ok()
}

#[inline(always)]
fn word(b: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The header fields the flow filter tests, parsed from the packet's
/// Ethernet header on (`skb->head + skb->mac_header`, one VLAN tag
/// skipped): EtherType, IPv4/IPv6 addresses and protocol, TCP/UDP/SCTP
/// ports. Fields it cannot read stay zero (the packet is then not IP).
#[inline(always)]
fn flow_fields(skb: u64, head: u64) -> FlowFields {
    let mut f = FlowFields::default();
    let off = &cfg().off;
    let (head_off, mac_off) = unsafe {
        (core::ptr::read_volatile(&off.skb_head) as u64, core::ptr::read_volatile(&off.skb_mac_header) as u64)
    };
    if head_off == 0 || mac_off == 0 {
        return f;
    }
    // The hop read skb->head already, except classic tracepoints.
    let head = if head != 0 { head } else { read_u64(skb + head_off) };
    let Some(mac) = read_bytes::<2>(skb + mac_off) else { return f };
    let mac = u16::from_ne_bytes(mac);
    if mac == 0xffff {
        return f; // no MAC header set yet
    }
    let mut l3 = head + mac as u64 + 14;
    let Some(eth) = read_bytes::<4>(l3 - 2) else { return f };
    let mut ethertype = u16::from_be_bytes([eth[0], eth[1]]) as u32;
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        let Some(tag) = read_bytes::<4>(l3) else { return f };
        ethertype = u16::from_be_bytes([tag[2], tag[3]]) as u32;
        l3 += 4;
    }
    f.ethertype = ethertype;
    let l4;
    if ethertype == 0x0800 {
        let Some(ip) = read_bytes::<20>(l3) else { return f };
        f.family = 4;
        f.proto = ip[9] as u32;
        f.saddr[0] = word(&ip, 12);
        f.daddr[0] = word(&ip, 16);
        if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
            return f; // a later fragment: no ports
        }
        l4 = l3 + ((ip[0] & 0x0f) as u64) * 4;
    } else if ethertype == 0x86dd {
        let Some(ip) = read_bytes::<40>(l3) else { return f };
        f.family = 6;
        f.proto = ip[6] as u32;
        let mut i = 0;
        while i < 4 {
            f.saddr[i] = word(&ip, 8 + 4 * i);
            f.daddr[i] = word(&ip, 24 + 4 * i);
            i += 1;
        }
        l4 = l3 + 40;
    } else {
        return f;
    }
    if f.proto == 6 || f.proto == 17 || f.proto == 132 {
        if let Some(p) = read_bytes::<4>(l4) {
            f.has_ports = 1;
            f.sport = u16::from_be_bytes([p[0], p[1]]) as u32;
            f.dport = u16::from_be_bytes([p[2], p[3]]) as u32;
        }
    }
    f
}

/// The flow filter (`NP_CONFIG.flow`, disjunctive normal form) on one
/// packet: 1 when it passes. Out of line: it runs only where tracking
/// would start, and only with `--filter`. The decision is
/// `FlowFilter::passes`, the one the loader's tests run; its fields are
/// read with plain loads, through the pointer of [`cfg`], which LLVM
/// cannot see through either.
#[inline(never)]
fn flow_passes(skb: u64, head: u64) -> u32 {
    let f = flow_fields(skb, head);
    cfg().flow.passes(&f) as u32
}

/// Records what a `struct net_device *` is (name, ifindex, namespace,
/// link kind), the first time it appears in an aggregate (slow path only).
#[inline(never)]
fn note_dev_ptr(p: u64) {
    if p == 0 || NP_DEVS.get_ptr(&p).is_some() {
        return;
    }
    let off = &cfg().off;
    let (name_off, ifx, ndnet, inum, ops_off, kind_off) = unsafe {
        (
            core::ptr::read_volatile(&off.dev_name) as u64,
            core::ptr::read_volatile(&off.dev_ifindex) as u64,
            core::ptr::read_volatile(&off.dev_nd_net) as u64,
            core::ptr::read_volatile(&off.net_ns_inum) as u64,
            core::ptr::read_volatile(&off.dev_link_ops) as u64,
            core::ptr::read_volatile(&off.link_ops_kind) as u64,
        )
    };
    let mut info = DevInfo::default();
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

#[inline(always)]
fn aggregate(key: &PairKey, gap: u64, dev: Dev<'_>) {
    // The per-CPU pair cache first: an inlined array lookup.
    if let Some(slot) = NP_PAIRS.get_ptr_mut(pair_slot(key.origin, key.from_dev, key.from_hop, key.to_hop)) {
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
fn fn_entered(hop: u8) {
    let key = EntryKey { pid_tgid: aya_ebpf::helpers::bpf_get_current_pid_tgid(), hop: hop as u32, _pad: 0 };
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = NP_ENTRY.insert(&key, &now, 0);
}

/// Return of a function hop: add the time inside to its histogram.
#[inline(always)]
fn fn_returned(hop: u8) {
    let key = EntryKey { pid_tgid: aya_ebpf::helpers::bpf_get_current_pid_tgid(), hop: hop as u32, _pad: 0 };
    let Some(t0) = NP_ENTRY.get_ptr(&key) else {
        bump(counter::EXIT_UNMATCHED);
        return;
    };
    let took = unsafe { bpf_ktime_get_ns() }.wrapping_sub(unsafe { *t0 });
    let _ = NP_ENTRY.remove(&key);
    let id = hop as u32;
    let h = match NP_FUNCS.get_ptr_mut(&id) {
        Some(h) => h,
        None => {
            let Some(zero) = NP_ZERO.get_ptr(0) else {
                return;
            };
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
    add_sample(unsafe { &mut *h }, took);
}

/// Slow path of [`aggregate`]: the first sample of a hop pair on this CPU.
/// Returns null when the map is full. (Kept out of line: it is cold.)
#[inline(always)]
fn new_pair(key: &PairKey, dev: Dev<'_>) -> *mut Hist {
    let Some(zero) = NP_ZERO.get_ptr(0) else {
        return core::ptr::null_mut();
    };
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

#[inline(never)]
fn count_drop(key: &DropKey) {
    if let Some(c) = NP_DROPS.get_ptr_mut(key) {
        unsafe { *c += 1 };
        return;
    }
    if NP_DROPS.insert(key, 1u64, BPF_NOEXIST as u64).is_err() {
        // Lost a race with another insert of the same key, or the map is full.
        match NP_DROPS.get_ptr_mut(key) {
            Some(c) => unsafe { *c += 1 },
            None => bump(counter::DROP_LOST),
        }
    }
}

/// A pointer's address as a plain number. tp_btf and fentry arguments are
/// typed pointers on which the verifier refuses arithmetic (hashing), and
/// it refuses to refill them from the stack by halves. Stored in a map
/// value (allowed to a privileged loader) and loaded back, the copy is a
/// scalar: a per-CPU word, an inlined lookup and plain accesses, where
/// `bpf_probe_read_kernel` was a helper call per hop. A program nesting on
/// this CPU (an interrupt) between the store and the load could overwrite
/// the word; each use bumps a generation word first, so a changed
/// generation says so, and the helper is used then. (The copy cannot be
/// compared with the pointer: the compiler would reuse the pointer.)
/// `DIRECT` says the pointer is typed.
#[inline(always)]
fn scalar_of<const DIRECT: bool>(p: u64) -> u64 {
    if !DIRECT {
        return p;
    }
    if bench_bits() & netprobe_common::bench::PROBE_LAUNDER == 0 {
        if let Some(w) = NP_SCRATCH.get_ptr_mut(0) {
            let w = w as *mut u64;
            unsafe {
                let gen = core::ptr::read_volatile(w).wrapping_add(1);
                core::ptr::write_volatile(w, gen);
                core::ptr::write_volatile(w.add(1), p);
                let v = core::ptr::read_volatile(w.add(1));
                if core::ptr::read_volatile(w) == gen {
                    return v;
                }
            }
        }
    }
    let spill = [p];
    unsafe { bpf_probe_read_kernel(spill.as_ptr()) }.unwrap_or(0)
}

/// Trace mode: whether hops are gathered into journeys.
#[inline(always)]
fn tracing() -> bool {
    (unsafe { core::ptr::read_volatile(&cfg().trace) }) != 0
}

/// Sends what a journey holds (with `flags`) and empties it. A record the
/// ring has no room for counts each of its events as lost.
#[inline(never)]
fn journey_send(j: &mut JourneyRecord, flags: u8) {
    if j.n == 0 {
        return;
    }
    j.flags = flags;
    // No wakeup per record (an irq_work each): the reader drains in
    // batches on its own clock.
    if NP_EVENTS.output::<JourneyRecord>(&*j, aya_ebpf::bindings::BPF_RB_NO_WAKEUP as u64).is_err() {
        if let Some(c) = NP_COUNTERS.get_ptr_mut(counter::EVENTS_LOST) {
            unsafe { *c += j.n as u64 };
        }
    }
    j.n = 0;
}

/// Trace mode: a packet's tracking starts in `slot` at this hop. Whatever
/// journey the slot held ends there, cut short.
#[inline(always)]
fn journey_start(slot: u32, skb: u64, now: u64, devkey: u64, hop: u8) {
    if !tracing() {
        return;
    }
    let Some(j) = NP_JOURNEY.get_ptr_mut(slot) else { return };
    let j = unsafe { &mut *j };
    journey_send(j, journey::CUT);
    j.skb = skb;
    j.ts = now;
    j.from_dev = devkey;
    j.from_hop = hop;
    j.first = 1;
}

/// Trace mode: a packet's tracking in `slot` ends without a terminal hop.
#[inline(always)]
fn journey_cut(slot: u32) {
    if !tracing() {
        return;
    }
    if let Some(j) = NP_JOURNEY.get_ptr_mut(slot) {
        journey_send(unsafe { &mut *j }, journey::CUT);
    }
}

/// Trace mode: one more hop of the packet in `slot` (one hop-pair event).
#[inline(always)]
fn journey_hop(slot: u32, skb: u64, now: u64, devkey: u64, hop: u8, gap: u64, terminal: bool) {
    let Some(j) = NP_JOURNEY.get_ptr_mut(slot) else { return };
    let j = unsafe { &mut *j };
    let i = j.n as usize;
    if j.skb != skb || i >= JOURNEY_HOPS {
        // Another CPU started another packet in this slot (a hash
        // collision) between this hop's tracking check and now: a few per
        // second at most under a flood. Counted, not lost silently.
        bump(counter::EVENTS_LOST);
        return;
    }
    j.hops[i] = JourneyHop {
        dev: devkey,
        gap_ns: if gap > u32::MAX as u64 { u32::MAX } else { gap as u32 },
        hop,
        _pad: 0,
        _pad2: 0,
    };
    j.n = i as u8 + 1;
    if terminal {
        journey_send(j, journey::END);
    } else if i + 1 == JOURNEY_HOPS {
        journey_send(j, 0);
        // The next stretch starts from this hop.
        j.ts = now;
        j.from_dev = devkey;
        j.from_hop = hop;
        j.first = 0;
    }
}

/// The heart of netprobe's kernel side: one hop of one packet.
#[inline(always)]
fn track(hop: u8, flags: u16, skb: u64, head: u64, net: u64, dev: Dev<'_>, reason: u32) {
    if skb == 0 {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let devkey = dev.key();
    let slot = track_slot(skb);
    let Some(st) = NP_TRACK.get_ptr_mut(slot) else { return };
    let st = unsafe { &mut *st };
    if st.skb == skb {
        let gap = now.wrapping_sub(st.ts);
        let prev = flags_of(st.hop);
        // Signs that this skb address now carries another packet.
        let reused = head != st.head
            || (prev & hop_flags::DELIVER != 0 && flags & (hop_flags::DELIVER | hop_flags::TERMINAL) == 0)
            // Received on a device, then queued for transmit on that same
            // device (both seen by the device tracepoints, whose device is
            // exact): a local reply in a recycled sk_buff (UDP frees
            // delivered skbs with no tracepoint), not a forwarded packet.
            || ((st.hop == hop::NETIF_RX || st.hop == hop::NETIF_RECEIVE_SKB || st.hop == hop::NAPI_GRO_RECEIVE_ENTRY)
                && (hop == hop::NET_DEV_QUEUE || hop == hop::NET_DEV_START_XMIT)
                && devkey != 0
                && devkey == st.dev)
            || (prev & hop_flags::RX != 0
                && flags & (hop_flags::TX | hop_flags::RX) != 0
                && net != 0
                && st.net != 0
                && net != st.net);
        if reused || gap > unsafe { core::ptr::read_volatile(&cfg().max_gap_ns) } {
            // The skb address now holds another packet (a new data buffer),
            // or the packet sat longer than max_gap: restart, never join.
            bump(if reused { counter::TRACK_REUSED } else { counter::TRACK_STALE });
            if flags & hop_flags::START != 0 && devkey != 0 && passes_filter(dev, skb, head) {
                *st = TrackState {
                    skb,
                    ts: now,
                    dev: devkey,
                    origin: devkey,
                    head,
                    net,
                    hop,
                    origin_hop: hop,
                    _pad: 0,
                    _pad2: 0,
                };
                bump(counter::TRACK_STARTED);
                // (Sends the old journey, cut short, first.)
                journey_start(slot, skb, now, devkey, hop);
            } else {
                st.skb = 0;
                journey_cut(slot);
            }
            return;
        }
        let key = PairKey {
            origin: st.origin,
            from_dev: st.dev,
            to_dev: devkey,
            from_hop: st.hop,
            to_hop: hop,
            origin_hop: st.origin_hop,
            _pad: 0,
            _pad2: 0,
        };
        aggregate(&key, gap, dev);
        if tracing() {
            journey_hop(slot, skb, now, devkey, hop, gap, flags & hop_flags::TERMINAL != 0);
        }
        if flags & hop_flags::DROP != 0 {
            count_drop(&DropKey {
                origin: st.origin,
                last_dev: st.dev,
                reason,
                last_hop: st.hop,
                origin_hop: st.origin_hop,
                _pad: [0; 2],
            });
        }
        if flags & hop_flags::TERMINAL != 0 {
            st.skb = 0;
            bump(counter::TRACK_ENDED);
        } else {
            st.ts = now;
            st.hop = hop;
            if devkey != 0 {
                st.dev = devkey;
                st.net = net;
            }
        }
        return;
    }
    if flags & hop_flags::START == 0 || devkey == 0 {
        return;
    }
    if !passes_filter(dev, skb, head) {
        return;
    }
    if st.skb != 0 {
        // Another packet's state: it loses its slot, counted.
        bump(counter::TRACK_EVICTED);
    }
    *st = TrackState { skb, ts: now, dev: devkey, origin: devkey, head, net, hop, origin_hop: hop, _pad: 0, _pad2: 0 };
    bump(counter::TRACK_STARTED);
    journey_start(slot, skb, now, devkey, hop);
}

/// Entry of a function hop in slot `slot`, its skb already fetched (0 if
/// the function has none): time inside, then the packet's hop.
#[inline(always)]
fn slot_entry<const DIRECT: bool>(hop: u8, skb: u64) {
    let flags = flags_of(hop);
    if flags & hop_flags::ENABLED == 0 {
        return;
    }
    fn_entered(hop);
    if skb != 0 {
        ptr_hop::<DIRECT>(hop, skb, 0, 0);
    }
}

/// Entry for BTF-typed and raw tracepoints: the tracepoint's arguments are
/// the traced function's (skb first; the device second for
/// `net_dev_start_xmit`; the drop reason third for `kfree_skb`).
#[inline(always)]
fn ptr_hop<const DIRECT: bool>(hop: u8, skb: u64, arg1: u64, arg2: u64) {
    if empty() {
        return;
    }
    let flags = flags_of(hop);
    if flags & hop_flags::ENABLED == 0 {
        return;
    }
    let dev = if flags & hop_flags::DEV_ARG1 != 0 {
        arg1
    } else if flags & hop_flags::SKB_DEV != 0 {
        let off = unsafe { core::ptr::read_volatile(&cfg().off.skb_dev) } as u64;
        if off == 0 {
            0
        } else {
            load_u64::<DIRECT>(skb + off)
        }
    } else {
        0
    };
    let dev = if dev == 0 { Dev::None } else { Dev::Ptr(dev) };
    let reason = if flags & hop_flags::DROP != 0 { arg2 as u32 } else { 0 };
    let head_off = unsafe { core::ptr::read_volatile(&cfg().off.skb_head) } as u64;
    let head = if head_off == 0 { 0 } else { load_u64::<DIRECT>(skb + head_off) };
    let net = match dev {
        Dev::Ptr(p) => load_u64::<DIRECT>(p + unsafe { core::ptr::read_volatile(&cfg().off.dev_nd_net) } as u64),
        _ => 0,
    };
    track(hop, flags, scalar_of::<DIRECT>(skb), head, net, dev, reason);
}

/// Entry for classic tracefs tracepoints: fields at the offsets the loader
/// read from each tracepoint's `format` file; devices identified by name.
#[inline(always)]
fn classic_hop(ctx: &aya_ebpf::programs::TracePointContext, hop: u8) {
    if empty() {
        return;
    }
    let flags = flags_of(hop);
    if flags & hop_flags::ENABLED == 0 {
        return;
    }
    let f = unsafe { core::ptr::read_volatile(&cfg().classic[(hop as usize) & (MAX_HOPS - 1)]) };
    let skb: u64 = match unsafe { ctx.read_at::<u64>(f.skbaddr as usize) } {
        Ok(v) => v,
        Err(_) => {
            bump(counter::READ_FAILED);
            return;
        }
    };
    let mut name = [0u8; 16];
    if f.name_loc != 0 {
        if let Ok(loc) = unsafe { ctx.read_at::<u32>(f.name_loc as usize) } {
            let off = (loc & 0xffff) as usize;
            if let Ok(n) = unsafe { ctx.read_at::<[u8; 16]>(off) } {
                name = n;
            }
        }
    }
    let reason = if f.reason != 0 { unsafe { ctx.read_at::<u32>(f.reason as usize) }.unwrap_or(0) } else { 0 };
    let dev = if name[0] == 0 { Dev::None } else { Dev::Name(&name) };
    // No BTF, no offset of skb->head: identity is the address (and max_gap).
    track(hop, flags, skb, 0, 0, dev, reason);
}

#[cfg(netprobe_bpf)]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
