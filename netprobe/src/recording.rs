//! Recordings: the durable, versioned file `record -o` writes and every
//! report reads. It keeps what the kernel measured at full resolution (the
//! histograms' buckets, not percentiles), the coverage and the host facts,
//! so a report made later, or by a newer netprobe, is the same report.
//!
//! Layout (text): a header line `netprobe-recording <version>`, the body
//! as one line of JSON, and a trailer `end <body bytes> <crc32 hex>`. A
//! truncated or corrupted file fails the length or checksum test with an
//! error saying so, before anything is parsed.

use std::{
    collections::BTreeMap,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use netprobe_common::{counter, hist::Hist, DevInfo, DropKey, PairKey};
use serde::{Deserialize, Serialize};

use crate::{
    collect::Snapshot,
    correlate,
    report::{CoverageEntry, Report},
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
    pub workload: Option<crate::report::Workload>,
    /// The flow filter (`--filter`) the kernel applied.
    #[serde(default)]
    pub filter: Option<String>,
    /// QEMU guests found on the host during the recording.
    #[serde(default)]
    pub guests: Vec<crate::guests::Guest>,
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

impl HistRec {
    pub(crate) fn from_hist(h: &Hist) -> HistRec {
        let buckets = h.buckets.iter().enumerate().filter(|(_, &c)| c > 0).map(|(i, &c)| [i as u64, c]).collect();
        HistRec { count: h.count, sum_ns: h.sum_ns, min_ns: h.min_ns, max_ns: h.max_ns, buckets }
    }

    pub(crate) fn to_hist(&self) -> Result<Hist> {
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
    pub load: crate::report::IntervalLoad,
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

fn name16(s: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    let b = s.as_bytes();
    n[..b.len().min(15)].copy_from_slice(&b[..b.len().min(15)]);
    n
}

fn cstr(b: &[u8; 16]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl Recording {
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
            pairs: snap
                .pairs
                .iter()
                .map(|(k, h)| PairRec {
                    origin: k.origin,
                    from_dev: k.from_dev,
                    to_dev: k.to_dev,
                    from_hop: k.from_hop,
                    to_hop: k.to_hop,
                    origin_hop: k.origin_hop,
                    hist: HistRec::from_hist(h),
                })
                .collect(),
            drops: snap
                .drops
                .iter()
                .map(|(k, &n)| DropRec {
                    origin: k.origin,
                    last_dev: k.last_dev,
                    reason: k.reason,
                    last_hop: k.last_hop,
                    origin_hop: k.origin_hop,
                    packets: n,
                })
                .collect(),
            devices: snap
                .devs
                .iter()
                .map(|(&key, d)| DevRec {
                    key,
                    name: cstr(&d.name),
                    kind: cstr(&d.kind),
                    ifindex: d.ifindex,
                    netns: d.netns,
                })
                .collect(),
            functions: snap.funcs.iter().map(|(&id, h)| (id as u8, HistRec::from_hist(h))).collect(),
            counters,
            intervals: Vec::new(),
            cpu_threads: snap
                .cpu
                .iter()
                .map(|(&id, c)| CpuRec { tgid: (id >> 32) as u32, tid: id as u32, comm: cstr(&c.comm), ns: c.ns })
                .collect(),
            softirq_net_rx_ns: snap.softirq_rx.clone(),
            softirq_net_tx_ns: snap.softirq_tx.clone(),
            softirq_all_ns: snap.softirq_all.clone(),
            samples: Vec::new(),
        }
    }

    /// The kernel aggregates as they were recorded.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let mut s = Snapshot::default();
        for p in &self.pairs {
            let k = PairKey {
                origin: p.origin,
                from_dev: p.from_dev,
                to_dev: p.to_dev,
                from_hop: p.from_hop,
                to_hop: p.to_hop,
                origin_hop: p.origin_hop,
                _pad: 0,
                _pad2: 0,
            };
            s.pairs.insert(k, p.hist.to_hist()?);
        }
        for d in &self.drops {
            let k = DropKey {
                origin: d.origin,
                last_dev: d.last_dev,
                reason: d.reason,
                last_hop: d.last_hop,
                origin_hop: d.origin_hop,
                _pad: [0; 2],
            };
            s.drops.insert(k, d.packets);
        }
        for d in &self.devices {
            let info = DevInfo { name: name16(&d.name), kind: name16(&d.kind), ifindex: d.ifindex, netns: d.netns };
            s.devs.insert(d.key, info);
        }
        for (id, h) in &self.functions {
            s.funcs.insert(*id as u32, h.to_hist()?);
        }
        for (i, n) in counter::NAMES.iter().enumerate() {
            s.counters[i] = self.counters.get(*n).copied().unwrap_or(0);
        }
        for c in &self.cpu_threads {
            let id = ((c.tgid as u64) << 32) | c.tid as u64;
            s.cpu.insert(id, netprobe_common::CpuTime { ns: c.ns, comm: name16(&c.comm) });
        }
        s.softirq_rx = self.softirq_net_rx_ns.clone();
        s.softirq_tx = self.softirq_net_tx_ns.clone();
        s.softirq_all = self.softirq_all_ns.clone();
        Ok(s)
    }

    /// The per-hop report of this recording.
    pub fn report(&self) -> Result<Report> {
        let snap = self.snapshot()?;
        let coverage: Vec<crate::attach::Coverage> = Vec::new();
        let mut r = correlate::build(
            &snap,
            &correlate::Context {
                coverage: &coverage,
                drop_reasons: &self.drop_reasons,
                duration_s: self.meta.duration_s,
                interrupted: self.meta.interrupted,
                guest_facing: &self.guest_facing,
                workload: self.meta.workload.as_ref(),
                guests: &self.meta.guests,
            },
        );
        r.coverage = self.coverage.clone();
        r.kernel = self.meta.kernel.clone();
        r.netprobe_version = self.meta.netprobe_version.clone();
        r.workload = self.meta.workload.clone();
        r.filter = self.meta.filter.clone();
        r.intervals = correlate::intervals(&self.intervals, &snap, &self.guest_facing);
        for (k, v) in &self.counters {
            r.tracking.entry(k.clone()).or_insert(*v);
        }
        Ok(r)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let body = serde_json::to_vec(self)?;
        let mut out = format!("{MAGIC} {FORMAT_VERSION}\n").into_bytes();
        out.extend_from_slice(&body);
        out.extend_from_slice(format!("\nend {} {:08x}\n", body.len(), crc32fast::hash(&body)).as_bytes());
        Ok(out)
    }

    pub fn from_bytes(data: &[u8]) -> Result<Recording> {
        let nl = data.iter().position(|&b| b == b'\n').context("not a netprobe recording (no header line)")?;
        let header = std::str::from_utf8(&data[..nl]).unwrap_or_default();
        // Exactly `netprobe-recording <version>`, the version as written
        // (no sign, no leading zero, no other spacing).
        let version: u32 = header
            .strip_prefix(MAGIC)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.parse().ok().filter(|n: &u32| *n >= 1 && n.to_string() == v))
            .context("not a netprobe recording (its first line is not `netprobe-recording <version>`)")?;
        if version > FORMAT_VERSION {
            bail!(
                "this recording has format {version}, written by a newer netprobe; this one ({}) reads formats up to {FORMAT_VERSION}: \
                 read it with a newer netprobe",
                env!("CARGO_PKG_VERSION")
            );
        }
        let rest = &data[nl + 1..];
        let trailer_at = rest
            .windows(5)
            .rposition(|w| w == b"\nend ")
            .context("recording is truncated: its end marker is missing (was the recording cut short?)")?;
        let body = &rest[..trailer_at];
        let trailer = std::str::from_utf8(&rest[trailer_at + 1..]).unwrap_or_default();
        let mut parts = trailer.split_whitespace().skip(1);
        let (len, crc) = (parts.next().and_then(|l| l.parse::<usize>().ok()), parts.next());
        let (Some(len), Some(crc)) = (len, crc) else {
            bail!("recording is truncated: its end marker is incomplete");
        };
        if crc.len() != 8 || !trailer.ends_with('\n') {
            bail!("recording is truncated: its end marker is incomplete");
        }
        if len != body.len() {
            bail!("recording is truncated or damaged: its body has {} bytes, the end marker says {len}", body.len());
        }
        if format!("{:08x}", crc32fast::hash(body)) != crc {
            bail!("recording is corrupted: the checksum of its body does not match (bit flip or edit)");
        }
        serde_json::from_slice(body)
            .context("recording body is not valid (checksum matched: written by a buggy netprobe?)")
    }

    /// Writes the recording: mode 0600, never through a symlink, and
    /// atomically (a temporary file renamed over the target), so a reader
    /// sees either the previous file or this whole one.
    pub fn write(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            bail!("{} is a symbolic link; netprobe does not write through links (choose another path)", path.display());
        }
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let tmp: PathBuf =
            dir.join(format!(".{}.tmp{}", path.file_name().unwrap_or_default().to_string_lossy(), std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .with_context(|| format!("cannot create {} (is {} writable?)", tmp.display(), dir.display()))?;
        f.write_all(&bytes).and_then(|()| f.sync_all()).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot move the recording to {}", path.display()))?;
        Ok(())
    }

    pub fn read(path: &Path) -> Result<Recording> {
        let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Recording::from_bytes(&data).with_context(|| format!("{}", path.display()))
    }
}

/// Whether a file starts like a recording (as opposed to a JSON report).
pub fn looks_like_recording(data: &[u8]) -> bool {
    data.starts_with(MAGIC.as_bytes())
}

#[cfg(test)]
mod tests {
    use netprobe_common::{hist::bucket_of, hop};

    use super::*;

    fn sample() -> Recording {
        let mut snap = Snapshot::default();
        let mut h = Hist::zeroed();
        for v in [900u64, 1200, 5000, 80_000] {
            h.count += 1;
            h.sum_ns += v;
            h.max_ns = h.max_ns.max(v);
            h.min_ns = if h.min_ns == 0 { v } else { h.min_ns.min(v) };
            h.buckets[bucket_of(v)] += 1;
        }
        let key = PairKey {
            origin: 0x10,
            from_dev: 0x10,
            to_dev: 0x20,
            from_hop: hop::NET_DEV_QUEUE,
            to_hop: hop::NET_DEV_START_XMIT,
            origin_hop: hop::NET_DEV_QUEUE,
            _pad: 0,
            _pad2: 0,
        };
        snap.pairs.insert(key, h);
        snap.devs.insert(0x10, DevInfo { name: name16("macvtap0"), kind: name16("macvtap"), ifindex: 3, netns: 7 });
        snap.counters[counter::TRACK_STARTED as usize] = 4;
        Recording::new(&snap, Meta::now(1.5, true), Vec::new(), BTreeMap::new(), Vec::new(), BTreeMap::new())
    }

    #[test]
    fn round_trip_keeps_full_resolution() {
        let r = sample();
        let back = Recording::from_bytes(&r.to_bytes().unwrap()).unwrap();
        assert_eq!(back.pairs[0].hist, r.pairs[0].hist);
        let (a, b) = (r.report().unwrap(), back.report().unwrap());
        assert_eq!(serde_json::to_value(&a.directions).unwrap(), serde_json::to_value(&b.directions).unwrap());
        assert_eq!(b.directions[0].pairs[0].packets, 4);
        assert!(b.interrupted);
    }

    #[test]
    fn truncated_bit_flipped_newer_and_foreign_files_are_rejected_clearly() {
        let bytes = sample().to_bytes().unwrap();
        for cut in [bytes.len() - 3, bytes.len() / 2, 30] {
            let e = format!("{:#}", Recording::from_bytes(&bytes[..cut]).unwrap_err());
            assert!(e.contains("truncated"), "cut at {cut}: {e}");
        }
        let mut flipped = bytes.clone();
        flipped[60] ^= 0x04;
        let e = format!("{:#}", Recording::from_bytes(&flipped).unwrap_err());
        assert!(e.contains("corrupted") || e.contains("truncated"), "{e}");
        let newer = String::from_utf8(bytes.clone()).unwrap().replacen(
            &format!("{MAGIC} {FORMAT_VERSION}"),
            &format!("{MAGIC} 99"),
            1,
        );
        let e = format!("{:#}", Recording::from_bytes(newer.as_bytes()).unwrap_err());
        assert!(e.contains("format 99") && e.contains("newer netprobe"), "{e}");
        let e = format!("{:#}", Recording::from_bytes(b"{\"hello\": 1}\n").unwrap_err());
        assert!(e.contains("not a netprobe recording"), "{e}");
    }

    #[test]
    fn written_files_are_private_and_links_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("netprobe-rec-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.rec");
        sample().write(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(Recording::read(&path).is_ok());
        let link = dir.join("link.rec");
        std::os::unix::fs::symlink(dir.join("elsewhere"), &link).unwrap();
        let e = format!("{:#}", sample().write(&link).unwrap_err());
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
