//! Trace mode's consumer: drains the `NP_EVENTS` ring buffer on its own
//! thread, in batches (every tick reads all that is there), without an
//! allocation per event. Each record is a stretch of one packet's journey
//! ([`JourneyRecord`]: up to `JOURNEY_HOPS` hop-pair events). What the
//! kernel could not queue is counted there (`events_lost`, per event);
//! what arrives is counted here, so every event is either delivered or
//! counted as lost (or, when the recording stops, still being gathered in
//! the kernel: `events_in_flight`).
//!
//! The consumer also puts each packet's records back together into its
//! journey ([`Journeys`]): a journey's first record starts it, the next
//! ones continue from its last hop, and a journey is complete when a
//! record says it reached a terminal hop (consumed, dropped). The first
//! `limit` complete journeys are kept for the recording, no more than half
//! of them from one origin device, so a busy direction (say TCP data)
//! leaves room for the other (its ACKs).

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
use netprobe_common::{journey, JourneyRecord, JOURNEY_HOPS};

/// How often the consumer drains the ring buffer. At 1M events/s a tick
/// is ~5k events, far below the ring's capacity (~87k events).
const TICK_MS: u64 = 5;

/// One hop of a packet's journey: the hop, its device key (0 for hops
/// without one) and the time, in ns since the recording started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sighting {
    pub hop: u8,
    pub dev: u64,
    pub t_ns: u64,
}

/// What the consumer saw.
#[derive(Clone, Debug, Default)]
pub struct TraceStats {
    pub events: u64,
    /// Records (stretches of journeys) the events came in.
    pub records: u64,
    /// Records whose size was not a [`JourneyRecord`] (should stay 0).
    pub malformed: u64,
    /// Sum of the events' gaps: proof the payload was read (and a total).
    pub gap_ns_total: u64,
    /// CPU time the consumer thread used (ns).
    pub cpu_ns: u64,
    /// Complete packet journeys (at most the limit given).
    pub journeys: Vec<Vec<Sighting>>,
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
    open: HashMap<u64, Vec<Sighting>>,
    done: Vec<Vec<Sighting>>,
}

/// Journeys under way beyond this many are dropped (memory bound; a skb
/// freed unseen would otherwise stay forever).
const MAX_OPEN: usize = 65_536;

impl Journeys {
    /// Keeps up to `limit` journeys; times relative to `base_ns`.
    pub fn new(base_ns: u64, limit: usize) -> Journeys {
        Journeys {
            base_ns,
            limit,
            per_origin_limit: limit.div_ceil(2),
            per_origin: HashMap::new(),
            open: HashMap::new(),
            done: Vec::new(),
        }
    }

    pub fn push(&mut self, r: &JourneyRecord) {
        if self.done.len() >= self.limit {
            return;
        }
        let from = Sighting { hop: r.from_hop, dev: r.from_dev, t_ns: r.ts.saturating_sub(self.base_ns) };
        let j = if r.first != 0 {
            if self.per_origin.get(&r.from_dev).is_some_and(|&n| n >= self.per_origin_limit) {
                self.open.remove(&r.skb);
                return;
            }
            if self.open.len() >= MAX_OPEN {
                self.open.clear();
            }
            let j = self.open.entry(r.skb).or_default();
            j.clear();
            j.push(from);
            j
        } else {
            // A continuation: from the last hop of the journey under way
            // (else its start was not kept: nothing to continue).
            match self.open.get_mut(&r.skb) {
                Some(j) if j.last().is_some_and(|l| l.hop == from.hop && l.t_ns == from.t_ns) => j,
                _ => return,
            }
        };
        let mut t = from.t_ns;
        for h in &r.hops[..(r.n as usize).min(JOURNEY_HOPS)] {
            t += h.gap_ns as u64;
            j.push(Sighting { hop: h.hop, dev: h.dev, t_ns: t });
        }
        if r.flags & journey::CUT != 0 {
            self.open.remove(&r.skb);
        } else if r.flags & journey::END != 0 {
            if let Some(hops) = self.open.remove(&r.skb) {
                let n = self.per_origin.entry(hops[0].dev).or_default();
                if *n < self.per_origin_limit {
                    *n += 1;
                    self.done.push(hops);
                }
            }
            if self.done.len() >= self.limit {
                self.open = HashMap::new();
            }
        }
    }

