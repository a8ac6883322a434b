//! Trace mode's consumer: drains the `NP_EVENTS` ring buffer on its own
//! thread, in batches (every tick reads all that is there), without an
//! allocation per event. What the kernel could not queue is counted there
//! (`events_lost`); what arrives is counted here, so every event is either
//! delivered or counted as lost.
//!
//! The consumer also puts each packet's events back together into its
//! journey ([`Journeys`]): consecutive hop-pair events of one skb chain
//! (an event's earlier hop is the previous event's later hop, at the same
//! time), and a journey is complete when it reaches a terminal hop
//! (consumed, dropped). The first `limit` complete journeys are kept for
//! the recording, no more than half of them from one origin device, so a
//! busy direction (say TCP data) leaves room for the other (its ACKs).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use netprobe_common::{hop_flags, HopEvent};

use crate::recording::{SampleHop, SampleRec};

/// How often the consumer drains the ring buffer. At 1M events/s a tick
/// is ~5k events, far below the ring's capacity (~87k events).
const TICK_MS: u64 = 5;

/// What the consumer saw.
#[derive(Clone, Debug, Default)]
pub struct TraceStats {
    pub events: u64,
    /// Events whose size was not a [`HopEvent`] (should stay 0).
    pub malformed: u64,
    /// Sum of the events' gaps: proof the payload was read (and a total).
    pub gap_ns_total: u64,
    /// CPU time the consumer thread used (ns).
    pub cpu_ns: u64,
    /// Complete packet journeys (at most the limit given).
    pub journeys: Vec<SampleRec>,
}

/// Journeys in the making, by skb address, and the complete ones.
pub struct Journeys {
    /// CLOCK_MONOTONIC ns at the start of the recording (times are kept
    /// relative to it).
    base_ns: u64,
    limit: usize,
    /// Journeys kept per origin device (the first hop's) at most.
    per_origin_limit: usize,
    per_origin: HashMap<u64, usize>,
    terminal: [bool; 256],
    open: HashMap<u64, Vec<SampleHop>>,
    done: Vec<SampleRec>,
}

/// Journeys under way beyond this many are dropped (memory bound; a skb
/// freed unseen would otherwise stay forever).
const MAX_OPEN: usize = 65_536;

impl Journeys {
    /// Keeps up to `limit` journeys; times relative to `base_ns`.
    pub fn new(base_ns: u64, limit: usize) -> Journeys {
        let mut terminal = [false; 256];
        for h in crate::catalog::HOPS.iter().filter(|h| h.flags & hop_flags::TERMINAL != 0) {
            terminal[h.id as usize] = true;
        }
        Journeys {
            base_ns,
            limit,
            per_origin_limit: limit.div_ceil(2),
            per_origin: HashMap::new(),
            terminal,
            open: HashMap::new(),
            done: Vec::new(),
        }
    }

    pub fn push(&mut self, ev: &HopEvent) {
        if self.done.len() >= self.limit {
            return;
        }
        let to = SampleHop { hop: ev.to_hop, dev: ev.to_dev, t_ns: ev.ts.saturating_sub(self.base_ns) };
        let from_t = ev.ts.saturating_sub(ev.gap_ns as u64).saturating_sub(self.base_ns);
        let chained = self
            .open
            .get(&ev.skb)
            .and_then(|j| j.last())
            .is_some_and(|last| last.hop == ev.from_hop && last.dev == ev.from_dev && last.t_ns == from_t);
        if !chained {
            if self.per_origin.get(&ev.from_dev).is_some_and(|&n| n >= self.per_origin_limit) {
                self.open.remove(&ev.skb);
                return;
            }
            if self.open.len() >= MAX_OPEN {
                self.open.clear();
            }
            self.open.insert(ev.skb, vec![SampleHop { hop: ev.from_hop, dev: ev.from_dev, t_ns: from_t }]);
        }
        let Some(j) = self.open.get_mut(&ev.skb) else { return };
        j.push(to);
        if self.terminal[ev.to_hop as usize] {
            if let Some(hops) = self.open.remove(&ev.skb) {
                let n = self.per_origin.entry(hops[0].dev).or_default();
                if *n < self.per_origin_limit {
                    *n += 1;
                    self.done.push(SampleRec { hops });
                }
            }
            if self.done.len() >= self.limit {
                self.open = HashMap::new();
            }
        }
    }

    pub fn finish(self) -> Vec<SampleRec> {
        self.done
    }
}

