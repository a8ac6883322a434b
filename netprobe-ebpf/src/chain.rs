//! Thread chains: the steps of a journey where no skb exists (README,
//! "Before the first skb and after the last"). On a KVM host a guest's
//! frame is kicked (the guest writes its virtqueue's kick eventfd), waits
//! for the vhost-net worker, is taken from the ring and handed to the
//! tap's `sendmsg`, and only then gets an skb; toward the guest, after the
//! frame's skb is copied and freed, the worker completes it in the used
//! ring and signals the guest. These steps are followed per thread, in
//! one [`ThreadChain`] per CPU (`NP_CHAIN`), and become hop pairs of the
//! device the skb was at, aggregated like every other pair:
//!
//! - `vhost_kick -> vhost_tx_kick` (the worker's wake-up and scheduling),
//!   `vhost_tx_kick -> tap_sendmsg` (the ring until the first frame), and
//!   `tap_sendmsg -> <first skb hop>` for every frame (its skb being built),
//!   counted when that skb's tracking starts in the same thread;
//! - `vhost_kick -> vhost_rx_wake` toward the guest, counted at the first
//!   delivery the woken worker makes;
//! - `consumed -> vhost_signal -> eventfd_signal -> irqfd_wakeup` after the
//!   worker's last delivered skb, each step later in catalog id order than
//!   the one before.
//!
//! The kick is matched to its worker by the work item, the one key both
//! see (`NP_KICKS`: the kick's wait-queue entry plus
//! `Config::vhost_wait_to_work`, from the vhost module's BTF). Whatever
//! cannot be matched is counted (`CHAIN_KICK_MISSED`, `CHAIN_LOST`), never
//! joined to another thread's or CPU's steps.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
};
use netprobe_common::{counter, hop, hop_flags, EntryKey, PairKey, ThreadChain};

use crate::{
    aggregation::aggregate,
    config,
    kernel::{scalar_of, Dev},
    maps::{bump, NP_CHAIN, NP_ENTRY, NP_KICKS},
};

/// This CPU's chain.
#[inline(always)]
fn chain() -> Option<&'static mut ThreadChain> {
    // SAFETY: this CPU's element of a per-CPU array, valid while the
    // program runs and written only on this CPU (a nesting program can at
    // worst tear one chain, which the thread id and times then reject).
    NP_CHAIN.get_ptr_mut(0).map(|c| unsafe { &mut *c })
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// Whether thread `tid` is still inside the call of function hop `hop`
/// that began no later than `since`. A chain is per CPU, and a worker can
/// move CPU inside a call and return on another, leaving its chain behind
/// here; the call's entry time, kept per thread for its time inside
/// (`NP_ENTRY`), is there until the call returns, wherever it returns,
/// and a later call's is later than `since`.
#[inline(always)]
fn still_in(tid: u64, hop: u8, since: u64) -> bool {
    let key = EntryKey { pid_tgid: tid, hop: hop as u32, _pad: 0 };
    match NP_ENTRY.get_ptr(&key) {
        // SAFETY: the value of a live NP_ENTRY element (a u64), read at once.
        Some(t) => (unsafe { *t }) <= since,
        None => false,
    }
}

/// `CHAIN_KICK`: a wait-queue entry is woken (`vhost_poll_wakeup(wait)`):
/// the time of the first kick its work item has pending.
#[inline(always)]
pub(crate) fn kicked(wait: u64) {
    let delta = config::get(|c| &c.vhost_wait_to_work) as u64;
    if delta == 0 || wait < 4096 {
        return;
    }
    // A kick while one is pending is the same wait for the worker.
    let _ = NP_KICKS.insert(&(wait + delta), &now(), BPF_NOEXIST as u64);
}

/// `CHAIN_WORKER`: a worker starts work item `work`: its thread's chain
/// begins, with the kick's time if one is on record.
#[inline(always)]
pub(crate) fn worker_runs(hop: u8, work: u64) {
    let now = now();
    let kick_ts = match NP_KICKS.get_ptr(&work) {
        Some(t) => {
            // SAFETY: the value of a live NP_KICKS element, read before
            // the element is removed.
            let t = unsafe { *t };
            let _ = NP_KICKS.remove(&work);
            t
        }
        None => {
            if config::get(|c| &c.vhost_wait_to_work) != 0 {
                bump(counter::CHAIN_KICK_MISSED);
            }
            0
        }
    };
    let Some(c) = chain() else { return };
    abandon(c);
    *c = ThreadChain {
        tid: bpf_get_current_pid_tgid(),
        kick_ts,
        worker_ts: now,
        ts: now,
        hop,
        worker_hop: hop,
        mode: ThreadChain::BEFORE,
        ..ThreadChain::default()
    };
}

