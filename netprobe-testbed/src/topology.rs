//! The built-in demo topologies: a KVM host's datapath in miniature, made
//! of real devices in network namespaces netprobe creates (and always
//! removes, also on failure). The host side is one of three configurations:
//!
//! ```text
//!  guest ns              host ns                                    peer ns
//!  [tap g]  <-relay->  macvtap: /dev/tapN = [macvtap m] on [veth u] <-> [veth p]
//!                      bridge:  [tap t] + [veth u] in Linux bridge [b]
//!                      ovs:     [tap t] + [veth u] in OVS datapath (ovs-dpctl)
//!  198.18.0.1                                                       198.18.0.2
//! ```
//!
//! The relay is the guest stand-in: it drives /dev/tapN exactly as QEMU
//! does (IFF_VNET_HDR, 12-byte virtio-net header, blocking read/write) and
//! hands frames to and from a tap device in the guest namespace, whose
//! kernel stack plays the guest's. Traffic is real: ping, iperf3, UDP. In
//! its vhost mode (macvtap only, `crate::vhost`) the stand-in gives the
//! macvtap to the kernel's vhost-net worker instead, as QEMU does with
//! `vhost=on`, and plays the guest's virtio-net driver on the rings.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    net::UdpSocket,
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::netns::{self, ip, sh};

/// Name prefix of the guest stand-in's relay threads (their CPU time is
/// reported under the role `guest`).
pub use netprobe_common::GUEST_STANDIN_THREAD as RELAY_THREAD;

pub const GUEST_ADDR: &str = "198.18.0.1";
pub const PEER_ADDR: &str = "198.18.0.2";
/// Routed to the peer, which blackholes it: packets sent here are dropped
/// on purpose in the peer's input path.
pub const BLACKHOLE_NET: &str = "198.19.0.0/24";
pub const BLACKHOLE_ADDR: &str = "198.19.0.1";

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// virtio_net_hdr_v1 (with num_buffers), what QEMU uses with mergeable buffers.
const VNET_HDR_LEN: libc::c_int = 12;

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Frames the guest stand-in moved, per direction, and those it could not
/// (a failed write, every vhost descriptor in flight): none goes uncounted.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub to_wire_frames: AtomicU64,
    pub to_guest_frames: AtomicU64,
    pub to_wire_unmoved: AtomicU64,
    pub to_guest_unmoved: AtomicU64,
}

impl RelayStats {
    /// The counts now.
    pub fn counts(&self) -> RelayCounts {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RelayCounts {
            to_wire: n(&self.to_wire_frames),
            to_guest: n(&self.to_guest_frames),
            to_wire_unmoved: n(&self.to_wire_unmoved),
            to_guest_unmoved: n(&self.to_guest_unmoved),
        }
    }
}

/// A snapshot of [`RelayStats`]; `Display` gives one line for people.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayCounts {
    pub to_wire: u64,
    pub to_guest: u64,
    pub to_wire_unmoved: u64,
    pub to_guest_unmoved: u64,
}

impl RelayCounts {
    /// What was counted between `earlier` and this snapshot.
    pub fn since(self, earlier: RelayCounts) -> RelayCounts {
        RelayCounts {
            to_wire: self.to_wire - earlier.to_wire,
            to_guest: self.to_guest - earlier.to_guest,
            to_wire_unmoved: self.to_wire_unmoved - earlier.to_wire_unmoved,
            to_guest_unmoved: self.to_guest_unmoved - earlier.to_guest_unmoved,
        }
    }
}

impl std::fmt::Display for RelayCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "moved {} frames to-wire, {} to-guest; not moved {} to-wire, {} to-guest",
            self.to_wire, self.to_guest, self.to_wire_unmoved, self.to_guest_unmoved
        )
    }
}

/// Which host configuration joins the guest to the uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// macvtap in bridge mode on the uplink (the OSA configuration).
    Macvtap,
    /// tap + Linux bridge + uplink.
    Bridge,
    /// tap + Open vSwitch kernel datapath + uplink (the HiperSockets
    /// configuration in miniature); needs the openvswitch module and
    /// ovs-dpctl.
    Ovs,
}

/// The demo topology; dropping it stops the relay and deletes everything.
pub struct Topology {
    pub kind: Kind,
    pub prefix: String,
    pub host_ns: String,
    pub guest_ns: String,
    pub peer_ns: String,
    /// The guest-facing device in the host ns: the macvtap, or the tap.
    pub macvtap: String,
    /// The Linux bridge or OVS datapath name (bridge and ovs kinds).
    pub switch: String,
    /// Veth standing in for the uplink NIC (host ns).
    pub uplink: String,
    /// Peer end of the uplink veth (peer ns).
    pub peer_dev: String,
    /// Tap device in the guest ns, the guest's "virtio NIC".
    pub guest_dev: String,
    pub stats: Arc<RelayStats>,
    /// The guest stand-in hands the macvtap to vhost-net (`crate::vhost`).
    pub vhost: bool,
    stop: Arc<AtomicBool>,
    relay: Vec<JoinHandle<()>>,
}

