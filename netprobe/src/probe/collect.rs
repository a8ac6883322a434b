//! Reads the kernel-side aggregates (hop-pair histograms, drops, device
//! descriptions, loss counters) out of the BPF maps into a [`Snapshot`],
//! summing the per-CPU values. The only module that reads the maps, for
//! the `Probe` handle (in `attach`).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use aya::{
    maps::{HashMap, PerCpuArray, PerCpuHashMap, StackTraceMap},
    Ebpf,
};
use netprobe_common::{
    counter, hist::Hist, names, CpuTime, DevInfo, DropKey, DropStackKey, PairKey, PairSlot, NET_RX_SOFTIRQ,
    NET_TX_SOFTIRQ,
};

use super::stacks::Kallsyms;

/// The kernel's aggregates at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub pairs: BTreeMap<PairKey, Hist>,
    pub drops: BTreeMap<DropKey, u64>,
    /// `--drop-stacks`: drops by (drop key, kernel stack id).
    pub drop_stacks: BTreeMap<DropStackKey, u64>,
    /// `--drop-stacks`: each stack id's frames, named, innermost first,
    /// the tracing machinery's own frames cut off.
    pub stacks: BTreeMap<u32, Vec<String>>,
    pub devs: BTreeMap<u64, DevInfo>,
    /// Time inside hop functions, by hop id.
    pub funcs: BTreeMap<u32, Hist>,
    pub counters: [u64; counter::COUNT as usize],
    /// On-CPU ns per thread (`pid_tgid`), with its name.
    pub cpu: BTreeMap<u64, CpuTime>,
    /// NET_RX and NET_TX softirq ns, per CPU (with `--softirq-vectors`).
    pub softirq_rx: Vec<u64>,
    pub softirq_tx: Vec<u64>,
    /// Otherwise all softirq ns per CPU since the start, from /proc/stat.
    pub softirq_all: Vec<u64>,
    /// Sample counts of the pairs held in the `NP_HOPS` hash map (rather
    /// than the fixed per-CPU cache): what [`retire`] can move out.
    pub in_hash: BTreeMap<PairKey, u64>,
}

impl Snapshot {
    /// Softirq ns, all CPUs: NET_RX + NET_TX when timed by vector, else
    /// all softirq time.
    pub fn softirq_ns(&self) -> u64 {
        if self.softirq_rx.is_empty() && self.softirq_tx.is_empty() {
            self.softirq_all.iter().sum()
        } else {
            self.softirq_rx.iter().chain(&self.softirq_tx).sum()
        }
    }
}

/// Softirq ns per CPU since boot, from /proc/stat (kept by the kernel at
/// every tick, or exactly with CONFIG_IRQ_TIME_ACCOUNTING); empty if
/// unreadable.
pub fn softirq_stat_ns() -> Vec<u64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    std::fs::read_to_string("/proc/stat").map(|t| parse_softirq_stat(&t, hz)).unwrap_or_default()
}

fn parse_softirq_stat(text: &str, hz: u64) -> Vec<u64> {
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        // cpuN user nice system idle iowait irq softirq ...
        .map(|l| l.split_whitespace().nth(7).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * (1_000_000_000 / hz))
        .collect()
}

