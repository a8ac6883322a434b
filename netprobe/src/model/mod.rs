//! The words every layer shares, depending on nothing else of netprobe's:
//! a packet's direction, how a hop pair is named, the role of a thread,
//! where softirq time comes from, the guests and the workload a recording
//! is about, the host's configuration (`host`), a recording's labels
//! (`labels`: what a benchmark sweep varies), and (in `report`) the
//! report model every format renders.

pub mod host;
pub mod labels;
pub mod report;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A hop pair as reports name it: direction, `hop@device` of both ends.
pub type PairName = (Direction, String, String);

/// A hop at a device as reports name it: `hop@device`, or the hop alone
/// where it has no device of its own (consumed, dropped).
pub fn at(hop: &str, dev: &str) -> String {
    if dev.is_empty() {
        hop.to_owned()
    } else {
        format!("{hop}@{dev}")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// First seen on a guest-facing device (macvtap, tap): guest to wire.
    ToWire,
    /// First seen anywhere else (uplink, peer): toward the guest.
    ToGuest,
}

impl Direction {
    /// The short name used in CSV, tags and element ids.
    pub fn slug(self) -> &'static str {
        match self {
            Direction::ToWire => "to-wire",
            Direction::ToGuest => "to-guest",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Direction::ToWire => "toward the wire (guest -> host -> uplink)",
            Direction::ToGuest => "toward the guest (uplink -> host -> guest)",
        }
    }
}

/// What a thread does for the datapath, by what the kernel and QEMU name
/// it, or by belonging to the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// A QEMU vCPU thread (`CPU n/KVM`, `CPU n/TCG`).
    Vcpu,
    /// A vhost worker (`vhost-<qemu pid>`).
    Vhost,
    Ksoftirqd,
    /// Open vSwitch's handler and revalidator threads.
    Ovs,
    /// A guest stand-in driving a tap as QEMU does (the demo's relay).
    Guest,
    Netprobe,
    /// A process of the workload being recorded.
    Workload,
    Other,
}

impl Role {
    /// The role of a thread by its name (QEMU and the kernel name theirs).
    pub fn of(comm: &str) -> Role {
        if comm.starts_with("CPU ") && (comm.ends_with("/KVM") || comm.ends_with("/TCG")) {
            Role::Vcpu
        } else if comm.starts_with("vhost-") {
            Role::Vhost
        } else if comm.starts_with("ksoftirqd/") {
            Role::Ksoftirqd
        } else if comm.starts_with("handler") || comm.starts_with("revalidator") {
            Role::Ovs
        } else if comm.starts_with(netprobe_common::GUEST_STANDIN_THREAD) {
            Role::Guest
        } else if comm.starts_with("netprobe") {
            Role::Netprobe
        } else {
            Role::Other
        }
    }

    /// The role of thread `tid` of process `tgid`: the workload's
    /// processes first, then the guests' vCPU and vhost threads as found
    /// in /proc (QEMU started without `debug-threads=on` names every
    /// thread after its program), then by name.
    pub fn of_thread(tgid: u32, tid: u32, comm: &str, workload: Option<&Workload>, guests: &[Guest]) -> Role {
        if workload.is_some_and(|w| w.tgids.contains(&tgid)) {
            Role::Workload
        } else if guests.iter().any(|g| g.pid == tgid && g.vcpu_tids.contains(&tid)) {
            Role::Vcpu
        } else if guests.iter().any(|g| g.vhost_tids.contains(&tid)) {
            Role::Vhost
        } else {
            Role::of(comm)
        }
    }

    /// The name reports and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Vcpu => "vcpu",
            Role::Vhost => "vhost",
            Role::Ksoftirqd => "ksoftirqd",
            Role::Ovs => "ovs",
            Role::Guest => "guest",
            Role::Netprobe => "netprobe",
            Role::Workload => "workload",
            Role::Other => "other",
        }
    }
}

/// Nanoseconds as a short human figure: 850ns, 12.3us, 4.56ms, 1.20s.
pub fn fmt_ns(ns: u64) -> String {
    let f = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}us", f / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", f / 1e6)
    } else {
        format!("{:.2}s", f / 1e9)
    }
}

/// `CpuReport::softirq_source` values: NET_RX and NET_TX timed by BPF
/// programs (`--softirq-vectors`), or all vectors from /proc/stat.
pub const SOFTIRQ_FROM_BPF: &str = "bpf: NET_RX+NET_TX";
pub const SOFTIRQ_FROM_STAT: &str = "/proc/stat: all vectors";

