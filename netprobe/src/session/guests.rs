//! Finds the QEMU guests on this host, in /proc: each guest's process and
//! name (`-name`), its vCPU threads, its vhost workers (`vhost-<qemu pid>`:
//! threads of the QEMU process on Linux 6.4 and later, kernel threads
//! before) and the tap or macvtap devices it holds open. The report shows
//! per-hop numbers and CPU by these names, so a hop or a thread is read as
//! "guest web1's vhost".
//!
//! vCPU threads are named `CPU n/KVM` (or `/TCG`) only when QEMU runs with
//! `-name ...,debug-threads=on` (libvirt passes it; people starting QEMU by
//! hand often do not, and then every thread is named after the program).
//! Without the names, [`vcpu_threads`] finds them from what the kernel
//! says of each thread; see there for the rules and what they rest on.

use std::{fs, path::Path};

use crate::model::{Guest, Role};

/// Merges a new look at the host into what a recording has seen: new
/// guests are added, known ones updated, vanished ones marked gone.
pub fn merge(known: &mut Vec<Guest>, now: Vec<Guest>, t_s: f64) {
    for g in known.iter_mut() {
        if g.gone_after_s.is_none() && !now.iter().any(|n| n.pid == g.pid) {
            g.gone_after_s = Some(t_s);
        }
    }
    for n in now {
        match known.iter_mut().find(|g| g.pid == n.pid && g.gone_after_s.is_none()) {
            Some(g) => {
                for (have, new) in [(&mut g.vcpu_tids, n.vcpu_tids), (&mut g.vhost_tids, n.vhost_tids)] {
                    for t in new {
                        if !have.contains(&t) {
                            have.push(t);
                        }
                    }
                }
                for d in n.devices {
                    if !g.devices.contains(&d) {
                        g.devices.push(d);
                    }
                }
            }
            None => known.push(n),
        }
    }
}

fn read(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p).unwrap_or_default().trim_end().to_owned()
}

fn numbered_entries(dir: impl AsRef<Path>) -> Vec<u32> {
    let mut v: Vec<u32> = fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// Whether a process is QEMU, by its command name or program path.
pub fn is_qemu(comm: &str, argv0: &str) -> bool {
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    [comm, base].iter().any(|n| n.starts_with("qemu-system") || n.starts_with("qemu-kvm") || *n == "kvm")
}

/// The guest name from QEMU's arguments: `-name guest=web1,debug-threads=on`
/// or `-name web1`.
pub fn name_from_args(args: &[String]) -> Option<String> {
    let i = args.iter().position(|a| a == "-name" || a == "--name")?;
    let v = args.get(i + 1)?;
    let name = v.split(',').find_map(|p| p.strip_prefix("guest=")).unwrap_or_else(|| v.split(',').next().unwrap_or(v));
    (!name.is_empty()).then(|| name.to_owned())
}

/// The network device behind one of QEMU's file descriptors, if any:
/// `link` is the fd's /proc symlink target, `fdinfo` its fdinfo text.
pub fn device_of_fd(link: &str, fdinfo: &str, ifname_by_index: impl Fn(u32) -> Option<String>) -> Option<String> {
    if link == "/dev/net/tun" {
        return fdinfo.lines().find_map(|l| l.strip_prefix("iff:")).map(|n| n.trim().to_owned());
    }
    let n: u32 = link.strip_prefix("/dev/tap")?.parse().ok()?;
    Some(ifname_by_index(n).unwrap_or_else(|| format!("ifindex {n}")))
}

/// Interface name by ifindex in the namespace of process `pid`.
fn ifname(pid: u32, index: u32) -> Option<String> {
    // The process's own view of /sys/class/net needs its mount namespace;
    // `ip -n` needs a named netns. Try this namespace first, then ask
    // iproute2 inside the process's network namespace via nsenter-less
    // /proc/PID/root (same mount ns in the common case).
    for base in ["/sys/class/net".to_owned(), format!("/proc/{pid}/root/sys/class/net")] {
        if let Ok(d) = fs::read_dir(&base) {
            for e in d.flatten() {
                if read(e.path().join("ifindex")).parse() == Ok(index) {
                    return e.file_name().to_str().map(str::to_owned);
                }
            }
        }
    }
    None
}

/// What the kernel says of one thread of a QEMU process, in
/// /proc/PID/task/TID.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThreadFacts {
    pub tid: u32,
    pub comm: String,
    /// `syscall`: the system call the thread is blocked in and its
    /// arguments (`16 0x1a 0xae80 ...`), or `running`.
    pub syscall: String,
    /// `stat` fields 14 and 43: user time and guest time (time the kernel
    /// ran a virtual CPU for it, KVM only), in clock ticks.
    pub utime: u64,
    pub guest_time: u64,
}