pub(super) fn snapshot(ebpf: &Ebpf) -> Result<Snapshot> {
    let mut s = Snapshot::default();
    let pairs: PerCpuHashMap<_, PairKey, Hist> =
        PerCpuHashMap::try_from(ebpf.map(names::HOPS).context("map NP_HOPS missing")?)?;
    for item in pairs.iter() {
        let (k, per_cpu) = item.context("reading NP_HOPS")?;
        let acc = s.pairs.entry(k).or_insert_with(Hist::zeroed);
        for h in per_cpu.iter() {
            acc.merge(h);
        }
        s.in_hash.insert(k, acc.count);
    }
    let cache: PerCpuArray<_, PairSlot> =
        PerCpuArray::try_from(ebpf.map(names::PAIRS).context("map NP_PAIRS missing")?)?;
    for i in 0..netprobe_common::PAIR_SLOTS {
        for slot in cache.get(&i, 0)?.iter() {
            if slot.hist.count > 0 {
                s.pairs.entry(slot.key).or_insert_with(Hist::zeroed).merge(&slot.hist);
            }
        }
    }
    s.pairs.retain(|_, h| h.count > 0);
    let drops: PerCpuHashMap<_, DropKey, u64> =
        PerCpuHashMap::try_from(ebpf.map(names::DROPS).context("map NP_DROPS missing")?)?;
    for item in drops.iter() {
        let (k, per_cpu) = item.context("reading NP_DROPS")?;
        *s.drops.entry(k).or_default() += per_cpu.iter().sum::<u64>();
    }
    let funcs: PerCpuHashMap<_, u32, Hist> =
        PerCpuHashMap::try_from(ebpf.map(names::FUNCS).context("map NP_FUNCS missing")?)?;
    for item in funcs.iter() {
        let (k, per_cpu) = item.context("reading NP_FUNCS")?;
        let acc = s.funcs.entry(k).or_insert_with(Hist::zeroed);
        for h in per_cpu.iter() {
            acc.merge(h);
        }
    }
    s.funcs.retain(|_, h| h.count > 0);
    if let Some(m) = ebpf.map(names::CPU) {
        let cpu: HashMap<_, u64, CpuTime> = HashMap::try_from(m)?;
        for item in cpu.iter() {
            let (k, v) = item.context("reading NP_CPU")?;
            s.cpu.insert(k, v);
        }
    }
    if let Some(m) = ebpf.map(names::SOFTIRQ) {
        let soft: PerCpuArray<_, u64> = PerCpuArray::try_from(m)?;
        s.softirq_rx = soft.get(&NET_RX_SOFTIRQ, 0)?.iter().copied().collect();
        s.softirq_tx = soft.get(&NET_TX_SOFTIRQ, 0)?.iter().copied().collect();
    }
    let devs: HashMap<_, u64, DevInfo> = HashMap::try_from(ebpf.map(names::DEVS).context("map NP_DEVS missing")?)?;
    for item in devs.iter() {
        let (k, v) = item.context("reading NP_DEVS")?;
        s.devs.insert(k, v);
    }
    let counters: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(names::COUNTERS).context("map NP_COUNTERS missing")?)?;
    for i in 0..counter::COUNT {
        s.counters[i as usize] = counters.get(&i, 0)?.iter().sum();
    }
    Ok(s)
}

/// Moves idle hop pairs out of the `NP_HOPS` hash map (whose entries are
/// allocated per pair and CPU, 4.7 KiB each): their histograms are
/// returned, to be kept by the caller, and their kernel entries deleted,
/// so devices that come and go (guests, topologies) do not fill the map.
/// A pair that sees packets again starts a new entry; the two add up.
/// Only pairs idle for a while are given, so no program is updating them.
pub(super) fn retire(ebpf: &mut Ebpf, keys: &[PairKey]) -> Result<BTreeMap<PairKey, Hist>> {
    let mut pairs: PerCpuHashMap<_, PairKey, Hist> =
        PerCpuHashMap::try_from(ebpf.map_mut(names::HOPS).context("map NP_HOPS missing")?)?;
    let mut out = BTreeMap::new();
    for k in keys {
        let Ok(per_cpu) = pairs.get(k, 0) else { continue };
        let acc = out.entry(*k).or_insert_with(Hist::zeroed);
        for h in per_cpu.iter() {
            acc.merge(h);
        }
        pairs.remove(k).context("removing an idle pair from NP_HOPS")?;
    }
    Ok(out)
}

/// Names kernel stacks for [`snapshot`], once per stack id (ids are
/// never reused: the stack map is used without BPF_F_REUSE_STACKID).
#[derive(Debug, Default)]
pub(super) struct StackNamer {
    kallsyms: Kallsyms,
    /// /proc/modules when `kallsyms` was read: reread when it changed.
    modules: String,
    /// Whether `kallsyms` was read after netprobe's programs were loaded:
    /// their frames (`bpf_prog_<tag>_<name> [bpf]`), the innermost of
    /// every stack, are cut by name, and before they are listed they
    /// would take the name of the kernel symbol below them.
    after_load: bool,
    named: BTreeMap<u32, Vec<String>>,
}

