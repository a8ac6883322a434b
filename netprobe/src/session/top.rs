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
use crossterm::{cursor, execute, terminal};
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

/// What the terminal said while `top` waited for it.
#[derive(Debug, PartialEq, Eq)]
enum Input {
    /// Nothing, or nothing that quits.
    Nothing,
    /// `q`, `Q`, Esc or Ctrl-C.
    Quit,
    /// The terminal went away (hang-up, end of input, a read error): the
    /// SSH session or the tmux window was closed.
    Gone,
}

/// The keys in one read from the terminal (raw mode): a lone Esc quits,
/// an escape sequence (arrow keys, a mouse report) does not.
fn keys(bytes: &[u8]) -> Input {
    let quit_key = bytes.iter().any(|b| matches!(b, b'q' | b'Q' | 0x03));
    if bytes == [0x1b] || (quit_key && bytes[0] != 0x1b) {
        Input::Quit
    } else {
        Input::Nothing
    }
}

/// Waits up to `wait` for the terminal on standard input. netprobe reads
/// it itself rather than through crossterm's event reader, which loops
/// forever (at 100% of a CPU, deaf to signals) on a terminal that hung up.
fn wait_for_input(wait: Duration) -> Input {
    let mut fds = libc::pollfd { fd: libc::STDIN_FILENO, events: libc::POLLIN, revents: 0 };
    // SAFETY: poll(2) on one valid pollfd.
    let n = unsafe { libc::poll(&mut fds, 1, wait.as_millis().min(i32::MAX as u128) as i32) };
    if n <= 0 {
        return Input::Nothing;
    }
    if fds.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        return Input::Gone;
    }
    let mut buf = [0u8; 64];
    // SAFETY: read(2) into a buffer of its length.
    let got = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
    match got {
        n if n > 0 => keys(&buf[..n as usize]),
        0 => Input::Gone,
        _ => match std::io::Error::last_os_error().kind() {
            std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock => Input::Nothing,
            _ => Input::Gone,
        },
    }
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
        // Drawing also follows a resized terminal.
        screen.terminal.draw(|f| draw(f, &view))?;
        // Wait for a key until the next tick, checking the stop flag.
        let due = last + tick;
        while Instant::now() < due {
            if stop.is_set() {
                return Ok(());
            }
            let wait = due.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
            match wait_for_input(wait) {
                Input::Quit => return Ok(()),
                // The terminal is gone: stop (restoring it is harmless).
                Input::Gone => return Ok(()),
                Input::Nothing => {}
            }
        }
        rec.follow_modules();
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
    use super::*;

    #[test]
    fn quit_keys() {
        assert_eq!(keys(b"q"), Input::Quit);
        assert_eq!(keys(b"xQ"), Input::Quit);
        assert_eq!(keys(&[0x03]), Input::Quit, "Ctrl-C in raw mode");
        assert_eq!(keys(&[0x1b]), Input::Quit, "a lone Esc");
        assert_eq!(keys(b"\x1b[A"), Input::Nothing, "an arrow key is no Esc");
        assert_eq!(keys(b"c"), Input::Nothing);
    }
}
