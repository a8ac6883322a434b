//! Benchmark sweeps: any number of recordings, each labelled with what it
//! varied (`record --label conns=50 --label config=macvtap`), set side by
//! side. The recordings are ordered by their labels (the `--group-by` key
//! first, then the swept key, numbers numerically); the hop pairs are
//! aligned as `compare` aligns two recordings (direction, path stage, hops),
//! with one cell per recording; CPU per transaction comes along by role.
//! The swept label is the one whose value varies across the recordings
//! besides the group-by key (or the one named with `--sweep`).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use serde::Serialize;

use super::compare::{index, Side, Stage};
use crate::model::{
    labels::{self, Labels},
    report::Report,
    Direction,
};

/// One recording of the sweep.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// The file it was read from.
    pub name: String,
    pub labels: Labels,
    /// Its value of the group-by key (one line per value in the charts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Its value of the swept key (the charts' x axis).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    pub kernel: String,
    pub duration_s: f64,
    /// Packets followed (tracking started) in the recording.
    pub packets_followed: u64,
    /// The workload's transactions, when it reported them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transactions: Option<u64>,
    /// On-CPU ns per transaction, by role (empty without transactions).
    pub cpu_per_transaction_ns: BTreeMap<String, f64>,
}

/// One aligned hop pair: a cell per recording, in the points' order.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub direction: Direction,
    pub stage: Stage,
    pub from_hop: String,
    pub to_hop: String,
    pub cells: Vec<Option<Side>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sweep {
    /// The label along which the recordings vary (None: they vary by
    /// nothing but their files).
    pub swept: Option<String>,
    pub group_by: Option<String>,
    /// The recordings in label order: one column each.
    pub points: Vec<Point>,
    pub rows: Vec<Row>,
    /// Every CPU role with a per-transaction figure in some recording.
    pub cpu_roles: Vec<String>,
}

/// One chart line: a group's points along the swept label.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// The group's value (None without --group-by).
    pub group: Option<String>,
    /// (x value, p50 ns, p99 ns) in the points' order.
    pub points: Vec<(String, u64, u64)>,
}

impl Sweep {
    /// The groups in the points' order (one, unnamed, without --group-by).
    pub fn groups(&self) -> Vec<Option<String>> {
        let mut out: Vec<Option<String>> = Vec::new();
        for p in &self.points {
            if !out.contains(&p.group) {
                out.push(p.group.clone());
            }
        }
        out
    }

    /// A row's chart lines: one per group that has the hop pair in at
    /// least one of its recordings.
    pub fn lines(&self, row: &Row) -> Vec<Line> {
        self.groups()
            .into_iter()
            .filter_map(|g| {
                let points: Vec<(String, u64, u64)> = self
                    .points
                    .iter()
                    .zip(&row.cells)
                    .filter(|(p, _)| p.group == g)
                    .filter_map(|(p, c)| {
                        let c = c.as_ref()?;
                        Some((p.x.clone().unwrap_or_else(|| p.name.clone()), c.p50_ns, c.p99_ns))
                    })
                    .collect();
                (!points.is_empty()).then_some(Line { group: g, points })
            })
            .collect()
    }