fn unique_prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("np{:04x}", (std::process::id() as u64 * 7 + n * 1031) & 0xffff)
}

impl Topology {
    /// Builds the macvtap topology and starts the guest stand-in.
    pub fn create() -> Result<Topology> {
        Topology::create_kind(Kind::Macvtap)
    }

    /// Builds a topology of the given kind and starts the guest stand-in.
    pub fn create_kind(kind: Kind) -> Result<Topology> {
        Topology::create_with(kind, false)
    }

    /// Builds a topology of the given kind and starts the guest stand-in;
    /// with `vhost` (macvtap only), the stand-in drives /dev/vhost-net as
    /// QEMU does with `vhost=on` instead of reading and writing /dev/tapN.
    pub fn create_with(kind: Kind, vhost: bool) -> Result<Topology> {
        if vhost {
            if kind != Kind::Macvtap {
                bail!("the vhost-net guest stand-in is built for the macvtap topology only (--topology macvtap)");
            }
            crate::vhost::check_available()?;
        }
        let p = unique_prefix();
        let mut t = Topology {
            kind,
            host_ns: format!("{p}-host"),
            guest_ns: format!("{p}-guest"),
            peer_ns: format!("{p}-peer"),
            macvtap: format!("{p}{}", if kind == Kind::Macvtap { "m" } else { "t" }),
            switch: format!("{p}{}", if kind == Kind::Ovs { "dp" } else { "b" }),
            uplink: format!("{p}u"),
            peer_dev: format!("{p}p"),
            guest_dev: format!("{p}g"),
            prefix: p,
            stats: Arc::default(),
            vhost,
            stop: Arc::new(AtomicBool::new(false)),
            relay: Vec::new(),
        };
        // From here on, Drop cleans up whatever was made.
        t.build().context("setting up the demo topology failed")?;
        Ok(t)
    }

