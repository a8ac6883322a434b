//! `netprobe serve`: a long-running exporter. It owns the HTTP side only —
//! `/metrics` answers each scrape with the always-on aggregates read and
//! analysed at that moment (encoded by `render::openmetrics`), `/health` (`/healthz`)
//! says whether probes are attached — and keeps the recorder current
//! between scrapes: hops whose module loads later are attached by a
//! periodic rescan. It returns when the stop flag is set (SIGTERM, Ctrl-C),
//! so the caller drops the recorder and every probe is detached.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use tiny_http::{Header, Method, Request, Response, Server};

use super::{record::Recorder, signals::Stop};
use crate::render::openmetrics::{self, Scrape, SeriesCap};

pub struct ServeOptions {
    /// Address to listen on, e.g. `127.0.0.1:9464`.
    pub listen: String,
    /// The `host` label of every series.
    pub host: String,
    /// Series per family before the rest is folded into `other`.
    pub max_series: usize,
    /// How often to look at the loaded modules; hops are looked for again
    /// when they changed (openvswitch, qeth... loaded).
    pub rescan_every: Duration,
}

/// This machine's host name, the default `host` label.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned())
}

/// Binds the listening socket (before anything is attached, so a busy
/// port fails fast).
pub fn listen(opts: &ServeOptions) -> Result<Server> {
    Server::http(&opts.listen).map_err(|e| anyhow!("cannot listen on {}: {e}", opts.listen))
}

/// Serves until `stop` is set.
pub fn run(server: &Server, rec: &mut Recorder, opts: &ServeOptions, stop: &Stop) -> Result<()> {
    crate::say!(
        "netprobe: serving metrics on http://{}/metrics (health: /health); Ctrl-C or SIGTERM stops",
        opts.listen
    );
    let mut pair_cap = SeriesCap::new(opts.max_series);
    let mut drop_cap = SeriesCap::new(opts.max_series);
    let mut last_rescan = Instant::now();
    let mut last_maintain = Instant::now();
    let mut modules = loaded_modules();
    while !stop.is_set() {
        // Pairs of devices gone (guests stopped) leave the kernel map.
        if last_maintain.elapsed() >= Duration::from_secs(5) {
            if let Err(e) = rec.maintain() {
                crate::say!("netprobe: {e:#}");
            }
            last_maintain = Instant::now();
        }
        // A rescan re-reads kallsyms and BTF (~0.4 s of CPU here): only
        // when the set of loaded modules changed.
        if last_rescan.elapsed() >= opts.rescan_every {
            let now = loaded_modules();
            if now != modules {
                super::report_rescan(rec.rescan());
                modules = now;
            }
            last_rescan = Instant::now();
        }
        let Some(req) = server.recv_timeout(Duration::from_millis(200))? else { continue };
        let resp = match (req.method(), req.url().split('?').next().unwrap_or_default()) {
            (Method::Get | Method::Head, "/metrics") => {
                let text = rec.live().and_then(|a| {
                    openmetrics::encode(
                        &a,
                        &mut Scrape { host: &opts.host, pair_cap: &mut pair_cap, drop_cap: &mut drop_cap },
                    )
                });
                match text {
                    Ok(t) => text_response(200, t, openmetrics::CONTENT_TYPE),
                    Err(e) => text_response(500, format!("cannot read the aggregates: {e:#}\n"), "text/plain"),
                }
            }
            (Method::Get | Method::Head, "/health" | "/healthz") => {
                let hops = rec.hops_attached();
                if hops > 0 {
                    text_response(200, format!("ok: {hops} hops attached\n"), "text/plain")
                } else {
                    text_response(503, "no hop attached\n".to_owned(), "text/plain")
                }
            }
            (Method::Get | Method::Head, "/") => {
                text_response(200, "netprobe exporter: /metrics (OpenMetrics), /health\n".to_owned(), "text/plain")
            }
            _ => text_response(404, "not found: try /metrics or /health\n".to_owned(), "text/plain"),
        };
        respond(req, resp);
    }
    crate::say!("netprobe: stopping; detaching every probe");
    Ok(())
}

/// Names of the loaded kernel modules (/proc/modules).
fn loaded_modules() -> std::collections::BTreeSet<String> {
    std::fs::read_to_string("/proc/modules")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn text_response(status: u16, body: String, content_type: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    let header = Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()).expect("valid header");
    Response::from_string(body).with_status_code(status).with_header(header)
}

/// A client that went away is its own problem, not the exporter's.
fn respond(req: Request, resp: Response<std::io::Cursor<Vec<u8>>>) {
    if let Err(e) = req.respond(resp) {
        crate::say!("netprobe: answering a request failed: {e}");
    }
}
