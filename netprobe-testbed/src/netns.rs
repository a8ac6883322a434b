//! Network namespaces: running code and commands inside one, and the
//! identity (`/proc/.../ns/net` inode) the kernel side reports devices by.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    process::{Child, Command, Stdio},
};

use anyhow::{bail, Context, Result};

/// Path of a named namespace made by `ip netns add`.
pub fn path(name: &str) -> String {
    format!("/var/run/netns/{name}")
}

/// Inode number of a namespace (what the kernel calls its `ns.inum`).
pub fn inode(name: Option<&str>) -> Result<u32> {
    let p = name.map_or_else(|| "/proc/self/ns/net".to_owned(), path);
    let md = std::fs::metadata(&p).with_context(|| format!("network namespace {p} not found"))?;
    Ok(md.ino() as u32)
}

/// Runs `f` on a thread that has joined namespace `name` (None = ours).
pub fn run_in<R: Send + 'static>(name: Option<&str>, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
    let ns = match name {
        Some(n) => Some(File::open(path(n)).with_context(|| format!("network namespace {n} not found"))?),
        None => None,
    };
    run_in_file(ns, f)
}

/// Runs `f` on a thread that has joined the namespace open as `ns` (a
/// `/var/run/netns/NAME` or `/proc/PID/ns/net` file; None = ours).
pub fn run_in_file<R: Send + 'static>(ns: Option<File>, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
    std::thread::spawn(move || -> Result<R> {
        if let Some(ns) = ns {
            enter(&ns)?;
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in network namespace panicked"))?
}

/// Moves the calling thread into the namespace open as `ns`.
pub fn enter(ns: &File) -> Result<()> {
    // SAFETY: setns on a valid namespace fd; affects only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns failed: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Index of interface `ifname` inside namespace `ns` (None = ours).
pub fn ifindex(ns: Option<&str>, ifname: &str) -> Result<u32> {
    let name = std::ffi::CString::new(ifname)?;
    let idx = run_in(ns, move || unsafe { libc::if_nametoindex(name.as_ptr()) })?;
    if idx == 0 {
        bail!(
            "no network interface {ifname} in {}; list them with `ip{} link`",
            ns.map_or("this network namespace".to_owned(), |n| format!("network namespace {n}")),
            ns.map_or(String::new(), |n| format!(" -n {n}"))
        );
    }
    Ok(idx)
}

/// Runs `ip` with the given arguments, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    sh("ip", args)
}

/// Runs a command, returning stdout, failing with stderr in the message.
pub fn sh(prog: &str, args: &[&str]) -> Result<String> {
    let out =
        Command::new(prog).args(args).output().with_context(|| format!("cannot run {prog} (is it installed?)"))?;
    if !out.status.success() {
        bail!("`{prog} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A child process killed (and reaped) when dropped, also on failure.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a command (a server) in namespace `ns`, its output discarded;
/// it is killed when the returned guard drops.
pub fn spawn_in(ns: &str, args: &[&str]) -> Result<KillOnDrop> {
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {args:?} in network namespace {ns}"))?;
    Ok(KillOnDrop(child))
}
