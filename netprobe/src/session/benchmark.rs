//! What a benchmark tool's own output says: transactions, latency and
//! throughput, read from sockperf, uperf, netperf and iperf3 (`-J`) as
//! each documents its output. Pure functions of the command line and the
//! text the tool printed; a tool recognised whose figures cannot be read
//! says why instead of giving zero.

use crate::model::{WorkloadLatency, WorkloadThroughput};

/// The benchmark tools whose output netprobe reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Sockperf,
    Uperf,
    Netperf,
    Iperf3,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Sockperf => "sockperf",
            Tool::Uperf => "uperf",
            Tool::Netperf => "netperf",
            Tool::Iperf3 => "iperf3",
        }
    }

    /// The tool a workload command runs: any word of its arguments whose
    /// file name is a tool's (so `ip netns exec NS sockperf ...` and `sh
    /// -c 'iperf3 -J ... | tee F'` are recognised).
    pub fn of(command: &[String]) -> Option<Tool> {
        words(command).find_map(|w| {
            let base = w.rsplit('/').next().unwrap_or(w);
            [Tool::Sockperf, Tool::Uperf, Tool::Netperf, Tool::Iperf3].into_iter().find(|t| t.name() == base)
        })
    }
}

/// The words of a command line, also those inside one argument (`sh -c`).
fn words(command: &[String]) -> impl Iterator<Item = &str> {
    command.iter().flat_map(|a| a.split_whitespace())
}

/// What netprobe read in a workload's output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// Transactions and where the count comes from.
    pub transactions: Option<(u64, String)>,
    pub latency: Option<WorkloadLatency>,
    pub throughput: Option<WorkloadThroughput>,
    /// Figures the tool should have printed but netprobe could not read:
    /// what is missing and how to get it.
    pub unreadable: Vec<String>,
    /// True when what is unreadable is the transaction count (a
    /// request/response test).
    pub transactions_unreadable: bool,
}

/// Reads the output of `command` (all it printed on standard output).
/// `run_s` is how long it ran, for tools that give a rate but no duration.
pub fn read(command: &[String], output: &str, run_s: f64) -> Option<Reading> {
    let output = strip_ansi(output);
    let tool = Tool::of(command)?;
    Some(match tool {
        Tool::Sockperf if words(command).any(|w| w == "throughput" || w == "tp") => sockperf_throughput(&output),
        Tool::Sockperf => sockperf_clients(&output),
        Tool::Uperf => uperf(&output),
        Tool::Netperf => netperf(command, &output, run_s),
        Tool::Iperf3 => iperf3(&output),
    })
}

/// Output without terminal colour sequences (sockperf colours its
/// summary even into a pipe).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn us_to_ns(us: f64) -> u64 {
    (us * 1000.0).round().max(0.0) as u64
}

fn unreadable_transactions(why: String) -> Reading {
    Reading { unreadable: vec![why], transactions_unreadable: true, ..Reading::default() }
}