/// One QEMU guest as found on the host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Guest {
    /// `-name` (its `guest=` part), or `qemu-<pid>` when unnamed.
    pub name: String,
    pub pid: u32,
    /// vCPU thread ids.
    pub vcpu_tids: Vec<u32>,
    /// vhost worker ids (threads of QEMU, or kernel threads).
    pub vhost_tids: Vec<u32>,
    /// Network devices the guest's file descriptors hold: `tap0` (tun/tap,
    /// from /proc/PID/fdinfo `iff:`), `macvtap0` (a /dev/tapN character
    /// device, N being the macvtap's ifindex).
    pub devices: Vec<String>,
    /// Seconds into the recording when the guest was found gone (killed or
    /// shut down mid-run); what it did until then is kept.
    #[serde(default)]
    pub gone_after_s: Option<f64>,
}

/// The guest behind each device, for naming it in every output:
/// `macvtap0 [web1]`. The one place the table, the HTML page, `top` and
/// `/metrics` take guest names from, so they name devices alike.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GuestNames(BTreeMap<String, String>);

impl GuestNames {
    /// From the guests found (a device held by two guests keeps the first).
    pub fn of<'a>(guests: impl IntoIterator<Item = &'a Guest>) -> GuestNames {
        let mut m = BTreeMap::new();
        for g in guests {
            for d in &g.devices {
                m.entry(d.clone()).or_insert_with(|| g.name.clone());
            }
        }
        GuestNames(m)
    }

    /// The guest holding device `dev`.
    pub fn guest(&self, dev: &str) -> Option<&str> {
        self.0.get(dev).map(String::as_str)
    }

    /// `dev [guest]`, or `dev` alone when no guest holds it.
    pub fn dev(&self, dev: &str) -> String {
        match self.guest(dev) {
            Some(g) => format!("{dev} [{g}]"),
            None => dev.to_owned(),
        }
    }

    /// A `hop@device` label ([`at`]) with the device's guest:
    /// `queue@macvtap0 [web1]`.
    pub fn at(&self, label: &str) -> String {
        match label.split_once('@') {
            Some((hop, dev)) if self.guest(dev).is_some() => format!("{hop}@{}", self.dev(dev)),
            _ => label.to_owned(),
        }
    }

    /// Both ends of a hop pair (`hop@device` labels), named: a guest both
    /// ends' devices belong to is named once, after the second
    /// (`queue@macvtap0 -> xmit@macvtap0 [web1]`), else each end is.
    pub fn pair_ends(&self, from: &str, to: &str) -> (String, String) {
        let dev = |l: &str| l.split_once('@').map(|(_, d)| d.to_owned());
        let g = |l: &str| dev(l).and_then(|d| self.guest(&d).map(str::to_owned));
        match (g(from), g(to)) {
            (Some(a), Some(b)) if a == b => (from.to_owned(), format!("{to} [{b}]")),
            _ => (self.at(from), self.at(to)),
        }
    }

    /// A hop pair as printers show it: `from -> to`, named as
    /// [`GuestNames::pair_ends`] does.
    pub fn pair(&self, from: &str, to: &str) -> String {
        let (a, b) = self.pair_ends(from, to);
        format!("{a} -> {b}")
    }

    /// The guest behind a hop pair: its first device's, else its second's.
    pub fn of_pair(&self, from_dev: &str, to_dev: &str) -> Option<&str> {
        self.guest(from_dev).or_else(|| self.guest(to_dev))
    }
}

