//! The report formats read by the tools they are for: the HTML report
//! rendered by headless Chromium (screenshot and DOM), the hlog by
//! HdrHistogram's own Java HistogramLogProcessor, and the Perfetto trace
//! of a real traced run through the demo topology.

use std::{path::PathBuf, process::Command};

use netprobe_testbed::topology::Topology;
use netprobe_tests::{netprobe_bin, require_root, require_tool, RunningRecord};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../netprobe/test_data/recordings").join(name)
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netprobe-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn netprobe(args: &[&str]) -> Vec<u8> {
    let out = Command::new(netprobe_bin()).args(args).output().unwrap();
    assert!(out.status.success(), "netprobe {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The demo-v2.rec fixture reported in `format` into DIR/report.FORMAT,
/// and its JSON report to check the output against.
fn render_fixture(dir: &std::path::Path, format: &str) -> (PathBuf, Value) {
    let rec = fixture("demo-v2.rec");
    let path = dir.join(format!("report.{format}"));
    std::fs::write(&path, netprobe(&["report", "--format", format, rec.to_str().unwrap()])).unwrap();
    let report = serde_json::from_slice(&netprobe(&["report", "--format", "json", rec.to_str().unwrap()])).unwrap();
    (path, report)
}

/// Debian's chromium, or None (after saying why) outside CI.
fn chromium() -> Option<&'static str> {
    let here = Command::new("chromium").arg("--version").output().is_ok_and(|o| o.status.success());
    require_tool(here, "chromium (Debian package chromium)").then_some("chromium")
}

fn headless(browser: &str, args: &[&str], page: &std::path::Path) -> std::process::Output {
    Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files"])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium")
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let Some(browser) = chromium() else { return };
    let dir = scratch("html");
    let (page, report) = render_fixture(&dir, "html");

    // The screenshot: a PNG of the window's size with a real picture on it.
    let shot = dir.join("report.png");
    let out = headless(browser, &[&format!("--screenshot={}", shot.display()), "--window-size=1200,2400"], &page);
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1200, 2400));
    let px = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let inked = pixels.chunks(px).filter(|p| p.iter().take(3).any(|&c| c < 200)).count();
    let coloured = pixels.chunks(px).filter(|p| p.len() >= 3 && (p[0] as i32 - p[2] as i32).abs() > 60).count();
    let total = (info.width * info.height) as usize;
    assert!(inked > total / 100, "the page looks blank: {inked} dark pixels of {total}");
    assert!(coloured > total / 500, "no coloured chart marks: {coloured} pixels");

    // The DOM after rendering: the charts and a row per hop pair.
    let out = headless(browser, &["--dump-dom"], &page);
    let dom = String::from_utf8_lossy(&out.stdout);
    let directions =
        report["directions"].as_array().unwrap().iter().filter(|d| !d["pairs"].as_array().unwrap().is_empty());
    let pairs: usize =
        report["directions"].as_array().unwrap().iter().map(|d| d["pairs"].as_array().unwrap().len()).sum();
    let n = directions.count();
    assert!(n >= 2 && pairs >= 5, "the fixture has both directions and several pairs");
    assert_eq!(dom.matches("<svg class=\"chart latency-bars\"").count(), n, "latency bars per direction");
    assert_eq!(dom.matches("<svg class=\"chart percentile-curves\"").count(), n, "percentile curves per direction");
    assert_eq!(dom.matches("<tr class=\"hop-row\"").count(), pairs, "one row per hop pair");
    let curves: usize = dom
        .split("<svg class=\"chart percentile-curves\"")
        .skip(1)
        .map(|svg| svg.split("</svg>").next().unwrap().matches("class=\"curve\"").count())
        .sum();
    assert_eq!(curves, pairs, "one percentile curve per hop pair");
    for chart in ["cpu-bars", "drop-bars", "interval-series", "journey-bars"] {
        assert!(dom.contains(&format!("<svg class=\"chart {chart}\"")), "no {chart} chart");
    }
    assert!(dom.contains("id=\"coverage\""));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compare_html_renders_in_headless_chromium() {
    let Some(browser) = chromium() else { return };
    let dir = scratch("compare-html");
    let (a, b) = (fixture("demo-v2.rec"), fixture("bridge.rec"));
    let page = dir.join("compare.html");
    std::fs::write(&page, netprobe(&["compare", "--format", "html", a.to_str().unwrap(), b.to_str().unwrap()]))
        .unwrap();
    let out = headless(browser, &["--dump-dom"], &page);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert_eq!(dom.matches("<svg class=\"chart compare-bars\"").count(), 2, "A/B bars per direction");
    assert!(dom.matches("<tr class=\"hop-row\"").count() >= 5);
    assert!(dom.contains("demo-v2.rec") && dom.contains("bridge.rec"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Debian's HdrHistogram jar with a Java to run it, or None (after saying
/// why) outside CI.
fn hdrhistogram_jar() -> Option<&'static str> {
    const JAR: &str = "/usr/share/java/hdrhistogram.jar";
    let java = Command::new("java").arg("-version").output().is_ok_and(|o| o.status.success());
    require_tool(java && std::path::Path::new(JAR).exists(), "libhdrhistogram-java and default-jre-headless")
        .then_some(JAR)
}

/// HdrHistogram's reference tool reads the log: for every hop pair, the
/// total count over its intervals is the pair's packets and the mean is
/// the report's mean (within the histograms' precision).
#[test]
fn hlog_is_read_by_hdrhistograms_log_processor() {
    let Some(jar) = hdrhistogram_jar() else { return };
    let dir = scratch("hlog");
    let (log, report) = render_fixture(&dir, "hlog");
    let mut checked = 0;
    for d in report["directions"].as_array().unwrap() {
        for p in d["pairs"].as_array().unwrap().iter().filter(|p| p["packets"].as_u64().unwrap() >= 1000) {
            let label = |hop: &Value, dev: &Value| match dev.as_str().unwrap() {
                "" => hop.as_str().unwrap().to_owned(),
                dev => format!("{}@{dev}", hop.as_str().unwrap()),
            };
            let tag = format!(
                "{}:{}->{}",
                d["direction"].as_str().unwrap(),
                label(&p["from_hop"], &p["from_dev"]),
                label(&p["to_hop"], &p["to_dev"])
            );
            let out = Command::new("java")
                .args(["-cp", jar, "org.HdrHistogram.HistogramLogProcessor", "-i"])
                .arg(&log)
                .args(["-tag", &tag, "-outputValueUnitRatio", "1"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{tag}: {}", String::from_utf8_lossy(&out.stderr));
            let field = |name: &str| -> f64 {
                let line =
                    text.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{tag}: no {name} in {text}"));
                let after = line.split(name).nth(1).unwrap();
                after.trim_start_matches([' ', '=']).split([',', ']']).next().unwrap().trim().parse().unwrap()
            };
            assert_eq!(field("Total count") as u64, p["packets"].as_u64().unwrap(), "{tag}");
            let (mean, want) = (field("Mean"), p["mean_ns"].as_f64().unwrap());
            assert!((mean - want).abs() / want < 0.05, "{tag}: mean {mean} in the log, {want} in the report");
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} busy pairs");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn traced_recording_keeps_packet_journeys_for_perfetto() {
    if !require_root("traced_recording_keeps_packet_journeys_for_perfetto") {
        return;
    }
    let dir = scratch("perfetto");
    let file = dir.join("traced.rec");
    let t = Topology::create().unwrap();
    let (m, ifaces) = (t.macvtap.clone(), t.ifaces());
    let rec =
        RunningRecord::start(&["--trace", "--iface", &ifaces[0], "--iface", &ifaces[1], "-o", file.to_str().unwrap()]);
    assert_eq!(t.ping(20, "0.02").unwrap(), 20);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let live = rec.interrupt();
    drop(t);
    assert!(live["tracking"]["events_received"].as_u64().unwrap() > 0, "trace mode delivered no event");

    let trace: Value =
        serde_json::from_slice(&netprobe(&["report", "--format", "perfetto", file.to_str().unwrap()])).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let slices: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    let named = |name: &str, cat: &str| slices.iter().filter(|e| e["name"] == name && e["cat"] == cat).count();
    // 20 echo requests leave the guest by the macvtap, 20 replies reach it.
    let out = named(&format!("queue@{m} -> xmit@{m}"), "to-wire");
    assert!(out >= 20, "{out} to-wire queue -> xmit slices on {m}");
    let back = slices
        .iter()
        .filter(|e| e["cat"] == "to-guest" && e["args"]["to"].as_str() == Some(&format!("copy_out@{m}")))
        .count();
    assert!(back >= 20, "{back} to-guest slices into the guest's macvtap queue");
    // Each packet's slices follow one another on its track without gaps,
    // each within a plausible time.
    let mut tracks: std::collections::BTreeMap<(u64, u64), Vec<&Value>> = Default::default();
    for s in &slices {
        let dur = s["dur"].as_f64().unwrap();
        assert!((0.0..1e6).contains(&dur), "implausible slice {s}");
        tracks.entry((s["pid"].as_u64().unwrap(), s["tid"].as_u64().unwrap())).or_default().push(s);
    }
    for (track, s) in &tracks {
        for w in s.windows(2) {
            let end = w[0]["ts"].as_f64().unwrap() + w[0]["dur"].as_f64().unwrap();
            assert!(
                (end - w[1]["ts"].as_f64().unwrap()).abs() < 0.01,
                "gap on track {track:?}: {} then {}",
                w[0],
                w[1]
            );
            assert_eq!(w[0]["args"]["to"], w[1]["args"]["from"], "hops do not chain on track {track:?}");
        }
    }
    let named_tracks = events.iter().filter(|e| e["ph"] == "M" && e["name"] == "thread_name").count();
    assert_eq!(named_tracks, tracks.len(), "one named track per packet");
    std::fs::remove_dir_all(&dir).unwrap();
}