impl ThreadFacts {
    fn read(pid: u32, tid: u32) -> ThreadFacts {
        let dir = format!("/proc/{pid}/task/{tid}");
        let stat = read(format!("{dir}/stat"));
        // Fields after the parenthesised name, which may hold spaces.
        let rest: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
        // `rest[0]` is field 3 (state).
        let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0);
        ThreadFacts {
            tid,
            comm: read(format!("{dir}/comm")),
            syscall: read(format!("{dir}/syscall")),
            utime: field(14),
            guest_time: field(43),
        }
    }

    /// The file descriptor of the `ioctl` the thread is blocked in.
    fn ioctl_fd(&self) -> Option<u32> {
        let mut f = self.syscall.split_whitespace();
        let nr: i64 = f.next()?.parse().ok()?;
        if nr != libc::SYS_ioctl {
            return None;
        }
        u32::from_str_radix(f.next()?.trim_start_matches("0x"), 16).ok()
    }
}

/// How many threads run QEMU's vCPUs, from its arguments: the vCPUs of
/// `-smp` (`4`, `cpus=4,maxcpus=8`, or `sockets=2,cores=2,threads=1`; 1
/// without it, as QEMU defaults), or 1 with single-threaded TCG
/// (`-accel tcg,thread=single`), where one thread runs them all.
pub fn vcpu_threads_from_args(args: &[String]) -> u32 {
    if args.iter().any(|a| a.split(',').any(|p| p == "thread=single")) {
        return 1;
    }
    let Some(v) = args.iter().position(|a| a == "-smp" || a == "--smp").and_then(|i| args.get(i + 1)) else {
        return 1;
    };
    let mut product = 1;
    for part in v.split(',') {
        let (k, n) = part.split_once('=').unwrap_or(("cpus", part));
        let Ok(n) = n.parse::<u32>() else { continue };
        match k {
            "cpus" => return n.max(1),
            "sockets" | "dies" | "clusters" | "cores" | "threads" => product *= n.max(1),
            _ => {}
        }
    }
    product
}

/// The vCPU threads of QEMU process `pid`, among `threads`, given the
/// KVM vCPU file descriptors it holds (`vcpu_fds`: fd, vCPU index) and
/// how many threads run its vCPUs ([`vcpu_threads_from_args`]).
///
/// 1. Named (`debug-threads=on`): `CPU n/KVM` or `CPU n/TCG`.
/// 2. KVM (the process holds `anon_inode:kvm-vcpu:N` fds, made by the
///    kernel's KVM_CREATE_VCPU): a thread is a vCPU when the kernel has
///    accounted guest time to it (`stat` field 43, counted only while a
///    thread runs a virtual CPU in guest mode) or when it is blocked in
///    `ioctl` on a kvm-vcpu fd (`syscall`: KVM_RUN, a halted vCPU). A
///    thread on the CPU reads `running`; the next look (every second)
///    catches it.
/// 3. TCG (no kvm-vcpu fds): QEMU emulates each vCPU in a thread of its
///    own (multi-threaded TCG, the default for x86 and s390x guests) that
///    runs the translated guest code in user mode; the main loop (the
///    thread whose id is the process id) does the device I/O, and the
///    other helpers (RCU, thread pools) use next to no CPU. So the vCPUs
///    are the `-smp` threads other than the main one with the most user
///    time, once they have any. Measured on QEMU 7.2, Debian's 6.1
///    kernel, 2 vCPUs pinging: vCPUs 1214 and 249 ticks, RCU 0, main loop
///    17 (not counted). With `-accel tcg,thread=single` one thread runs
///    every vCPU: the busiest one.
pub fn vcpu_threads(pid: u32, threads: &[ThreadFacts], vcpu_fds: &[(u32, u32)], runners: u32) -> Vec<u32> {
    let named: Vec<u32> = threads.iter().filter(|t| Role::of(&t.comm) == Role::Vcpu).map(|t| t.tid).collect();
    if !named.is_empty() {
        return named;
    }
    if !vcpu_fds.is_empty() {
        return threads
            .iter()
            .filter(|t| t.guest_time > 0 || t.ioctl_fd().is_some_and(|fd| vcpu_fds.iter().any(|(f, _)| *f == fd)))
            .map(|t| t.tid)
            .collect();
    }
    let mut busy: Vec<&ThreadFacts> = threads.iter().filter(|t| t.tid != pid && t.utime > 0).collect();
    busy.sort_by_key(|t| std::cmp::Reverse(t.utime));
    busy.truncate(runners as usize);
    let mut tids: Vec<u32> = busy.iter().map(|t| t.tid).collect();
    tids.sort_unstable();
    tids
}