    fn build(&mut self) -> Result<()> {
        for ns in [&self.host_ns, &self.guest_ns, &self.peer_ns] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let (h, g, pn) = (self.host_ns.as_str(), self.guest_ns.as_str(), self.peer_ns.as_str());
        ip(&["-n", h, "link", "add", &self.uplink, "type", "veth", "peer", "name", &self.peer_dev, "netns", pn])?;
        ip(&["-n", pn, "addr", "add", &format!("{PEER_ADDR}/24"), "dev", &self.peer_dev])?;
        ip(&["-n", pn, "link", "set", &self.peer_dev, "up"])?;
        ip(&["-n", pn, "route", "add", "blackhole", BLACKHOLE_NET])?;
        sh("ip", &["netns", "exec", pn, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        ip(&["-n", h, "link", "set", &self.uplink, "up"])?;

        let host_fd = match self.kind {
            Kind::Macvtap => {
                let (up, mv) = (self.uplink.as_str(), self.macvtap.as_str());
                ip(&["-n", h, "link", "add", "link", up, "name", mv, "type", "macvtap", "mode", "bridge"])?;
                ip(&["-n", h, "link", "set", mv, "up"])?;
                self.open_macvtap()?
            }
            Kind::Bridge | Kind::Ovs => {
                // QEMU's tap: created (and held) by the stand-in in the host ns.
                let name = self.macvtap.clone();
                let fd = netns::run_in(Some(h), move || -> Result<File> {
                    let f =
                        OpenOptions::new().read(true).write(true).open("/dev/net/tun").context("open /dev/net/tun")?;
                    set_vnet(&f, Some(&name))?;
                    Ok(f)
                })??;
                ip(&["-n", h, "link", "set", &self.macvtap, "up"])?;
                if self.kind == Kind::Bridge {
                    ip(&["-n", h, "link", "add", &self.switch, "type", "bridge"])?;
                    ip(&["-n", h, "link", "set", &self.macvtap, "master", &self.switch])?;
                    ip(&["-n", h, "link", "set", &self.uplink, "master", &self.switch])?;
                    ip(&["-n", h, "link", "set", &self.switch, "up"])?;
                } else {
                    let dpctl = |args: &[&str]| {
                        let mut a = vec!["netns", "exec", h, "ovs-dpctl"];
                        a.extend_from_slice(args);
                        sh("ip", &a)
                            .context("ovs-dpctl (Debian's openvswitch-switch) with the openvswitch module loaded")
                    };
                    dpctl(&["add-dp", &self.switch])?;
                    // Ports 1 (guest tap) and 2 (uplink). No flows yet: the
                    // first packets miss and go up to userspace (an upcall).
                    dpctl(&["add-if", &self.switch, &self.macvtap])?;
                    dpctl(&["add-if", &self.switch, &self.uplink])?;
                }
                fd
            }
        };
        let mac = if self.kind == Kind::Macvtap { Some(link_mac(h, &self.macvtap)?) } else { None };
        // The guest's NIC: a tap created from inside the guest namespace.
        let gname = self.guest_dev.clone();
        let guest_fd = netns::run_in(Some(g), move || -> Result<File> {
            let f = OpenOptions::new().read(true).write(true).open("/dev/net/tun").context("open /dev/net/tun")?;
            set_vnet(&f, Some(&gname))?;
            Ok(f)
        })??;
        if let Some(mac) = &mac {
            // macvlan delivers by MAC: the guest uses the macvtap's, as libvirt sets it.
            ip(&["-n", g, "link", "set", &self.guest_dev, "address", mac])?;
        }
        ip(&["-n", g, "addr", "add", &format!("{GUEST_ADDR}/24"), "dev", &self.guest_dev])?;
        ip(&["-n", g, "link", "set", &self.guest_dev, "up"])?;
        ip(&["-n", g, "route", "add", BLACKHOLE_NET, "via", PEER_ADDR])?;

        let macvtap_fd = Arc::new(host_fd);
        let guest_fd = Arc::new(guest_fd);
        if self.vhost {
            self.relay = crate::vhost::start(guest_fd, macvtap_fd, self.stop.clone(), self.stats.clone())
                .context("starting the vhost-net guest stand-in")?;
            return Ok(());
        }
        for to_wire in [true, false] {
            let (src, dst) =
                if to_wire { (guest_fd.clone(), macvtap_fd.clone()) } else { (macvtap_fd.clone(), guest_fd.clone()) };
            let stop = self.stop.clone();
            let stats = self.stats.clone();
            let name = format!("{RELAY_THREAD}-{}", if to_wire { "tx" } else { "rx" });
            self.relay.push(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || relay(&src, &dst, &stop, &stats, to_wire))
                    .context("cannot start the guest stand-in")?,
            );
        }
        Ok(())
    }

    /// Opens the macvtap's character device, made by us from its dev_t so a
    /// same-numbered /dev/tapN of another namespace cannot be confused.
    fn open_macvtap(&self) -> Result<File> {
        let h = self.host_ns.as_str();
        let ifindex = netns::ifindex(Some(h), &self.macvtap)?;
        let devt = sh(
            "ip",
            &["netns", "exec", h, "cat", &format!("/sys/class/net/{}/macvtap/tap{ifindex}/dev", self.macvtap)],
        )?;
        let (major, minor) = devt.trim().split_once(':').context("bad macvtap dev_t")?;
        let node = format!("/run/netprobe-{}-tap", self.prefix);
        let _ = std::fs::remove_file(&node);
        let cnode = std::ffi::CString::new(node.clone())?;
        // SAFETY: mknod with a valid C string path.
        let rc = unsafe {
            libc::mknod(cnode.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(major.parse()?, minor.parse()?))
        };
        if rc != 0 {
            bail!("mknod {node}: {}", std::io::Error::last_os_error());
        }
        let fd = OpenOptions::new().read(true).write(true).open(&node);
        let _ = std::fs::remove_file(&node);
        let fd = fd.context("opening the macvtap character device")?;
        set_vnet(&fd, None)?;
        Ok(fd)
    }

    /// OVS only: installs the flows between the guest tap (port 1) and the
    /// uplink (port 2). Until then every packet misses and is upcalled.
    pub fn add_ovs_flows(&self) -> Result<()> {
        if self.kind != Kind::Ovs {
            return Ok(());
        }
        for (from, to) in [("1", "2"), ("2", "1")] {
            let flow = format!("in_port({from}),eth()");
            sh("ip", &["netns", "exec", &self.host_ns, "ovs-dpctl", "add-flow", &self.switch, &flow, to])?;
        }
        Ok(())
    }

    /// Interfaces netprobe should watch for this topology, as `NETNS/IFNAME`.
    pub fn ifaces(&self) -> Vec<String> {
        vec![format!("{}/{}", self.host_ns, self.macvtap), format!("{}/{}", self.host_ns, self.uplink)]
    }

    /// Pings the peer from the guest; returns the replies received.
    pub fn ping(&self, count: u32, interval: &str) -> Result<u32> {
        let out =
            in_ns(&self.guest_ns, &["ping", "-q", "-c", &count.to_string(), "-i", interval, "-W", "1", PEER_ADDR]);
        let out = out.unwrap_or_else(|e| format!("{e:#}"));
        // "N packets transmitted, M received"
        let received = out
            .split(',')
            .find_map(|s| s.trim().strip_suffix(" received").or_else(|| s.trim().strip_suffix(" packets received")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        Ok(received)
    }

    /// Sends `count` UDP datagrams from the guest to `dst:port`.
    pub fn udp_burst(&self, dst: &str, port: u16, count: u32, gap: Duration) -> Result<()> {
        let dst = format!("{dst}:{port}");
        netns::run_in(Some(&self.guest_ns), move || -> Result<()> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            for i in 0..count {
                s.send_to(format!("netprobe demo datagram {i}").as_bytes(), &dst)?;
                std::thread::sleep(gap);
            }
            Ok(())
        })?
    }

    /// Runs an iperf3 test from the guest to a server in the peer namespace.
    pub fn iperf3(&self, seconds: u32, udp: bool) -> Result<String> {
        let mut server = std::process::Command::new("ip")
            .args(["netns", "exec", &self.peer_ns, "iperf3", "-s", "-1", "-B", PEER_ADDR])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start iperf3 (install Debian's iperf3)")?;
        std::thread::sleep(Duration::from_millis(300));
        let secs = seconds.to_string();
        let mut args = vec!["iperf3", "-c", PEER_ADDR, "-t", &secs, "-i", "0"];
        if udp {
            args.extend(["-u", "-b", "20M", "-l", "512"]);
        }
        let res = in_ns(&self.guest_ns, &args);
        let _ = server.kill();
        let _ = server.wait();
        res
    }
}

/// Runs a command inside a namespace, returning its output.
fn in_ns(ns: &str, args: &[&str]) -> Result<String> {
    let mut a = vec!["netns", "exec", ns];
    a.extend_from_slice(args);
    sh("ip", &a)
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.relay.drain(..) {
            let _ = h.join();
        }
        if self.kind == Kind::Ovs {
            let _ = sh("ip", &["netns", "exec", &self.host_ns, "ovs-dpctl", "del-dp", &self.switch]);
        }
        for ns in [&self.host_ns, &self.guest_ns, &self.peer_ns] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

fn link_mac(ns: &str, dev: &str) -> Result<String> {
    let out = ip(&["-n", ns, "-o", "link", "show", "dev", dev])?;
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_owned)
        .with_context(|| format!("no MAC address for {dev}"))
}

/// Sets tap flags the way QEMU does: no packet info, a virtio-net header
/// of 12 bytes, no offloads (the kernel checksums and segments for us).
/// With `name`, creates a tap device of that name (on /dev/net/tun).
fn set_vnet(f: &File, name: Option<&str>) -> Result<()> {
    let mut req = IfReq { name: [0; 16], flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, _pad: [0; 22] };
    if let Some(n) = name {
        req.name[..n.len()].copy_from_slice(n.as_bytes());
    }
    let fd = f.as_raw_fd();
    // SAFETY: ioctls on an open tun/tap fd with correctly sized arguments.
    unsafe {
        if libc::ioctl(fd, TUNSETIFF, &mut req) != 0 {
            bail!("TUNSETIFF: {}", std::io::Error::last_os_error());
        }
        let hdr: libc::c_int = VNET_HDR_LEN;
        if libc::ioctl(fd, TUNSETVNETHDRSZ, &hdr) != 0 {
            bail!("TUNSETVNETHDRSZ: {}", std::io::Error::last_os_error());
        }
        if libc::ioctl(fd, TUNSETOFFLOAD, 0 as libc::c_ulong) != 0 {
            bail!("TUNSETOFFLOAD: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Moves frames (with their virtio-net header) from `src` to `dst` until
/// told to stop or either side goes away.
fn relay(src: &File, dst: &File, stop: &AtomicBool, stats: &RelayStats, to_wire: bool) {
    let mut buf = vec![0u8; 65536 + VNET_HDR_LEN as usize];
    let mut pfd = libc::pollfd { fd: src.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: poll on one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if n == 0 {
            continue;
        }
        if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return;
        }
        let len = match (&*src).read(&mut buf) {
            Ok(0) => return,
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let c = match ((&*dst).write(&buf[..len]).is_ok(), to_wire) {
            (true, true) => &stats.to_wire_frames,
            (true, false) => &stats.to_guest_frames,
            (false, true) => &stats.to_wire_unmoved,
            (false, false) => &stats.to_guest_unmoved,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}
