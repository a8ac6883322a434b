//! Recordings: the durable, versioned file `record -o` writes and every
//! report reads. It keeps what the kernel measured at full resolution (the
//! histograms' buckets, not percentiles), the coverage and the host facts,
//! so a report made later, or by a newer netprobe, is the same report.
//!
//! This module is the schema, with the one set of conversions from the
//! kernel's types (`From`); `codec` is the file form, `spool` keeps a long
//! recording's interval histograms on disk until it is assembled. Nothing
//! here analyses: `analyze` reads recordings.

pub mod codec;
pub mod spool;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use netprobe_common::{counter, hist::Hist, CpuTime, DevInfo, DropKey, PairKey};
use serde::{Deserialize, Serialize};

use crate::{
    model::{host::HostConfig, labels::Labels, report::CoverageEntry, report::IntervalLoad, Guest, Workload},
    probe::{collect::Snapshot, stacks, trace::Sighting},
};

pub const MAGIC: &str = "netprobe-recording";
/// The format this build writes; it reads this one and every older one.
/// 1: histograms, coverage, host facts, intervals (percentiles only), CPU.
/// 2: adds each interval's full histogram per hop pair and the packet
///    journeys of trace mode (`samples`); both are absent from format 1
///    files, which read as having none.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    pub netprobe_version: String,
    pub kernel: String,
    pub arch: String,
    pub cpus: usize,
    /// /sys/devices/system/cpu/smt/control, when the kernel has it.
    pub smt: Option<String>,
    /// /sys/kernel/mm/transparent_hugepage/enabled (the selected value).
    pub thp: Option<String>,
    pub started_unix_s: f64,
    pub duration_s: f64,
    pub interrupted: bool,
    pub command_line: Vec<String>,
    /// The workload netprobe ran and recorded (`record -- CMD ARGS`).
    #[serde(default)]
    pub workload: Option<Workload>,
    /// The flow filter (`--filter`) the kernel applied.
    #[serde(default)]
    pub filter: Option<String>,
    /// QEMU guests found on the host during the recording.
    #[serde(default)]
    pub guests: Vec<Guest>,
    /// The host's configuration when the recording was made (absent in
    /// recordings made before netprobe captured it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_config: Option<HostConfig>,
    /// `record --label KEY=VALUE`: what a benchmark sweep varies
    /// (`conns=50`, `config=macvtap`); `compare` orders a sweep by them.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// `--sample N`: the kernel followed one packet in N (0 or 1: all).
    #[serde(default, skip_serializing_if = "unsampled")]
    pub sample_every: u32,
}

fn unsampled(n: &u32) -> bool {
    *n <= 1
}

impl Meta {
    /// The host facts of this machine, for a recording that starts now.
    pub fn now(duration_s: f64, interrupted: bool) -> Meta {
        let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
        let thp = read("/sys/kernel/mm/transparent_hugepage/enabled")
            .and_then(|s| s.split('[').nth(1).and_then(|x| x.split(']').next()).map(str::to_owned));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        Meta {
            netprobe_version: env!("CARGO_PKG_VERSION").to_owned(),
            kernel: read("/proc/sys/kernel/osrelease").unwrap_or_default(),
            arch: std::env::consts::ARCH.to_owned(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            smt: read("/sys/devices/system/cpu/smt/control"),
            thp,
            started_unix_s: now - duration_s,
            duration_s,
            interrupted,
            command_line: std::env::args().collect(),
            workload: None,
            filter: None,
            guests: Vec::new(),
            host_config: None,
            labels: Labels::new(),
            sample_every: 0,
        }
    }
}

/// A histogram with its non-empty buckets only: `[bucket index, count]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistRec {
    pub count: u64,
    pub sum_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub buckets: Vec<[u64; 2]>,
}

impl From<&Hist> for HistRec {
    fn from(h: &Hist) -> HistRec {
        let buckets = h.buckets.iter().enumerate().filter(|(_, &c)| c > 0).map(|(i, &c)| [i as u64, c]).collect();
        HistRec { count: h.count, sum_ns: h.sum_ns, min_ns: h.min_ns, max_ns: h.max_ns, buckets }
    }
}

