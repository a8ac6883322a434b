//! The report model every output format renders: plain data (serde), made
//! by `analyze` from a recording. Its JSON form is `report --format json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{at, host::HostConfig, labels::Labels, Direction, Guest, GuestNames, Workload, SOFTIRQ_FROM_BPF};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub netprobe_version: String,
    pub kernel: String,
    pub duration_s: f64,
    /// True when Ctrl-C or SIGTERM ended the recording before its duration.
    pub interrupted: bool,
    /// The workload recorded, when netprobe ran it (`record -- CMD ARGS`)
    /// or attached to it (`--pid`, `--cgroup`).
    #[serde(default)]
    pub workload: Option<Workload>,
    /// The recording's labels (`record --label KEY=VALUE`).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// The host's configuration when the recording was made (absent in
    /// older recordings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<HostConfig>,
    /// The host's share of the workload's round trip, estimated, when the
    /// workload gave its own latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_share: Option<HostShare>,
    /// The flow filter (`--filter`) the kernel applied, if any.
    #[serde(default)]
    pub filter: Option<String>,
    /// `--sample N`: one packet in N was followed, and every packet count
    /// (hop pairs, drops, intervals, guests, CPU per packet) is scaled by N.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_one_in: Option<u32>,
    /// QEMU guests found on the host during the recording, with the CPU
    /// time of their vCPU and vhost threads.
    #[serde(default)]
    pub guests: Vec<GuestReport>,
    pub coverage: Vec<CoverageEntry>,
    pub directions: Vec<DirectionReport>,
    pub drops: Vec<DropReport>,
    /// `--drop-stacks`: each drop reason's top kernel stacks, most packets
    /// first (absent from recordings made without it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_stacks: Vec<DropStackReport>,
    /// `--drop-stacks`: per reason, the drops whose stacks fell outside
    /// its top rows, so the shown stacks plus these add up to every drop
    /// that got a stack (the recording keeps them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_stacks_left_out: Vec<DropStacksLeftOut>,
    /// Time inside hop functions (fexit/kretprobe pairs).
    pub functions: Vec<FunctionReport>,
    pub devices: Vec<DeviceReport>,
    /// Kernel-side accounting: packets followed, and every loss.
    pub tracking: BTreeMap<String, u64>,
    /// Time series: per interval, each hop pair's packets and percentiles.
    #[serde(default)]
    pub intervals: Vec<IntervalReport>,
    /// CPU time of the threads and softirqs that move packets.
    #[serde(default)]
    pub cpu: Option<CpuReport>,
}

impl Report {
    /// The stacks of `drop_stacks[i]`'s reason left out of the top, when
    /// row `i` is the last shown of its reason.
    pub fn drop_stacks_left_out_after(&self, i: usize) -> Option<&DropStacksLeftOut> {
        let code = self.drop_stacks.get(i)?.reason_code;
        if self.drop_stacks.get(i + 1).is_some_and(|n| n.reason_code == code) {
            return None;
        }
        self.drop_stacks_left_out.iter().find(|l| l.reason_code == code)
    }

    /// The guest behind each device, as every printer names it.
    pub fn guest_names(&self) -> GuestNames {
        GuestNames::of(self.guests.iter().map(|g| &g.guest))
    }
}

/// The host's share of a round trip, estimated: per direction the medians
/// of the hop pairs along the path's busiest chain, summed, next to the
/// workload's own round-trip latency. Each median is of other packets and
/// percentiles do not add: `note` says so wherever it is shown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostShare {
    pub paths: Vec<PathMedians>,
    /// Both directions' sums.
    pub host_p50_sum_ns: u64,
    /// The workload's round trip: its p50 (else mean), doubled where the
    /// tool gives half a round trip.
    pub workload_round_trip_ns: u64,
    /// Which figure of the workload's, and how it was made a round trip.
    pub workload_figure: String,
    /// host_p50_sum_ns / workload_round_trip_ns.
    pub share: Option<f64>,
    pub note: String,
}

/// One direction's busiest chain of hop pairs and the sum of their medians.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PathMedians {
    pub direction: Direction,
    /// `from -> to` of each hop pair, in path order.
    pub pairs: Vec<String>,
    pub p50_sum_ns: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CpuReport {
    /// On-CPU ns by role: vcpu (QEMU `CPU n/KVM`), vhost (`vhost-<pid>`),
    /// ksoftirqd, ovs (handler/revalidator threads), netprobe, other.
    pub by_role_ns: BTreeMap<String, u64>,
    /// NET_RX / NET_TX softirq ns (all CPUs) and per CPU.
    pub softirq_net_rx_ns: u64,
    pub softirq_net_tx_ns: u64,
    pub softirq_net_rx_per_cpu_ns: Vec<u64>,
    pub softirq_net_tx_per_cpu_ns: Vec<u64>,
    /// Softirq ns, all CPUs: NET_RX + NET_TX when timed by vector
    /// (`--softirq-vectors`), else all softirq time from /proc/stat.
    #[serde(default)]
    pub softirq_ns: u64,
    /// Where `softirq_ns` comes from: "bpf: NET_RX+NET_TX" or
    /// "/proc/stat: all vectors".
    #[serde(default)]
    pub softirq_source: String,
    /// Without `--softirq-vectors`: all softirq ns per CPU.
    #[serde(default)]
    pub softirq_per_cpu_ns: Vec<u64>,
    /// `softirq_ns` per packet followed. (Thread times also include the
    /// softirqs that ran in their context: do not add them.)
    pub softirq_ns_per_packet: f64,
    /// CPU ns per packet followed, by role, plus `softirq` (NET_RX +
    /// NET_TX). Thread times include softirqs that ran in their context.
    #[serde(default)]
    pub per_packet_ns: BTreeMap<String, f64>,
    /// The same per workload transaction, when the workload reported its
    /// transactions or the user named them (`--transactions`).
    #[serde(default)]
    pub per_transaction_ns: BTreeMap<String, f64>,
    #[serde(default)]
    pub transactions: Option<u64>,
    pub threads: Vec<CpuThread>,
}

