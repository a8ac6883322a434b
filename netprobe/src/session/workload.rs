//! The workload a recording follows: a command netprobe runs (`record --
//! CMD ARGS`), a process already running (`--pid`), or a cgroup's
//! processes (`--cgroup`): which processes are its (their threads' CPU is
//! the role `workload`), when it ends, and what its tool reports (read
//! by `benchmark`).

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};

use crate::model::Workload;

/// The workload a recording follows: a command netprobe runs (`record --
/// CMD ARGS`, its standard output passed on to netprobe's standard error
/// and read for its transaction count), a process already running
/// (`--pid`), or a cgroup's processes (`--cgroup`).
pub struct WorkloadRun {
    info: Workload,
    kind: WorkloadKind,
    done: Option<std::sync::mpsc::Receiver<()>>,
    /// Exit status and time of a command netprobe started.
    status: std::sync::Arc<std::sync::Mutex<Option<(std::process::ExitStatus, f64)>>>,
    /// The workload's standard output, read for its tool's figures when it
    /// ends (`benchmark::read`).
    output: std::sync::Arc<std::sync::Mutex<String>>,
    /// `--transactions N`: the user's count wins over the output's.
    named_transactions: Option<u64>,
}

enum WorkloadKind {
    Command(u32),
    Pid(u32),
    Cgroup(PathBuf),
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// The most of a workload's standard output kept for reading its figures
/// (an iperf3 -J report of 250 streams over minutes is a few MiB).
const OUTPUT_KEPT: usize = 64 << 20;

/// Parent PID of each process (from /proc/PID/stat).
fn parents() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces and ')'.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect()
}

/// A process and all its descendants.
fn process_tree(root: u32) -> Vec<u32> {
    let all = parents();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// The processes of a cgroup (v2) and of its descendant cgroups.
fn cgroup_procs(dir: &std::path::Path) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(cgroup_procs(&e.path()));
            }
        }
    }
    out
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

impl WorkloadRun {
    fn new(kind: WorkloadKind, command: Vec<String>, named_transactions: Option<u64>) -> WorkloadRun {
        WorkloadRun {
            info: Workload {
                command,
                started_unix_s: unix_now(),
                ended_unix_s: 0.0,
                exit_status: None,
                signal: None,
                tgids: Vec::new(),
                cgroup: None,
                transactions: None,
                transactions_from: None,
                latency: None,
                throughput: None,
                notes: Vec::new(),
            },
            kind,
            done: None,
            status: std::sync::Arc::default(),
            output: std::sync::Arc::default(),
            named_transactions,
        }
    }

    /// Starts `command`; its standard output goes to netprobe's standard
    /// error line by line (the report alone is on standard output) and is
    /// kept to be read for the tool's figures (transactions, latency,
    /// throughput) when it ends.
    pub fn start(command: &[String], named_transactions: Option<u64>) -> Result<WorkloadRun> {
        use std::io::{BufRead, Write};
        let mut child = std::process::Command::new(&command[0])
            .args(&command[1..])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start the workload `{}`", command.join(" ")))?;
        let pid = child.id();
        let mut w = WorkloadRun::new(WorkloadKind::Command(pid), command.to_vec(), named_transactions);
        let stdout = child.stdout.take().context("workload stdout")?;
        let output = w.output.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(std::io::stderr(), "{line}");
                if let Ok(mut out) = output.lock() {
                    if out.len() + line.len() < OUTPUT_KEPT {
                        out.push_str(&line);
                        out.push('\n');
                    }
                }
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let slot = w.status.clone();
        std::thread::spawn(move || {
            if let Ok(s) = child.wait() {
                // Its last lines (the summary) are read before it counts as done.
                let _ = reader.join();
                if let Ok(mut g) = slot.lock() {
                    *g = Some((s, unix_now()));
                }
            }
            let _ = tx.send(());
        });
        w.done = Some(rx);
        w.refresh();
        Ok(w)
    }

