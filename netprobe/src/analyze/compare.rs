//! Side-by-side comparison of two recordings (say MacVTap over OSA against
//! OVS over HiperSockets): the same hop pairs with absolute and relative
//! differences, and hops that exist in one configuration only, aligned by
//! the stage of the path they belong to. Before them, the differences of
//! the two hosts' configurations (SMT, THP, a device's txqueuelen or
//! offloads...), so a latency difference is read against what changed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    model::{
        host::{DeviceConfig, HostConfig},
        report::Report,
        Direction,
    },
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

/// One setting that differs between the two configurations (None: the
/// setting is absent on that side, e.g. a device only one host has).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConfigDiff {
    pub setting: String,
    pub a: Option<String>,
    pub b: Option<String>,
}

impl ConfigDiff {
    /// `B: SMT on, A: off`; `B: macvtap0 txqueuelen 500, A: 1000`.
    pub fn describe(&self) -> String {
        let side = |v: &Option<String>| v.clone().unwrap_or_else(|| "absent".to_owned());
        format!("B: {} {}, A: {}", self.setting, side(&self.b), side(&self.a))
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    /// The configurations' differences, setting by setting.
    pub config_differences: Vec<ConfigDiff>,
    /// Why the configurations could not be compared, if they could not
    /// (a recording made before netprobe captured them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_missing: Option<String>,
    pub rows: Vec<Row>,
    /// Host CPU per packet followed and per workload transaction, by role
    /// (vcpu, vhost, ksoftirqd, guest stand-in, softirq...), A against B.
    pub cpu: Vec<CpuRow>,
    /// What carried each side's guest traffic: the QEMU guests found, or
    /// the demo's stand-in (no QEMU guest), so a reader knows which.
    pub guests: [String; 2],
    /// Both reports, for the printers that show more of each side (the
    /// HTML page: CPU by role, drops); not part of the JSON form.
    #[serde(skip)]
    pub reports: [Report; 2],
}

/// One role's host CPU time per packet (and per transaction, where the
/// recording counted transactions) on both sides.
#[derive(Clone, Debug, Serialize)]
pub struct CpuRow {
    pub role: String,
    pub a_ns_per_packet: Option<f64>,
    pub b_ns_per_packet: Option<f64>,
    pub a_ns_per_transaction: Option<f64>,
    pub b_ns_per_transaction: Option<f64>,
}

/// Roles in either report, with each side's CPU per packet and per
/// transaction; a role one side lacks is None there.
fn cpu_rows(a: &Report, b: &Report) -> Vec<CpuRow> {
    let empty = BTreeMap::new();
    fn per<'a>(r: &'a Report, t: bool, empty: &'a BTreeMap<String, f64>) -> &'a BTreeMap<String, f64> {
        r.cpu.as_ref().map_or(empty, |c| if t { &c.per_transaction_ns } else { &c.per_packet_ns })
    }
    let per = |r, t| per(r, t, &empty);
    let mut roles: Vec<&String> =
        [per(a, false), per(b, false), per(a, true), per(b, true)].into_iter().flat_map(BTreeMap::keys).collect();
    roles.sort();
    roles.dedup();
    roles
        .into_iter()
        .map(|role| CpuRow {
            role: role.clone(),
            a_ns_per_packet: per(a, false).get(role).copied(),
            b_ns_per_packet: per(b, false).get(role).copied(),
            a_ns_per_transaction: per(a, true).get(role).copied(),
            b_ns_per_transaction: per(b, true).get(role).copied(),
        })
        .collect()
}

/// `2 QEMU guests: web1 (pid 812, macvtap0), ...`, or the stand-in.
pub fn guest_source(r: &Report) -> String {
    if r.guests.is_empty() {
        return "no QEMU guest: the demo's guest stand-in (or host traffic)".to_owned();
    }
    let each: Vec<String> = r
        .guests
        .iter()
        .map(|g| format!("{} (pid {}, {})", g.guest.name, g.guest.pid, g.guest.devices.join(" ")))
        .collect();
    format!("{} QEMU guest{}: {}", each.len(), if each.len() == 1 { "" } else { "s" }, each.join(", "))
}

fn kinds(r: &Report) -> BTreeMap<String, String> {
    r.devices.iter().map(|d| (d.name.clone(), d.kind.clone())).collect()
}

/// Pairs by (direction, stage, from hop, to hop), devices set aside: the
/// two configurations name their devices differently; the stage keeps a
/// guest-side `queue -> xmit` apart from the uplink's. Pairs that still
/// coincide are merged (packets added, the busiest one's latencies).
pub(crate) type PairIndex = BTreeMap<(Direction, Stage, String, String), Side>;

pub(crate) fn index(r: &Report) -> PairIndex {
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

/// A device's link kind and driver, what matches devices of two hosts
/// that are named differently.
type DeviceKind = (Option<String>, Option<String>);

/// The settings of `a` and `b` that differ. Devices are matched by name;
/// a device each side has alone, of the same kind (the study's macvtap0
/// against macvtap1), is matched to its counterpart and named `A/B`.
pub fn config_differences(a: &HostConfig, b: &HostConfig) -> Vec<ConfigDiff> {
    let (mut a, mut b) = (a.clone(), b.clone());
    let names = |c: &HostConfig| c.devices.iter().map(|d| d.name.clone()).collect::<Vec<_>>();
    let (a_names, b_names) = (names(&a), names(&b));
    let kind = |d: &DeviceConfig| (d.kind.clone(), d.driver.clone());
    let alone = |c: &HostConfig, other: &[String]| -> Vec<(usize, DeviceKind)> {
        c.devices.iter().enumerate().filter(|(_, d)| !other.contains(&d.name)).map(|(i, d)| (i, kind(d))).collect()
    };
    let (alone_a, alone_b) = (alone(&a, &b_names), alone(&b, &a_names));
    for (ia, ka) in &alone_a {
        let of_kind = |v: &[(usize, DeviceKind)]| v.iter().filter(|(_, k)| k == ka).count();
        if of_kind(&alone_a) != 1 || of_kind(&alone_b) != 1 {
            continue;
        }
        if let Some((ib, _)) = alone_b.iter().find(|(_, k)| k == ka) {
            let both = format!("{}/{}", a.devices[*ia].name, b.devices[*ib].name);
            a.devices[*ia].name.clone_from(&both);
            b.devices[*ib].name = both;
        }
    }
    // A device one host has alone is one difference, not one per setting.
    let (a_names, b_names) = (names(&a), names(&b));
    let summary = |d: &DeviceConfig| {
        let mut w = vec![d.kind.clone().unwrap_or_else(|| "device".to_owned())];
        w.extend(d.driver.as_ref().map(|v| format!("driver {v}")));
        w.join(", ")
    };
    let mut alone_rows = Vec::new();
    for d in a.devices.iter().filter(|d| !b_names.contains(&d.name)) {
        alone_rows.push(ConfigDiff { setting: format!("device {}", d.name), a: Some(summary(d)), b: None });
    }
    for d in b.devices.iter().filter(|d| !a_names.contains(&d.name)) {
        alone_rows.push(ConfigDiff { setting: format!("device {}", d.name), a: None, b: Some(summary(d)) });
    }
    a.devices.retain(|d| b_names.contains(&d.name));
    b.devices.retain(|d| a_names.contains(&d.name));
    let (sa, sb) = (a.settings(), b.settings());
    let mut keys: Vec<&String> = sa.iter().map(|(k, _)| k).collect();
    keys.extend(sb.iter().map(|(k, _)| k).filter(|k| !sa.iter().any(|(x, _)| x == *k)));
    let get = |s: &[(String, String)], k: &str| s.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    let mut out: Vec<ConfigDiff> = keys
        .into_iter()
        .filter_map(|k| {
            let (va, vb) = (get(&sa, k), get(&sb, k));
            (va != vb).then(|| ConfigDiff { setting: k.clone(), a: va, b: vb })
        })
        .collect();
    out.extend(alone_rows);
    out
}

pub fn compare(a_name: &str, a: &Report, b_name: &str, b: &Report) -> Comparison {
    let (config_differences, config_missing) = match (&a.config, &b.config) {
        (Some(ca), Some(cb)) => (config_differences(ca, cb), None),
        (None, None) => (Vec::new(), Some("neither recording has its host's configuration".to_owned())),
        (None, Some(_)) => (Vec::new(), Some("A has no host configuration (recorded by an older netprobe)".to_owned())),
        (Some(_), None) => (Vec::new(), Some("B has no host configuration (recorded by an older netprobe)".to_owned())),
    };
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
    Comparison {
        a: a_name.to_owned(),
        b: b_name.to_owned(),
        config_differences,
        config_missing,
        rows,
        cpu: cpu_rows(a, b),
        guests: [guest_source(a), guest_source(b)],
        reports: [a.clone(), b.clone()],
    }
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

    #[test]
    fn configuration_differences_name_the_setting() {
        use crate::model::host::DeviceConfig;
        let dev = |name: &str, txq: u32| DeviceConfig {
            name: name.to_owned(),
            kind: Some("macvtap".to_owned()),
            txqueuelen: Some(txq),
            features: [("tx-tcp-segmentation".to_owned(), true)].into(),
            ..DeviceConfig::default()
        };
        let a = HostConfig {
            smt_control: Some("off".to_owned()),
            devices: vec![dev("macvtap0", 1000)],
            ..HostConfig::default()
        };
        let mut b = a.clone();
        b.smt_control = Some("on".to_owned());
        b.smt_active = Some(true);
        b.devices[0].txqueuelen = Some(500);
        let d: Vec<String> = config_differences(&a, &b).iter().map(ConfigDiff::describe).collect();
        assert_eq!(d, ["B: SMT on, A: off", "B: macvtap0 txqueuelen 500, A: 1000"]);
        // Another name, the same kind: matched, named by both.
        b.devices[0] = dev("macvtap1", 1000);
        b.devices[0].features.insert("tx-tcp-segmentation".to_owned(), false);
        let d: Vec<String> = config_differences(&a, &b).iter().map(ConfigDiff::describe).collect();
        assert_eq!(d[1], "B: macvtap0/macvtap1 tx-tcp-segmentation off, A: on");
        assert!(config_differences(&a, &a).is_empty());
        // A device only one host has: one row, its kind and driver.
        b.devices[0].kind = Some("tun".to_owned());
        let d: Vec<String> = config_differences(&a, &b).iter().map(ConfigDiff::describe).collect();
        assert_eq!(d[1..], ["B: device macvtap0 absent, A: macvtap", "B: device macvtap1 tun, A: absent"]);
    }
}
