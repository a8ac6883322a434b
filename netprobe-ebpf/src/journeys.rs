//! Trace mode (`--trace`): each tracked packet's hops are gathered in its
//! slot of `NP_JOURNEY` (the same slot as its `NP_TRACK` state) and sent
//! to userspace on the `NP_EVENTS` ring buffer as [`JourneyRecord`]s, one
//! per stretch of up to `JOURNEY_HOPS` hops. Nothing here runs unless the
//! configuration says trace.
//!
//! A journey slot is an `NP_JOURNEY` element (an array value, valid while
//! the program runs); like the `NP_TRACK` slot it belongs to, another CPU
//! may write it at the same time only for another packet with the same
//! slot (a hash collision), which [`journey_hop`] detects and counts.

use netprobe_common::{counter, journey, JourneyHop, JourneyRecord, JOURNEY_HOPS};

use crate::{
    config::tracing,
    maps::{add, bump, NP_EVENTS, NP_JOURNEY},
};

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
        add(counter::EVENTS_LOST, j.n as u64);
    }
    j.n = 0;
}

/// Trace mode: a packet's tracking starts in `slot` at this hop. Whatever
/// journey the slot held ends there, cut short.
#[inline(always)]
pub(crate) fn journey_start(slot: u32, skb: u64, now: u64, devkey: u64, hop: u8) {
    if !tracing() {
        return;
    }
    let Some(j) = NP_JOURNEY.get_ptr_mut(slot) else { return };
    // SAFETY: an NP_JOURNEY element (see the module's note).
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
pub(crate) fn journey_cut(slot: u32) {
    if !tracing() {
        return;
    }
    if let Some(j) = NP_JOURNEY.get_ptr_mut(slot) {
        // SAFETY: an NP_JOURNEY element (see the module's note).
        journey_send(unsafe { &mut *j }, journey::CUT);
    }
}

/// Trace mode: one more hop of the packet in `slot` (one hop-pair event).
#[inline(always)]
pub(crate) fn journey_hop(slot: u32, skb: u64, now: u64, devkey: u64, hop: u8, gap: u64, terminal: bool) {
    let Some(j) = NP_JOURNEY.get_ptr_mut(slot) else { return };
    // SAFETY: an NP_JOURNEY element (see the module's note).
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
