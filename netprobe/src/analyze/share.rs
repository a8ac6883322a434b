//! The host's share of the round trip, estimated: per direction, the
//! medians of the hop pairs along the path's busiest chain within the
//! network namespace the path starts in (the host's; a peer on the same
//! kernel, as in the demo, is not the host), summed, next to the
//! workload's own round-trip latency. An estimate only: each median is of
//! other packets, and percentiles do not add.

use std::collections::BTreeMap;

use crate::model::{
    report::{DeviceReport, DirectionReport, HostShare, PairReport, PathMedians},
    Workload,
};

/// What `HostShare::note` says, in every report that has one.
pub const ESTIMATE: &str = "an estimate: each hop pair's median is of other packets, and percentiles do not add";

/// A hop at a device; a hop without a device of its own stays on the
/// device of the hop before it (as `direction_report` orders them).
type Node = (String, String);

fn ends(p: &PairReport) -> (Node, Node) {
    let to_dev = if p.to_dev.is_empty() { &p.from_dev } else { &p.to_dev };
    ((p.from_hop.clone(), p.from_dev.clone()), (p.to_hop.clone(), to_dev.clone()))
}

/// The busiest chain of hop pairs of one direction: from the origin most
/// packets leave, each step the busiest pair onward (drops left aside),
/// until the path ends, comes back on itself or leaves the origin's
/// network namespace (`netns` of a device name; unknown devices stay).
fn chain<'a>(d: &'a DirectionReport, netns: &BTreeMap<&str, u32>) -> Vec<&'a PairReport> {
    let pairs: Vec<&PairReport> = d.pairs.iter().filter(|p| p.to_hop != "dropped").collect();
    let mut out_of: BTreeMap<Node, Vec<&PairReport>> = BTreeMap::new();
    let mut reached: Vec<Node> = Vec::new();
    for p in &pairs {
        let (from, to) = ends(p);
        out_of.entry(from).or_default().push(p);
        reached.push(to);
    }
    let origin = out_of
        .iter()
        .filter(|(n, _)| !reached.contains(n))
        .max_by_key(|(_, ps)| ps.iter().map(|p| p.packets).sum::<u64>())
        .map(|(n, _)| n.clone());
    let home = origin.as_ref().and_then(|(_, dev)| netns.get(dev.as_str()).copied());
    let at_home = |dev: &str| home.is_none() || netns.get(dev).is_none_or(|n| Some(*n) == home);
    let mut at = origin;
    let mut seen = Vec::new();
    let mut path = Vec::new();
    while let Some(node) = at.take() {
        if seen.contains(&node) {
            break;
        }
        seen.push(node.clone());
        if let Some(next) = out_of.get(&node).and_then(|ps| ps.iter().max_by_key(|p| p.packets)) {
            let to = ends(next).1;
            if !at_home(&to.1) {
                break;
            }
            path.push(*next);
            at = Some(to);
        }
    }
    path
}