impl HistRec {
    /// The kernel's histogram form again, for merging and percentiles.
    pub fn to_hist(&self) -> Result<Hist> {
        let mut h = Hist::zeroed();
        (h.count, h.sum_ns, h.min_ns, h.max_ns) = (self.count, self.sum_ns, self.min_ns, self.max_ns);
        for &[i, c] in &self.buckets {
            let slot = h.buckets.get_mut(i as usize).with_context(|| format!("histogram bucket {i} out of range"))?;
            *slot = c;
        }
        Ok(h)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairRec {
    pub origin: u64,
    pub from_dev: u64,
    pub to_dev: u64,
    pub from_hop: u8,
    pub to_hop: u8,
    pub origin_hop: u8,
    pub hist: HistRec,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DropRec {
    pub origin: u64,
    pub last_dev: u64,
    pub reason: u32,
    pub last_hop: u8,
    pub origin_hop: u8,
    pub packets: u64,
}

/// `--drop-stacks`: drops of one [`DropRec`] key that share one kernel
/// stack, the stack kept named and folded (root first, `;`-separated, as
/// `stackcollapse-perf.pl` writes it), so a report never needs the
/// recording host's /proc/kallsyms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropStackRec {
    pub origin: u64,
    pub last_dev: u64,
    pub reason: u32,
    pub last_hop: u8,
    pub origin_hop: u8,
    pub stack: String,
    /// The function that freed the packets (the innermost frame that is
    /// not a generic free helper such as `kfree_skb_reason`).
    pub freed_by: String,
    pub packets: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevRec {
    pub key: u64,
    pub name: String,
    pub kind: String,
    pub ifindex: u32,
    pub netns: u32,
}

/// One hop pair in one interval: what happened in that interval only.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IntervalPair {
    pub origin: u64,
    /// The hop the pair's packets started at (older recordings: absent,
    /// and the direction is decided by the device alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_hop: Option<u8>,
    pub from_dev: u64,
    pub to_dev: u64,
    pub from_hop: u8,
    pub to_hop: u8,
    pub packets: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    /// Sum of the latencies in the interval (older recordings: 0).
    #[serde(default)]
    pub total_ns: u64,
    /// The interval's full histogram (format 2; its min and max are the
    /// bounds of its outer buckets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hist: Option<HistRec>,
}

/// One interval of the time series (seconds since the recording started).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IntervalRec {
    pub t_s: f64,
    pub pairs: Vec<IntervalPair>,
    #[serde(flatten)]
    pub load: IntervalLoad,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recording {
    pub meta: Meta,
    pub coverage: Vec<CoverageEntry>,
    pub drop_reasons: BTreeMap<u32, String>,
    /// --iface devices known to be guest-facing (decides direction where
    /// the kernel side could not read a device's kind).
    pub guest_facing: Vec<String>,
    pub pairs: Vec<PairRec>,
    pub drops: Vec<DropRec>,
    pub devices: Vec<DevRec>,
    /// Time inside hop functions: (hop id, histogram).
    pub functions: Vec<(u8, HistRec)>,
    pub counters: BTreeMap<String, u64>,
    /// Per-interval packets and percentiles per hop pair.
    #[serde(default)]
    pub intervals: Vec<IntervalRec>,
    /// On-CPU time per thread during the recording.
    #[serde(default)]
    pub cpu_threads: Vec<CpuRec>,
    /// NET_RX / NET_TX softirq ns per CPU.
    #[serde(default)]
    pub softirq_net_rx_ns: Vec<u64>,
    #[serde(default)]
    pub softirq_net_tx_ns: Vec<u64>,
    /// Without `--softirq-vectors`: all softirq ns per CPU (/proc/stat).
    #[serde(default)]
    pub softirq_all_ns: Vec<u64>,
    /// Trace mode: complete packet journeys, the first `--samples` that
    /// ended (format 2). Hops and times only, never packet contents.
    #[serde(default)]
    pub samples: Vec<SampleRec>,
    /// `--drop-stacks`: drops by kernel stack (absent otherwise, and in
    /// recordings made before netprobe kept them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_stacks: Vec<DropStackRec>,
}

/// One packet's journey: its hops in order, from first sighting to its
/// end (delivery, consumption or drop).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleRec {
    pub hops: Vec<SampleHop>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleHop {
    pub hop: u8,
    /// Device key (as in `devices`), 0 for hops without one.
    pub dev: u64,
    /// Nanoseconds since the recording started.
    pub t_ns: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CpuRec {
    pub tgid: u32,
    pub tid: u32,
    pub comm: String,
    pub ns: u64,
}

/// A NUL-padded kernel name as a string.
pub(crate) fn cstr(b: &[u8; 16]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl From<(&PairKey, &Hist)> for PairRec {
    fn from((k, h): (&PairKey, &Hist)) -> PairRec {
        PairRec {
            origin: k.origin,
            from_dev: k.from_dev,
            to_dev: k.to_dev,
            from_hop: k.from_hop,
            to_hop: k.to_hop,
            origin_hop: k.origin_hop,
            hist: HistRec::from(h),
        }
    }
}

impl From<(&DropKey, u64)> for DropRec {
    fn from((k, packets): (&DropKey, u64)) -> DropRec {
        DropRec {
            origin: k.origin,
            last_dev: k.last_dev,
            reason: k.reason,
            last_hop: k.last_hop,
            origin_hop: k.origin_hop,
            packets,
        }
    }
}

impl From<(u64, &DevInfo)> for DevRec {
    fn from((key, d): (u64, &DevInfo)) -> DevRec {
        DevRec { key, name: cstr(&d.name), kind: cstr(&d.kind), ifindex: d.ifindex, netns: d.netns }
    }
}

impl From<(u64, &CpuTime)> for CpuRec {
    /// `id` is the thread's `pid_tgid`: process id high, thread id low.
    fn from((id, c): (u64, &CpuTime)) -> CpuRec {
        CpuRec { tgid: (id >> 32) as u32, tid: id as u32, comm: cstr(&c.comm), ns: c.ns }
    }
}

impl From<&Sighting> for SampleHop {
    fn from(s: &Sighting) -> SampleHop {
        SampleHop { hop: s.hop, dev: s.dev, t_ns: s.t_ns }
    }
}

impl Recording {
    /// The kernel's aggregates at `snap` as a recording (no intervals, no
    /// journeys yet), with the loader's own counters added to the kernel's.
    pub fn new(
        snap: &Snapshot,
        meta: Meta,
        coverage: Vec<CoverageEntry>,
        drop_reasons: BTreeMap<u32, String>,
        guest_facing: Vec<String>,
        extra_counters: BTreeMap<String, u64>,
    ) -> Recording {
        let mut counters: BTreeMap<String, u64> =
            counter::NAMES.iter().zip(snap.counters.iter()).map(|(n, v)| ((*n).to_owned(), *v)).collect();
        counters.extend(extra_counters);
        Recording {
            meta,
            coverage,
            drop_reasons,
            guest_facing,
            pairs: snap.pairs.iter().map(PairRec::from).collect(),
            drops: snap.drops.iter().map(|(k, &n)| DropRec::from((k, n))).collect(),
            devices: snap.devs.iter().map(|(&key, d)| DevRec::from((key, d))).collect(),
            functions: snap.funcs.iter().map(|(&id, h)| (id as u8, HistRec::from(h))).collect(),
            counters,
            intervals: Vec::new(),
            cpu_threads: snap.cpu.iter().map(|(&id, c)| CpuRec::from((id, c))).collect(),
            softirq_net_rx_ns: snap.softirq_rx.clone(),
            softirq_net_tx_ns: snap.softirq_tx.clone(),
            softirq_all_ns: snap.softirq_all.clone(),
            samples: Vec::new(),
            drop_stacks: drop_stacks(snap),
        }
    }
}

/// The snapshot's drops by stack, each stack named and folded; drops of
/// one key whose stacks fold alike (different return addresses in the
/// same functions) are one row.
fn drop_stacks(snap: &Snapshot) -> Vec<DropStackRec> {
    let mut rows: BTreeMap<(DropKey, String), (String, u64)> = BTreeMap::new();
    for (k, &n) in &snap.drop_stacks {
        let frames = snap.stacks.get(&k.stack_id).map(Vec::as_slice).unwrap_or_default();
        rows.entry((k.drop, stacks::fold(frames))).or_insert_with(|| (stacks::freed_by(frames), 0)).1 += n;
    }
    rows.into_iter()
        .map(|((d, stack), (freed_by, packets))| DropStackRec {
            origin: d.origin,
            last_dev: d.last_dev,
            reason: d.reason,
            last_hop: d.last_hop,
            origin_hop: d.origin_hop,
            stack,
            freed_by,
            packets,
        })
        .collect()
}