/// Several sockperf clients run in parallel (one connection each, a
/// sweep's `conns=N`), their outputs one after the other: a summary per
/// client, each starting at its `[Total Run]` line. The transactions are
/// their sum, the mean latency their mean weighted by each client's
/// messages, min and max over all; percentiles of different clients do
/// not merge, so none is given. One summary reads as `sockperf`.
fn sockperf_clients(out: &str) -> Reading {
    let starts: Vec<usize> =
        out.match_indices("[Total Run]").map(|(i, _)| out[..i].rfind('\n').map_or(0, |n| n + 1)).collect();
    if starts.len() <= 1 {
        return sockperf(out);
    }
    let ends = starts.iter().skip(1).copied().chain([out.len()]);
    let mut r = Reading::default();
    let (mut total, mut weighted, mut lat) = (0u64, 0f64, WorkloadLatency::default());
    for (s, e) in starts.iter().zip(ends) {
        let one = sockperf(&out[*s..e]);
        let Some((n, _)) = one.transactions else { return one };
        total += n;
        let Some(l) = one.latency else {
            r.unreadable.push(format!("a sockperf client printed no latency statistics ({} clients)", starts.len()));
            continue;
        };
        lat.round_trip = l.round_trip;
        weighted += l.mean_ns.unwrap_or(0) as f64 * n as f64;
        lat.min_ns = match (lat.min_ns, l.min_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        lat.max_ns = lat.max_ns.max(l.max_ns);
    }
    r.transactions =
        Some((total, format!("sockperf ReceivedMessages ([Total Run]), summed over {} clients", starts.len())));
    if r.unreadable.is_empty() && total > 0 {
        lat.mean_ns = Some((weighted / total as f64).round() as u64);
        lat.from = format!(
            "sockperf, {} clients (valid duration, {}; mean weighted by messages, percentiles per client not merged)",
            starts.len(),
            if lat.round_trip { "--full-rtt: round trip" } else { "half round trip: RTT/2" }
        );
        r.latency = Some(lat);
    }
    r
}

/// sockperf (ping-pong, under-load), as sockperf 3.x prints its summary:
/// `[Total Run] ... ReceivedMessages=N` (each reply completes one
/// transaction), then for the valid duration `avg-latency=X` (or
/// `avg-rtt=X` with `--full-rtt`) and `---> percentile P = X` /
/// `---> <MAX> observation = X` lines, in microseconds. Without
/// `--full-rtt` sockperf's latency is half the round trip.
fn sockperf(out: &str) -> Reading {
    let mut r = Reading::default();
    let total = out.lines().find(|l| l.contains("[Total Run]"));
    match total.and_then(|l| l.split(';').find_map(|f| f.trim().strip_prefix("ReceivedMessages="))) {
        Some(n) => match n.trim().parse() {
            Ok(n) => r.transactions = Some((n, "sockperf ReceivedMessages ([Total Run])".to_owned())),
            Err(_) => {
                return unreadable_transactions(format!("sockperf's ReceivedMessages={n} is not a count"));
            }
        },
        None => {
            return unreadable_transactions(
                "sockperf printed no [Total Run] summary (did it run to its end? netprobe reads ping-pong and \
                 under-load summaries)"
                    .to_owned(),
            );
        }
    }
    let mut lat = WorkloadLatency { from: "sockperf (valid duration)".to_owned(), ..WorkloadLatency::default() };
    let mut any = false;
    for line in out.lines() {
        let l = line.trim_start_matches("sockperf:").trim();
        if let Some(rest) = l.strip_prefix("====> avg-latency=").or_else(|| l.strip_prefix("====> avg-rtt=")) {
            lat.round_trip = l.contains("avg-rtt");
            lat.mean_ns = rest.split_whitespace().next().and_then(|v| v.parse().ok()).map(us_to_ns);
            any |= lat.mean_ns.is_some();
        } else if let Some(rest) = l.strip_prefix("--->") {
            let Some((what, v)) = rest.split_once('=') else { continue };
            let Ok(v) = v.trim().parse::<f64>() else { continue };
            let what = what.trim();
            let slot = match what {
                "<MAX> observation" => &mut lat.max_ns,
                "<MIN> observation" => &mut lat.min_ns,
                "percentile 50.000" => &mut lat.p50_ns,
                "percentile 90.000" => &mut lat.p90_ns,
                "percentile 99.000" => &mut lat.p99_ns,
                "percentile 99.900" => &mut lat.p999_ns,
                _ => continue,
            };
            *slot = Some(us_to_ns(v));
            any = true;
        }
    }
    if any {
        lat.from = format!(
            "sockperf (valid duration, {})",
            if lat.round_trip { "--full-rtt: round trip" } else { "half round trip: RTT/2" }
        );
        r.latency = Some(lat);
    } else if r.transactions.is_some() {
        r.unreadable.push("sockperf printed no latency statistics (avg-latency, percentiles)".to_owned());
    }
    r
}

/// `sockperf throughput` (one way, no replies: no transactions): its
/// summary line `Summary: BandWidth is X MBps (Y Mbps)`.
fn sockperf_throughput(out: &str) -> Reading {
    let mbps = out.lines().find_map(|l| {
        let rest = l.split("BandWidth is").nth(1)?;
        let inner = rest.split('(').nth(1)?.split_whitespace().next()?;
        inner.parse::<f64>().ok()
    });
    match mbps {
        Some(m) => Reading {
            throughput: Some(WorkloadThroughput {
                from: "sockperf throughput Summary (Mbps)".to_owned(),
                bits_per_second: m * 1e6,
                ..WorkloadThroughput::default()
            }),
            ..Reading::default()
        },
        None => Reading {
            unreadable: vec!["sockperf throughput printed no `Summary: BandWidth is` line".to_owned()],
            ..Reading::default()
        },
    }
}

/// A uperf time as `PRINT_TIME` prints it (uperf's numbers.c,
/// adaptive_print_time): `6.77us`, `1.00ms`, `0.00ns`, `1.20s`.
fn uperf_time_ns(s: &str) -> Option<u64> {
    let (num, mult) = if let Some(n) = s.strip_suffix("ns") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e9)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| (v * mult).round() as u64)
}

