//! The host's configuration, read from the live host when a recording is
//! made: kernel, CPUs, SMT and THP from /proc and /sys; for every device
//! on the measured paths its driver, link kind and macvtap mode, MTU,
//! txqueuelen, queue counts (rtnetlink RTM_GETLINK), feature flags
//! (ethtool ioctls: GSSET_INFO, GSTRINGS, GFEATURES), IRQs and their
//! affinity, qeth settings (sysfs); OVS datapaths' flow counts (generic
//! netlink `ovs_datapath`); guests' vCPU pinning. A device in another
//! network namespace is read from inside it. What cannot be read becomes
//! a note, never a failed recording.

use std::{collections::BTreeMap, fs::File, os::unix::fs::MetadataExt, path::Path};

use netprobe_testbed::netns;

use crate::model::{
    host::{DeviceConfig, GuestConfig, HostConfig, IrqConfig, OvsDatapath},
    Guest,
};

/// A device to describe: its name and the inode of its network
/// namespace (0: netprobe's own).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceRef {
    pub netns: u32,
    pub name: String,
}

fn read(p: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

/// The host's configuration now, for these devices and guests.
pub fn capture(devices: &[DeviceRef], guests: &[Guest]) -> HostConfig {
    let mut c = HostConfig {
        kernel_release: read("/proc/sys/kernel/osrelease").unwrap_or_default(),
        kernel_cmdline: read("/proc/cmdline").unwrap_or_default(),
        cpu_model: cpu_model(&read("/proc/cpuinfo").unwrap_or_default()),
        cpus_online: read("/sys/devices/system/cpu/online").unwrap_or_default(),
        smt_control: read("/sys/devices/system/cpu/smt/control"),
        smt_active: read("/sys/devices/system/cpu/smt/active").map(|s| s == "1"),
        thp: read("/sys/kernel/mm/transparent_hugepage/enabled").and_then(|s| selected(&s)),
        ..HostConfig::default()
    };
    let own = netns::inode(None).unwrap_or(0);
    let spaces = namespaces(own);
    let mut by_ns: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for d in devices {
        let ns = if d.netns == 0 { own } else { d.netns };
        let names = by_ns.entry(ns).or_default();
        if !names.contains(&d.name) {
            names.push(d.name.clone());
        }
    }
    let ovs_loaded = Path::new("/sys/module/openvswitch").exists();
    let interrupts = read("/proc/interrupts").unwrap_or_default();
    for (ns, names) in by_ns {
        let Some((label, path)) = spaces.get(&ns).cloned() else {
            c.notes.push(format!(
                "network namespace {ns} (devices {}) was gone, or no process was in it, when its devices were read",
                names.join(", ")
            ));
            continue;
        };
        let file = if ns == own { None } else { File::open(&path).ok() };
        if ns != own && file.is_none() {
            c.notes.push(format!("cannot open network namespace {label} ({path})"));
            continue;
        }
        let in_host = ns == own;
        let read_ns = move || {
            let devs: Vec<Result<(DeviceConfig, Option<String>), String>> = names.iter().map(|n| device(n)).collect();
            let ovs = if ovs_loaded { Some(ovs_datapaths()) } else { None };
            (devs, ovs)
        };
        match netns::run_in_file(file, read_ns) {
            Ok((devs, ovs)) => {
                for d in devs {
                    match d {
                        Ok((mut d, note)) => {
                            c.notes.extend(note.map(|n| format!("{n} (network namespace {label})")));
                            d.netns.clone_from(&label);
                            d.irqs = irqs(&d.name, in_host, &interrupts);
                            d.qeth = if in_host { qeth(Path::new(QETH_SYSFS), &d.name) } else { BTreeMap::new() };
                            c.devices.push(d);
                        }
                        Err(e) => c.notes.push(format!("{e} (network namespace {label})")),
                    }
                }
                match ovs {
                    Some(Ok(dps)) => c.ovs_datapaths.extend(dps.into_iter().map(|mut dp| {
                        dp.netns.clone_from(&label);
                        dp
                    })),
                    Some(Err(e)) => c.notes.push(format!("OVS datapaths in {label}: {e}")),
                    None => {}
                }
            }
            Err(e) => c.notes.push(format!("cannot enter network namespace {label}: {e:#}")),
        }
    }
    c.ovs_datapaths.dedup();
    for g in guests.iter().filter(|g| g.gone_after_s.is_none()) {
        c.guests.push(GuestConfig {
            name: g.name.clone(),
            pid: g.pid,
            vcpus: g.vcpu_tids.len(),
            vcpu_affinity: g
                .vcpu_tids
                .iter()
                .map(|tid| {
                    read(format!("/proc/{}/task/{tid}/status", g.pid))
                        .and_then(|s| {
                            s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|v| v.trim().to_owned())
                        })
                        .unwrap_or_else(|| "unknown".to_owned())
                })
                .collect(),
        });
    }
    c
}

