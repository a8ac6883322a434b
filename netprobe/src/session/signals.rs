//! The one way every session ends on a signal: SIGINT (Ctrl-C), SIGTERM
//! and SIGHUP (the terminal or the SSH session went away) set a flag
//! instead of ending the process; every loop (`record`'s wait, `top`,
//! `serve`) polls it and returns, so what was recorded is written and every
//! probe is detached on every way out.

use std::{
    sync::{
        atomic::{AtomicI32, Ordering},
        mpsc::{Receiver, RecvTimeoutError},
    },
    time::{Duration, Instant},
};

/// The signal that asked to stop (0: none yet).
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(sig: libc::c_int) {
    STOP.store(sig, Ordering::SeqCst);
}

/// The stop flag, set by SIGINT, SIGTERM or SIGHUP once [`Stop::install`]ed.
pub struct Stop(());

static INSTALLED: Stop = Stop(());

impl Stop {
    /// Routes SIGINT, SIGTERM and SIGHUP to the flag (from now on they no
    /// longer end the process by themselves).
    pub fn install() -> &'static Stop {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: the handler only stores to an atomic (async-signal-safe).
            unsafe { libc::signal(sig, on_stop_signal as *const () as libc::sighandler_t) };
        }
        &INSTALLED
    }

    /// Whether a signal asked to stop.
    pub fn is_set(&self) -> bool {
        STOP.load(Ordering::SeqCst) != 0
    }

    /// From now on a second Ctrl-C ends netprobe at once (what is being
    /// written is written by rename: whole or not at all).
    pub fn second_interrupt_ends_at_once(&self) {
        // SAFETY: restoring the default disposition of SIGINT.
        unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
    }
}

/// How soon a signal or the workload's end is noticed.
const POLL: Duration = Duration::from_millis(50);

/// Waits for `duration` (forever if None), until `done` receives (or its
/// sender is dropped), or a stop signal; calls `tick` about once a second
/// meanwhile, the first time a second from now (an immediate one would
/// close an empty interval a few milliseconds into every series). Returns
/// true when a signal ended the wait.
pub fn wait_for(
    stop: &Stop,
    duration: Option<Duration>,
    done: Option<Receiver<()>>,
    mut tick: Option<&mut dyn FnMut()>,
) -> bool {
    let start = Instant::now();
    let second = Duration::from_secs(1);
    let mut next_tick = start + second;
    loop {
        if stop.is_set() {
            return true;
        }
        let now = Instant::now();
        if duration.is_some_and(|d| now >= start + d) {
            return false;
        }
        if now >= next_tick {
            if let Some(t) = tick.as_mut() {
                t();
            }
            // Ticks keep a one-second cadence; one that came late delays
            // the next ones.
            next_tick = now.max(next_tick) + second;
            continue;
        }
        let mut step = POLL.min(next_tick - now);
        if let Some(d) = duration {
            step = step.min((start + d).saturating_duration_since(now));
        }
        match &done {
            Some(rx) => match rx.recv_timeout(step) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return false,
                Err(RecvTimeoutError::Timeout) => {}
            },
            None => std::thread::sleep(step),
        }
    }
}