    pub fn finish(self) -> Vec<Vec<Sighting>> {
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
    /// Starts draining `ring` on a thread of its own, after `pause` (zero
    /// but in tests that make the ring overflow on purpose).
    pub fn start(
        mut ring: RingBuf<MapData>,
        mut journeys: Journeys,
        pause: std::time::Duration,
    ) -> Result<TraceReader> {
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
                std::thread::sleep(pause);
                let mut stats = TraceStats::default();
                loop {
                    let done = flag.load(Ordering::Relaxed);
                    while let Some(item) = ring.next() {
                        if item.len() == std::mem::size_of::<JourneyRecord>() {
                            // SAFETY: JourneyRecord is plain old data of this
                            // size; read_unaligned copes with any alignment.
                            let r: JourneyRecord = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                            let n = (r.n as usize).min(JOURNEY_HOPS);
                            stats.records += 1;
                            stats.events += n as u64;
                            stats.gap_ns_total += r.hops[..n].iter().map(|h| h.gap_ns as u64).sum::<u64>();
                            journeys.push(&r);
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
    use netprobe_common::{hop, JourneyHop};

    use super::*;

    /// A record of `skb`'s journey starting at `from` (hop, device, time),
    /// then `hops` as (hop, device, gap).
    fn rec(skb: u64, first: bool, from: (u8, u64, u64), hops: &[(u8, u64, u32)], flags: u8) -> JourneyRecord {
        let mut r = JourneyRecord {
            skb,
            ts: from.2,
            from_dev: from.1,
            from_hop: from.0,
            n: hops.len() as u8,
            flags,
            first: first as u8,
            ..Default::default()
        };
        for (i, &(hop, dev, gap_ns)) in hops.iter().enumerate() {
            r.hops[i] = JourneyHop { dev, gap_ns, hop, ..Default::default() };
        }
        r
    }

    #[test]
    fn records_make_one_journey_until_a_terminal_hop() {
        let mut j = Journeys::new(1_000, 10);
        let (q, x, c) = (hop::NET_DEV_QUEUE, hop::NET_DEV_START_XMIT, hop::CONSUME_SKB);
        let (rx, rcv, copy) = (hop::NETIF_RX, hop::NETIF_RECEIVE_SKB, hop::SKB_COPY_DATAGRAM_IOVEC);
        // 0xa: seven hops, in two records (a full one, then the rest).
        let full: Vec<(u8, u64, u32)> =
            vec![(x, 7, 500), (rx, 8, 10), (rcv, 8, 20), (copy, 0, 30), (q, 9, 5), (x, 9, 5)];
        assert_eq!(full.len(), JOURNEY_HOPS);
        j.push(&rec(0xa, true, (q, 7, 1_500), &full, 0));
        // 0xb: a journey cut short (its skb reappeared as another packet) is never kept.
        j.push(&rec(0xb, true, (q, 7, 2_000), &[(x, 7, 100)], journey::CUT));
        j.push(&rec(0xa, false, (x, 9, 1_500 + 570), &[(c, 0, 30)], journey::END));
        // 0xc: a continuation whose start was never seen is dropped.
        j.push(&rec(0xc, false, (x, 9, 9_000), &[(c, 0, 30)], journey::END));
        let done = j.finish();
        assert_eq!(done.len(), 1);
        let times: Vec<u64> = done[0].iter().map(|h| h.t_ns).collect();
        assert_eq!(times, [500, 1_000, 1_010, 1_030, 1_060, 1_065, 1_070, 1_100]);
        let hops: Vec<u8> = done[0].iter().map(|h| h.hop).collect();
        assert_eq!(hops, [q, x, rx, rcv, copy, q, x, c]);
        assert_eq!(done[0][1].dev, 7);
    }

    #[test]
    fn keeps_at_most_the_limit_and_half_of_it_per_origin_device() {
        let mut j = Journeys::new(0, 4);
        for i in 0..10u64 {
            j.push(&rec(i, true, (hop::NETIF_RX, 1, 100 + i), &[(hop::KFREE_SKB, 0, 10)], journey::END));
        }
        j.push(&rec(99, true, (hop::NET_DEV_QUEUE, 2, 500), &[(hop::CONSUME_SKB, 0, 10)], journey::END));
        let done = j.finish();
        let origins: Vec<u64> = done.iter().map(|j| j[0].dev).collect();
        assert_eq!(origins, [1, 1, 2], "half of 4 from device 1, then device 2's");
        let mut j = Journeys::new(0, 3);
        for i in 0..10u64 {
            j.push(&rec(i, true, (hop::NETIF_RX, i % 3, 100 + i), &[(hop::KFREE_SKB, 0, 10)], journey::END));
        }
        assert_eq!(j.finish().len(), 3);
    }
}