impl StackNamer {
    /// Reads the symbols once already, so a kernel that hides them fails
    /// before anything is attached.
    pub(super) fn new() -> Result<StackNamer> {
        Ok(StackNamer { kallsyms: Kallsyms::load()?, modules: modules(), after_load: false, named: BTreeMap::new() })
    }
}

fn modules() -> String {
    std::fs::read_to_string("/proc/modules").unwrap_or_default()
}

/// `--drop-stacks`: the drop counts by stack, and the frames of every
/// stack they name (read from `NP_DROP_STACKS` the first time an id is met).
pub(super) fn drop_stacks(ebpf: &Ebpf, namer: &mut StackNamer, s: &mut Snapshot) -> Result<()> {
    let counts: PerCpuHashMap<_, DropStackKey, u64> =
        PerCpuHashMap::try_from(ebpf.map(names::DROP_STACK_COUNTS).context("map NP_DROP_STACK_COUNTS missing")?)?;
    for item in counts.iter() {
        let (k, per_cpu) = item.context("reading NP_DROP_STACK_COUNTS")?;
        *s.drop_stacks.entry(k).or_default() += per_cpu.iter().sum::<u64>();
    }
    let map = StackTraceMap::try_from(ebpf.map(names::DROP_STACKS).context("map NP_DROP_STACKS missing")?)?;
    let mut reread = false;
    for id in s.drop_stacks.keys().map(|k| k.stack_id).collect::<std::collections::BTreeSet<_>>() {
        if namer.named.contains_key(&id) {
            continue;
        }
        if !reread {
            // netprobe's programs, or a module loaded since the symbols
            // were read, would be named after their neighbour: read them
            // again first.
            let now = modules();
            if now != namer.modules || !namer.after_load {
                namer.kallsyms = Kallsyms::load()?;
                namer.modules = now;
                namer.after_load = true;
            }
            reread = true;
        }
        let trace = map.get(&id, 0).with_context(|| format!("reading stack {id} of NP_DROP_STACKS"))?;
        let ips: Vec<u64> = trace.frames().iter().map(|f| f.ip).collect();
        namer.named.insert(id, namer.kallsyms.frames(&ips));
    }
    s.stacks = s.drop_stacks.keys().filter_map(|k| Some((k.stack_id, namer.named.get(&k.stack_id)?.clone()))).collect();
    Ok(())
}

/// Only the loss and tracking counters: cheap enough for a status line
/// every second.
pub(super) fn counters(ebpf: &Ebpf) -> Result<[u64; counter::COUNT as usize]> {
    let counters: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(names::COUNTERS).context("map NP_COUNTERS missing")?)?;
    let mut out = [0u64; counter::COUNT as usize];
    for i in 0..counter::COUNT {
        out[i as usize] = counters.get(&i, 0)?.iter().sum();
    }
    Ok(out)
}

/// Trace mode: hop-pair events still being gathered into journeys in the
/// kernel (packets in flight, or whose end no hop saw and whose slot no
/// other packet took yet): neither delivered nor lost.
pub(super) fn journey_events_in_flight(ebpf: &Ebpf) -> Result<u64> {
    let map = ebpf.map(names::JOURNEY).context("map NP_JOURNEY missing")?;
    let journeys: aya::maps::Array<_, netprobe_common::JourneyRecord> = aya::maps::Array::try_from(map)?;
    let mut n = 0;
    for i in 0..journeys.len() {
        n += journeys.get(&i, 0).map_or(0, |j| j.n as u64);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn softirq_column_of_each_cpu() {
        let t = "cpu  10 0 5 100 0 0 7 0 0 0\ncpu0 5 0 2 50 0 0 3 0 0 0\ncpu1 5 0 3 50 0 0 4 0 0 0\nintr 1 2\n";
        assert_eq!(super::parse_softirq_stat(t, 100), vec![30_000_000, 40_000_000]);
    }
}
