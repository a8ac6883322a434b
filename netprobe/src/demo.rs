//! The built-in demo topology: a KVM host's MacVTap path in miniature,
//! made of real devices in network namespaces netprobe creates (and always
//! removes, also on failure):
//!
//! ```text
//!  guest ns              host ns                               peer ns
//!  [tap g]  <-relay->  /dev/tapN = [macvtap m] on [veth u] <-> [veth p]
//!  198.18.0.1          (bridge mode)                           198.18.0.2
//! ```
//!
//! The relay is the guest stand-in: it drives /dev/tapN exactly as QEMU
//! does (IFF_VNET_HDR, 12-byte virtio-net header, blocking read/write) and
//! hands frames to and from a tap device in the guest namespace, whose
//! kernel stack plays the guest's. Traffic is real: ping, iperf3, UDP.

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

/// Frames and bytes the guest stand-in moved, per direction.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub to_wire_frames: AtomicU64,
    pub to_guest_frames: AtomicU64,
}

/// The demo topology; dropping it stops the relay and deletes everything.
pub struct Topology {
    pub prefix: String,
    pub host_ns: String,
    pub guest_ns: String,
    pub peer_ns: String,
    /// Macvtap device (host ns), the guest's side of the host datapath.
    pub macvtap: String,
    /// Veth standing in for the uplink NIC (host ns).
    pub uplink: String,
    /// Peer end of the uplink veth (peer ns).
    pub peer_dev: String,
    /// Tap device in the guest ns, the guest's "virtio NIC".
    pub guest_dev: String,
    pub stats: Arc<RelayStats>,
    stop: Arc<AtomicBool>,
    relay: Vec<JoinHandle<()>>,
}

fn unique_prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "np{:04x}",
        (std::process::id() as u64 * 7 + n * 1031) & 0xffff
    )
}