/// A workload netprobe started and recorded exactly while it ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub command: Vec<String>,
    pub started_unix_s: f64,
    pub ended_unix_s: f64,
    /// Exit code, when it exited by itself.
    pub exit_status: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Processes of the workload (its process and descendants, `--pid`'s
    /// process, or `--cgroup`'s members), as seen during the recording.
    #[serde(default)]
    pub tgids: Vec<u32>,
    /// `--cgroup`: the cgroup (v2 path) whose processes are the workload.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Transactions the workload completed (request/response pairs), and
    /// where the number comes from.
    #[serde(default)]
    pub transactions: Option<u64>,
    #[serde(default)]
    pub transactions_from: Option<String>,
    /// The workload's own latency, as its tool printed it (sockperf's
    /// percentiles, netperf's latency selectors, uperf's per-transaction
    /// time).
    #[serde(default)]
    pub latency: Option<WorkloadLatency>,
    /// A stream's throughput, as its tool printed it (iperf3's JSON,
    /// netperf's THROUGHPUT, uperf's total).
    #[serde(default)]
    pub throughput: Option<WorkloadThroughput>,
    /// What netprobe could not read in the workload's output, and why
    /// (a missing figure is said so, never shown as zero).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// A workload tool's own latency figures, in ns. Which ones a tool gives
/// depends on the tool and its options; the rest stay `None`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadLatency {
    /// The tool and the figures read, e.g. `sockperf [Valid Duration]
    /// percentiles`.
    pub from: String,
    /// True when the figures are whole round trips; false when the tool
    /// reports half of one (sockperf without `--full-rtt`).
    pub round_trip: bool,
    pub mean_ns: Option<u64>,
    pub min_ns: Option<u64>,
    pub p50_ns: Option<u64>,
    pub p90_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub p999_ns: Option<u64>,
    pub max_ns: Option<u64>,
}

/// A workload tool's own throughput figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadThroughput {
    /// The tool and the figures read, e.g. `iperf3 -J end.sum_received`.
    pub from: String,
    /// Payload bits per second (the receiver's, where the tool says).
    pub bits_per_second: f64,
    /// Payload bytes moved in the test, where the tool says.
    pub bytes: Option<u64>,
    /// Payload bytes the sender sent, where the tool says it apart.
    pub bytes_sent: Option<u64>,
    pub seconds: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_durations() {
        assert_eq!(fmt_ns(850), "850ns");
        assert_eq!(fmt_ns(12_345), "12.3us");
        assert_eq!(fmt_ns(4_560_000), "4.56ms");
        assert_eq!(fmt_ns(1_200_000_000), "1.20s");
    }

    #[test]
    fn thread_roles_by_name() {
        assert_eq!(Role::of("CPU 3/KVM"), Role::Vcpu);
        assert_eq!(Role::of("vhost-4242"), Role::Vhost);
        assert_eq!(Role::of("ksoftirqd/1"), Role::Ksoftirqd);
        assert_eq!(Role::of("handler12"), Role::Ovs);
        assert_eq!(Role::of("guest-relay-tx"), Role::Guest);
        assert_eq!(Role::of("iperf3"), Role::Other);
    }

    #[test]
    fn devices_are_named_with_their_guest() {
        let g = Guest { name: "web1".into(), pid: 40, devices: vec!["macvtap0".into()], ..Guest::default() };
        let names = GuestNames::of([&g]);
        assert_eq!(names.dev("macvtap0"), "macvtap0 [web1]");
        assert_eq!(names.dev("eth0"), "eth0");
        assert_eq!(names.at("copy_out@macvtap0"), "copy_out@macvtap0 [web1]");
        assert_eq!(names.at("queue@eth0"), "queue@eth0");
        assert_eq!(names.at("consumed"), "consumed");
        assert_eq!(names.of_pair("eth0", "macvtap0"), Some("web1"));
        assert_eq!(names.pair("queue@macvtap0", "xmit@macvtap0"), "queue@macvtap0 -> xmit@macvtap0 [web1]");
        assert_eq!(names.pair("xmit@macvtap0", "queue@eth0"), "xmit@macvtap0 [web1] -> queue@eth0");
        assert_eq!(names.pair("copy_out@macvtap0", "consumed"), "copy_out@macvtap0 [web1] -> consumed");
        assert_eq!(names.of_pair("eth0", ""), None);
    }

    #[test]
    fn a_guests_threads_have_their_role_whatever_their_name() {
        let g = Guest { name: "web1".into(), pid: 40, vcpu_tids: vec![42], vhost_tids: vec![77], ..Guest::default() };
        let guests = [g];
        assert_eq!(Role::of_thread(40, 42, "qemu-system-x86", None, &guests), Role::Vcpu);
        assert_eq!(Role::of_thread(40, 40, "qemu-system-x86", None, &guests), Role::Other);
        assert_eq!(Role::of_thread(77, 77, "vhost-40", None, &guests), Role::Vhost);
        // A thread id of a guest that went away, reused by another process.
        assert_eq!(Role::of_thread(90, 42, "bash", None, &guests), Role::Other);
    }
}