/// A chain replaced before its steps were counted: a sent frame whose
/// skb was not met (also counted where a send returns or the next one
/// comes), or a kicked worker run that moved no frame.
#[inline(always)]
fn abandon(c: &ThreadChain) {
    if c.mode != ThreadChain::BEFORE {
        return;
    }
    if c.hop != c.worker_hop {
        if c.ts != 0 {
            bump(counter::CHAIN_LOST);
        }
    } else if c.joined == 0 && c.kick_ts != 0 {
        bump(counter::CHAIN_EMPTY);
    }
}

/// Whether the chain's worker hop carries frames this way (`TX`: to the
/// wire, `RX`: to the guest).
#[inline(always)]
fn worker_is(c: &ThreadChain, way: u16) -> bool {
    c.worker_hop != 0 && config::hop_flags(c.worker_hop) & way != 0
}

/// `CHAIN_SEND`: the worker hands a frame to a socket; the next skb whose
/// tracking starts in this thread is the frame's. A send with no sending
/// worker on record (it ran before the probes attached, or on another
/// CPU) still times its frame's skb.
#[inline(always)]
pub(crate) fn sends(hop: u8) {
    let now = now();
    let tid = bpf_get_current_pid_tgid();
    let Some(c) = chain() else { return };
    let ours = c.tid == tid && c.mode == ThreadChain::BEFORE;
    // A sending worker's run still going on here (not one this thread
    // left on this CPU when it moved), or a chain of sends alone.
    let goes_on =
        ours && (c.worker_hop == 0 || (worker_is(c, hop_flags::TX) && still_in(tid, c.worker_hop, c.worker_ts)));
    if !goes_on {
        abandon(c);
        *c = ThreadChain { tid, ts: now, hop, mode: ThreadChain::BEFORE, joined: 1, ..ThreadChain::default() };
        return;
    }
    if c.hop != c.worker_hop && c.ts != 0 {
        // The frame sent before, whose skb was not met.
        bump(counter::CHAIN_LOST);
    }
    c.ts = now;
    c.hop = hop;
}

/// Where a packet's tracking starts (`devkey`, at hop `at`): if this
/// thread just sent a frame, the skb is that frame's, and the chain's
/// steps up to it are counted as pairs at its device. The skb's own
/// journey starts as it would without a chain.
#[inline(always)]
pub(crate) fn skb_started(at: u8, devkey: u64, dev: Dev<'_>, now: u64) {
    let Some(c) = chain() else { return };
    if c.mode != ThreadChain::BEFORE || c.ts == 0 || c.hop == c.worker_hop || devkey == 0 {
        return;
    }
    let tid = bpf_get_current_pid_tgid();
    if c.tid != tid || !still_in(tid, c.hop, c.ts) {
        return;
    }
    // The frame's skb starts inside its send (`returned` ends a send
    // whose skb did not); one skb per send.
    let gap = now.wrapping_sub(c.ts);
    c.ts = 0;
    if gap > config::get(|c| &c.max_gap_ns) {
        // The send's return was missed (a kretprobe out of instances).
        c.joined = 1;
        bump(counter::CHAIN_LOST);
        return;
    }
    let origin_hop = if c.worker_hop != 0 { c.worker_hop } else { c.hop };
    if c.joined == 0 {
        let kick = kick_hop();
        if c.kick_ts != 0 && kick != 0 {
            pair(devkey, devkey, kick, c.worker_hop, origin_hop, c.worker_ts.wrapping_sub(c.kick_ts), dev);
        }
        // (`now - gap` is the first send's time.)
        pair(devkey, devkey, c.worker_hop, c.hop, origin_hop, now.wrapping_sub(gap).wrapping_sub(c.worker_ts), dev);
        c.joined = 1;
    }
    pair(devkey, devkey, c.hop, at, origin_hop, gap, dev);
}

/// A followed packet is delivered (`DELIVER` hop at `devkey`; it came
/// from `origin`) by this thread: a receiving worker's run notes the
/// device it delivers at, and its first delivery counts its kick.
#[inline(always)]
pub(crate) fn delivered(devkey: u64, origin: u64, dev: Dev<'_>) {
    let Some(c) = chain() else { return };
    if c.mode != ThreadChain::BEFORE || devkey == 0 {
        return;
    }
    let tid = bpf_get_current_pid_tgid();
    if c.tid != tid || !worker_is(c, hop_flags::RX) || !still_in(tid, c.worker_hop, c.worker_ts) {
        return;
    }
    c.dev = devkey;
    if c.joined != 0 || c.kick_ts == 0 {
        return;
    }
    let kick = kick_hop();
    if kick != 0 {
        pair(origin, devkey, kick, c.worker_hop, c.worker_hop, c.worker_ts.wrapping_sub(c.kick_ts), dev);
    }
    c.joined = 1;
}