/// Every QEMU guest running on this host.
pub fn discover() -> Vec<Guest> {
    let pids = numbered_entries("/proc");
    // Pre-6.4 kernels run vhost workers as kernel threads `vhost-<pid>`.
    let kthread_vhost: Vec<(u32, String)> = pids
        .iter()
        .filter_map(|&p| {
            let c = read(format!("/proc/{p}/comm"));
            c.starts_with("vhost-").then_some((p, c))
        })
        .collect();
    let mut out = Vec::new();
    for &pid in &pids {
        let comm = read(format!("/proc/{pid}/comm"));
        let args: Vec<String> = fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !is_qemu(&comm, args.first().map_or("", String::as_str)) {
            continue;
        }
        let mut g =
            Guest { name: name_from_args(&args).unwrap_or_else(|| format!("qemu-{pid}")), pid, ..Guest::default() };
        let threads: Vec<ThreadFacts> =
            numbered_entries(format!("/proc/{pid}/task")).into_iter().map(|tid| ThreadFacts::read(pid, tid)).collect();
        g.vhost_tids.extend(threads.iter().filter(|t| Role::of(&t.comm) == Role::Vhost).map(|t| t.tid));
        let own = format!("vhost-{pid}");
        g.vhost_tids.extend(kthread_vhost.iter().filter(|(_, c)| *c == own).map(|(t, _)| *t));
        let mut vcpu_fds = Vec::new();
        for fd in numbered_entries(format!("/proc/{pid}/fd")) {
            let Ok(link) = fs::read_link(format!("/proc/{pid}/fd/{fd}")) else { continue };
            let link = link.to_string_lossy();
            if let Some(n) = link.strip_prefix("anon_inode:kvm-vcpu:").and_then(|n| n.parse::<u32>().ok()) {
                vcpu_fds.push((fd, n));
                continue;
            }
            let info = read(format!("/proc/{pid}/fdinfo/{fd}"));
            if let Some(dev) = device_of_fd(&link, &info, |i| ifname(pid, i)) {
                if !g.devices.contains(&dev) {
                    g.devices.push(dev);
                }
            }
        }
        g.vcpu_tids = vcpu_threads(pid, &threads, &vcpu_fds, vcpu_threads_from_args(&args));
        out.push(g);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn qemu_processes_and_names() {
        assert!(is_qemu("qemu-system-s39", "/usr/bin/qemu-system-s390x"));
        assert!(is_qemu("qemu-kvm", "/usr/libexec/qemu-kvm"));
        assert!(!is_qemu("bash", "/bin/bash"));
        let a = args("qemu-system-x86_64 -name guest=web1,debug-threads=on -m 4096");
        assert_eq!(name_from_args(&a).as_deref(), Some("web1"));
        assert_eq!(name_from_args(&args("qemu -name db2 -smp 4")).as_deref(), Some("db2"));
        assert_eq!(name_from_args(&args("qemu -smp 4")), None);
    }

    fn thread(tid: u32, syscall: &str, utime: u64, guest_time: u64) -> ThreadFacts {
        ThreadFacts { tid, comm: "qemu-system-x86".into(), syscall: syscall.into(), utime, guest_time }
    }

    #[test]
    fn vcpu_thread_count_from_smp_and_accel() {
        assert_eq!(vcpu_threads_from_args(&args("qemu -m 512")), 1);
        assert_eq!(vcpu_threads_from_args(&args("qemu -smp 4")), 4);
        assert_eq!(vcpu_threads_from_args(&args("qemu -smp cpus=2,maxcpus=8")), 2);
        assert_eq!(vcpu_threads_from_args(&args("qemu -smp 3,sockets=3")), 3);
        assert_eq!(vcpu_threads_from_args(&args("qemu -smp sockets=2,cores=2,threads=2")), 8);
        assert_eq!(vcpu_threads_from_args(&args("qemu -accel tcg,thread=single -smp 4")), 1);
    }

    /// What /proc showed for a real TCG guest (QEMU 7.2, 2 vCPUs, no
    /// debug-threads): main loop in ppoll, RCU thread idle, two vCPUs
    /// waiting on their halt condition (futex) after running guest code.
    #[test]
    fn tcg_vcpus_are_the_busiest_threads_besides_the_main_loop() {
        let threads = [
            thread(32301, "271 0x564e47304b70", 17, 0),
            thread(32311, "202 0x564e0e5cd7a8", 0, 0),
            thread(32321, "202 0x564e46615128", 1214, 0),
            thread(32322, "running", 249, 0),
        ];
        assert_eq!(vcpu_threads(32301, &threads, &[], 2), [32321, 32322]);
        assert_eq!(vcpu_threads(32301, &threads, &[], 1), [32321]);
        // Just started: no thread has run guest code yet.
        let fresh = [thread(5, "271 0x1", 3, 0), thread(6, "202 0x2", 0, 0), thread(7, "202 0x3", 0, 0)];
        assert!(vcpu_threads(5, &fresh, &[], 1).is_empty());
    }

    #[test]
    fn kvm_vcpus_by_guest_time_or_their_vcpu_fd() {
        let ioctl = format!("{} 0x1c 0xae80 0x0 0x0 0x0 0x0 0x7ffd 0x7f00", libc::SYS_ioctl);
        let threads = [
            thread(100, "271 0x1", 50, 0),
            thread(101, "202 0x2", 0, 0),
            thread(102, &ioctl, 0, 0),     // vCPU 0, halted: blocked in KVM_RUN on fd 0x1c
            thread(103, "running", 3, 90), // vCPU 1, in guest mode
            thread(104, &format!("{} 0x9 0x5401", libc::SYS_ioctl), 0, 0), // an ioctl on another fd
        ];
        assert_eq!(vcpu_threads(100, &threads, &[(0x1c, 0), (0x1d, 1)], 2), [102, 103]);
        // Named threads win.
        let mut named = threads.clone();
        named[4].comm = "CPU 0/KVM".into();
        assert_eq!(vcpu_threads(100, &named, &[(0x1c, 0)], 2), [104]);
    }

    #[test]
    fn a_vanished_guest_is_kept_and_marked_gone() {
        let g =
            |pid, dev: &str| Guest { name: format!("g{pid}"), pid, devices: vec![dev.to_owned()], ..Guest::default() };
        let mut known = Vec::new();
        merge(&mut known, vec![g(10, "tap0"), g(11, "tap1")], 1.0);
        merge(&mut known, vec![g(10, "tap9")], 2.0);
        assert_eq!(known.len(), 2);
        assert_eq!(known[0].devices, ["tap0", "tap9"]);
        assert_eq!((known[0].gone_after_s, known[1].gone_after_s), (None, Some(2.0)));
    }

    #[test]
    fn tap_and_macvtap_file_descriptors() {
        let tun = "pos:\t0\nflags:\t0104002\nmnt_id:\t25\nino:\t1043\niff:\tvnet3\n";
        assert_eq!(device_of_fd("/dev/net/tun", tun, |_| None).as_deref(), Some("vnet3"));
        let name = |i| (i == 12).then(|| "macvtap0".to_owned());
        assert_eq!(device_of_fd("/dev/tap12", "", name).as_deref(), Some("macvtap0"));
        assert_eq!(device_of_fd("/dev/tap13", "", name).as_deref(), Some("ifindex 13"));
        assert_eq!(device_of_fd("/dev/vhost-net", "", name), None);
        assert_eq!(device_of_fd("socket:[1234]", "", name), None);
    }
}