/// A uperf size or rate (numbers.c, decimal_to_string): bytes with
/// 1024-based suffixes (`1.15GB`), bits per second with 1000-based ones
/// (`163.31Mb/s`).
fn uperf_quantity(s: &str) -> Option<f64> {
    let (s, base) = match s.strip_suffix("b/s") {
        Some(bits) => (bits, 1000.0_f64),
        None => (s.strip_suffix('B').unwrap_or(s), 1024.0),
    };
    let (num, pow) = match s.chars().last()? {
        c @ ('K' | 'M' | 'G' | 'T' | 'P') => (&s[..s.len() - 1], "KMGTP".find(c)? as i32 + 1),
        _ => (s, 0),
    };
    num.parse::<f64>().ok().map(|v| v * base.powi(pow))
}

/// One row of uperf's transaction table: name, count, avg, max, min.
type UperfTxn = (String, u64, Option<u64>, Option<u64>, Option<u64>);

/// uperf, as its print.c prints a run: the `Total` summary line
/// (`Total  1.15GB / 60.41(s) = 163.31Mb/s 146221op/s`), and with `-a` or
/// `-t` the transaction table (`Txn  Count  avg  cpu  max  min`, one row
/// per transaction of the profile). The busiest transaction is the
/// profile's request/response loop: its count is the transactions, its
/// avg/max/min the time per transaction (a round trip).
fn uperf(out: &str) -> Reading {
    let mut r = Reading::default();
    let lines: Vec<&str> = out.lines().collect();
    if let Some(total) = lines.iter().find(|l| l.trim_start().starts_with("Total") && l.contains("(s)")) {
        // Total SIZE /TIME(s) = RATE OPSop/s
        let (left, right) = total.split_once('=').unwrap_or((total, ""));
        let words: Vec<&str> = left.split_whitespace().collect();
        let bytes = words.get(1).and_then(|w| uperf_quantity(w));
        let seconds = words
            .iter()
            .find_map(|w| w.trim_start_matches('/').strip_suffix("(s)"))
            .and_then(|t| t.parse::<f64>().ok());
        let rate = right.split_whitespace().next().filter(|w| w.ends_with("b/s")).and_then(uperf_quantity);
        if let Some(bps) = rate {
            r.throughput = Some(WorkloadThroughput {
                from: "uperf Total".to_owned(),
                bits_per_second: bps,
                bytes: bytes.map(|b| b as u64),
                bytes_sent: None,
                seconds,
            });
        }
    }
    let header = lines.iter().position(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.first() == Some(&"Txn") && w.get(1) == Some(&"Count")
    });
    let Some(header) = header else {
        r.unreadable.push(
            "uperf printed no transaction table: run it with -a (all statistics) or -t (transaction averages)"
                .to_owned(),
        );
        r.transactions_unreadable = true;
        return r;
    };
    // Rows: NAME COUNT AVG CPU MAX MIN, up to the next empty line.
    let rows: Vec<UperfTxn> = lines[header + 1..]
        .iter()
        .skip_while(|l| l.starts_with('-'))
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let count = w.get(1)?.parse().ok()?;
            let t = |i: usize| w.get(i).and_then(|v| uperf_time_ns(v));
            Some((w[0].to_owned(), count, t(2), t(4), t(5)))
        })
        .collect();
    match rows.iter().max_by_key(|r| r.1) {
        Some((name, count, avg, max, min)) if *count > 0 => {
            r.transactions = Some((*count, format!("uperf {name} count (busiest transaction)")));
            r.latency = Some(WorkloadLatency {
                from: format!("uperf {name} time per transaction (avg, min, max)"),
                round_trip: true,
                mean_ns: *avg,
                min_ns: *min,
                max_ns: *max,
                ..WorkloadLatency::default()
            });
        }
        _ => {
            r.unreadable.push("uperf's transaction table has no row with a count".to_owned());
            r.transactions_unreadable = true;
        }
    }
    r
}

