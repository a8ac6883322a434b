//! The per-packet state machine, the heart of the kernel side: every hop
//! program ends in [`track`], through [`ptr_hop`] (BTF-typed and raw
//! tracepoints, fentry and kprobe slots) or [`classic_hop`] (tracefs
//! tracepoints). A packet is its skb address, in its slot of `NP_TRACK`;
//! the time since its previous hop goes to the hop pair's histogram
//! (`aggregation`), to its journey in trace mode (`journeys`), and a
//! recycled skb address or a stale packet starts anew (README, "Packet
//! identity").
//!
//! An `NP_TRACK` slot is an array element, valid while the program runs.
//! Two CPUs write the same slot at once only for two packets whose
//! addresses hash alike: the state is then one packet's or the other's
//! (each field is a plain store), which the skb check at the next hop
//! sorts out, as with any eviction.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::tracing::StackIdContext};
use netprobe_common::{counter, hop, hop_flags, track_slot, DropKey, DropStackKey, PairKey, TrackState};

use crate::{
    aggregation::{aggregate, count_drop, count_drop_stack, fn_entered, fn_returned},
    chain, config,
    flow::{fingerprint, passes_filter, sampled_in, MAC_UNREAD},
    journeys::{journey_cut, journey_hop, journey_start},
    kernel::{load_u16, load_u64, scalar_of, Dev},
    maps::{bump, NP_DROP_STACKS, NP_TRACK},
};

/// -EEXIST: `bpf_get_stackid` found the stack's bucket holding another
/// stack (netprobe never passes BPF_F_REUSE_STACKID, see `count_dropped`).
const EEXIST: i64 = 17;

/// The heart of netprobe's kernel side: one hop of one packet. `head` is
/// `skb->head` (0: unread), `mac` its `skb->mac_header` (`MAC_UNREAD`:
/// read only where a fingerprint needs it). `stack` gives the kernel
/// stack id of the program's context; it is called only for a counted
/// drop with `--drop-stacks`.
#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "one hop as its program read it; always inlined, so no call passes them")]
pub(crate) fn track(
    hop: u8,
    flags: u16,
    skb: u64,
    head: u64,
    mac: u32,
    net: u64,
    dev: Dev<'_>,
    reason: u32,
    stack: impl FnOnce() -> i64,
) {
    if skb == 0 {
        return;
    }
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let devkey = dev.key();
    let slot = track_slot(skb);
    let Some(st) = NP_TRACK.get_ptr_mut(slot) else { return };
    // SAFETY: an NP_TRACK element (see the module's note).
    let st = unsafe { &mut *st };
    if st.skb == skb {
        let gap = now.wrapping_sub(st.ts);
        let prev = config::hop_flags(st.hop);
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
        // A step no packet takes (README, "Packet identity"): after a
        // queue, the next tracepoint hop at a device is the transmit on
        // that device; after netif_rx or GRO, it is the receive; and no
        // packet waits after a transmit or a receive before a hop where
        // tracking could start. Function hops are never judged.
        let at_device = hop < hop::FIRST_FUNCTION && devkey != 0;
        let impossible = at_device
            && ((prev & hop_flags::NEXT_XMIT != 0 && !(hop == hop::NET_DEV_START_XMIT && devkey == st.dev))
                || (prev & hop_flags::NEXT_RECEIVE != 0 && hop != hop::NETIF_RECEIVE_SKB));
        // (The config is read only where the rule applies.)
        let late = at_device && prev & hop_flags::DIRECT != 0 && flags & hop_flags::START != 0 && {
            let direct_gap = config::get(|c| &c.direct_gap_ns);
            direct_gap != 0 && gap > direct_gap
        };
        let restart = if reused {
            counter::TRACK_REUSED
        } else if impossible {
            counter::TRACK_IMPOSSIBLE
        } else if late {
            counter::TRACK_LATE
        } else if gap > config::get(|c| &c.max_gap_ns) {
            counter::TRACK_STALE
        } else if fingerprint_changed(st.fp, gap, skb, head, mac) {
            counter::TRACK_FINGERPRINT
        } else {
            u32::MAX
        };
        if st.excluded != 0 {
            // A packet the sample left out: the same rules tell whether
            // it is still that packet (then nothing more to do), or
            // another one in its sk_buff, decided afresh below.
            if restart == u32::MAX && flags & hop_flags::TERMINAL == 0 {
                st.ts = now;
                st.hop = hop;
                if devkey != 0 {
                    st.dev = devkey;
                    st.net = net;
                }
                return;
            }
            st.skb = 0;
            if restart == u32::MAX {
                return;
            }
        } else if restart != u32::MAX {
            // The skb address now holds another packet (a new data buffer,
            // a step no packet takes), or the packet sat longer than
            // max_gap: restart, never join.
            bump(restart);
            match begin(flags, devkey, dev, skb, head, mac) {
                Begin::Follow(fp) => {
                    *st = followed(skb, now, devkey, head, net, hop, fp);
                    bump(counter::TRACK_STARTED);
                    if config::chains() {
                        chain::skb_started(hop, devkey, dev, now);
                    }
                    // (Sends the old journey, cut short, first.)
                    journey_start(slot, skb, now, devkey, hop);
                    st.ts = done(now);
                    return;
                }
                Begin::LeftOut => *st = left_out(skb, now, devkey, head, net, hop),
                Begin::No => st.skb = 0,
            }
            journey_cut(slot);
            return;
        }
        if st.excluded == 0 {
            // The same packet, one hop on.
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
            if config::tracing() {
                journey_hop(slot, skb, now, devkey, hop, gap, flags & hop_flags::TERMINAL != 0);
            }
            if flags & hop_flags::DROP != 0 {
                let drop = DropKey {
                    origin: st.origin,
                    last_dev: st.dev,
                    reason,
                    last_hop: st.hop,
                    origin_hop: st.origin_hop,
                    _pad: [0; 2],
                };
                count_drop(&drop);
                if config::drop_stacks() {
                    count_dropped(drop, stack());
                }
            }
            if config::chains() {
                if flags & hop_flags::DELIVER != 0 {
                    chain::delivered(devkey, st.origin, dev);
                } else if flags & hop_flags::TERMINAL != 0 && prev & hop_flags::DELIVER != 0 {
                    chain::freed_after_delivery(st.dev, st.origin, st.origin_hop, now);
                }
            }
            if flags & hop_flags::TERMINAL != 0 {
                st.skb = 0;
                bump(counter::TRACK_ENDED);
            } else {
                st.hop = hop;
                if devkey != 0 {
                    st.dev = devkey;
                    st.net = net;
                }
                st.ts = done(now);
            }
            return;
        }
        // (A left-out packet whose sk_buff now holds another: decided
        // afresh below.)
    }
    // Another followed packet's state, which a new one would evict.
    let evicts = st.skb != 0 && st.excluded == 0;
    match begin(flags, devkey, dev, skb, head, mac) {
        Begin::Follow(fp) => {
            if evicts {
                // Another packet's state: it loses its slot, counted.
                bump(counter::TRACK_EVICTED);
            }
            *st = followed(skb, now, devkey, head, net, hop, fp);
        }
        // Remembered where no followed packet would lose its slot for it.
        Begin::LeftOut if !evicts => {
            *st = left_out(skb, now, devkey, head, net, hop);
            return;
        }
        _ => return,
    }
    bump(counter::TRACK_STARTED);
    if config::chains() {
        chain::skb_started(hop, devkey, dev, now);
    }
    journey_start(slot, skb, now, devkey, hop);
    st.ts = done(now);
}

