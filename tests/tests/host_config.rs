//! The host's configuration in every recording: the demo topology's
//! devices read inside their network namespace, and `compare` naming the
//! one setting changed between two recordings (the macvtap's txqueuelen)
//! before any hop pair.

use std::process::Command;

use netprobe_testbed::topology::Topology;
use netprobe_tests::{netprobe_bin, require_root, RunningRecord};
use serde_json::Value;

/// The device `name` of a report's configuration.
fn device<'a>(r: &'a Value, name: &str) -> &'a Value {
    let devs = r["config"]["devices"].as_array().unwrap_or_else(|| panic!("no configuration: {:#}", r["config"]));
    devs.iter().find(|d| d["name"] == name).unwrap_or_else(|| panic!("no device {name} in {devs:#?}"))
}

/// Records a second of pings through the topology into `out`.
fn record(t: &Topology, out: &str) -> Value {
    let ifaces = t.ifaces();
    let rec = RunningRecord::start(&["--iface", &ifaces[0], "--iface", &ifaces[1], "-o", out]);
    assert_eq!(t.ping(5, "0.1").unwrap(), 5);
    rec.interrupt()
}

#[test]
fn compare_names_a_changed_txqueuelen_first() {
    if !require_root("compare_names_a_changed_txqueuelen_first") {
        return;
    }
    let t = Topology::create().unwrap();
    let dir = std::env::temp_dir().join(format!("netprobe-hostconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.rec").display().to_string(), dir.join("b.rec").display().to_string());

    let ra = record(&t, &a);
    let (m, u) = (&t.macvtap, &t.uplink);
    let mv = device(&ra, m);
    eprintln!("macvtap as recorded: {mv}");
    // Read inside the demo's host namespace, from the kernel.
    assert_eq!(mv["netns"], t.host_ns.as_str());
    assert_eq!(mv["kind"], "macvtap");
    assert_eq!(mv["mode"], "bridge");
    assert_eq!(mv["driver"], "macvlan");
    assert_eq!(mv["mtu"], 1500);
    assert!(mv["features"].as_object().is_some_and(|f| f.len() > 10), "ETHTOOL_GFEATURES: {mv}");
    assert_eq!(device(&ra, u)["driver"], "veth");
    let config = &ra["config"];
    assert!(!config["kernel_release"].as_str().unwrap().is_empty() && !config["cpus_online"].is_null(), "{config}");

    // One setting changed between the two runs.
    let before = mv["txqueuelen"].as_u64().unwrap();
    let after = before + 123;
    let status = Command::new("ip")
        .args(["-n", &t.host_ns, "link", "set", m, "txqueuelen", &after.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rb = record(&t, &b);
    assert_eq!(device(&rb, m)["txqueuelen"], after);

    let compare = |format: &str| {
        let out = Command::new(netprobe_bin()).args(["compare", "--format", format, &a, &b]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let table = compare("table");
    let json: Value = serde_json::from_str(&compare("json")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{table}");
    let want = format!("B: {m} txqueuelen {after}, A: {before}");
    let at = table.find(&want).unwrap_or_else(|| panic!("compare does not name the change ({want}):\n{table}"));
    assert!(at < table.find("toward").unwrap_or(usize::MAX), "differences come before the hop pairs:\n{table}");
    let diffs = json["config_differences"].as_array().unwrap();
    let setting = format!("{m} txqueuelen");
    let d = diffs.iter().find(|d| d["setting"] == setting.as_str()).unwrap_or_else(|| panic!("{diffs:#?}"));
    assert_eq!(
        (d["a"].as_str(), d["b"].as_str()),
        (Some(before.to_string().as_str()), Some(after.to_string().as_str()))
    );
    // Nothing else of the devices differs between the two runs.
    assert!(
        diffs.iter().all(|d| !d["setting"].as_str().unwrap().starts_with(u.as_str())),
        "the uplink did not change: {diffs:#?}"
    );
}