/// netperf's test type (`-t`), TCP_STREAM by default.
fn netperf_test(command: &[String]) -> String {
    let words: Vec<&str> = words(command).collect();
    words
        .iter()
        .position(|w| *w == "-t")
        .and_then(|i| words.get(i + 1))
        .map(|s| (*s).to_owned())
        .or_else(|| words.iter().find_map(|w| w.strip_prefix("-t").filter(|s| !s.is_empty()).map(str::to_owned)))
        .unwrap_or_else(|| "TCP_STREAM".to_owned())
        .to_ascii_uppercase()
}

/// An omni output selector by the name `-o` (CSV) prints in its header,
/// as netperf's omni test names them (e.g. "Mean Latency Microseconds",
/// "50th Percentile Latency Microseconds", "Throughput Units").
fn netperf_selector(header: &str) -> Option<&'static str> {
    let h = header.trim().to_ascii_lowercase();
    Some(match h.as_str() {
        "throughput" => "THROUGHPUT",
        "throughput units" => "THROUGHPUT_UNITS",
        _ if h.starts_with("transaction rate") => "TRANSACTION_RATE",
        _ if h.starts_with("elapsed time") => "ELAPSED_TIME",
        _ if h.starts_with("mean latency") => "MEAN_LATENCY",
        _ if h.starts_with("minimum latency") => "MIN_LATENCY",
        _ if h.starts_with("maximum latency") => "MAX_LATENCY",
        _ if h.starts_with("50th percentile latency") => "P50_LATENCY",
        _ if h.starts_with("90th percentile latency") => "P90_LATENCY",
        _ if h.starts_with("99th percentile latency") => "P99_LATENCY",
        _ if h.starts_with("round trip latency") => "RT_LATENCY",
        _ => return None,
    })
}

/// The values netperf printed by output selector: `-k` prints `NAME=value`
/// lines, `-o` a CSV header of the selectors' names and a line of values.
fn netperf_values(out: &str) -> std::collections::BTreeMap<&'static str, String> {
    const KEYS: [&str; 11] = [
        "THROUGHPUT",
        "THROUGHPUT_UNITS",
        "TRANSACTION_RATE",
        "ELAPSED_TIME",
        "MEAN_LATENCY",
        "MIN_LATENCY",
        "MAX_LATENCY",
        "P50_LATENCY",
        "P90_LATENCY",
        "P99_LATENCY",
        "RT_LATENCY",
    ];
    let mut v = std::collections::BTreeMap::new();
    for line in out.lines() {
        if let Some((k, val)) = line.trim().split_once('=') {
            if let Some(key) = KEYS.iter().find(|x| **x == k.trim()) {
                v.insert(*key, val.trim().to_owned());
            }
        }
    }
    if v.is_empty() {
        let lines: Vec<&str> = out.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let names: Vec<Option<&'static str>> = l.split(',').map(netperf_selector).collect();
            if names.iter().any(Option::is_some) {
                if let Some(values) = lines.get(i + 1) {
                    for (name, val) in names.iter().zip(values.split(',')) {
                        if let Some(name) = name {
                            v.insert(*name, val.trim().to_owned());
                        }
                    }
                }
                break;
            }
        }
    }
    v
}

/// Bits per second from a netperf throughput and its units
/// (`10^6bits/s`, `10^9bits/s`, `2^20Bytes/s`, `bits/s`, `Bytes/s`).
fn netperf_bps(value: f64, units: &str) -> Option<f64> {
    let (scale, rest) = match units.split_once('^') {
        Some((base, rest)) => {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let p: i32 = digits.parse().ok()?;
            (base.parse::<f64>().ok()?.powi(p), &rest[digits.len()..])
        }
        None => (1.0, units),
    };
    match rest {
        "bits/s" => Some(value * scale),
        "Bytes/s" => Some(value * scale * 8.0),
        _ => None,
    }
}