    /// Follows a process already running; the recording ends when it exits.
    pub fn attach_pid(pid: u32, named_transactions: Option<u64>) -> Result<WorkloadRun> {
        if pid == 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            bail!("--pid {pid}: no such process (check the PID with `ps -p {pid}`)");
        }
        let mut w = WorkloadRun::new(WorkloadKind::Pid(pid), cmdline(pid), named_transactions);
        let (tx, rx) = std::sync::mpsc::channel();
        let stat = format!("/proc/{pid}/stat");
        // (state, start time): a zombie (our own child not yet reaped) has
        // exited too; another start time means the PID was reused.
        let look = |s: &str| {
            let t = std::fs::read_to_string(s).ok()?;
            let mut f = t.rsplit_once(')')?.1.split_whitespace();
            let state = f.next()?.to_owned();
            Some((state, f.nth(18)?.to_owned()))
        };
        let born = look(&stat).map(|(_, t)| t);
        std::thread::spawn(move || {
            while look(&stat).is_some_and(|(state, t)| state != "Z" && state != "X" && Some(t) == born) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = tx.send(());
        });
        w.done = Some(rx);
        w.refresh();
        Ok(w)
    }

    /// Follows the processes of a cgroup: an absolute cgroup directory, or
    /// a path relative to /sys/fs/cgroup (cgroup v2, or its `unified`
    /// mount on hybrid hosts).
    pub fn cgroup(path: &str, named_transactions: Option<u64>) -> Result<WorkloadRun> {
        let p = std::path::Path::new(path);
        let candidates: Vec<PathBuf> = if p.is_absolute() {
            vec![p.to_path_buf()]
        } else {
            ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"].iter().map(|b| std::path::Path::new(b).join(p)).collect()
        };
        let Some(dir) = candidates.iter().find(|d| d.join("cgroup.procs").exists()).cloned() else {
            bail!(
                "--cgroup {path}: not a cgroup directory (no cgroup.procs in {}); name it as /proc/PID/cgroup \
                 shows it, e.g. machine.slice/machine-qemu\\x2d1.scope",
                candidates.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" or ")
            );
        };
        let mut w = WorkloadRun::new(WorkloadKind::Cgroup(dir.clone()), Vec::new(), named_transactions);
        w.info.cgroup = Some(dir.display().to_string());
        w.refresh();
        Ok(w)
    }

    /// Fires when the workload exits (for `signals::wait_for`); a cgroup has none.
    pub fn take_done(&mut self) -> Option<std::sync::mpsc::Receiver<()>> {
        self.done.take()
    }

    /// Looks for the workload's processes again (children come and go);
    /// returns what is known so far, for `Recorder::set_workload`.
    pub fn refresh(&mut self) -> Workload {
        let now = match &self.kind {
            WorkloadKind::Command(pid) | WorkloadKind::Pid(pid) => process_tree(*pid),
            WorkloadKind::Cgroup(dir) => cgroup_procs(dir),
        };
        for p in now {
            if !self.info.tgids.contains(&p) {
                self.info.tgids.push(p);
            }
        }
        // A process's command line reads empty while it is between exec
        // and its new image (seen once in CI): look again.
        if let (WorkloadKind::Pid(pid), true) = (&self.kind, self.info.command.is_empty()) {
            self.info.command = cmdline(*pid);
        }
        self.info.clone()
    }

    /// What ran, when, and how it ended. A command still running (the
    /// recording ended first) is asked to stop with SIGTERM.
    pub fn finish(mut self) -> Workload {
        use std::os::unix::process::ExitStatusExt;
        self.refresh();
        if let WorkloadKind::Command(pid) = self.kind {
            let running = self.status.lock().map(|g| g.is_none()).unwrap_or(false);
            if running {
                // SAFETY: kill on our own child's pid.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
        }
        let ended = self.status.lock().ok().and_then(|g| *g);
        let mut info = self.info;
        info.ended_unix_s = ended.map_or_else(unix_now, |(_, t)| t);
        info.exit_status = ended.and_then(|(s, _)| s.code());
        info.signal = ended.and_then(|(s, _)| s.signal());
        let reading =
            match self.kind {
                WorkloadKind::Command(_) => self.output.lock().ok().and_then(|out| {
                    super::benchmark::read(&info.command, &out, info.ended_unix_s - info.started_unix_s)
                }),
                WorkloadKind::Pid(_) | WorkloadKind::Cgroup(_) => None,
            };
        if let Some(r) = reading {
            (info.transactions, info.transactions_from) = match r.transactions {
                Some((n, from)) => (Some(n), Some(from)),
                None if r.transactions_unreadable => {
                    (None, Some(format!("unreadable: {}", r.unreadable.first().map_or("", String::as_str))))
                }
                None => (None, None),
            };
            info.latency = r.latency;
            info.throughput = r.throughput;
            info.notes = r.unreadable;
        }
        if let Some(n) = self.named_transactions {
            (info.transactions, info.transactions_from) = (Some(n), Some("--transactions".to_owned()));
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_tree_and_unknown_pid() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let tree = process_tree(me);
        let _ = child.kill();
        let _ = child.wait();
        assert!(tree.contains(&me) && tree.contains(&child.id()), "{tree:?}");
        let e = WorkloadRun::attach_pid(u32::MAX - 1, None).err().unwrap().to_string();
        assert!(e.contains("no such process"), "{e}");
        let e = WorkloadRun::cgroup("no/such/cgroup-np", None).err().unwrap().to_string();
        assert!(e.contains("not a cgroup directory"), "{e}");
    }
}