/// CLOCK_MONOTONIC now, in ns: the kernel side's clock (`bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime with a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime with a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub struct TraceReader {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<TraceStats>>,
}

impl TraceReader {
    pub fn start(mut ring: RingBuf<MapData>, mut journeys: Journeys) -> Result<TraceReader> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("netprobe-trace".into())
            .spawn(move || {
                // A little ahead of the workload's threads (nice -10): the
                // reader needs a few percent of a CPU, but in time. Where
                // the host's threads keep every CPU busy (a flood pinned to
                // each), a reader at the same priority was now and then
                // off the CPU long enough for the ring to fill.
                // SAFETY: setpriority on this thread's own id.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -10) };
                let mut stats = TraceStats::default();
                loop {
                    let done = flag.load(Ordering::Relaxed);
                    while let Some(item) = ring.next() {
                        if item.len() == std::mem::size_of::<HopEvent>() {
                            // SAFETY: HopEvent is plain old data of this size;
                            // read_unaligned copes with any alignment.
                            let ev: HopEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                            stats.events += 1;
                            stats.gap_ns_total += ev.gap_ns as u64;
                            journeys.push(&ev);
                        } else {
                            stats.malformed += 1;
                        }
                    }
                    if done {
                        stats.cpu_ns = thread_cpu_ns();
                        stats.journeys = journeys.finish();
                        return stats;
                    }
                    // The kernel side sends no wakeups (BPF_RB_NO_WAKEUP):
                    // drain on a short clock instead, a batch per tick.
                    std::thread::sleep(std::time::Duration::from_millis(TICK_MS));
                }
            })
            .context("cannot start the trace reader thread")?;
        Ok(TraceReader { stop, thread: Some(thread) })
    }

    /// Stops after draining what is queued; returns the totals.
    pub fn finish(&mut self) -> TraceStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for TraceReader {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use netprobe_common::hop;

    use super::*;

    fn ev(skb: u64, ts: u64, gap: u32, from: (u8, u64), to: (u8, u64)) -> HopEvent {
        HopEvent { ts, skb, from_dev: from.1, to_dev: to.1, gap_ns: gap, from_hop: from.0, to_hop: to.0, _pad: 0 }
    }

    #[test]
    fn chained_events_make_one_journey_until_a_terminal_hop() {
        let mut j = Journeys::new(1_000, 10);
        let (q, x, c) = ((hop::NET_DEV_QUEUE, 7), (hop::NET_DEV_START_XMIT, 7), (hop::CONSUME_SKB, 0));
        // Two packets interleaved on different skbs.
        j.push(&ev(0xa, 2_000, 500, q, x));
        j.push(&ev(0xb, 2_100, 100, q, x));
        j.push(&ev(0xa, 2_300, 300, x, c));
        // 0xb: an event that does not chain (another packet at the same
        // address) starts over; the cut-short one is never kept.
        j.push(&ev(0xb, 9_000, 50, q, x));
        j.push(&ev(0xb, 9_400, 400, x, c));
        let done = j.finish();
        assert_eq!(done.len(), 2);
        let times: Vec<u64> = done[0].hops.iter().map(|h| h.t_ns).collect();
        assert_eq!(times, [500, 1_000, 1_300]);
        assert_eq!(done[0].hops[2].hop, hop::CONSUME_SKB);
        let times: Vec<u64> = done[1].hops.iter().map(|h| h.t_ns).collect();
        assert_eq!(times, [7_950, 8_000, 8_400]);
    }

    #[test]
    fn keeps_at_most_the_limit_and_half_of_it_per_origin_device() {
        let mut j = Journeys::new(0, 4);
        for i in 0..10u64 {
            j.push(&ev(i, 100 + i, 10, (hop::NETIF_RX, 1), (hop::KFREE_SKB, 0)));
        }
        j.push(&ev(99, 500, 10, (hop::NET_DEV_QUEUE, 2), (hop::CONSUME_SKB, 0)));
        let done = j.finish();
        let origins: Vec<u64> = done.iter().map(|j| j.hops[0].dev).collect();
        assert_eq!(origins, [1, 1, 2], "half of 4 from device 1, then device 2's");
        let mut j = Journeys::new(0, 3);
        for i in 0..10u64 {
            j.push(&ev(i, 100 + i, 10, (hop::NETIF_RX, i % 3), (hop::KFREE_SKB, 0)));
        }
        assert_eq!(j.finish().len(), 3);
    }
}