/// A followed packet delivered by this thread is freed (`consumed` after
/// a `DELIVER` hop at `last_dev`): if the thread is a receiving worker's
/// (a chain of its run, or of a delivery before in the same run) and
/// delivers at `last_dev`, the
/// completion and signal that follow in it are this frame's. Any other
/// thread's deliveries, and those a softirq makes on a worker's stack
/// while it sends, have no such steps.
#[inline(always)]
pub(crate) fn freed_after_delivery(last_dev: u64, origin: u64, origin_hop: u8, now: u64) {
    let Some(c) = chain() else { return };
    let tid = bpf_get_current_pid_tgid();
    let receiving = (c.mode == ThreadChain::BEFORE && worker_is(c, hop_flags::RX)) || c.mode == ThreadChain::AFTER;
    if c.tid != tid || !receiving {
        return;
    }
    if c.worker_hop == 0 || !still_in(tid, c.worker_hop, c.worker_ts) {
        return;
    }
    // Delivered at the device this worker's run delivers at: an skb
    // another thread delivered can be freed here too, by a softirq on
    // the worker's stack (skbs are freed on the CPU that allocated them,
    // which is often the worker's: seen in the amd64 lab as one to-wire
    // "consumed -> vhost_signal" at the peer's device).
    if last_dev != c.dev {
        return;
    }
    // (The receiving worker's own chain was counted at its first
    // delivery; its run goes on.)
    *c = ThreadChain {
        tid,
        worker_ts: c.worker_ts,
        ts: now,
        dev: last_dev,
        origin,
        hop: hop::CONSUME_SKB,
        worker_hop: c.worker_hop,
        mode: ThreadChain::AFTER,
        origin_hop,
        ..ThreadChain::default()
    };
}

/// `CHAIN_SIGNAL`: the next step after this thread's last delivered skb,
/// if it comes later in the catalog's order than the chain's last step,
/// in the same worker run (`returned` ends the chain with the run).
#[inline(always)]
pub(crate) fn signals(hop: u8) {
    let Some(c) = chain() else { return };
    if c.mode != ThreadChain::AFTER || hop <= c.hop {
        return;
    }
    let tid = bpf_get_current_pid_tgid();
    if c.tid != tid || !still_in(tid, c.worker_hop, c.worker_ts) {
        return;
    }
    let now = now();
    let gap = now.wrapping_sub(c.ts);
    // `consumed` has no device of its own, as in the skb's pairs.
    let from_dev = if c.hop == hop::CONSUME_SKB { 0 } else { c.dev };
    let key = PairKey {
        origin: c.origin,
        from_dev,
        to_dev: c.dev,
        from_hop: c.hop,
        to_hop: hop,
        origin_hop: c.origin_hop,
        _pad: 0,
        _pad2: 0,
    };
    aggregate(&key, gap, Dev::None);
    c.hop = hop;
    c.ts = now;
}

/// The return of a chain hop's function (`flags`: its hop flags): a send
/// whose skb did not start inside it lost its frame's steps; a worker's
/// run is over, and its chain with it (what it left uncounted is counted
/// as lost or empty).
#[inline(always)]
pub(crate) fn returned(hop: u8, flags: u16) {
    let Some(c) = chain() else { return };
    if c.mode == 0 || c.tid != bpf_get_current_pid_tgid() {
        return;
    }
    if flags & hop_flags::CHAIN_SEND != 0 {
        if c.mode == ThreadChain::BEFORE && c.hop == hop && c.ts != 0 {
            bump(counter::CHAIN_LOST);
            c.ts = 0;
            // (The run's first frame lost: the next is not its first.)
            c.joined = 1;
        }
    } else if flags & hop_flags::CHAIN_WORKER != 0 {
        abandon(c);
        c.mode = 0;
    }
}

/// The catalog's id of the kick hop (0: not attached).
#[inline(always)]
fn kick_hop() -> u8 {
    config::get(|c| &c.chain_kick_hop) as u8
}

/// Adds one step, at device `dev` of a journey from `origin`, to its
/// pair's histogram.
#[inline(always)]
fn pair(origin: u64, devkey: u64, from_hop: u8, to_hop: u8, origin_hop: u8, gap: u64, dev: Dev<'_>) {
    if from_hop == 0 || to_hop == 0 {
        return;
    }
    // The device may be a BTF-typed pointer (tp_btf, fentry), which the
    // pair cache's hash may not shift: as numbers.
    let (origin, devkey) = (scalar_of::<true>(origin), scalar_of::<true>(devkey));
    let key = PairKey { origin, from_dev: devkey, to_dev: devkey, from_hop, to_hop, origin_hop, _pad: 0, _pad2: 0 };
    aggregate(&key, gap, dev);
}
