//! Sessions: the loops that run probes over time and hand their results
//! on. `record` (the recorder, and the `record` command's run: workload,
//! waiting, status line, output file), `top` and `serve` (live views of the
//! same aggregates; `webconfig`, serve's TLS and basic auth), `demo` (the demo topology with traffic), `probes`
//! (what each hop attached as). Around them: `workload` (the processes a
//! recording follows, and `benchmark`, what its tool printed), `guests`
//! (QEMU guests found in /proc), `hostconfig` (the host's configuration
//! every recording keeps) and `signals`
//! (the one way a session is told to stop). They print progress on
//! stderr; results go back to the caller to render.

pub mod benchmark;
pub mod demo;
pub mod guests;
pub mod hostconfig;
pub mod probes;
pub mod record;
pub mod serve;
pub mod signals;
pub mod top;
pub mod webconfig;
pub mod workload;

use std::{
    io::{IsTerminal, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Result};

use self::{
    record::{RecordOptions, Recorder},
    signals::Stop,
    workload::WorkloadRun,
};
use crate::{model::labels::Labels, recording::Recording};

/// What the `record` command follows besides its probe options: how long,
/// what workload, where the recording goes.
#[derive(Clone, Debug, Default)]
pub struct RecordRun {
    /// How long at most (None: until Ctrl-C or the workload's end).
    pub duration: Option<Duration>,
    /// A workload command to run (`record -- CMD ARGS`).
    pub command: Vec<String>,
    /// A process already running to follow (`--pid`).
    pub pid: Option<u32>,
    /// A cgroup whose processes are the workload (`--cgroup`).
    pub cgroup: Option<String>,
    /// The workload's transactions, named by the user (`--transactions`).
    pub transactions: Option<u64>,
    /// Where to write the recording (`-o`).
    pub output: Option<PathBuf>,
    /// Show a status line on stderr (when it is a terminal).
    pub status: bool,
    /// Labels the recording carries (`--label KEY=VALUE`).
    pub labels: Labels,
}

/// The `record` command: attaches the probes, runs or follows the
/// workload, closes an interval a second until the duration, the
/// workload's end or a signal, then returns the recording (also written
/// to the output file, if any).
pub fn record(opts: &RecordOptions, run: &RecordRun) -> Result<Recording> {
    if let Some(path) = &run.output {
        check_writable(path)?;
    }
    if !run.command.is_empty() && (run.pid.is_some() || run.cgroup.is_some()) {
        bail!("give either a workload command (-- CMD ARGS) or --pid/--cgroup, not both");
    }
    // Unknown PID or cgroup: fail before anything is attached.
    let mut workload = match (run.pid, &run.cgroup) {
        (Some(p), _) => Some(WorkloadRun::attach_pid(p, run.transactions)?),
        (None, Some(c)) => Some(WorkloadRun::cgroup(c, run.transactions)?),
        (None, None) => None,
    };
    let stop = Stop::install();
    let mut rec =
        Recorder::start(&RecordOptions { spool_dir: Some(spool_dir(run.output.as_deref())), ..opts.clone() })?;
    let until = match (&run.duration, run.command.is_empty(), run.pid) {
        (_, false, _) => format!("while `{}` runs", run.command.join(" ")),
        (_, true, Some(pid)) => format!("while PID {pid} runs"),
        (Some(d), true, None) => format!("for {:.1} s", d.as_secs_f64()),
        (None, true, None) => "until Ctrl-C".to_owned(),
    };
    crate::say!("netprobe: recording {until}; Ctrl-C to stop early");
    if !run.command.is_empty() {
        workload = Some(WorkloadRun::start(&run.command, run.transactions)?);
    }
    if let Some(w) = workload.as_mut() {
        rec.set_workload(w.refresh());
    }
    let done = workload.as_mut().and_then(WorkloadRun::take_done);
    let status = run.status && std::io::stderr().is_terminal();
    let interrupted = signals::wait_for(
        stop,
        run.duration,
        done,
        Some(&mut || {
            report_released(&rec.release_gone_modules());
            if opts.wait_for_modules {
                report_rescan(rec.rescan());
            }
            if let Some(w) = workload.as_mut() {
                rec.set_workload(w.refresh());
            }
            if let Err(e) = rec.sample() {
                crate::say!("netprobe: {e:#}");
            }
            if status {
                status_line(&rec, run.duration);
            }
        }),
    );
    if status {
        crate::say!();
    }
    stop.second_interrupt_ends_at_once();
    if let Some(w) = workload {
        rec.set_workload(w.finish());
    }
    let mut recording = rec.recording(interrupted)?;
    recording.meta.labels.clone_from(&run.labels);
    if let Some(path) = &run.output {
        recording.write(path)?;
        crate::say!("netprobe: recording written to {}", path.display());
    }
    Ok(recording)
}

/// One status line on stderr (rewritten in place): elapsed and remaining
/// time, packets followed, events lost, hops active.
fn status_line(rec: &Recorder, duration: Option<Duration>) {
    let Ok(p) = rec.progress() else { return };
    let elapsed = p.elapsed.as_secs_f64();
    let remaining = duration.map_or(String::new(), |d| format!(", {:.0} s left", (d.as_secs_f64() - elapsed).max(0.0)));
    // Not eprint!: a terminal that went away must not end the recording.
    let _ = write!(
        std::io::stderr(),
        "\r\x1b[K[netprobe] {elapsed:.0} s{remaining}, {} packets followed, {} events lost, {} hops active",
        p.followed,
        p.lost,
        p.hops_attached
    );
}

/// Says which modules went away mid-run and which hops went with them.
pub(crate) fn report_released(gone: &[(String, Vec<&'static str>)]) {
    for (module, hops) in gone {
        crate::say!("netprobe: module {module} unloaded: detached {} (what they measured is kept)", hops.join(", "));
    }
}

/// Says which hops a rescan attached, or why it failed.
pub(crate) fn report_rescan(res: Result<Vec<&'static str>>) {
    match res {
        Ok(added) if !added.is_empty() => crate::say!("netprobe: now observing {}", added.join(", ")),
        Ok(_) => {}
        Err(e) => crate::say!("netprobe: rescan failed: {e:#}"),
    }
}

/// Where a recording's time series waits to be written: the output
/// file's directory (on the same disk, not in a memory-backed /tmp), else
/// the temporary directory.
pub fn spool_dir(output: Option<&Path>) -> PathBuf {
    match output.map(|o| o.parent()) {
        Some(Some(d)) if !d.as_os_str().is_empty() => d.to_path_buf(),
        Some(_) => ".".into(),
        None => std::env::temp_dir(),
    }
}

/// Fails early, before anything is attached, when the output cannot be
/// written.
pub fn check_writable(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!("{} is a symbolic link; netprobe does not write through links (choose another path)", path.display());
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: access(2) with a valid C string.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        bail!(
            "cannot write the recording to {}: directory {} is not writable ({})",
            path.display(),
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