/// netperf with omni output selectors (`-- -k LIST` or `-- -o LIST`), as
/// netperf's manual and doc/omni_output_list.txt describe them: latency
/// selectors in microseconds; for request/response tests (`*_RR`,
/// `*_CRR`) transactions are TRANSACTION_RATE (or a Trans/s THROUGHPUT)
/// times ELAPSED_TIME, for streams THROUGHPUT in THROUGHPUT_UNITS.
fn netperf(command: &[String], out: &str, run_s: f64) -> Reading {
    let test = netperf_test(command);
    let rr = test.ends_with("_RR") || test.ends_with("_CRR");
    let v = netperf_values(out);
    let hint = "add output selectors after `--`, e.g. `-- -k THROUGHPUT,THROUGHPUT_UNITS,TRANSACTION_RATE,\
                ELAPSED_TIME,MEAN_LATENCY,P50_LATENCY,P90_LATENCY,P99_LATENCY`";
    if v.is_empty() {
        let why = format!("netperf {test} printed no -k/-o output selectors netprobe reads: {hint}");
        return if rr { unreadable_transactions(why) } else { Reading { unreadable: vec![why], ..Reading::default() } };
    }
    let num = |k: &str| v.get(k).and_then(|s| s.parse::<f64>().ok());
    let mut r = Reading::default();
    let units = v.get("THROUGHPUT_UNITS").map_or("", String::as_str);
    if rr {
        let rate = num("TRANSACTION_RATE").or_else(|| num("THROUGHPUT").filter(|_| units.starts_with("Trans")));
        match (rate, num("ELAPSED_TIME")) {
            (Some(rate), Some(t)) => {
                r.transactions =
                    Some(((rate * t).round() as u64, format!("netperf {test} TRANSACTION_RATE x ELAPSED_TIME")));
            }
            (Some(rate), None) => {
                r.transactions = Some((
                    (rate * run_s).round() as u64,
                    format!("netperf {test} TRANSACTION_RATE x the run's time (no ELAPSED_TIME selected)"),
                ));
            }
            (None, _) => {
                r.unreadable.push(format!("netperf {test} printed no TRANSACTION_RATE: {hint}"));
                r.transactions_unreadable = true;
            }
        }
        let ns = |k: &str| num(k).map(us_to_ns);
        let lat = WorkloadLatency {
            from: format!("netperf {test} latency selectors (us)"),
            round_trip: true,
            mean_ns: ns("MEAN_LATENCY").or_else(|| ns("RT_LATENCY")),
            min_ns: ns("MIN_LATENCY"),
            p50_ns: ns("P50_LATENCY"),
            p90_ns: ns("P90_LATENCY"),
            p99_ns: ns("P99_LATENCY"),
            p999_ns: None,
            max_ns: ns("MAX_LATENCY"),
        };
        if lat.mean_ns.is_some() || lat.p50_ns.is_some() || lat.p99_ns.is_some() {
            r.latency = Some(lat);
        }
    } else {
        match num("THROUGHPUT").map(|t| (t, netperf_bps(t, units))) {
            Some((_, Some(bps))) => {
                r.throughput = Some(WorkloadThroughput {
                    from: format!("netperf {test} THROUGHPUT ({units})"),
                    bits_per_second: bps,
                    bytes: None,
                    bytes_sent: None,
                    seconds: num("ELAPSED_TIME"),
                });
            }
            Some((t, None)) => {
                r.unreadable.push(format!("netperf THROUGHPUT={t} in units {units:?} netprobe does not know"));
            }
            None => r.unreadable.push(format!("netperf {test} printed no THROUGHPUT: {hint}")),
        }
    }
    r
}

