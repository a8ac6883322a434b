//! Golden-file tests: every output format rendered from the fixed
//! recordings in `netprobe/test_data/recordings/` (real demo runs, traced
//! macvtap and bridge, with their wall-clock fields fixed, and the macvtap
//! run in format 1; `make_fixtures.py` says how they are made) and
//! compared byte for byte with `netprobe/test_data/golden/`. After an
//! intended change of output, `UPDATE_GOLDEN=1 cargo test -p netprobe --lib
//! golden` rewrites the golden files; review their diff.

use std::path::PathBuf;

use super::Format;
use crate::{
    analyze::{analyze, compare::compare},
    recording::Recording,
};

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_data").join(path)
}

/// The format-2 fixture: a traced demo run with samples and interval
/// histograms.
pub(crate) fn fixture() -> Recording {
    Recording::read(&data("recordings/demo-v2.rec")).unwrap()
}

/// The same run as a format-1 file (no samples, no interval histograms).
fn fixture_v1() -> Recording {
    Recording::read(&data("recordings/demo-v1.rec")).unwrap()
}

fn check(name: &str, got: &[u8]) {
    let path = data(&format!("golden/{name}"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    if want != got {
        let (w, g) = (String::from_utf8_lossy(&want), String::from_utf8_lossy(got));
        let line =
            w.lines().zip(g.lines()).position(|(a, b)| a != b).unwrap_or(w.lines().count().min(g.lines().count()));
        panic!(
            "{name} differs from {} at line {}:\n  want: {}\n  got:  {}\n(UPDATE_GOLDEN=1 rewrites it after an intended change)",
            path.display(),
            line + 1,
            w.lines().nth(line).unwrap_or("<end>"),
            g.lines().nth(line).unwrap_or("<end>")
        );
    }
}

fn render(rec: &Recording, format: Format) -> Vec<u8> {
    let mut out = Vec::new();
    super::write(&analyze(rec).unwrap(), format, &mut out).unwrap();
    out
}

#[test]
fn golden_report_formats() {
    let rec = fixture();
    for (format, name) in [
        (Format::Table, "report.txt"),
        (Format::Json, "report.json"),
        (Format::Csv, "report.csv"),
        (Format::Hlog, "report.hlog"),
        (Format::Perfetto, "report.perfetto.json"),
        (Format::Html, "report.html"),
    ] {
        check(name, &render(&rec, format));
    }
}

/// A real QEMU guest (TCG, virtio-net on a macvtap, started without
/// debug-threads): the guests section, and its device named with it in
/// the hop pairs, intervals and /metrics.
#[test]
fn golden_real_guest_formats() {
    let rec = Recording::read(&data("recordings/guest.rec")).unwrap();
    for (format, name) in [(Format::Table, "guest.txt"), (Format::Json, "guest.json"), (Format::Html, "guest.html")] {
        check(name, &render(&rec, format));
    }
    let a = analyze(&rec).unwrap();
    let g = &a.report.guests[0];
    assert_eq!((g.guest.vcpu_tids.len(), g.vcpu_ns > 0), (2, true), "{g:?}");
    let (mut pairs, mut drops) = (super::openmetrics::SeriesCap::new(500), super::openmetrics::SeriesCap::new(500));
    let metrics = super::openmetrics::encode(
        &a,
        &mut super::openmetrics::Scrape { host: "h", pair_cap: &mut pairs, drop_cap: &mut drops },
    )
    .unwrap();
    let named = format!("guest=\"{}\"", g.guest.name);
    assert!(metrics.lines().any(|l| l.starts_with("netprobe_hop_packets_total") && l.contains(&named)), "{metrics}");
}

/// A demo run with `--drop-stacks`: each drop reason's top kernel stacks,
/// folded, and the function that freed the packets.
#[test]
fn golden_drop_stacks_formats() {
    let rec = Recording::read(&data("recordings/drop-stacks.rec")).unwrap();
    assert!(!rec.drop_stacks.is_empty(), "the fixture has no drop stacks");
    for (format, name) in
        [(Format::Table, "drop-stacks.txt"), (Format::Json, "drop-stacks.json"), (Format::Html, "drop-stacks.html")]
    {
        check(name, &render(&rec, format));
    }
    let r = analyze(&rec).unwrap().report;
    // Per reason at most the top stacks, most packets first; the demo's
    // blackholed datagrams freed by ip_error.
    for w in r.drop_stacks.windows(2) {
        assert!(w[0].reason_code != w[1].reason_code || w[0].packets >= w[1].packets, "{w:?}");
    }
    let blackholed = r.drop_stacks.iter().find(|d| d.freed_by == "ip_error").expect("no stack freed by ip_error");
    assert!(blackholed.packets >= 50 && blackholed.stack.ends_with(";ip_error;sk_skb_reason_drop"), "{blackholed:?}");
    // What the top leaves out is counted: shown plus left out is every
    // drop the recording has a stack for, reason by reason.
    let mut recorded: std::collections::BTreeMap<u32, u64> = Default::default();
    for d in &rec.drop_stacks {
        *recorded.entry(d.reason).or_default() += d.packets;
    }
    let mut reported: std::collections::BTreeMap<u32, u64> = Default::default();
    for d in &r.drop_stacks {
        *reported.entry(d.reason_code).or_default() += d.packets;
    }
    for l in &r.drop_stacks_left_out {
        *reported.entry(l.reason_code).or_default() += l.packets;
    }
    assert_eq!(recorded, reported);
    assert!(!r.drop_stacks_left_out.is_empty(), "the fixture has a reason with more stacks than the top shows");
}

/// macvtap (the demo) against the bridge topology, recorded the same way.
#[test]
fn golden_compare_formats() {
    let bridge = Recording::read(&data("recordings/bridge.rec")).unwrap();
    let (a, b) = (analyze(&fixture()).unwrap().report, analyze(&bridge).unwrap().report);
    let c = compare("demo-v2.rec", &a, "bridge.rec", &b);
    let mut table = Vec::new();
    super::compare_table::write(&c, &mut table).unwrap();
    check("compare.txt", &table);
    let mut html = Vec::new();
    super::compare_html::write(&c, &mut html).unwrap();
    check("compare.html", &html);
}

/// A sweep: the macvtap and bridge fixtures each labelled as three
/// connection counts (given out of order), grouped by configuration; the
/// bridge's transactions and CPU per transaction set by hand so the CPU
/// table has figures.
#[test]
fn golden_sweep_formats() {
    let bridge = analyze(&Recording::read(&data("recordings/bridge.rec")).unwrap()).unwrap().report;
    let macvtap = analyze(&fixture()).unwrap().report;
    let mut runs = Vec::new();
    for conns in ["50", "1", "10"] {
        for (config, r) in [("macvtap", &macvtap), ("bridge", &bridge)] {
            let mut r = r.clone();
            r.labels = [("config".to_owned(), config.to_owned()), ("conns".to_owned(), conns.to_owned())].into();
            if let (Some(cpu), "bridge") = (r.cpu.as_mut(), config) {
                let n: u64 = conns.parse::<u64>().unwrap() * 1000;
                cpu.transactions = Some(n);
                cpu.per_transaction_ns =
                    cpu.by_role_ns.iter().map(|(k, v)| (k.clone(), *v as f64 / n as f64)).collect();
            }
            runs.push((format!("{config}-{conns}.rec"), r));
        }
    }
    let s = crate::analyze::sweep::sweep(&runs, Some("config"), None).unwrap();
    let mut table = Vec::new();
    super::sweep_table::write(&s, &mut table).unwrap();
    check("sweep.txt", &table);
    let mut html = Vec::new();
    super::sweep_html::write(&s, &mut html).unwrap();
    check("sweep.html", &html);
    check("sweep.json", &serde_json::to_vec_pretty(&s).unwrap());
    // One column per recording, one chart per hop pair, a p50 line per
    // configuration that has the pair.
    let page = String::from_utf8(html).unwrap();
    let directions = page.matches("<section class=\"direction\"").count();
    assert_eq!(directions, 2);
    assert_eq!(page.matches("<th class=\"point\">").count(), 6 * (directions + 1), "6 columns per hop table and CPU");
    assert_eq!(page.matches("<svg class=\"chart sweep-latency\"").count(), s.rows.len());
    let lines: usize = s.rows.iter().map(|r| s.lines(r).len()).sum();
    assert_eq!(page.matches("class=\"line p50\"").count(), lines);
    assert!(!page.contains("<script"), "script-free");
}

/// Format-1 files still load: same histograms and report, no samples, and
/// the formats that need format 2's data fall back (hlog: whole run).
#[test]
fn format_1_recordings_still_read() {
    let (v1, v2) = (fixture_v1(), fixture());
    assert!(std::fs::read_to_string(data("recordings/demo-v1.rec")).unwrap().starts_with("netprobe-recording 1\n"));
    assert!(v1.samples.is_empty() && !v2.samples.is_empty());
    assert!(v1.intervals.iter().all(|iv| iv.pairs.iter().all(|p| p.hist.is_none())));
    let (r1, r2) = (analyze(&v1).unwrap().report, analyze(&v2).unwrap().report);
    assert_eq!(serde_json::to_value(&r1.directions).unwrap(), serde_json::to_value(&r2.directions).unwrap());
    let hlog = String::from_utf8(render(&v1, Format::Hlog)).unwrap();
    let pairs: usize = r1.directions.iter().map(|d| d.pairs.len()).sum();
    assert_eq!(hlog.lines().filter(|l| l.starts_with("Tag=")).count(), pairs, "one whole-run histogram per pair");
    let perfetto: serde_json::Value = serde_json::from_slice(&render(&v1, Format::Perfetto)).unwrap();
    assert!(perfetto["traceEvents"].as_array().unwrap().iter().all(|e| e["ph"] != "X"));
}

/// The HTML page is self-contained and escapes what it shows.
#[test]
fn html_has_no_external_resources_and_escapes_text() {
    let mut rec = fixture();
    rec.meta.kernel = "6.18<script>alert(1)</script>".to_owned();
    let html = String::from_utf8(render(&rec, Format::Html)).unwrap();
    assert!(!html.contains("<script"), "unescaped text in the page");
    assert!(html.contains("6.18&lt;script&gt;"));
    for external in ["http://", "https://", "src=", "<link"] {
        let hits: Vec<&str> = html.matches(external).collect();
        // The SVG namespace is the only URL allowed.
        assert!(
            external != "http://" || hits.len() == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
            "{external} in the page"
        );
        assert!(external == "http://" || hits.is_empty(), "{external} in the page");
    }
}

/// A recording with its host's configuration: the table and the page open
/// with it (devices, offloads, qeth settings, guests), escaped in HTML.
#[test]
fn configuration_opens_table_and_page() {
    use crate::model::host::{DeviceConfig, GuestConfig, HostConfig};
    let mut rec = fixture();
    rec.meta.host_config = Some(HostConfig {
        kernel_release: "6.1.0-27-s390x".to_owned(),
        cpu_model: "IBM/S390 machine 8561".to_owned(),
        cpus_online: "0-7".to_owned(),
        smt_control: Some("on".to_owned()),
        smt_active: Some(true),
        thp: Some("always".to_owned()),
        devices: vec![DeviceConfig {
            name: "encbd00".to_owned(),
            netns: "host".to_owned(),
            driver: Some("qeth_l2".to_owned()),
            txqueuelen: Some(1000),
            features: [("tx-tcp-segmentation".to_owned(), false), ("rx-gro".to_owned(), true)].into(),
            qeth: [("card_type".to_owned(), "HiperSockets<x>".to_owned())].into(),
            ..DeviceConfig::default()
        }],
        guests: vec![GuestConfig {
            name: "g1".to_owned(),
            pid: 42,
            vcpus: 2,
            vcpu_affinity: vec!["2".into(), "3".into()],
        }],
        ..HostConfig::default()
    });
    let table = String::from_utf8(render(&rec, Format::Table)).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[1], "host configuration:");
    assert_eq!(lines[2], "  Linux 6.1.0-27-s390x; CPU IBM/S390 machine 8561, online 0-7; SMT on; THP always");
    assert!(table.contains("    encbd00 (netns host): device, driver qeth_l2, txqueuelen 1000\n"), "{table}");
    assert!(table.contains("      offloads on: rx-gro; off: tx-tcp-segmentation (1 of 2 features on)\n"), "{table}");
    assert!(table.contains("      qeth: card_type HiperSockets<x>\n"), "{table}");
    assert!(table.contains("    guest g1 (pid 42): 2 vCPUs, pinned to 2 | 3\n"), "{table}");
    let html = String::from_utf8(render(&rec, Format::Html)).unwrap();
    let config = html.find("<section id=\"config\">").unwrap();
    assert!(config < html.find("class=\"cards\"").unwrap(), "the page opens with the configuration");
    assert!(html.contains("HiperSockets&lt;x&gt;") && !html.contains("HiperSockets<x>"));
    let json: serde_json::Value = serde_json::from_slice(&render(&rec, Format::Json)).unwrap();
    assert_eq!(json["config"]["devices"][0]["qeth"]["card_type"], "HiperSockets<x>");
}

/// A workload that gave its own latency: the table and the page show it,
/// what could not be read, and the host's share marked an estimate.
#[test]
fn workload_figures_and_host_share_are_shown() {
    use crate::model::{Workload, WorkloadLatency};
    let mut rec = fixture();
    rec.meta.workload = Some(Workload {
        command: vec!["netperf".into(), "-t".into(), "TCP_RR".into()],
        started_unix_s: 0.0,
        ended_unix_s: 5.0,
        exit_status: Some(0),
        signal: None,
        tgids: Vec::new(),
        cgroup: None,
        transactions: None,
        transactions_from: Some("unreadable: netperf TCP_RR printed no TRANSACTION_RATE".into()),
        latency: Some(WorkloadLatency {
            from: "netperf TCP_RR latency selectors (us)".into(),
            round_trip: true,
            p50_ns: Some(40_000),
            p99_ns: Some(90_000),
            ..WorkloadLatency::default()
        }),
        throughput: None,
        notes: vec!["netperf TCP_RR printed no TRANSACTION_RATE".into()],
    });
    let table = String::from_utf8(render(&rec, Format::Table)).unwrap();
    assert!(table.contains(", transactions unreadable: netperf TCP_RR printed no TRANSACTION_RATE\n"), "{table}");
    assert!(
        table.contains("  workload's own latency: p50 40.0us, p99 90.0us (netperf TCP_RR latency selectors (us))\n")
    );
    assert!(!table.contains("workload output unreadable"), "the transactions line says it once: {table}");
    let share = table.lines().find(|l| l.contains("host's share of the round trip (estimate)")).unwrap();
    assert!(share.contains("to-wire") && share.contains("percentiles do not add"), "{share}");
    let html = String::from_utf8(render(&rec, Format::Html)).unwrap();
    assert!(html.contains("host&#39;s share of the round trip (estimate)"));
}

/// Hops whose module was unloaded mid-run: the table says when they went,
/// when they came back and the gap; JSON keeps the times per hop; a
/// recording written before the field existed reads as never detached.
#[test]
fn hops_detached_by_a_module_unload_are_reported_with_the_gap() {
    use crate::model::report::Detachment;
    let mut rec = fixture();
    assert!(rec.coverage.iter().all(|c| c.detached.is_empty()), "an older recording has no detachments");
    let went = Detachment { module: "openvswitch".into(), detached_at_s: 2.0, reattached_at_s: Some(3.5) };
    let gone = Detachment { module: "tap".into(), detached_at_s: 4.0, reattached_at_s: None };
    rec.coverage[0].detached = vec![went.clone()];
    rec.coverage[1].detached = vec![went];
    rec.coverage[2].detached = vec![gone];
    let (h0, h1, h2) = (rec.coverage[0].hop.clone(), rec.coverage[1].hop.clone(), rec.coverage[2].hop.clone());
    let table = String::from_utf8(render(&rec, Format::Table)).unwrap();
    let want = format!(
        "  module openvswitch unloaded: 2 hop(s) detached at +2.0 s, re-attached at +3.5 s: 1.5 s without them \
         ({h0}, {h1}); what they measured before is kept\n"
    );
    assert!(table.contains(&want), "{table}");
    let end = (rec.meta.duration_s - 4.0).max(0.0);
    let want = format!(
        "  module tap unloaded: 1 hop(s) detached at +4.0 s, not attached again: {end:.1} s without them ({h2})"
    );
    assert!(table.contains(&want), "{table}");
    let json: serde_json::Value = serde_json::from_slice(&render(&rec, Format::Json)).unwrap();
    let d = &json["coverage"][2]["detached"][0];
    assert_eq!(
        (d["module"].as_str(), d["detached_at_s"].as_f64(), d["reattached_at_s"].is_null()),
        (Some("tap"), Some(4.0), true)
    );
    assert!(json["coverage"][3].get("detached").is_none(), "never detached: no field");
}