/// The bracketed choice of a sysfs mode list: `always [madvise] never`.
fn selected(s: &str) -> Option<String> {
    s.split('[').nth(1).and_then(|x| x.split(']').next()).map(str::to_owned)
}

/// /proc/cpuinfo's `model name` (x86, arm64: `CPU part` is not a name),
/// or on s390x the vendor and machine type (`processor 0: version = FF,
/// identification = ..., machine = 8561`).
fn cpu_model(cpuinfo: &str) -> String {
    let field = |k: &str| {
        cpuinfo.lines().find_map(|l| {
            let (name, v) = l.split_once(':')?;
            (name.trim() == k).then(|| v.trim().to_owned())
        })
    };
    if let Some(m) = field("model name") {
        return m;
    }
    let machine = cpuinfo
        .lines()
        .find_map(|l| l.split(',').find_map(|f| f.trim().strip_prefix("machine = ").map(|m| m.trim().to_owned())));
    match (field("vendor_id"), machine) {
        (Some(v), Some(m)) => format!("{v} machine {m}"),
        (Some(v), None) => v,
        (None, Some(m)) => format!("machine {m}"),
        (None, None) => String::new(),
    }
}

/// Network namespaces by inode: (label, path to open). Named ones (`ip
/// netns`) by name, netprobe's own as `host`, the rest by a process in them.
fn namespaces(own: u32) -> BTreeMap<u32, (String, String)> {
    let mut out = BTreeMap::new();
    out.insert(own, ("host".to_owned(), "/proc/self/ns/net".to_owned()));
    for dir in ["/var/run/netns", "/run/netns"] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = e.path();
            if let Ok(md) = std::fs::metadata(&path) {
                let name = e.file_name().to_string_lossy().into_owned();
                out.entry(md.ino() as u32).or_insert((name, path.display().to_string()));
            }
        }
    }
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let path = format!("/proc/{pid}/ns/net");
        if let Ok(md) = std::fs::metadata(&path) {
            let ino = md.ino() as u32;
            out.entry(ino).or_insert((format!("inode {ino}"), path));
        }
    }
    out
}

/// One device of the calling thread's network namespace.
/// With a note when its feature flags could not be read.
fn device(name: &str) -> Result<(DeviceConfig, Option<String>), String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("device name {name:?}"))?;
    // SAFETY: if_nametoindex on a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if ifindex == 0 {
        return Err(format!("device {name} was gone when its configuration was read"));
    }
    let mut d = DeviceConfig { name: name.to_owned(), ..DeviceConfig::default() };
    match rtnl::link(ifindex) {
        Ok(l) => {
            (d.mtu, d.txqueuelen, d.tx_queues, d.rx_queues) = (l.mtu, l.txqlen, l.tx_queues, l.rx_queues);
            d.kind = l.kind;
            d.mode = l.macvlan_mode.map(|m| macvlan_mode(m).to_owned());
        }
        Err(e) => return Err(format!("device {name}: rtnetlink RTM_GETLINK failed: {e}")),
    }
    d.driver = ethtool::driver(name).ok().filter(|s| !s.is_empty());
    let note = match ethtool::features(name) {
        Ok(f) => {
            d.features = f;
            None
        }
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => None,
        Err(e) => Some(format!("device {name}: feature flags (ETHTOOL_GFEATURES) unreadable: {e}")),
    };
    Ok((d, note))
}

