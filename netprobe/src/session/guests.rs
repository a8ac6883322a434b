//! Finds the QEMU guests on this host, in /proc: each guest's process and
//! name (`-name`), its vCPU threads (`CPU n/KVM`, or `/TCG` without KVM),
//! its vhost workers (`vhost-<qemu pid>`: threads of the QEMU process on
//! Linux 6.4 and later, kernel threads before) and the tap or macvtap
//! devices it holds open. The report shows per-hop numbers and CPU by
//! these names, so a hop or a thread is read as "guest web1's vhost".

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
        for tid in numbered_entries(format!("/proc/{pid}/task")) {
            let t = read(format!("/proc/{pid}/task/{tid}/comm"));
            match Role::of(&t) {
                Role::Vcpu => g.vcpu_tids.push(tid),
                Role::Vhost => g.vhost_tids.push(tid),
                _ => {}
            }
        }
        let own = format!("vhost-{pid}");
        g.vhost_tids.extend(kthread_vhost.iter().filter(|(_, c)| *c == own).map(|(t, _)| *t));
        for fd in numbered_entries(format!("/proc/{pid}/fd")) {
            let Ok(link) = fs::read_link(format!("/proc/{pid}/fd/{fd}")) else { continue };
            let link = link.to_string_lossy();
            let info = read(format!("/proc/{pid}/fdinfo/{fd}"));
            if let Some(dev) = device_of_fd(&link, &info, |i| ifname(pid, i)) {
                if !g.devices.contains(&dev) {
                    g.devices.push(dev);
                }
            }
        }
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
