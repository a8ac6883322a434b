//! Trace mode's consumer: drains the `NP_EVENTS` ring buffer on its own
//! thread, in batches (every tick reads all that is there), without an
//! allocation per event. What the kernel could not queue is counted there
//! (`events_lost`); what arrives is counted here, so every event is either
//! delivered or counted as lost.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use netprobe_common::HopEvent;

/// How often the consumer drains the ring buffer. At 1M events/s a tick
/// is ~5k events, far below the ring's capacity (~87k events).
const TICK_MS: u64 = 5;

/// What the consumer saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceStats {
    pub events: u64,
    /// Events whose size was not a [`HopEvent`] (should stay 0).
    pub malformed: u64,
    /// Sum of the events' gaps: proof the payload was read (and a total).
    pub gap_ns_total: u64,
    /// CPU time the consumer thread used (ns).
    pub cpu_ns: u64,
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
    pub fn start(mut ring: RingBuf<MapData>) -> Result<TraceReader> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("netprobe-trace".into())
            .spawn(move || {
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
                        } else {
                            stats.malformed += 1;
                        }
                    }
                    if done {
                        stats.cpu_ns = thread_cpu_ns();
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