/// IFLA_MACVLAN_MODE's value by name (linux/if_link.h).
fn macvlan_mode(m: u32) -> &'static str {
    match m {
        1 => "private",
        2 => "vepa",
        4 => "bridge",
        8 => "passthru",
        16 => "source",
        _ => "unknown",
    }
}

/// A device's interrupts with their affinity: the PCI function's MSI
/// vectors (sysfs, readable for devices in netprobe's namespace), and
/// /proc/interrupts actions named after the device (`eth0-TxRx-0`).
fn irqs(name: &str, in_host: bool, interrupts: &str) -> Vec<IrqConfig> {
    let mut ids: Vec<u32> = Vec::new();
    if in_host {
        let dev = Path::new("/sys/class/net").join(name).join("device");
        for dir in [dev.join("msi_irqs"), dev.join("../msi_irqs")] {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                ids.extend(e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()));
            }
            if !ids.is_empty() {
                break;
            }
        }
    }
    let action = |irq: u32| {
        interrupts.lines().find_map(|l| {
            let (n, rest) = l.trim_start().split_once(':')?;
            (n.parse::<u32>().ok()? == irq).then(|| rest.split_whitespace().last().unwrap_or("").to_owned())
        })
    };
    for l in interrupts.lines() {
        let Some((n, rest)) = l.trim_start().split_once(':') else { continue };
        let Ok(irq) = n.parse::<u32>() else { continue };
        let named = rest.split_whitespace().last().is_some_and(|a| {
            a == name || a.strip_prefix(name).is_some_and(|r| r.starts_with('-') || r.starts_with('@'))
        });
        if named && !ids.contains(&irq) {
            ids.push(irq);
        }
    }
    ids.sort_unstable();
    ids.into_iter()
        .map(|irq| IrqConfig {
            irq,
            name: action(irq).unwrap_or_default(),
            affinity: read(format!("/proc/irq/{irq}/smp_affinity_list")).unwrap_or_else(|| "unknown".to_owned()),
        })
        .collect()
}

const QETH_SYSFS: &str = "/sys/bus/ccwgroup/drivers/qeth";

/// The qeth settings a study compares, from the qeth driver's sysfs.
const QETH_ATTRS: [&str; 9] =
    ["card_type", "chpid", "layer2", "buffer_count", "isolation", "priority_queueing", "portno", "online", "state"];

/// A qeth device's settings: the group device under `root` (the qeth
/// driver's sysfs directory) whose `if_name` is `name`.
fn qeth(root: &Path, name: &str) -> BTreeMap<String, String> {
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let dir = e.path();
        if read(dir.join("if_name")).as_deref() != Some(name) {
            continue;
        }
        let mut out: BTreeMap<String, String> =
            QETH_ATTRS.iter().filter_map(|a| read(dir.join(a)).map(|v| ((*a).to_owned(), v))).collect();
        out.insert("bus_id".to_owned(), e.file_name().to_string_lossy().into_owned());
        return out;
    }
    BTreeMap::new()
}

/// The calling thread's network namespace's OVS kernel datapaths.
fn ovs_datapaths() -> Result<Vec<OvsDatapath>, String> {
    rtnl::ovs_datapaths().map_err(|e| format!("generic netlink ovs_datapath: {e}"))
}

/// rtnetlink and generic netlink, the few requests netprobe makes: one
/// link's attributes, and the OVS datapaths' statistics.
mod rtnl {
    use std::{io, os::fd::AsRawFd};

    use crate::model::host::OvsDatapath;