    /// A point's column heading: the group-by value, then the labels that
    /// vary across the sweep (the swept one first); a label every
    /// recording has alike says nothing of a column. Its file when none.
    pub fn heading(&self, p: &Point) -> String {
        let varies = |k: &String| self.points.iter().any(|q| q.labels.get(k) != p.labels.get(k));
        let mut l: Labels = p.labels.iter().filter(|(k, _)| varies(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        if let Some(g) = &self.group_by {
            l.remove(g);
        }
        let mut words: Vec<String> = Vec::new();
        words.extend(p.group.clone());
        words.extend(self.swept.as_ref().and_then(|k| l.remove(k).map(|v| format!("{k}={v}"))));
        words.extend(l.iter().map(|(k, v)| format!("{k}={v}")));
        if words.is_empty() {
            p.name.clone()
        } else {
            words.join(" ")
        }
    }
}

/// The sweep of `inputs` (file name, report). `group_by`: the label whose
/// values are the charts' lines; `swept`: the x axis's label (default:
/// the one other label that varies).
pub fn sweep(inputs: &[(String, Report)], group_by: Option<&str>, swept: Option<&str>) -> Result<Sweep> {
    if inputs.len() < 2 {
        bail!("a comparison needs at least two recordings");
    }
    for key in group_by.iter().chain(swept.iter()) {
        if let Some((name, _)) = inputs.iter().find(|(_, r)| !r.labels.contains_key(*key)) {
            bail!("{name} has no label {key:?}: record it with --label {key}=VALUE, or choose another key");
        }
    }
    let keys: BTreeSet<&String> = inputs.iter().flat_map(|(_, r)| r.labels.keys()).collect();
    let varying: Vec<&String> = keys
        .into_iter()
        .filter(|k| Some(k.as_str()) != group_by)
        .filter(|k| {
            let values: BTreeSet<Option<&String>> = inputs.iter().map(|(_, r)| r.labels.get(*k)).collect();
            values.len() > 1
        })
        .collect();
    let swept = match (swept, varying.as_slice()) {
        (Some(k), _) => Some(k.to_owned()),
        (None, []) => None,
        (None, [k]) => Some((*k).clone()),
        (None, many) => {
            let names: Vec<&str> = many.iter().map(|k| k.as_str()).collect();
            // The example puts a numeric label (connections) on the x axis.
            let numeric =
                |k: &str| inputs.iter().all(|(_, r)| r.labels.get(k).is_none_or(|v| v.parse::<f64>().is_ok()));
            let x = names.iter().copied().find(|k| numeric(k)).unwrap_or(names[0]);
            let g = names.iter().copied().find(|k| *k != x).unwrap_or(names[1]);
            bail!(
                "the labels {} all vary across these recordings: name the x axis with --sweep KEY and the lines \
                 with --group-by KEY (e.g. --sweep {x} --group-by {g})",
                names.join(", ")
            );
        }
    };
    if let Some(k) = swept.as_deref().filter(|k| Some(*k) == group_by) {
        bail!("--sweep and --group-by both name {k:?}: the x axis and the lines need two different labels");
    }
    let mut order: Vec<&str> = group_by.into_iter().chain(swept.as_deref()).collect();
    let others: BTreeSet<&str> = inputs.iter().flat_map(|(_, r)| r.labels.keys().map(String::as_str)).collect();
    order.extend(others.into_iter().filter(|k| !order.contains(k)).collect::<Vec<_>>());
    let mut sorted: Vec<&(String, Report)> = inputs.iter().collect();
    sorted.sort_by(|(na, a), (nb, b)| labels::cmp_by(&order, &a.labels, &b.labels).then_with(|| na.cmp(nb)));

    let points: Vec<Point> = sorted
        .iter()
        .map(|(name, r)| Point {
            name: name.clone(),
            labels: r.labels.clone(),
            group: group_by.and_then(|k| r.labels.get(k).cloned()),
            x: swept.as_ref().and_then(|k| r.labels.get(k).cloned()),
            kernel: r.kernel.clone(),
            duration_s: r.duration_s,
            packets_followed: r.tracking.get("track_started").copied().unwrap_or(0),
            transactions: r.cpu.as_ref().and_then(|c| c.transactions),
            cpu_per_transaction_ns: r.cpu.as_ref().map(|c| c.per_transaction_ns.clone()).unwrap_or_default(),
        })
        .collect();
    let indexes: Vec<_> = sorted.iter().map(|(_, r)| index(r)).collect();
    let keys: BTreeSet<&(Direction, Stage, String, String)> = indexes.iter().flat_map(|i| i.keys()).collect();
    let mut rows: Vec<Row> = keys
        .into_iter()
        .map(|k| Row {
            direction: k.0,
            stage: k.1,
            from_hop: k.2.clone(),
            to_hop: k.3.clone(),
            cells: indexes.iter().map(|i| i.get(k).cloned()).collect(),
        })
        .collect();
    let busiest = |r: &Row| r.cells.iter().flatten().map(|s| s.packets).max().unwrap_or(0);
    rows.sort_by(|x, y| (x.direction, x.stage).cmp(&(y.direction, y.stage)).then(busiest(y).cmp(&busiest(x))));
    let cpu_roles: BTreeSet<&String> = points.iter().flat_map(|p| p.cpu_per_transaction_ns.keys()).collect();
    let cpu_roles = cpu_roles.into_iter().cloned().collect();
    Ok(Sweep { swept, group_by: group_by.map(str::to_owned), points, rows, cpu_roles })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{analyze::analyze, recording::Recording};

    fn report(file: &str, labels: &[&str]) -> (String, Report) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/recordings").join(file);
        let mut r = analyze(&Recording::read(&path).unwrap()).unwrap().report;
        r.labels = labels::parse_all(&labels.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
        (format!("{}-{}.rec", file, labels.join("-")), r)
    }

    fn six() -> Vec<(String, Report)> {
        let mut v = Vec::new();
        for conns in ["50", "1", "10"] {
            v.push(report("bridge.rec", &["config=bridge", &format!("conns={conns}")]));
            v.push(report("demo-v2.rec", &["config=macvtap", &format!("conns={conns}")]));
        }
        v
    }

    #[test]
    fn orders_by_group_then_swept_label_and_aligns_every_pair() {
        let s = sweep(&six(), Some("config"), None).unwrap();
        assert_eq!(s.swept.as_deref(), Some("conns"), "the one other label that varies");
        let heads: Vec<String> = s.points.iter().map(|p| s.heading(p)).collect();
        assert_eq!(
            heads,
            [
                "bridge conns=1",
                "bridge conns=10",
                "bridge conns=50",
                "macvtap conns=1",
                "macvtap conns=10",
                "macvtap conns=50"
            ]
        );
        assert!(s.rows.iter().all(|r| r.cells.len() == 6));
        // Pairs both configurations have get two lines, the others one;
        // each line has a point per connection count.
        let mut two = 0;
        for r in &s.rows {
            let lines = s.lines(r);
            let have: BTreeSet<_> =
                s.points.iter().zip(&r.cells).filter(|(_, c)| c.is_some()).map(|(p, _)| &p.group).collect();
            assert_eq!(lines.len(), have.len());
            two += usize::from(lines.len() == 2);
            for l in lines {
                assert_eq!(l.points.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["1", "10", "50"]);
            }
        }
        assert!(two > 0, "some hop pairs are common to macvtap and bridge");
    }

    #[test]
    fn bad_keys_say_what_to_do() {
        let e = sweep(&six(), None, None).unwrap_err().to_string();
        assert!(e.contains("config, conns all vary") && e.contains("--sweep conns --group-by config"), "{e}");
        let e = sweep(&six(), Some("size"), None).unwrap_err().to_string();
        assert!(e.contains("has no label \"size\"") && e.contains("--label size=VALUE"), "{e}");
        let e = sweep(&six(), Some("config"), Some("config")).unwrap_err().to_string();
        assert!(e.contains("two different labels"), "{e}");
        let s = sweep(&six()[..2], None, None).unwrap();
        assert_eq!((s.swept.as_deref(), s.points.len()), (Some("config"), 2));
        // A label alike in every recording stays out of the headings.
        let bridge: Vec<_> = six().into_iter().filter(|(_, r)| r.labels["config"] == "bridge").collect();
        let s = sweep(&bridge, None, None).unwrap();
        let heads: Vec<String> = s.points.iter().map(|p| s.heading(p)).collect();
        assert_eq!(heads, ["conns=1", "conns=10", "conns=50"]);
    }
}
