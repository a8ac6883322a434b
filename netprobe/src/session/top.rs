//! `netprobe top`'s loop: once a second it closes an interval of the
//! recorder (per hop pair: packets, p50 and p99 of that second only) and
//! has `render::top` draw it. It owns the terminal (raw mode, alternate screen) and gives it back on
//! every way out — `q`, Esc, Ctrl-C, SIGTERM/SIGHUP, an error or a panic —
//! before the caller drops the recorder, which detaches every probe.

use std::{
    io::Stdout,
    time::{Duration, Instant},
};

use anyhow::Result;
use crossterm::{
    cursor,
    event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    execute, terminal,
};
use netprobe_common::counter;
use ratatui::{backend::CrosstermBackend, Terminal};

use super::{record::Recorder, signals::Stop};
use crate::render::top::{draw, View};

/// The terminal in raw mode on the alternate screen; restored on drop,
/// which also runs when an error or a panic unwinds through `run`.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    _restore: Restore,
}

impl Screen {
    fn enter() -> Result<Screen> {
        terminal::enable_raw_mode()?;
        // From here on the guard restores whatever was changed.
        let restore = Restore;
        execute!(std::io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        let terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
        Ok(Screen { terminal, _restore: restore })
    }
}

struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = execute!(std::io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
        let _ = terminal::disable_raw_mode();
    }
}

/// What ends `top`: a quit key.
fn is_quit(ev: &Event) -> bool {
    let Event::Key(k) = ev else { return false };
    k.kind == KeyEventKind::Press
        && (matches!(k.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc)
            || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL)))
}

/// Runs the live view until `q`, Esc, Ctrl-C or `stop` (a signal).
pub fn run(rec: &mut Recorder, host: &str, stop: &Stop) -> Result<()> {
    let mut screen = Screen::enter()?;
    // The first interval starts now.
    let mut cpu_before = rec.next_interval()?.cpu;
    let mut last = Instant::now();
    let mut view = View { host: host.to_owned(), ..View::default() };
    let tick = Duration::from_secs(1);
    loop {
        screen.terminal.draw(|f| draw(f, &view))?;
        // Wait for a key until the next tick, checking the stop flag.
        let due = last + tick;
        while Instant::now() < due {
            if stop.is_set() {
                return Ok(());
            }
            let wait = due.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
            if event::poll(wait)? {
                let ev = event::read()?;
                if is_quit(&ev) {
                    return Ok(());
                }
                if matches!(ev, Event::Resize(..)) {
                    screen.terminal.draw(|f| draw(f, &view))?;
                }
            }
        }
        let live = rec.next_interval()?;
        let dt = last.elapsed().as_secs_f64();
        last = Instant::now();
        view = View::new(&live.interval, dt, live.cpu.as_ref(), cpu_before.as_ref(), &live.guest_names);
        view.host = host.to_owned();
        view.elapsed_s = rec.elapsed().as_secs_f64();
        view.hops_attached = rec.hops_attached();
        let count = |c: u32| live.tracking.get(counter::NAMES[c as usize]).copied().unwrap_or(0);
        view.followed = count(counter::TRACK_STARTED);
        view.lost = count(counter::EVENTS_LOST) + count(counter::PAIR_LOST);
        cpu_before = live.cpu;
    }
}

#[cfg(test)]
mod tests {
    use crossterm::event::KeyEvent;

    use super::*;

    #[test]
    fn quit_keys() {
        let key = |c, m| Event::Key(KeyEvent::new(c, m));
        assert!(is_quit(&key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(is_quit(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!is_quit(&key(KeyCode::Char('c'), KeyModifiers::NONE)));
    }
}