    const NLMSG_HDR: usize = 16;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_DUMP: u16 = 0x300;
    const RTM_GETLINK: u16 = 18;
    // linux/if_link.h
    const IFLA_MTU: u16 = 4;
    const IFLA_TXQLEN: u16 = 13;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_NUM_TX_QUEUES: u16 = 31;
    const IFLA_NUM_RX_QUEUES: u16 = 32;
    const IFLA_INFO_KIND: u16 = 1;
    const IFLA_INFO_DATA: u16 = 2;
    const IFLA_MACVLAN_MODE: u16 = 1;
    // linux/genetlink.h, linux/openvswitch.h
    const GENL_ID_CTRL: u16 = 0x10;
    const CTRL_CMD_GETFAMILY: u8 = 3;
    const CTRL_ATTR_FAMILY_ID: u16 = 1;
    const CTRL_ATTR_FAMILY_NAME: u16 = 2;
    const OVS_DP_CMD_GET: u8 = 3;
    const OVS_DATAPATH_VERSION: u8 = 2;
    const OVS_DP_ATTR_NAME: u16 = 1;
    const OVS_DP_ATTR_STATS: u16 = 3;

    #[derive(Debug, Default, PartialEq)]
    pub(super) struct Link {
        pub mtu: Option<u32>,
        pub txqlen: Option<u32>,
        pub tx_queues: Option<u32>,
        pub rx_queues: Option<u32>,
        pub kind: Option<String>,
        pub macvlan_mode: Option<u32>,
    }

    struct Socket(std::os::fd::OwnedFd);

    impl Socket {
        fn open(protocol: i32) -> io::Result<Socket> {
            // SAFETY: socket(2); the fd is owned below.
            let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fd was just returned by socket(2) and is ours alone.
            Ok(Socket(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }))
        }

        /// Sends one request and returns the payloads of the replies
        /// (after their netlink header), up to NLMSG_DONE for a dump.
        fn request(&self, ty: u16, flags: u16, payload: &[u8]) -> io::Result<Vec<Vec<u8>>> {
            let mut msg = Vec::with_capacity(NLMSG_HDR + payload.len());
            msg.extend_from_slice(&((NLMSG_HDR + payload.len()) as u32).to_ne_bytes());
            msg.extend_from_slice(&ty.to_ne_bytes());
            msg.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
            msg.extend_from_slice(&1u32.to_ne_bytes());
            msg.extend_from_slice(&0u32.to_ne_bytes());
            msg.extend_from_slice(payload);
            // SAFETY: send(2) of a buffer we own.
            if unsafe { libc::send(self.0.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut out = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                // SAFETY: recv(2) into a buffer we own, of its length.
                let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                let mut b = &buf[..n as usize];
                while b.len() >= NLMSG_HDR {
                    let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
                    let ty = u16::from_ne_bytes(b[4..6].try_into().unwrap());
                    if len < NLMSG_HDR || len > b.len() {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
                    }
                    let body = &b[NLMSG_HDR..len];
                    match ty {
                        NLMSG_DONE => return Ok(out),
                        NLMSG_ERROR => {
                            let code = i32::from_ne_bytes(body.get(0..4).unwrap_or(&[0; 4]).try_into().unwrap());
                            if code != 0 {
                                return Err(io::Error::from_raw_os_error(-code));
                            }
                            return Ok(out);
                        }
                        _ => out.push(body.to_vec()),
                    }
                    b = &b[align(len).min(b.len())..];
                }
                if flags & NLM_F_DUMP == 0 && !out.is_empty() {
                    return Ok(out);
                }
            }
        }
    }

    fn align(n: usize) -> usize {
        (n + 3) & !3
    }