impl Topology {
    /// Builds the topology and starts the guest stand-in.
    pub fn create() -> Result<Topology> {
        let p = unique_prefix();
        let mut t = Topology {
            host_ns: format!("{p}-host"),
            guest_ns: format!("{p}-guest"),
            peer_ns: format!("{p}-peer"),
            macvtap: format!("{p}m"),
            uplink: format!("{p}u"),
            peer_dev: format!("{p}p"),
            guest_dev: format!("{p}g"),
            prefix: p,
            stats: Arc::default(),
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
        let (h, g, pn) = (
            self.host_ns.as_str(),
            self.guest_ns.as_str(),
            self.peer_ns.as_str(),
        );
        ip(&[
            "-n",
            h,
            "link",
            "add",
            &self.uplink,
            "type",
            "veth",
            "peer",
            "name",
            &self.peer_dev,
            "netns",
            pn,
        ])?;
        ip(&[
            "-n",
            h,
            "link",
            "add",
            "link",
            &self.uplink,
            "name",
            &self.macvtap,
            "type",
            "macvtap",
            "mode",
            "bridge",
        ])?;
        ip(&["-n", h, "link", "set", &self.uplink, "up"])?;
        ip(&["-n", h, "link", "set", &self.macvtap, "up"])?;
        ip(&[
            "-n",
            pn,
            "addr",
            "add",
            &format!("{PEER_ADDR}/24"),
            "dev",
            &self.peer_dev,
        ])?;
        ip(&["-n", pn, "link", "set", &self.peer_dev, "up"])?;
        ip(&["-n", pn, "route", "add", "blackhole", BLACKHOLE_NET])?;
        sh(
            "ip",
            &[
                "netns",
                "exec",
                pn,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )?;

        // The macvtap's character device, made by us from its dev_t so a
        // same-numbered /dev/tapN of another namespace cannot be confused.
        let mac = link_mac(h, &self.macvtap)?;
        let ifindex = netns::ifindex(Some(h), &self.macvtap)?;
        let devt = sh(
            "ip",
            &[
                "netns",
                "exec",
                h,
                "cat",
                &format!("/sys/class/net/{}/macvtap/tap{ifindex}/dev", self.macvtap),
            ],
        )?;
        let (major, minor) = devt.trim().split_once(':').context("bad macvtap dev_t")?;
        let node = format!("/run/netprobe-{}-tap", self.prefix);
        let _ = std::fs::remove_file(&node);
        let cnode = std::ffi::CString::new(node.clone())?;
        // SAFETY: mknod with a valid C string path.
        let rc = unsafe {
            libc::mknod(
                cnode.as_ptr(),
                libc::S_IFCHR | 0o600,
                libc::makedev(major.parse()?, minor.parse()?),
            )
        };
        if rc != 0 {
            bail!("mknod {node}: {}", std::io::Error::last_os_error());
        }
        let macvtap_fd = OpenOptions::new().read(true).write(true).open(&node);
        let _ = std::fs::remove_file(&node);
        let macvtap_fd = macvtap_fd.context("opening the macvtap character device")?;
        set_vnet(&macvtap_fd, None)?;

        // The guest's NIC: a tap created from inside the guest namespace.
        let gname = self.guest_dev.clone();
        let guest_fd = netns::run_in(Some(g), move || -> Result<File> {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .context("open /dev/net/tun")?;
            set_vnet(&f, Some(&gname))?;
            Ok(f)
        })??;
        ip(&["-n", g, "link", "set", &self.guest_dev, "address", &mac])?;
        ip(&[
            "-n",
            g,
            "addr",
            "add",
            &format!("{GUEST_ADDR}/24"),
            "dev",
            &self.guest_dev,
        ])?;
        ip(&["-n", g, "link", "set", &self.guest_dev, "up"])?;
        ip(&["-n", g, "route", "add", BLACKHOLE_NET, "via", PEER_ADDR])?;

        let macvtap_fd = Arc::new(macvtap_fd);
        let guest_fd = Arc::new(guest_fd);
        for to_wire in [true, false] {
            let (src, dst) = if to_wire {
                (guest_fd.clone(), macvtap_fd.clone())
            } else {
                (macvtap_fd.clone(), guest_fd.clone())
            };
            let stop = self.stop.clone();
            let stats = self.stats.clone();
            self.relay.push(std::thread::spawn(move || {
                relay(&src, &dst, &stop, &stats, to_wire)
            }));
        }
        Ok(())
    }

    /// Interfaces netprobe should watch for this topology, as `NETNS/IFNAME`.
    pub fn ifaces(&self) -> Vec<String> {
        vec![
            format!("{}/{}", self.host_ns, self.macvtap),
            format!("{}/{}", self.host_ns, self.uplink),
        ]
    }

    /// Pings the peer from the guest; returns the replies received.
    pub fn ping(&self, count: u32, interval: &str) -> Result<u32> {
        let out = Command::ns(
            &self.guest_ns,
            &[
                "ping",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                interval,
                "-W",
                "1",
                PEER_ADDR,
            ],
        );
        let out = out.unwrap_or_else(|e| format!("{e:#}"));
        // "N packets transmitted, M received"
        let received = out
            .split(',')
            .find_map(|s| {
                s.trim()
                    .strip_suffix(" received")
                    .or_else(|| s.trim().strip_suffix(" packets received"))
            })
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
            .args([
                "netns",
                "exec",
                &self.peer_ns,
                "iperf3",
                "-s",
                "-1",
                "-B",
                PEER_ADDR,
            ])
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
        let res = Command::ns(&self.guest_ns, &args);
        let _ = server.kill();
        let _ = server.wait();
        res
    }
}

/// Running commands inside a namespace.
struct Command;

impl Command {
    fn ns(ns: &str, args: &[&str]) -> Result<String> {
        let mut a = vec!["netns", "exec", ns];
        a.extend_from_slice(args);
        sh("ip", &a)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.relay.drain(..) {
            let _ = h.join();
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
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
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
    let mut pfd = libc::pollfd {
        fd: src.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
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
        if (&*dst).write(&buf[..len]).is_ok() {
            let c = if to_wire {
                &stats.to_wire_frames
            } else {
                &stats.to_guest_frames
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}