/// The time a followed packet's hop is done with, which its next hop
/// measures from: the clock read again after this program's own work
/// (the pair's histogram, the header reads where tracking starts), so a
/// hop pair's latency leaves out netprobe's time at the first hop. That
/// time is not small next to a short step (a few hundred ns on a
/// queue -> xmit of 400-600 ns), and it grows when netprobe's maps are
/// cold: under `--sample` the followed packets are far apart and their
/// pairs measured 1.4 to 1.6 times a full run's (median over pairs; the
/// test `sampled_percentiles_match_full_runs_on_a_steady_load`).
/// (`now`: the hop's entry time, kept instead under the bench's
/// `ONE_CLOCK`, to measure what this second read costs.)
#[inline(always)]
fn done(now: u64) -> u64 {
    if config::bench_bits() & netprobe_common::bench::ONE_CLOCK != 0 {
        return now;
    }
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// What a hop where tracking may start does with a packet not followed.
enum Begin {
    /// Follow it, with this header fingerprint (0: not checked).
    Follow(u32),
    /// `--sample` leaves it out.
    LeftOut,
    /// Not a start hop, or the device or flow filter excludes it.
    No,
}

/// Whether tracking starts here. The header fingerprint is read once,
/// for the sample's decision and for the identity check after long gaps
/// (`--fingerprint-gap`); the sample is decided before the filters, so a
/// packet it leaves out costs no filter lookups, and a packet followed
/// pays no second header read.
#[inline(always)]
fn begin(flags: u16, devkey: u64, dev: Dev<'_>, skb: u64, head: u64, mac: u32) -> Begin {
    if flags & hop_flags::START == 0 || devkey == 0 {
        return Begin::No;
    }
    let every = config::get(|c| &c.sample_every);
    let check = config::get(|c| &c.fingerprint_gap_ns) != 0;
    let fp = if every > 1 || check { fingerprint(skb, head, mac) } else { 0 };
    if every > 1 && !sampled_in(fp, skb, head, every) {
        return Begin::LeftOut;
    }
    if !passes_filter(dev, skb, head) {
        return Begin::No;
    }
    Begin::Follow(if check { fp } else { 0 })
}

/// The state of a packet followed from this hop.
#[inline(always)]
fn followed(skb: u64, now: u64, devkey: u64, head: u64, net: u64, hop: u8, fp: u32) -> TrackState {
    TrackState { skb, ts: now, dev: devkey, origin: devkey, head, net, hop, origin_hop: hop, excluded: 0, fp }
}

/// The state of a packet `--sample` left out, at its first hop.
#[inline(always)]
fn left_out(skb: u64, now: u64, devkey: u64, head: u64, net: u64, hop: u8) -> TrackState {
    TrackState { skb, ts: now, dev: devkey, origin: devkey, head, net, hop, origin_hop: hop, excluded: 1, fp: 0 }
}

/// Whether a tracked packet seen again after a long gap carries other
/// headers than where it started: an sk_buff recycled with its data
/// buffer (README, "Packet identity"). Headers are read again only after
/// such a gap, so the common, quick hop pays one comparison; a side whose
/// headers cannot be read (0) is never judged.
#[inline(always)]
fn fingerprint_changed(started: u32, gap: u64, skb: u64, head: u64, mac: u32) -> bool {
    if started == 0 {
        return false;
    }
    let after = config::get(|c| &c.fingerprint_gap_ns);
    // `gap > after`, tested on the difference rather than on `gap`
    // itself: a test on `gap` would give the verifier a lower bound for
    // it (after + 1), and Debian 6.1's verifier then walks the histogram's
    // `gap < 16` branch anyway, with bounds that contradict each other,
    // and rejects the bucket's address as a scalar (every hop program
    // with tracking refused in the amd64 lab).
    let over = gap.wrapping_sub(after as u64);
    if after == 0 || over == 0 || over >> 63 != 0 {
        return false;
    }
    let now = fingerprint(skb, head, mac);
    now != 0 && now != started
}

/// `--drop-stacks`: a counted drop's stack id (or `bpf_get_stackid`'s
/// error). The stack map is used without BPF_F_REUSE_STACKID, which would
/// let a new stack take an old one's id, so counts already made under
/// that id would silently name the wrong stack; and without
/// BPF_F_FAST_STACK_CMP, which would give two different stacks of the
/// same hash one id: drops are rare next to packets, and the kernel's
/// full comparison of the frames is worth its cost there. What is
/// refused instead (-EEXIST) is counted, never silent.
#[inline(always)]
fn count_dropped(drop: DropKey, id: i64) {
    if id >= 0 {
        count_drop_stack(&DropStackKey { drop, stack_id: id as u32, _pad: 0 });
    } else if id == -EEXIST {
        bump(counter::DROP_STACK_COLLISION);
    } else {
        bump(counter::DROP_STACK_FAILED);
    }
}

/// Entry of a function hop in slot `slot`, its skb already fetched (0 if
/// the function has none): time inside, the thread chain's step for a
/// chain hop (`arg0` reads its first argument), then the packet's hop.
#[inline(always)]
pub(crate) fn slot_entry<const DIRECT: bool>(hop: u8, skb: u64, arg0: impl FnOnce() -> u64) {
    let flags = config::hop_flags(hop);
    if flags & hop_flags::ENABLED == 0 {
        return;
    }
    fn_entered(hop);
    if flags & hop_flags::CHAIN != 0 {
        // (A chain hop's first argument is a pointer of another type than
        // sk_buff: as a number, for the map key.)
        if flags & hop_flags::CHAIN_KICK != 0 {
            chain::kicked(scalar_of::<DIRECT>(arg0()));
        } else if flags & hop_flags::CHAIN_WORKER != 0 {
            chain::worker_runs(hop, scalar_of::<DIRECT>(arg0()));
        } else if flags & hop_flags::CHAIN_SEND != 0 {
            chain::sends(hop);
        } else {
            chain::signals(hop);
        }
    }
    if skb != 0 {
        // (No function hop is a drop: no stack is ever asked for.)
        ptr_hop::<DIRECT>(hop, skb, 0, 0, || -1);
    }
}

/// Return of a function hop: its time inside, and the end of a send or
/// of a worker's run for thread chains.
#[inline(always)]
pub(crate) fn slot_return(hop: u8) {
    let flags = config::hop_flags(hop);
    if flags & hop_flags::ENABLED == 0 {
        return;
    }
    fn_returned(hop);
    if flags & (hop_flags::CHAIN_SEND | hop_flags::CHAIN_WORKER) != 0 {
        chain::returned(hop, flags);
    }
}

/// Entry for BTF-typed and raw tracepoints: the tracepoint's arguments are
/// the traced function's (skb first; the device second for
/// `net_dev_start_xmit`; the drop reason third for `kfree_skb`).
#[inline(always)]
pub(crate) fn ptr_hop<const DIRECT: bool>(hop: u8, skb: u64, arg1: u64, arg2: u64, stack: impl FnOnce() -> i64) {
    if config::empty() {
        return;
    }
    let flags = config::hop_flags(hop);
    if flags & hop_flags::ENABLED == 0 {
        return;
    }
    let dev = if flags & hop_flags::DEV_ARG1 != 0 {
        arg1
    } else if flags & hop_flags::SKB_DEV != 0 {
        let off = config::get(|c| &c.off.skb_dev) as u64;
        if off == 0 {
            0
        } else {
            load_u64::<DIRECT>(skb + off)
        }
    } else {
        0
    };
    let reason = if flags & hop_flags::DROP != 0 { arg2 as u32 } else { 0 };
    let head_off = config::get(|c| &c.off.skb_head) as u64;
    let head = if head_off == 0 { 0 } else { load_u64::<DIRECT>(skb + head_off) };
    // Typed, `skb->mac_header` is a plain load next to `head`; else a
    // helper call, made only where a fingerprint is taken.
    let mac_off = config::get(|c| &c.off.skb_mac_header) as u64;
    let mac = if DIRECT && mac_off != 0 && head != 0 { load_u16::<DIRECT>(skb + mac_off) as u32 } else { MAC_UNREAD };
    // From the plain number, not from a `Dev`: a `Dev::None` has no
    // payload, and LLVM may load a variant's payload before testing the
    // variant. The s390x build did here, reading a stack slot that no
    // store on this path wrote, and Debian's 6.1 refused every kprobe hop
    // ("invalid read from stack R10 off=-128 size=8").
    let net = if dev == 0 { 0 } else { load_u64::<DIRECT>(dev + config::get(|c| &c.off.dev_nd_net) as u64) };
    let dev = if dev == 0 { Dev::None } else { Dev::Ptr(dev) };
    track(hop, flags, scalar_of::<DIRECT>(skb), head, mac, net, dev, reason, stack);
}

/// Entry for classic tracefs tracepoints: fields at the offsets the loader
/// read from each tracepoint's `format` file; devices identified by name.
#[inline(always)]
pub(crate) fn classic_hop(ctx: &aya_ebpf::programs::TracePointContext, hop: u8) {
    if config::empty() {
        return;
    }
    let flags = config::hop_flags(hop);
    if flags & hop_flags::ENABLED == 0 {
        return;
    }
    let f = config::classic(hop);
    // SAFETY: `read_at` copies from the tracepoint record with
    // bpf_probe_read_kernel: fault-safe, an offset past the record fails.
    let skb: u64 = match unsafe { ctx.read_at::<u64>(f.skbaddr as usize) } {
        Ok(v) => v,
        Err(_) => {
            bump(counter::READ_FAILED);
            return;
        }
    };
    let mut name = [0u8; 16];
    if f.name_loc != 0 {
        // SAFETY: as for `skb`: a fault-safe copy from the record.
        if let Ok(loc) = unsafe { ctx.read_at::<u32>(f.name_loc as usize) } {
            let off = (loc & 0xffff) as usize;
            // SAFETY: as for `skb`; the name's offset comes from the record.
            if let Ok(n) = unsafe { ctx.read_at::<[u8; 16]>(off) } {
                name = n;
            }
        }
    }
    let reason = if f.reason != 0 {
        // SAFETY: as for `skb`: a fault-safe copy from the record.
        unsafe { ctx.read_at::<u32>(f.reason as usize) }.unwrap_or(0)
    } else {
        0
    };
    let dev = if name[0] == 0 { Dev::None } else { Dev::Name(&name) };
    // No BTF, no offset of skb->head: identity is the address (and max_gap).
    track(hop, flags, skb, 0, MAC_UNREAD, 0, dev, reason, || drop_stack_id(ctx));
}

/// The kernel stack id of a program's context in `NP_DROP_STACKS`, or
/// `bpf_get_stackid`'s negative error (flags 0: the kernel stack, whole,
/// compared frame by frame; see `count_dropped`).
#[inline(always)]
pub(crate) fn drop_stack_id<C: StackIdContext>(ctx: &C) -> i64 {
    match ctx.get_stackid(&NP_DROP_STACKS, 0) {
        Ok(id) => id,
        Err(e) => e as i64,
    }
}
