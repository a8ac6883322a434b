//! A real benchmark sweep: sockperf ping-pong with 1, 10 and 50 clients
//! in parallel (one connection each) through the demo's macvtap and bridge
//! topologies, each run recorded with `record --label conns=N --label
//! config=K`, then `compare --group-by config` of all six: one column per
//! recording in label order, one chart per hop pair with one line per
//! configuration that has it, the page rendered by headless Chromium.

use std::{path::PathBuf, process::Command, time::Duration};

use netprobe_testbed::{
    netns,
    topology::{self as demo, Kind, Topology},
};
use netprobe_tests::{netprobe_bin, require_root, require_tool, RunningRecord};
use serde_json::Value;

const CONNS: [u32; 3] = [1, 10, 50];

/// A directory in the temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("netprobe-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn netprobe(args: &[&str]) -> std::process::Output {
    Command::new(netprobe_bin()).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = netprobe(args);
    assert!(out.status.success(), "netprobe {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Records `conns` sockperf clients in parallel through `t` for 2 s, into
/// DIR/CONFIG-CONNS.rec; returns the file and its report.
fn record_point(t: &Topology, config: &str, conns: u32, dir: &std::path::Path) -> (PathBuf, Value) {
    let file = dir.join(format!("{config}-{conns}.rec"));
    let each = dir.join(format!("{config}-{conns}-client"));
    let each = each.display();
    // One output file per client, printed one after the other at the end
    // (parallel writers into one pipe could interleave their summaries).
    let shell = format!(
        "for i in $(seq {conns}); do ip netns exec {} sockperf ping-pong -i {} -p 11111 -t 2 > {each}.$i & done; wait; cat {each}.*",
        t.guest_ns,
        demo::PEER_ADDR
    );
    let ifaces = t.ifaces();
    let (conns_label, config_label) = (format!("conns={conns}"), format!("config={config}"));
    let report = RunningRecord::start(&[
        "--iface",
        &ifaces[0],
        "--iface",
        &ifaces[1],
        "--label",
        &conns_label,
        "--label",
        &config_label,
        "-o",
        file.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &shell,
    ])
    .finish();
    assert_eq!(report["labels"]["conns"], conns.to_string(), "{}", report["labels"]);
    assert_eq!(report["labels"]["config"], config);
    let w = &report["workload"];
    assert_eq!(w["exit_status"], 0, "the clients failed: {w}");
    let tx = w["transactions"].as_u64().unwrap_or_else(|| panic!("no transactions read: {w}"));
    if conns > 1 {
        let from = w["transactions_from"].as_str().unwrap();
        assert!(from.contains(&format!("summed over {conns} clients")), "every client's summary read: {from}");
    }
    assert!(report["cpu"]["per_transaction_ns"].as_object().is_some_and(|m| !m.is_empty()), "{}", report["cpu"]);
    eprintln!("{config} conns={conns}: {tx} transactions, {} packets followed", report["tracking"]["track_started"]);
    (file, report)
}

/// Debian's chromium, or None (after saying why) outside CI.
fn chromium() -> Option<&'static str> {
    let here = Command::new("chromium").arg("--version").output().is_ok_and(|o| o.status.success());
    require_tool(here, "chromium (Debian package chromium)").then_some("chromium")
}