impl CpuReport {
    /// Softirq time as reported: NET_RX and NET_TX when timed by vector,
    /// else one "all" row (label, ns).
    pub fn softirq_rows(&self) -> Vec<(&'static str, u64)> {
        let by_vector = self.softirq_source == SOFTIRQ_FROM_BPF
            || (self.softirq_source.is_empty() && self.softirq_net_rx_ns + self.softirq_net_tx_ns > 0);
        if by_vector {
            vec![("NET_RX", self.softirq_net_rx_ns), ("NET_TX", self.softirq_net_tx_ns)]
        } else {
            vec![("all", self.softirq_ns)]
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GuestReport {
    #[serde(flatten)]
    pub guest: Guest,
    /// On-CPU ns of its vCPU threads and of its vhost workers.
    pub vcpu_ns: u64,
    pub vhost_ns: u64,
    /// Packets of this guest followed: those that started on its devices
    /// (toward the wire) and those that reached them (toward the guest).
    #[serde(default)]
    pub packets: u64,
    /// (vCPU + vhost ns) per packet; 0 without packets.
    #[serde(default)]
    pub cpu_ns_per_packet: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CpuThread {
    pub tgid: u32,
    pub tid: u32,
    pub comm: String,
    pub role: String,
    pub ns: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IntervalReport {
    /// End of the interval, seconds since the recording started.
    pub t_s: f64,
    pub pairs: Vec<IntervalPairReport>,
    #[serde(flatten)]
    pub load: IntervalLoad,
}

/// What one interval cost besides its hop pairs' latencies (kept in the
/// recording and shown in the report alike; absent in older recordings).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IntervalLoad {
    /// Packets whose tracking started in the interval.
    #[serde(default)]
    pub packets: u64,
    /// NET_RX + NET_TX softirq ns in the interval (all CPUs).
    #[serde(default)]
    pub softirq_ns: u64,
    /// On-CPU ns in the interval by thread role.
    #[serde(default)]
    pub cpu_ns_by_role: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IntervalPairReport {
    pub direction: Direction,
    pub from: String,
    pub to: String,
    pub packets: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    /// Sum of the latencies in the interval: the time this pair cost.
    #[serde(default)]
    pub total_ns: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CoverageEntry {
    pub hop: String,
    pub path: String,
    /// `tracepoint net:net_dev_queue`, `function tap_do_read [tap]`.
    pub site: String,
    pub backend: Option<String>,
    /// Entry/exit pair attached: time inside the function is measured.
    pub time_inside: bool,
    /// Reasons better backends, or all, could not be used.
    pub notes: Vec<String>,
    /// Times the hop was detached mid-run because its module was unloaded
    /// (absent in older recordings and when it never happened).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detached: Vec<Detachment>,
}

/// A stretch of a run without a hop: its module was unloaded at
/// `detached_at_s` (seconds since the probes were attached) and the hop
/// attached again at `reattached_at_s`, if it was (`--wait-for-modules`,
/// `serve`). What was measured before stays in the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detachment {
    pub module: String,
    pub detached_at_s: f64,
    #[serde(default)]
    pub reattached_at_s: Option<f64>,
}

impl Detachment {
    /// The time without the hop: until it came back, else until `end_s`.
    pub fn gap_s(&self, end_s: f64) -> f64 {
        (self.reattached_at_s.unwrap_or(end_s) - self.detached_at_s).max(0.0)
    }
}

/// Time spent inside one hop function (entry to return).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FunctionReport {
    pub hop: String,
    pub path: String,
    pub calls: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub total_ns: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DirectionReport {
    pub direction: Direction,
    pub pairs: Vec<PairReport>,
}

/// One hop pair: the time from `from` to `to` for the same packet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairReport {
    pub from_hop: String,
    pub from_dev: String,
    pub to_hop: String,
    /// Empty when the hop has no device of its own (consume, drop).
    pub to_dev: String,
    pub packets: u64,
    pub min_ns: u64,
    pub mean_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl PairReport {
    pub fn from_label(&self) -> String {
        at(&self.from_hop, &self.from_dev)
    }
    pub fn to_label(&self) -> String {
        at(&self.to_hop, &self.to_dev)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DropReport {
    pub reason: String,
    pub reason_code: u32,
    pub packets: u64,
    pub direction: Direction,
    pub last_hop: String,
    pub last_dev: String,
}

/// One kernel stack that dropped packets for one reason (`--drop-stacks`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DropStackReport {
    pub reason: String,
    pub reason_code: u32,
    pub packets: u64,
    /// The function that freed them: the innermost frame that is not a
    /// generic free helper (`kfree_skb_reason`, `sk_skb_reason_drop`...).
    pub freed_by: String,
    /// The stack folded as `stackcollapse-perf.pl` folds one: root first,
    /// `;`-separated (append ` packets` for a flame-graph tool's line).
    pub stack: String,
}

/// One drop reason's stacks beyond the report's top rows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DropStacksLeftOut {
    pub reason: String,
    pub reason_code: u32,
    pub stacks: u64,
    pub packets: u64,
}

impl DropStacksLeftOut {
    /// "in 3 more stacks, ...", for the table and the HTML.
    pub fn describe(&self) -> String {
        let s = if self.stacks == 1 { "" } else { "s" };
        format!("in {} more stack{s}, left out of this report (the recording has them)", self.stacks)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceReport {
    pub name: String,
    pub kind: String,
    pub ifindex: u32,
    pub netns: u32,
}
