//! Perfetto output: the recording's packet journeys (trace mode's samples)
//! as a Chrome JSON trace, which the Perfetto UI (ui.perfetto.dev) and
//! chrome://tracing open. One process per direction, one track per packet,
//! and one slice per hop-to-hop segment named by the hop pair, so a slow
//! segment of a single packet stands out on its timeline.

use std::io::Write;

use anyhow::Result;
use serde_json::{json, Value};

use crate::{analyze::Analysis, model::Direction};

/// Microseconds (the trace format's unit) from nanoseconds, keeping the
/// nanoseconds as decimals.
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

pub fn write(a: &Analysis, out: &mut dyn Write) -> Result<()> {
    let journeys = &a.journeys;
    let mut events: Vec<Value> = Vec::new();
    for (pid, dir) in [(1, Direction::ToWire), (2, Direction::ToGuest)] {
        events.push(json!({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": dir.title()}}));
        events.push(json!({"ph": "M", "name": "process_sort_index", "pid": pid, "args": {"sort_index": pid}}));
    }
    for (i, j) in journeys.iter().enumerate() {
        let pid = match j.direction {
            Direction::ToWire => 1,
            Direction::ToGuest => 2,
        };
        let tid = i + 1;
        let first = j.hops.first().map_or(String::new(), |h| h.at.clone());
        events.push(json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
            "args": {"name": format!("packet {tid} from {first}")}}));
        events
            .push(json!({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": tid}}));
        for w in j.hops.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            let ns = b.t_ns.saturating_sub(a.t_ns);
            events.push(json!({
                "ph": "X",
                "name": format!("{} -> {}", a.at, b.at),
                "cat": j.direction.slug(),
                "pid": pid,
                "tid": tid,
                "ts": us(a.t_ns),
                "dur": us(ns),
                "args": {"from": a.at, "to": b.at, "ns": ns},
            }));
        }
    }
    let trace = json!({
        "displayTimeUnit": "ns",
        "otherData": {
            "netprobe_version": a.report.netprobe_version,
            "kernel": a.report.kernel,
            "journeys": journeys.len(),
            "note": "timestamps are microseconds since the recording started",
        },
        "traceEvents": events,
    });
    serde_json::to_writer(&mut *out, &trace)?;
    writeln!(out)?;
    Ok(())
}