#[test]
fn sockperf_sweep_over_macvtap_and_bridge() {
    if !require_root("sockperf_sweep_over_macvtap_and_bridge") {
        return;
    }
    let browser = chromium();
    let dir = Scratch::new("sweep");
    let mut files = Vec::new();
    for (kind, config) in [(Kind::Macvtap, "macvtap"), (Kind::Bridge, "bridge")] {
        let t = Topology::create_kind(kind).unwrap();
        let _server = netns::spawn_in(&t.peer_ns, &["sockperf", "server", "-i", demo::PEER_ADDR, "-p", "11111"])
            .unwrap_or_else(|e| panic!("cannot start sockperf (Debian's sockperf): {e:#}"));
        std::thread::sleep(Duration::from_millis(500));
        // The connection counts out of order: compare must order them.
        for conns in [CONNS[2], CONNS[0], CONNS[1]] {
            files.push(record_point(&t, config, conns, &dir.0).0);
        }
    }
    let args = |format: &'static str| -> Vec<String> {
        let mut a: Vec<String> = ["compare", "--group-by", "config", "--format", format].map(String::from).to_vec();
        a.extend(files.iter().map(|f| f.display().to_string()));
        a
    };
    let run = |format| ok(&args(format).iter().map(String::as_str).collect::<Vec<_>>());

    // JSON: the columns in label order, a cell per column in every row.
    let sweep: Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(sweep["swept"], "conns");
    assert_eq!(sweep["group_by"], "config");
    let points = sweep["points"].as_array().unwrap();
    let order: Vec<String> =
        points.iter().map(|p| format!("{} {}", p["group"].as_str().unwrap(), p["x"].as_str().unwrap())).collect();
    assert_eq!(order, ["bridge 1", "bridge 10", "bridge 50", "macvtap 1", "macvtap 10", "macvtap 50"]);
    let rows = sweep["rows"].as_array().unwrap();
    assert!(rows.len() >= 5, "{} hop pairs", rows.len());
    let groups_of = |row: &Value| -> Vec<&str> {
        let mut g: Vec<&str> = points
            .iter()
            .zip(row["cells"].as_array().unwrap())
            .filter(|(_, c)| !c.is_null())
            .map(|(p, _)| p["group"].as_str().unwrap())
            .collect();
        g.dedup();
        g
    };
    for r in rows {
        assert_eq!(r["cells"].as_array().unwrap().len(), 6, "{r}");
    }
    // Both configurations share the generic hops and each has its own
    // (the bridge's forwarding, macvtap's hand-off to the tap queue).
    assert!(rows.iter().any(|r| groups_of(r) == ["bridge", "macvtap"]), "a hop pair common to both");
    assert!(rows.iter().any(|r| groups_of(r) == ["bridge"]), "a bridge-only hop pair");
    assert!(rows.iter().any(|r| groups_of(r) == ["macvtap"]), "a macvtap-only hop pair");
    // Real figures in every column: the busiest pair of each recording
    // carried packets and a latency.
    for (i, p) in points.iter().enumerate() {
        let best = rows.iter().filter_map(|r| r["cells"][i].as_object()).max_by_key(|c| c["packets"].as_u64());
        let best = best.unwrap_or_else(|| panic!("no hop pair in {}", p["name"]));
        assert!(best["packets"].as_u64().unwrap() > 100 && best["p50_ns"].as_u64().unwrap() > 0, "{best:?}");
    }

    // Table: one column per recording, in the same order.
    let table = run("table");
    let head = table.lines().find(|l| l.trim_start().starts_with("hop pair")).unwrap();
    let heads: Vec<&str> = order.iter().map(|o| o.split(' ').next().unwrap()).collect();
    let mut at = 0;
    for (o, g) in order.iter().zip(&heads) {
        let want = format!("{g} conns={}", o.split(' ').nth(1).unwrap());
        let i = head[at..].find(&want).unwrap_or_else(|| panic!("column {want} missing or out of order: {head}"));
        at += i + want.len();
    }
    assert!(table.contains("CPU per transaction"), "{table}");

    // HTML: one chart per hop pair with a p50 line per configuration that
    // has the pair, rendered by Chromium.
    let html = run("html");
    assert!(!html.contains("<script"), "a script-free page");
    let page = dir.0.join("sweep.html");
    std::fs::write(&page, &html).unwrap();
    let dom = match browser {
        Some(b) => {
            let out = Command::new(b)
                .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--dump-dom"])
                .arg(format!("file://{}", page.display()))
                .output()
                .expect("run chromium");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
        None => html.clone(),
    };
    let charts: Vec<&str> =
        dom.split("<svg class=\"chart sweep-latency\"").skip(1).map(|c| c.split("</svg>").next().unwrap()).collect();
    assert_eq!(charts.len(), rows.len(), "one chart per hop pair");
    let mut by_dir: Vec<&Value> = rows.iter().filter(|r| r["direction"] == "to-wire").collect();
    by_dir.extend(rows.iter().filter(|r| r["direction"] == "to-guest"));
    for (chart, row) in charts.iter().zip(by_dir) {
        let groups = groups_of(row);
        assert_eq!(chart.matches("class=\"line p50\"").count(), groups.len(), "lines of {row}");
        assert_eq!(chart.matches("class=\"line p99\"").count(), groups.len());
        for g in groups {
            assert!(chart.contains(&format!("{g} p50")), "{g}'s line in the chart of {row}");
        }
        let markers = row["cells"].as_array().unwrap().iter().filter(|c| !c.is_null()).count();
        assert_eq!(chart.matches("class=\"marker\"").count(), 2 * markers, "a p50 and a p99 marker per recording");
    }
    let first_table = dom.split("<table class=\"sweep\">").nth(1).unwrap().split("</tr>").next().unwrap();
    let cols: Vec<&str> =
        first_table.split("<th class=\"point\">").skip(1).map(|c| c.split("</th>").next().unwrap()).collect();
    let want: Vec<String> = order.iter().map(|o| o.replacen(' ', " conns=", 1)).collect();
    assert_eq!(cols, want, "one column per recording, in label order");
}

/// A label without '=' is refused before anything is attached, naming the fix.
#[test]
fn bad_label_is_refused_with_the_fix() {
    let out = netprobe(&["record", "--label", "conns", "--duration", "1s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("write KEY=VALUE"), "{err}");
    let out = netprobe(&["record", "--label", "a=1", "--label", "a=2", "--duration", "1s"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("given twice"));
}