    /// Netlink attributes: (type, payload), nested flag masked off.
    pub(super) fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
        let mut out = Vec::new();
        while b.len() >= 4 {
            let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
            let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
            if len < 4 || len > b.len() {
                break;
            }
            out.push((ty, &b[4..len]));
            b = &b[align(len).min(b.len())..];
        }
        out
    }

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(payload);
        a.resize(align(a.len()), 0);
        a
    }

    fn u32_of(p: &[u8]) -> Option<u32> {
        Some(u32::from_ne_bytes(p.get(0..4)?.try_into().ok()?))
    }

    fn str_of(p: &[u8]) -> String {
        String::from_utf8_lossy(p.split(|&c| c == 0).next().unwrap_or(p)).into_owned()
    }

    /// A link's attributes from an RTM_NEWLINK payload (ifinfomsg, 16
    /// bytes, then attributes).
    pub(super) fn parse_link(body: &[u8]) -> Link {
        let mut l = Link::default();
        for (ty, p) in attrs(body.get(16..).unwrap_or_default()) {
            match ty {
                IFLA_MTU => l.mtu = u32_of(p),
                IFLA_TXQLEN => l.txqlen = u32_of(p),
                IFLA_NUM_TX_QUEUES => l.tx_queues = u32_of(p),
                IFLA_NUM_RX_QUEUES => l.rx_queues = u32_of(p),
                IFLA_LINKINFO => {
                    for (ity, ip) in attrs(p) {
                        match ity {
                            IFLA_INFO_KIND => l.kind = Some(str_of(ip)),
                            IFLA_INFO_DATA if matches!(l.kind.as_deref(), Some("macvtap" | "macvlan")) => {
                                l.macvlan_mode = attrs(ip)
                                    .into_iter()
                                    .find(|(t, _)| *t == IFLA_MACVLAN_MODE)
                                    .and_then(|(_, v)| u32_of(v));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }

    /// RTM_GETLINK for one interface of the calling thread's namespace.
    pub(super) fn link(ifindex: u32) -> io::Result<Link> {
        let s = Socket::open(libc::NETLINK_ROUTE)?;
        let mut ifi = [0u8; 16];
        ifi[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        let replies = s.request(RTM_GETLINK, 0, &ifi)?;
        replies.first().map(|b| parse_link(b)).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no reply"))
    }

    /// Datapaths from OVS_DP_CMD_GET replies (genl header, ovs_header,
    /// then attributes; stats: n_hit, n_missed, n_lost, n_flows as u64).
    pub(super) fn parse_datapath(body: &[u8]) -> Option<OvsDatapath> {
        let mut dp = OvsDatapath::default();
        for (ty, p) in attrs(body.get(8..)?) {
            match ty {
                OVS_DP_ATTR_NAME => dp.name = str_of(p),
                OVS_DP_ATTR_STATS => {
                    let n = |i: usize| {
                        p.get(i * 8..i * 8 + 8).map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
                    };
                    (dp.hit, dp.missed, dp.lost, dp.flows) = (n(0), n(1), n(2), n(3));
                }
                _ => {}
            }
        }
        (!dp.name.is_empty()).then_some(dp)
    }

    pub(super) fn ovs_datapaths() -> io::Result<Vec<OvsDatapath>> {
        let s = Socket::open(libc::NETLINK_GENERIC)?;
        let mut get = vec![CTRL_CMD_GETFAMILY, 1, 0, 0];
        get.extend(attr(CTRL_ATTR_FAMILY_NAME, b"ovs_datapath\0"));
        let family = s
            .request(GENL_ID_CTRL, 0, &get)?
            .iter()
            .flat_map(|b| attrs(b.get(4..).unwrap_or_default()).into_iter().map(|(t, p)| (t, p.to_vec())))
            .find(|(t, _)| *t == CTRL_ATTR_FAMILY_ID)
            .and_then(|(_, p)| p.get(0..2).map(|b| u16::from_ne_bytes([b[0], b[1]])))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "family ovs_datapath not registered"))?;
        let dump = [OVS_DP_CMD_GET, OVS_DATAPATH_VERSION, 0, 0, 0, 0, 0, 0];
        Ok(s.request(family, NLM_F_DUMP, &dump)?.iter().filter_map(|b| parse_datapath(b)).collect())
    }
}

/// The ethtool ioctls (SIOCETHTOOL) netprobe uses: the driver's name
/// (ETHTOOL_GDRVINFO) and the feature flags by name (ETHTOOL_GSSET_INFO
/// and ETHTOOL_GSTRINGS for ETH_SS_FEATURES, ETHTOOL_GFEATURES for their
/// state), as `ethtool -i` and `ethtool -k` read them.
mod ethtool {
    use std::{collections::BTreeMap, io, os::fd::AsRawFd};

    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x03;
    const ETHTOOL_GSTRINGS: u32 = 0x1b;
    const ETHTOOL_GSSET_INFO: u32 = 0x37;
    const ETHTOOL_GFEATURES: u32 = 0x3a;
    const ETH_SS_FEATURES: u32 = 4;
    const ETH_GSTRING_LEN: usize = 32;

    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }

    /// One SIOCETHTOOL call on `buf` (its first u32 is the command).
    fn call(dev: &str, buf: &mut [u32]) -> io::Result<()> {
        let mut req = IfReq { name: [0; 16], data: buf.as_mut_ptr().cast(), _pad: [0; 16] };
        let n = dev.len().min(15);
        req.name[..n].copy_from_slice(&dev.as_bytes()[..n]);
        // SAFETY: a datagram socket for the ioctl, closed by OwnedFd.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is ours alone.
        let sock: std::os::fd::OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        // SAFETY: SIOCETHTOOL with an ifreq whose data points at `buf`,
        // sized for the command by the caller.
        if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn bytes(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    fn cstr(b: &[u8]) -> String {
        String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or(b)).into_owned()
    }

    pub(super) fn driver(dev: &str) -> io::Result<String> {
        // struct ethtool_drvinfo: cmd, then driver[32] ... (196 bytes).
        let mut buf = [0u32; 49];
        buf[0] = ETHTOOL_GDRVINFO;
        call(dev, &mut buf)?;
        Ok(cstr(&bytes(&buf)[4..36]))
    }

    pub(super) fn features(dev: &str) -> io::Result<BTreeMap<String, bool>> {
        // struct ethtool_sset_info: cmd, reserved, sset_mask (u64), data[].
        let mut info = [0u32; 5];
        info[0] = ETHTOOL_GSSET_INFO;
        // The u64 mask as memory holds it, on either byte order (s390x).
        let mask = (1u64 << ETH_SS_FEATURES).to_ne_bytes();
        info[2] = u32::from_ne_bytes([mask[0], mask[1], mask[2], mask[3]]);
        info[3] = u32::from_ne_bytes([mask[4], mask[5], mask[6], mask[7]]);
        call(dev, &mut info)?;
        let count = info[4] as usize;
        if count == 0 {
            return Ok(BTreeMap::new());
        }
        // struct ethtool_gstrings: cmd, string_set, len, data[len * 32].
        let mut strings = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
        (strings[0], strings[1], strings[2]) = (ETHTOOL_GSTRINGS, ETH_SS_FEATURES, count as u32);
        call(dev, &mut strings)?;
        let names = bytes(&strings[3..]);
        // struct ethtool_gfeatures: cmd, size, then per 32 features
        // {available, requested, active, never_changed}.
        let blocks = count.div_ceil(32);
        let mut feats = vec![0u32; 2 + blocks * 4];
        (feats[0], feats[1]) = (ETHTOOL_GFEATURES, blocks as u32);
        call(dev, &mut feats)?;
        Ok((0..count)
            .filter_map(|i| {
                let name = cstr(&names[i * ETH_GSTRING_LEN..(i + 1) * ETH_GSTRING_LEN]);
                let active = feats[2 + (i / 32) * 4 + 2] >> (i % 32) & 1 == 1;
                (!name.is_empty()).then_some((name, active))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_read_from_the_kernel() {
        let c = capture(&[DeviceRef { netns: 0, name: "lo".to_owned() }], &[]);
        let lo = c.devices.iter().find(|d| d.name == "lo").unwrap_or_else(|| panic!("{c:#?}"));
        assert_eq!(lo.netns, "host");
        assert!(lo.mtu.is_some_and(|m| m >= 1500) && lo.txqueuelen.is_some() && lo.tx_queues == Some(1), "{lo:?}");
        assert_eq!(lo.features.get("loopback"), Some(&true), "ETHTOOL_GFEATURES by name: {lo:?}");
        assert!(!c.kernel_release.is_empty() && !c.cpus_online.is_empty());
        let gone = capture(&[DeviceRef { netns: 0, name: "np-no-such0".to_owned() }], &[]);
        assert!(gone.devices.is_empty() && gone.notes[0].contains("was gone"), "{gone:?}");
    }

    #[test]
    fn cpu_models_of_x86_and_s390x() {
        assert_eq!(cpu_model("processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\n"), "Intel(R) Xeon(R)");
        let s390 = "vendor_id       : IBM/S390\n# processors    : 2\nprocessor 0: version = FF,  identification = 0133E8,  machine = 8561\n";
        assert_eq!(cpu_model(s390), "IBM/S390 machine 8561");
        assert_eq!(selected("always [madvise] never"), Some("madvise".to_owned()));
    }

    /// The qeth driver's sysfs as on an s390x host (a group device per
    /// card, `if_name` naming its interface).
    #[test]
    fn qeth_settings_from_sysfs() {
        let root = std::env::temp_dir().join(format!("netprobe-qeth-{}", std::process::id()));
        let card = root.join("0.0.bd00");
        std::fs::create_dir_all(&card).unwrap();
        for (f, v) in [("if_name", "encbd00"), ("card_type", "HiperSockets"), ("layer2", "1"), ("buffer_count", "128")]
        {
            std::fs::write(card.join(f), format!("{v}\n")).unwrap();
        }
        let q = qeth(&root, "encbd00");
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(q.get("card_type").map(String::as_str), Some("HiperSockets"));
        assert_eq!(q.get("layer2").map(String::as_str), Some("1"));
        assert_eq!(q.get("buffer_count").map(String::as_str), Some("128"));
        assert_eq!(q.get("bus_id").map(String::as_str), Some("0.0.bd00"));
        assert!(qeth(Path::new("/nonexistent"), "encbd00").is_empty());
    }

    /// Netlink replies built by hand: a macvtap's link (kind, mode in
    /// IFLA_INFO_DATA) and an OVS datapath's statistics.
    #[test]
    fn netlink_attributes() {
        fn attr(ty: u16, p: &[u8]) -> Vec<u8> {
            let mut a = ((4 + p.len()) as u16).to_ne_bytes().to_vec();
            a.extend(ty.to_ne_bytes());
            a.extend(p);
            a.resize((a.len() + 3) & !3, 0);
            a
        }
        let mut data = attr(1, &4u32.to_ne_bytes()); // IFLA_MACVLAN_MODE = bridge
        data = attr(2 | 0x8000, &data);
        let mut info = attr(1, b"macvtap\0");
        info.extend(data);
        let mut body = vec![0u8; 16];
        body.extend(attr(4, &1500u32.to_ne_bytes()));
        body.extend(attr(13, &500u32.to_ne_bytes()));
        body.extend(attr(18 | 0x8000, &info));
        body.extend(attr(31, &4u32.to_ne_bytes()));
        let l = rtnl::parse_link(&body);
        assert_eq!((l.mtu, l.txqlen, l.tx_queues), (Some(1500), Some(500), Some(4)));
        assert_eq!((l.kind.as_deref(), l.macvlan_mode.map(macvlan_mode)), (Some("macvtap"), Some("bridge")));
        let stats: Vec<u8> = [10u64, 3, 0, 2].iter().flat_map(|v| v.to_ne_bytes()).collect();
        let mut dp = vec![3, 2, 0, 0, 0, 0, 0, 0];
        dp.extend(attr(1, b"dp0\0"));
        dp.extend(attr(3, &stats));
        let dp = rtnl::parse_datapath(&dp).unwrap();
        assert_eq!((dp.name.as_str(), dp.flows, dp.hit, dp.missed), ("dp0", 2, 10, 3));
    }
}