/// The host's share when the workload gave its own latency (its p50,
/// else its mean; doubled when the tool reports half a round trip).
pub fn host_share(
    directions: &[DirectionReport],
    devices: &[DeviceReport],
    workload: Option<&Workload>,
) -> Option<HostShare> {
    let lat = workload?.latency.as_ref()?;
    let (figure, which) = match (lat.p50_ns, lat.mean_ns) {
        (Some(p50), _) => (p50, "p50"),
        (None, Some(mean)) => (mean, "mean"),
        (None, None) => return None,
    };
    let (rtt, workload_figure) = if lat.round_trip {
        (figure, format!("{which} round trip ({})", lat.from))
    } else {
        (figure * 2, format!("{which} x 2: the tool reports half the round trip ({})", lat.from))
    };
    let netns: BTreeMap<&str, u32> = devices.iter().map(|d| (d.name.as_str(), d.netns)).collect();
    let paths: Vec<PathMedians> = directions
        .iter()
        .map(|d| {
            let c = chain(d, &netns);
            PathMedians {
                direction: d.direction,
                pairs: c.iter().map(|p| format!("{} -> {}", p.from_label(), p.to_label())).collect(),
                p50_sum_ns: c.iter().map(|p| p.p50_ns).sum(),
            }
        })
        .filter(|p| !p.pairs.is_empty())
        .collect();
    if paths.is_empty() {
        return None;
    }
    let host: u64 = paths.iter().map(|p| p.p50_sum_ns).sum();
    Some(HostShare {
        paths,
        host_p50_sum_ns: host,
        workload_round_trip_ns: rtt,
        workload_figure,
        share: (rtt > 0).then(|| host as f64 / rtt as f64),
        note: ESTIMATE.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Direction, WorkloadLatency};

    fn pair(from: (&str, &str), to: (&str, &str), packets: u64, p50_ns: u64) -> PairReport {
        PairReport {
            from_hop: from.0.to_owned(),
            from_dev: from.1.to_owned(),
            to_hop: to.0.to_owned(),
            to_dev: to.1.to_owned(),
            packets,
            min_ns: 0,
            mean_ns: 0,
            p50_ns,
            p90_ns: 0,
            p99_ns: 0,
            p999_ns: 0,
            max_ns: 0,
        }
    }

    #[test]
    fn busiest_chain_medians_next_to_the_workloads_round_trip() {
        let wire = DirectionReport {
            direction: Direction::ToWire,
            pairs: vec![
                pair(("queue", "m"), ("xmit", "m"), 100, 300),
                pair(("xmit", "m"), ("queue", "u"), 100, 200),
                pair(("queue", "u"), ("xmit", "u"), 100, 200),
                pair(("xmit", "u"), ("netif_rx", "p"), 100, 250),
                pair(("netif_rx", "p"), ("receive", "p"), 100, 400),
                pair(("receive", "p"), ("dropped", ""), 3, 9_000),
                pair(("receive", "p"), ("copy_out", ""), 97, 20_000),
                pair(("receive", "p"), ("consumed", ""), 1, 1_000),
            ],
        };
        let w = Workload {
            command: vec!["sockperf".into()],
            started_unix_s: 0.0,
            ended_unix_s: 1.0,
            exit_status: Some(0),
            signal: None,
            tgids: Vec::new(),
            cgroup: None,
            transactions: Some(10),
            transactions_from: None,
            latency: Some(WorkloadLatency {
                from: "sockperf".into(),
                round_trip: false,
                p50_ns: Some(30_000),
                ..WorkloadLatency::default()
            }),
            throughput: None,
            notes: Vec::new(),
        };
        let s = host_share(std::slice::from_ref(&wire), &[], Some(&w)).unwrap();
        assert_eq!(s.paths[0].pairs.len(), 6, "{:?}", s.paths[0].pairs);
        assert_eq!(s.paths[0].pairs[5], "receive@p -> copy_out");
        assert_eq!(s.host_p50_sum_ns, 300 + 200 + 200 + 250 + 400 + 20_000);
        assert_eq!(s.workload_round_trip_ns, 60_000, "sockperf's RTT/2, doubled");
        assert!((s.share.unwrap() - 21_350.0 / 60_000.0).abs() < 1e-9);
        assert!(host_share(&[], &[], None).is_none());
        // The peer (p) in another namespace of the same kernel is not the
        // host: the chain stops at the uplink's transmit.
        let dev = |name: &str, netns: u32| DeviceReport { name: name.into(), kind: String::new(), ifindex: 1, netns };
        let s = host_share(&[wire], &[dev("m", 1), dev("u", 1), dev("p", 2)], Some(&w)).unwrap();
        assert_eq!(s.paths[0].pairs.last().unwrap(), "queue@u -> xmit@u");
        assert_eq!(s.host_p50_sum_ns, 700);
    }
}