/// iperf3's JSON report (`-J`): `end.sum_received` / `end.sum_sent` (TCP)
/// or `end.sum` (UDP): bytes, seconds, bits_per_second. A stream has no
/// transactions.
fn iperf3(out: &str) -> Reading {
    let mut r = Reading::default();
    let Some(start) = out.find('{') else {
        r.unreadable.push("iperf3's output is not its JSON report: run it with -J".to_owned());
        return r;
    };
    let json: serde_json::Value = match serde_json::from_str(out[start..].trim_end()) {
        Ok(v) => v,
        Err(e) => {
            r.unreadable.push(format!("iperf3's JSON report does not parse ({e}); run it with -J and nothing else"));
            return r;
        }
    };
    let end = &json["end"];
    if let Some(err) = json["error"].as_str() {
        r.unreadable.push(format!("iperf3 reported an error: {err}"));
    }
    let (recv, from) = if end["sum_received"].is_object() {
        (&end["sum_received"], "iperf3 -J end.sum_received")
    } else {
        (&end["sum"], "iperf3 -J end.sum")
    };
    match (recv["bits_per_second"].as_f64(), recv["bytes"].as_u64()) {
        (Some(bps), bytes) => {
            r.throughput = Some(WorkloadThroughput {
                from: from.to_owned(),
                bits_per_second: bps,
                bytes,
                bytes_sent: end["sum_sent"]["bytes"].as_u64(),
                seconds: recv["seconds"].as_f64(),
            });
        }
        (None, _) => r.unreadable.push("iperf3's JSON report has no end.sum_received or end.sum".to_owned()),
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    /// sockperf 3.7's ping-pong summary, as it printed it here (with its
    /// colour sequences).
    const SOCKPERF: &str = "sockperf: Test ended
sockperf: [Total Run] RunTime=1.001 sec; Warm up time=400 msec; SentMessages=77148; ReceivedMessages=77147
sockperf: ========= Printing statistics for Server No: 0
sockperf: [Valid Duration] RunTime=0.548 sec; SentMessages=37192; ReceivedMessages=37192
sockperf: \u{1b}[2;35m====> avg-latency=7.334 (std-dev=78.444)\u{1b}[0m
sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0
sockperf: Summary: Latency is 7.334 usec
sockperf: \u{1b}[2;35mTotal 37192 observations\u{1b}[0m; each percentile contains 371.92 observations
sockperf: ---> <MAX> observation = 7545.104
sockperf: ---> percentile 99.999 = 7545.104
sockperf: ---> percentile 99.990 = 1947.887
sockperf: ---> percentile 99.900 = 1291.956
sockperf: ---> percentile 99.000 =   10.242
sockperf: ---> percentile 90.000 =    4.303
sockperf: ---> percentile 75.000 =    4.077
sockperf: ---> percentile 50.000 =    3.888
sockperf: ---> percentile 25.000 =    3.703
sockperf: ---> <MIN> observation =    3.162
";

    #[test]
    fn sockperf_transactions_and_percentiles() {
        let r = read(&cmd("ip netns exec g sockperf ping-pong -i 198.18.0.2"), SOCKPERF, 1.0).unwrap();
        assert_eq!(r.transactions.as_ref().map(|t| t.0), Some(77147));
        let l = r.latency.unwrap();
        assert!(!l.round_trip, "sockperf reports half the round trip without --full-rtt");
        assert_eq!((l.mean_ns, l.p50_ns, l.p99_ns), (Some(7334), Some(3888), Some(10242)));
        assert_eq!(
            (l.p90_ns, l.p999_ns, l.min_ns, l.max_ns),
            (Some(4303), Some(1_291_956), Some(3162), Some(7_545_104))
        );
        // Three clients in parallel, their outputs one after the other.
        let two = SOCKPERF
            .replace("ReceivedMessages=77147", "ReceivedMessages=22853")
            .replace("avg-latency=7.334", "avg-latency=3.000");
        let three = format!("{SOCKPERF}{two}{SOCKPERF}");
        let r = read(&cmd("sh -c 'sockperf pp -i x & sockperf pp -i x & wait'"), &three, 1.0).unwrap();
        let (n, from) = r.transactions.unwrap();
        assert_eq!(n, 77147 * 2 + 22853);
        assert!(from.contains("summed over 3 clients"), "{from}");
        let l = r.latency.unwrap();
        let mean = (7334.0 * 77147.0 * 2.0 + 3000.0 * 22853.0) / (n as f64);
        assert_eq!(l.mean_ns, Some(mean.round() as u64));
        assert_eq!((l.p50_ns, l.p99_ns, l.min_ns, l.max_ns), (None, None, Some(3162), Some(7_545_104)));
        assert!(l.from.contains("3 clients"), "{}", l.from);
        // Killed before its summary: said so, never zero.
        let cut = read(&cmd("sockperf ping-pong"), "sockperf: Starting test...\n", 1.0).unwrap();
        assert!(cut.transactions.is_none() && cut.transactions_unreadable);
        assert!(cut.unreadable[0].contains("no [Total Run] summary"), "{cut:?}");
        assert!(read(&cmd("iperf3 -c x"), "iperf3: 1.2 Gbits/sec", 1.0).unwrap().transactions.is_none());
        assert!(read(&cmd("ping -c 1 x"), SOCKPERF, 1.0).is_none(), "the tool is named by the command");
        // A throughput test has no transactions, only its bandwidth.
        let tp = "sockperf: Summary: Message Rate is 243455 [msg/sec]\nsockperf: Summary: BandWidth is 3.715 MBps (29.720 Mbps)\n";
        let r = read(&cmd("sockperf throughput -i x -m 16"), tp, 1.0).unwrap();
        assert!(r.transactions.is_none() && !r.transactions_unreadable);
        assert!((r.throughput.unwrap().bits_per_second - 29.72e6).abs() < 1.0);
    }

    /// uperf's output for a request/response profile run with `-a`, in the
    /// layout of uperf's src/print.c (print_summary: `%-6s` name, size,
    /// `/%.2f(s) = `, rate, `%10.0fop/s`; print_txn_averages: the AVG_HDR
    /// columns `Count avg cpu max min`, times by numbers.c's
    /// adaptive_print_time).
    const UPERF: &str = "Starting 4 threads running profile:tcp-rr ...   0.00 seconds
Txn1          0 /   1.00(s) =            0           0op/s
Txn2     1.15GB /  60.41(s) =   163.31Mb/s   146221op/s
Txn3          0 /   0.00(s) =            0           0op/s
-------------------------------------------------------------------------------
Total    1.15GB /  62.51(s) =   158.03Mb/s   141478op/s

Group Details
-------------------------------------------------------------------------------
Group0   1.15GB /  61.51(s) =   160.42Mb/s   143616op/s

Txn                Count         avg         cpu         max         min
-------------------------------------------------------------------------------
Txn0                   4      1.00ms      0.00ns      1.20ms    820.00us
Txn1             4419280     27.31us      0.00ns     12.28ms      4.56us
Txn2                   4     16.23us      0.00ns     16.23us     16.23us

Flowop             Count         avg         cpu         max         min
-------------------------------------------------------------------------------
write            4419280      6.77us      0.00ns      9.28ms      2.03us
";

    #[test]
    fn uperf_transactions_latency_and_throughput() {
        let r = read(&cmd("uperf -m tcp-rr.xml -a"), UPERF, 62.0).unwrap();
        assert_eq!(r.transactions, Some((4_419_280, "uperf Txn1 count (busiest transaction)".to_owned())));
        let l = r.latency.unwrap();
        assert!(l.round_trip);
        assert_eq!((l.mean_ns, l.min_ns, l.max_ns), (Some(27_310), Some(4_560), Some(12_280_000)));
        let t = r.throughput.unwrap();
        assert!((t.bits_per_second - 158.03e6).abs() < 1.0, "{t:?}");
        assert_eq!(t.seconds, Some(62.51));
        assert_eq!(t.bytes, Some((1.15 * 1024.0 * 1024.0 * 1024.0_f64) as u64));
        // Without -a/-t there is no transaction table: said so.
        let head = UPERF.split("\nTxn ").next().unwrap();
        let r = read(&cmd("uperf -m tcp-rr.xml"), head, 62.0).unwrap();
        assert!(r.transactions.is_none() && r.transactions_unreadable && r.throughput.is_some());
        assert!(r.unreadable[0].contains("-a"), "{r:?}");
        assert_eq!(uperf_time_ns("1.20s"), Some(1_200_000_000));
        assert_eq!(uperf_quantity("2.00Kb/s"), Some(2000.0));
    }

    /// netperf -k output, in the form netperf's manual ("Omni Output
    /// Selection") documents: a test banner, then `SELECTOR=value` lines.
    const NETPERF_K: &str = "MIGRATED TCP REQUEST/RESPONSE TEST from 0.0.0.0 (0.0.0.0) port 0 AF_INET to 198.18.0.2 () port 0 AF_INET : first burst 0
THROUGHPUT=2841.07
THROUGHPUT_UNITS=Trans/s
TRANSACTION_RATE=2841.067
ELAPSED_TIME=10.00
P50_LATENCY=334
P90_LATENCY=391
P99_LATENCY=512
RT_LATENCY=351.980
MEAN_LATENCY=351.66
";

    /// netperf -o output: the selectors' names as a CSV header (netperf
    /// prints them as "Throughput", "Throughput Units", "Mean Latency
    /// Microseconds", "50th Percentile Latency Microseconds"...), then the
    /// values.
    const NETPERF_O: &str = "MIGRATED TCP Connect/Request/Response TEST from 0.0.0.0 (0.0.0.0) port 0 AF_INET to 198.18.0.2 () port 0 AF_INET
Throughput,Throughput Units,Elapsed Time (sec),Mean Latency Microseconds,50th Percentile Latency Microseconds,99th Percentile Latency Microseconds
8839.08,Trans/s,20.00,112.72,105,223
";

    #[test]
    fn netperf_selectors_k_and_o() {
        let r = read(&cmd("netperf -H 198.18.0.2 -t TCP_RR -l 10 -- -k THROUGHPUT"), NETPERF_K, 10.2).unwrap();
        assert_eq!(r.transactions.as_ref().map(|t| t.0), Some(28411));
        let l = r.latency.unwrap();
        assert_eq!(
            (l.mean_ns, l.p50_ns, l.p90_ns, l.p99_ns),
            (Some(351_660), Some(334_000), Some(391_000), Some(512_000))
        );
        let r = read(&cmd("netperf -t TCP_CRR -H 198.18.0.2 -- -o THROUGHPUT"), NETPERF_O, 20.1).unwrap();
        assert_eq!(r.transactions.as_ref().map(|t| t.0), Some(176_782));
        assert!(r.transactions.unwrap().1.contains("TCP_CRR"));
        assert_eq!(r.latency.unwrap().p99_ns, Some(223_000));
        // A stream: throughput in its units.
        let stream = "MIGRATED TCP STREAM TEST\nTHROUGHPUT=9412.55\nTHROUGHPUT_UNITS=10^6bits/s\nELAPSED_TIME=10.01\n";
        let r = read(&cmd("netperf -H x -t TCP_STREAM -- -k THROUGHPUT"), stream, 10.0).unwrap();
        assert!((r.throughput.unwrap().bits_per_second - 9412.55e6).abs() < 1.0);
        assert!(r.transactions.is_none() && r.unreadable.is_empty());
        // The classic output without selectors: said so, with the fix.
        let classic = "MIGRATED TCP REQUEST/RESPONSE TEST ...\nLocal /Remote\nSocket Size   Request  Resp.   Elapsed  Trans.\n16384  131072 1        1       10.00    28411.41\n";
        let r = read(&cmd("netperf -t TCP_RR"), classic, 10.0).unwrap();
        assert!(r.transactions.is_none() && r.transactions_unreadable);
        assert!(r.unreadable[0].contains("-k THROUGHPUT"), "{r:?}");
        assert_eq!(netperf_bps(1.0, "2^20Bytes/s"), Some(8.0 * 1_048_576.0));
    }

    #[test]
    fn iperf3_json_and_text() {
        let json = r#"{"start":{},"intervals":[],"end":{"sum_sent":{"seconds":1.0,"bytes":2498232320,"bits_per_second":19984599530.2},"sum_received":{"seconds":1.0001,"bytes":2492071936,"bits_per_second":19934562097.2}}}"#;
        let r = read(&cmd("sh -c iperf3 -c 198.18.0.2 -J | tee f"), json, 1.0).unwrap();
        let t = r.throughput.unwrap();
        assert_eq!((t.bytes, t.bytes_sent), (Some(2_492_071_936), Some(2_498_232_320)));
        assert!(r.transactions.is_none() && !r.transactions_unreadable);
        let r = read(&cmd("iperf3 -c x"), "[  5]   0.00-1.00   sec  2.3 GBytes  19.9 Gbits/sec\n", 1.0).unwrap();
        assert!(r.throughput.is_none() && r.unreadable[0].contains("-J"), "{r:?}");
    }
}
