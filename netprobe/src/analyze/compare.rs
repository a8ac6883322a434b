//! Side-by-side comparison of two recordings (say MacVTap over OSA against
//! OVS over HiperSockets): the same hop pairs with absolute and relative
//! differences, and hops that exist in one configuration only, aligned by
//! the stage of the path they belong to.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    model::{report::Report, Direction},
    probe::catalog::{self, Path},
};

/// Where along a KVM host's datapath a hop sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// The guest's device on the host: tap/macvtap queue, vhost, QEMU.
    GuestSide,
    /// The switching function: macvlan, Linux bridge, OVS datapath.
    Switch,
    /// The uplink device and its driver (qeth for OSA/HiperSockets).
    Uplink,
    /// Beyond the uplink, and delivery/free.
    Wire,
}

/// The stage of a hop at a device (by the hop's path, else the device's kind).
pub fn stage(hop: &str, dev_kind: &str) -> Stage {
    let path = catalog::HOPS.iter().find(|h| h.label == hop).map(|h| h.path);
    match path {
        Some(Path::Macvtap) if hop.starts_with("macvlan") => Stage::Switch,
        Some(Path::Macvtap | Path::Tun | Path::VhostNet) => Stage::GuestSide,
        Some(Path::Ovs | Path::Bridge) => Stage::Switch,
        Some(Path::Qeth | Path::QethHipersockets) => Stage::Uplink,
        _ => match dev_kind {
            "macvtap" | "tun" => Stage::GuestSide,
            "bridge" | "openvswitch" | "macvlan" => Stage::Switch,
            "" if hop == "consumed" || hop == "dropped" => Stage::Wire,
            "veth" | "" => Stage::Uplink,
            _ => Stage::Uplink,
        },
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Side {
    pub packets: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub mean_ns: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub direction: Direction,
    pub stage: Stage,
    pub from_hop: String,
    pub to_hop: String,
    pub a: Option<Side>,
    pub b: Option<Side>,
    /// b - a of the medians (ns), when both exist.
    pub p50_diff_ns: Option<i64>,
    /// (b - a) / a of the medians.
    pub p50_rel: Option<f64>,
    pub p99_diff_ns: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    pub rows: Vec<Row>,
    /// Both reports, for the printers that show more of each side (the
    /// HTML page: CPU by role, drops); not part of the JSON form.
    #[serde(skip)]
    pub reports: [Report; 2],
}

fn kinds(r: &Report) -> BTreeMap<String, String> {
    r.devices.iter().map(|d| (d.name.clone(), d.kind.clone())).collect()
}

/// Pairs by (direction, stage, from hop, to hop), devices set aside: the
/// two configurations name their devices differently; the stage keeps a
/// guest-side `queue -> xmit` apart from the uplink's. Pairs that still
/// coincide are merged (packets added, the busiest one's latencies).
type PairIndex = BTreeMap<(Direction, Stage, String, String), Side>;

fn index(r: &Report) -> PairIndex {
    let k = kinds(r);
    let mut out = PairIndex::new();
    for d in &r.directions {
        for p in &d.pairs {
            let dev = if p.to_dev.is_empty() { &p.from_dev } else { &p.to_dev };
            let st = stage(&p.to_hop, k.get(dev).map_or("", String::as_str));
            let side = Side { packets: p.packets, p50_ns: p.p50_ns, p99_ns: p.p99_ns, mean_ns: p.mean_ns };
            match out.entry((d.direction, st, p.from_hop.clone(), p.to_hop.clone())) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(side);
                }
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    let total = e.get().packets + side.packets;
                    if side.packets > e.get().packets {
                        e.insert(side);
                    }
                    e.get_mut().packets = total;
                }
            }
        }
    }
    out
}

pub fn compare(a_name: &str, a: &Report, b_name: &str, b: &Report) -> Comparison {
    let (ia, ib) = (index(a), index(b));
    let mut keys: Vec<&(Direction, Stage, String, String)> = ia.keys().chain(ib.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut rows: Vec<Row> = keys
        .into_iter()
        .map(|k| {
            let (a, b) = (ia.get(k).cloned(), ib.get(k).cloned());
            let both = a.as_ref().zip(b.as_ref());
            Row {
                direction: k.0,
                stage: k.1,
                from_hop: k.2.clone(),
                to_hop: k.3.clone(),
                p50_diff_ns: both.map(|(x, y)| y.p50_ns as i64 - x.p50_ns as i64),
                p50_rel: both
                    .filter(|(x, _)| x.p50_ns > 0)
                    .map(|(x, y)| (y.p50_ns as f64 - x.p50_ns as f64) / x.p50_ns as f64),
                p99_diff_ns: both.map(|(x, y)| y.p99_ns as i64 - x.p99_ns as i64),
                a,
                b,
            }
        })
        .collect();
    let busiest = |r: &Row| r.a.as_ref().map_or(0, |s| s.packets).max(r.b.as_ref().map_or(0, |s| s.packets));
    rows.sort_by(|x, y| (x.direction, x.stage).cmp(&(y.direction, y.stage)).then(busiest(y).cmp(&busiest(x))));
    Comparison { a: a_name.to_owned(), b: b_name.to_owned(), rows, reports: [a.clone(), b.clone()] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_follow_the_path_then_the_device_kind() {
        assert_eq!(stage("tap_enqueue", ""), Stage::GuestSide);
        assert_eq!(stage("macvlan_rx", ""), Stage::Switch);
        assert_eq!(stage("ovs_flow_lookup", ""), Stage::Switch);
        assert_eq!(stage("qeth_l2_xmit", ""), Stage::Uplink);
        assert_eq!(stage("xmit", "macvtap"), Stage::GuestSide);
        assert_eq!(stage("xmit", "veth"), Stage::Uplink);
        assert_eq!(stage("receive", "bridge"), Stage::Switch);
        assert_eq!(stage("consumed", ""), Stage::Wire);
    }
}
