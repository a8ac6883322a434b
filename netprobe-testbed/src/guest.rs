//! A real guest: QEMU under software emulation (TCG) booting the image
//! `cargo xtask guest-image` builds (Debian's stock amd64 kernel, busybox,
//! virtio-net, traffic tools), its virtio-net NIC on a macvtap in bridge
//! mode attached the way libvirt does it (`-netdev tap,fd=3,vhost=off`,
//! fd 3 being `/dev/tap<ifindex>` opened for QEMU), the macvtap on a veth
//! whose peer sits in a network namespace made here. The guest runs the
//! commands it is sent on its serial console; [`traffic`] is the workload
//! the test and `netprobe demo --guest` run. Everything is removed on drop,
//! also when a test fails.
//!
//! ```text
//!  QEMU guest (eth0)        host ns                                 peer ns
//!  virtio-net  <-fd 3->  /dev/tapN = [macvtap m] on [veth u]  <->  [veth p]
//!  198.18.0.1                                                       198.18.0.2
//! ```

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{ChildStdin, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    netns::{self, ip, sh, KillOnDrop},
    topology::{GUEST_ADDR, PEER_ADDR},
};

/// What the guest image's init prints once it reads commands from its
/// console (after loading the virtio-net drivers).
pub const GUEST_READY: &str = "netprobe-guest: ready";

/// The guest image's files, from `NETPROBE_GUEST_IMAGE` (what `cargo xtask
/// guest-image` printed).
#[derive(Clone, Debug)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl GuestImage {
    /// The image in folder `dir`, if both its files are there.
    pub fn in_dir(dir: &Path) -> Option<GuestImage> {
        let img = GuestImage { kernel: dir.join("vmlinuz"), initrd: dir.join("initrd.gz") };
        (img.kernel.exists() && img.initrd.exists()).then_some(img)
    }
}

/// The guest's link to a peer: a macvtap (bridge mode) on a veth in this
/// namespace, the veth's peer in a namespace of its own. Dropping it
/// deletes the veth (and with it the macvtap) and the namespace.
pub struct GuestLink {
    pub peer_ns: String,
    /// The veth in this namespace, the macvtap's lower device.
    pub uplink: String,
    pub macvtap: String,
    pub peer_dev: String,
    /// The macvtap's ifindex: its character device is /dev/tap<ifindex>.
    pub ifindex: u32,
    /// The macvtap's MAC, which the guest's NIC must use (macvlan
    /// delivers by MAC; libvirt sets it the same way).
    pub mac: String,
}

impl GuestLink {
    /// Makes the link with names starting with `prefix` (at most 10
    /// characters).
    pub fn create(prefix: &str) -> Result<GuestLink> {
        let mut l = GuestLink {
            peer_ns: format!("{prefix}-peer"),
            uplink: format!("{prefix}u"),
            macvtap: format!("{prefix}m"),
            peer_dev: format!("{prefix}p"),
            ifindex: 0,
            mac: String::new(),
        };
        // From here on, Drop removes whatever was made.
        l.build().context("setting up the guest's macvtap link failed")?;
        Ok(l)
    }

