//! HdrHistogram interval log (`.hlog`): what HdrHistogram's own tools
//! (HistogramLogProcessor, HistogramLogAnalyzer, the hdrhistogram crates)
//! read. One tagged histogram per hop pair and direction per interval, from
//! the recording's full-resolution per-interval bucket deltas; recordings
//! without them (older ones, or none with intervals) give one interval
//! spanning the whole run. Values are nanoseconds; the tag is
//! `<direction>:<from hop@dev>-><to hop@dev>`.

use std::{
    io::Write,
    time::{Duration, UNIX_EPOCH},
};

use anyhow::{anyhow, Result};
use hdrhistogram::serialization::{interval_log::IntervalLogWriterBuilder, interval_log::Tag, V2DeflateSerializer};

use crate::{
    analyze::{hdr, Analysis, IntervalHists},
    model::PairName,
};

/// The tag of a hop pair: HdrHistogram tags may not hold `,`, spaces or
/// line breaks (device names could hold a comma).
pub fn tag(p: &PairName) -> String {
    format!("{}:{}->{}", p.0.slug(), p.1, p.2).replace([',', ' ', '\r', '\n'], "_")
}

pub fn write(a: &Analysis, out: &mut dyn Write) -> Result<()> {
    let mut series = a.intervals.clone();
    if series.iter().all(|iv| iv.pairs.is_empty()) {
        series = vec![IntervalHists { start_s: 0.0, end_s: a.report.duration_s, pairs: a.pair_hists() }];
    }
    let start = UNIX_EPOCH + Duration::from_secs_f64(a.host.started_unix_s.max(0.0));
    let mut buf = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "netprobe {} on Linux {}: hop-pair latency in nanoseconds, one histogram per hop pair, direction and interval",
            a.report.netprobe_version, a.report.kernel
        ))
        .add_comment("tag = <direction>:<from hop@device>-><to hop@device>")
        .with_start_time(start)
        .with_base_time(start)
        .begin_log_with(&mut buf, &mut serializer)?;
    log.write_comment("\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"")?;
    for iv in &series {
        let (from, len) = (iv.start_s.max(0.0), (iv.end_s - iv.start_s).max(0.0));
        for (pair, h) in &iv.pairs {
            let t = tag(pair);
            log.write_histogram(&hdr(h), Duration::from_secs_f64(from), Duration::from_secs_f64(len), Tag::new(&t))
                .map_err(|e| anyhow!("writing the interval log: {e}"))?;
        }
    }
    drop(log);
    out.write_all(&buf)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use hdrhistogram::{
        serialization::{interval_log::IntervalLogIterator, interval_log::LogEntry, Deserializer},
        Histogram,
    };

    use super::*;

    /// The log read back with the hdrhistogram crate's own reader: every
    /// interval's histogram has the recording's packet count for its pair,
    /// and the whole run's p99 per pair matches the report's.
    #[test]
    fn round_trips_through_the_interval_log_reader() {
        let rec = crate::render::golden::fixture();
        let analysis = crate::analyze::analyze(&rec).unwrap();
        let report = &analysis.report;
        let mut out = Vec::new();
        write(&analysis, &mut out).unwrap();
        let mut by_tag: std::collections::BTreeMap<String, Histogram<u64>> = Default::default();
        let mut intervals = 0;
        let mut d = Deserializer::new();
        for entry in IntervalLogIterator::new(&out) {
            if let LogEntry::Interval(iv) = entry.unwrap() {
                intervals += 1;
                let bytes =
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, iv.encoded_histogram()).unwrap();
                let h: Histogram<u64> = d.deserialize(&mut bytes.as_slice()).unwrap();
                let tag = iv.tag().unwrap().as_str().to_owned();
                by_tag
                    .entry(tag)
                    .or_insert_with(|| Histogram::new_with_bounds(1, 1 << 42, 3).unwrap())
                    .add(&h)
                    .unwrap();
            }
        }
        let per_interval: usize = rec.intervals.iter().map(|iv| iv.pairs.len()).sum();
        assert!(per_interval > 0, "the fixture has an interval series");
        assert_eq!(intervals, per_interval);
        let mut checked = 0;
        for d in &report.directions {
            for p in &d.pairs {
                let t = tag(&(d.direction, p.from_label(), p.to_label()));
                let h = by_tag.get(&t).unwrap_or_else(|| panic!("no histogram tagged {t}"));
                assert_eq!(h.len(), p.packets, "{t}");
                let p99 = h.value_at_quantile(0.99).clamp(p.min_ns, p.max_ns);
                let err = (p99 as f64 - p.p99_ns as f64).abs() / p.p99_ns.max(1) as f64;
                assert!(err < 0.01, "{t}: p99 {p99} in the log, {} in the report", p.p99_ns);
                checked += 1;
            }
        }
        assert!(checked >= 5, "only {checked} pairs");
    }
}