    fn build(&mut self) -> Result<()> {
        let pn = self.peer_ns.as_str();
        ip(&["netns", "add", pn])?;
        ip(&["-n", pn, "link", "set", "lo", "up"])?;
        // No IPv6 on the peer's side: its own multicast (router
        // solicitations, MLD) would reach the guest as clones through the
        // macvtap's broadcast path, beside the traffic being counted.
        sh("ip", &["netns", "exec", pn, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
        ip(&["link", "add", &self.uplink, "type", "veth", "peer", "name", &self.peer_dev, "netns", pn])?;
        ip(&["-n", pn, "addr", "add", &format!("{PEER_ADDR}/24"), "dev", &self.peer_dev])?;
        ip(&["-n", pn, "link", "set", &self.peer_dev, "up"])?;
        ip(&["link", "set", &self.uplink, "up"])?;
        ip(&["link", "add", "link", &self.uplink, "name", &self.macvtap, "type", "macvtap", "mode", "bridge"])?;
        ip(&["link", "set", &self.macvtap, "up"])?;
        self.ifindex = std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", self.macvtap))?.trim().parse()?;
        self.mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", self.macvtap))?.trim().to_owned();
        // devtmpfs makes /dev/tapN; wait for it (a udev may rename it).
        let node = self.tap_node();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !Path::new(&node).exists() {
            if Instant::now() > deadline {
                bail!("{node} did not appear for macvtap {}", self.macvtap);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The macvtap's character device.
    pub fn tap_node(&self) -> String {
        format!("/dev/tap{}", self.ifindex)
    }

    /// Runs a command in the peer namespace and returns its output.
    pub fn in_peer(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["netns", "exec", self.peer_ns.as_str()];
        a.extend_from_slice(args);
        sh("ip", &a)
    }

    /// Starts a command in the peer namespace (a server); it is killed
    /// when the returned guard drops.
    pub fn spawn_in_peer(&self, args: &[&str]) -> Result<KillOnDrop> {
        netns::spawn_in(&self.peer_ns, args)
    }
}

impl Drop for GuestLink {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.uplink]);
        let _ = ip(&["netns", "del", &self.peer_ns]);
    }
}

/// How long one guest command may take (TCG on a busy 2-CPU host).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What the guest counted of its own traffic ([`traffic`]).
#[derive(Clone, Debug, Default)]
pub struct GuestTraffic {
    /// Frames its eth0 sent and received over the whole workload.
    pub sent: u64,
    pub received: u64,
    /// Echo requests sent and replies received.
    pub ping: (u64, u64),
    /// UDP request-response messages sent and received (sockperf).
    pub udp_rr: (u64, u64),
    /// iperf3's TCP stream summary (the sender's line).
    pub tcp_stream: String,
}

/// The guest's workload, run from inside it against servers in the peer
/// namespace: 300 pings at 100/s, a 2 s TCP stream (iperf3) and 2 s of
/// UDP request-response at 200 messages/s (sockperf), between two reads
/// of its eth0 counters.
pub fn traffic(g: &mut QemuGuest, link: &GuestLink) -> Result<GuestTraffic> {
    let _iperf = link.spawn_in_peer(&["iperf3", "-s", "-B", PEER_ADDR]).context("iperf3 (Debian's iperf3)")?;
    let _sockperf = link
        .spawn_in_peer(&["sockperf", "server", "-i", PEER_ADDR, "-p", "11111"])
        .context("sockperf (Debian's sockperf)")?;
    std::thread::sleep(Duration::from_millis(300));
    let (tx0, rx0) = g.counters()?;
    let ping = g.run(&format!("/usr/bin/ping -q -c 300 -i 0.01 {PEER_ADDR}"), COMMAND_TIMEOUT)?;
    let stream = g.run(&format!("/usr/bin/iperf3 -c {PEER_ADDR} -t 2 -i 0"), COMMAND_TIMEOUT)?;
    let rr = g.run(&format!("/usr/bin/sockperf ping-pong -i {PEER_ADDR} -p 11111 -t 2 --mps 200"), COMMAND_TIMEOUT)?;
    let (tx1, rx1) = g.counters()?;
    Ok(GuestTraffic {
        sent: tx1.saturating_sub(tx0),
        received: rx1.saturating_sub(rx0),
        ping: (count_after(&ping, "packets transmitted")?, count_after(&ping, "received")?),
        udp_rr: (count_after(&rr, "SentMessages")?, count_after(&rr, "ReceivedMessages")?),
        tcp_stream: stream
            .lines()
            .find(|l| l.contains("sender"))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    })
}

/// `key=N` (sockperf) or `N key` (ping) in `text`.
fn count_after(text: &str, key: &str) -> Result<u64> {
    text.split([';', ',', '\n'])
        .find_map(|part| {
            let part = part.trim();
            part.strip_prefix(&format!("{key}="))
                .or_else(|| part.strip_suffix(&format!(" {key}")))
                .and_then(|n| n.trim().parse().ok())
        })
        .with_context(|| format!("no {key} count in {text}"))
}

/// A booted QEMU guest that runs the commands sent to its console.
pub struct QemuGuest {
    qemu: KillOnDrop,
    stdin: ChildStdin,
    console: Receiver<String>,
    /// Everything the console printed so far (for error messages).
    log: Vec<String>,
    commands: u32,
    /// Seconds from starting QEMU until the guest was ready (virtio-net
    /// driver loaded, console read).
    pub boot_s: f64,
}

impl QemuGuest {
    /// Boots `image` under TCG as guest `name` (`-name NAME`, without
    /// debug-threads, so every QEMU thread is named after the program),
    /// its NIC on `link`'s macvtap, and gives its eth0 [`GUEST_ADDR`].
    /// Gives up (QEMU ended) as soon as `cancel` says so.
    pub fn boot(
        image: &GuestImage,
        name: &str,
        link: &GuestLink,
        vcpus: u32,
        cancel: &dyn Fn() -> bool,
    ) -> Result<QemuGuest> {
        let qemu = format!(
            "exec qemu-system-x86_64 -name {name} -accel tcg -cpu max -m 384 -smp {vcpus} \
             -nodefaults -display none -monitor none -serial stdio -no-reboot \
             -kernel '{}' -initrd '{}' \
             -append 'console=ttyS0 panic=-1 rdinit=/init quiet loglevel=3' \
             -netdev tap,id=n0,fd=3,vhost=off -device virtio-net-pci,netdev=n0,mac={} 3<>{}",
            image.kernel.display(),
            image.initrd.display(),
            link.mac,
            link.tap_node()
        );
        let started = Instant::now();
        let mut child = Command::new("sh")
            .args(["-c", &qemu])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start qemu-system-x86_64 (Debian's qemu-system-x86)")?;
        let stdin = child.stdin.take().context("QEMU's stdin")?;
        let stdout = child.stdout.take().context("QEMU's stdout")?;
        let (tx, console) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).trim_end_matches('\r').to_owned();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut g =
            QemuGuest { qemu: KillOnDrop(child), stdin, console, log: Vec::new(), commands: 0, boot_s: f64::NAN };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if cancel() {
                bail!("booting the guest was cancelled");
            }
            match g.wait_for(|l| l.contains(GUEST_READY), Duration::from_millis(200)) {
                Ok(_) => break,
                Err(_) if Instant::now() < deadline && g.qemu.0.try_wait()?.is_none() => {}
                Err(e) => return Err(e.context("the guest did not boot")),
            }
        }
        g.boot_s = started.elapsed().as_secs_f64();
        // Up, and the peer's address learnt, before any measured traffic.
        g.run(&format!("ip link set eth0 up && ip addr add {GUEST_ADDR}/24 dev eth0"), COMMAND_TIMEOUT)?;
        g.run(&format!("/usr/bin/ping -c 1 -W 5 {PEER_ADDR}"), COMMAND_TIMEOUT)?;
        Ok(g)
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.qemu.0.id()
    }

    /// Reads console lines until one satisfies `done`; returns the lines
    /// read, that one included.
    fn wait_for(&mut self, done: impl Fn(&str) -> bool, timeout: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.console.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    let end = done(&l);
                    lines.push(l);
                    if end {
                        return Ok(lines);
                    }
                }
                Err(RecvTimeoutError::Timeout) => bail!("timed out after {timeout:?}; console:\n{}", self.tail()),
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("QEMU exited ({:?}); console:\n{}", self.qemu.0.try_wait(), self.tail())
                }
            }
        }
    }

    /// The console's last 30 lines.
    pub fn tail(&self) -> String {
        self.log[self.log.len().saturating_sub(30)..].join("\n")
    }

    /// Runs a shell command in the guest; returns its output (stdout and
    /// stderr), failing when it exits non-zero.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> Result<String> {
        self.commands += 1;
        let n = self.commands;
        // One line: the guest's init evaluates each line it reads.
        writeln!(self.stdin, "echo @@begin-{n}; {{ {cmd} ; }} 2>&1; echo @@end-{n} $?")?;
        self.stdin.flush()?;
        let end = format!("@@end-{n} ");
        let lines =
            self.wait_for(|l| l.starts_with(&end), timeout).with_context(|| format!("guest command {cmd:?}"))?;
        let begin = lines.iter().position(|l| *l == format!("@@begin-{n}")).map_or(0, |i| i + 1);
        let status = lines.last().and_then(|l| l.strip_prefix(&end)).unwrap_or_default().trim();
        let out = lines[begin..lines.len() - 1].join("\n");
        if status != "0" {
            bail!("guest command {cmd:?} exited {status}: {out}");
        }
        Ok(out)
    }

    /// The guest's eth0 packet counters (sent, received).
    pub fn counters(&mut self) -> Result<(u64, u64)> {
        let out = self.run(
            "cat /sys/class/net/eth0/statistics/tx_packets /sys/class/net/eth0/statistics/rx_packets",
            COMMAND_TIMEOUT,
        )?;
        match out.split_whitespace().filter_map(|w| w.parse().ok()).collect::<Vec<u64>>()[..] {
            [tx, rx] => Ok((tx, rx)),
            _ => bail!("eth0 counters: {out:?}"),
        }
    }

    /// Shuts the guest down (QEMU exits), waiting up to 10 s.
    pub fn poweroff(mut self) -> Result<()> {
        writeln!(self.stdin, "poweroff -f")?;
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.qemu.0.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("the guest did not power off")
    }
}
