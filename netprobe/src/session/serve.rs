//! `netprobe serve`: a long-running exporter. It owns the HTTP side only —
//! `/metrics` answers each scrape with the always-on aggregates read and
//! analysed at that moment (encoded by `render::openmetrics`), `/health` (`/healthz`)
//! says whether probes are attached — and keeps the recorder current
//! between scrapes: hops whose module loads later are attached by a
//! periodic rescan. It returns when the stop flag is set (SIGTERM, Ctrl-C),
//! so the caller drops the recorder and every probe is detached.
//!
//! Each connection has a thread of its own: TLS (`--web-config`, see
//! `webconfig`), the request head, basic auth; only an allowed request
//! reaches the one loop that holds the recorder, and one answer is written
//! per connection (`Connection: close`).

use std::{
    io::{self, Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, Result};
use rustls::{ServerConnection, StreamOwned};

use super::{record::Recorder, signals::Stop, webconfig::WebConfig};
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
    /// The exporter-toolkit web configuration (TLS, basic auth), if any.
    pub web_config: Option<PathBuf>,
}

/// This machine's host name, the default `host` label.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned())
}

/// The bound socket and the checked web configuration.
pub struct Listener {
    tcp: TcpListener,
    web: Arc<WebConfig>,
}

/// Reads the web configuration and binds the listening socket (before
/// anything is attached, so a bad configuration or a busy port fails fast).
pub fn listen(opts: &ServeOptions) -> Result<Listener> {
    let web = match &opts.web_config {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::default(),
    };
    let tcp = TcpListener::bind(&opts.listen).map_err(|e| anyhow!("cannot listen on {}: {e}", opts.listen))?;
    Ok(Listener { tcp, web: Arc::new(web) })
}

/// Serves until `stop` is set.
pub fn run(listener: Listener, rec: &mut Recorder, opts: &ServeOptions, stop: &Stop) -> Result<()> {
    crate::say!(
        "netprobe: serving metrics on {}://{}/metrics (health: /health){}; Ctrl-C or SIGTERM stops",
        if listener.web.tls.is_some() { "https" } else { "http" },
        opts.listen,
        if listener.web.auth.is_some() { " with basic auth" } else { "" }
    );
    let (tx, requests) = mpsc::channel();
    std::thread::Builder::new().name("serve-accept".into()).spawn(move || accept(listener, &tx))?;
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
                // A module gone takes its hops (kept: what they measured);
                // one loaded (again) gets them attached.
                super::report_released(&rec.release_gone_modules());
                super::report_rescan(rec.rescan());
                modules = now;
            }
            last_rescan = Instant::now();
        }
        let req = match requests.recv_timeout(Duration::from_millis(200)) {
            Ok(req) => req,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(anyhow!("the listening socket failed")),
        };
        let resp = match req.path.split('?').next().unwrap_or_default() {
            "/metrics" => {
                let text = rec.live().and_then(|a| {
                    openmetrics::encode(
                        &a,
                        &mut Scrape { host: &opts.host, pair_cap: &mut pair_cap, drop_cap: &mut drop_cap },
                    )
                });
                match text {
                    Ok(t) => Response::new(200, t, openmetrics::CONTENT_TYPE),
                    Err(e) => Response::text(500, format!("cannot read the aggregates: {e:#}\n")),
                }
            }
            "/health" | "/healthz" => {
                let hops = rec.hops_attached();
                if hops > 0 {
                    Response::text(200, format!("ok: {hops} hops attached\n"))
                } else {
                    Response::text(503, "no hop attached\n".to_owned())
                }
            }
            "/" => Response::text(200, "netprobe exporter: /metrics (OpenMetrics), /health\n".to_owned()),
            _ => not_found(),
        };
        // A connection that gave up waiting is its own problem.
        let _ = req.reply.send(resp);
    }
    crate::say!("netprobe: stopping; detaching every probe");
    Ok(())
}

/// The loaded kernel modules and their addresses (/proc/modules).
fn loaded_modules() -> std::collections::BTreeMap<String, String> {
    crate::probe::attach::loaded_modules()
}

/// An answer: status, content type, body.
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn new(status: u16, body: String, content_type: &'static str) -> Response {
        Response { status, content_type, body }
    }

    fn text(status: u16, body: String) -> Response {
        Response::new(status, body, "text/plain")
    }
}

fn not_found() -> Response {
    Response::text(404, "not found: try /metrics or /health\n".to_owned())
}

/// A request let through to the loop that holds the recorder.
struct Request {
    path: String,
    reply: mpsc::Sender<Response>,
}

/// Connections served at once; later ones are closed unanswered.
const MAX_CONNECTIONS: usize = 64;
/// A client gets this long for its handshake and request head together
/// (and as long again for any one read or write).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The request head's size limit (a scrape sends a few hundred bytes).
const MAX_HEAD: usize = 16 * 1024;

/// Accepts connections until the process ends, each on a thread of its own.
fn accept(listener: Listener, requests: &mpsc::Sender<Request>) {
    let open = Arc::new(AtomicUsize::new(0));
    for tcp in listener.tcp.incoming() {
        let Ok(tcp) = tcp else {
            // Out of file descriptors, say: let some connections end.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (web, requests, count) = (Arc::clone(&listener.web), requests.clone(), Arc::clone(&open));
        let spawned = std::thread::Builder::new().name("serve-conn".into()).spawn(move || {
            let peer = tcp.peer_addr().map_or_else(|_| "?".to_owned(), |a| a.to_string());
            if let Err(e) = connection(tcp, &web, &requests) {
                // Timeouts and resets are the client's business; a failed
                // handshake (no or a wrong client certificate) is worth a line.
                if e.kind() == io::ErrorKind::InvalidData {
                    crate::say!("netprobe: connection from {peer}: {e}");
                }
            }
            count.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// One connection: TLS if configured, one request, one answer.
fn connection(tcp: TcpStream, web: &WebConfig, requests: &mpsc::Sender<Request>) -> io::Result<()> {
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    let _ = tcp.set_nodelay(true);
    // A client sending a byte now and then must not hold a connection slot.
    let deadline = Instant::now() + IO_TIMEOUT;
    let Some(tls) = &web.tls else {
        let mut tcp = tcp;
        exchange(&mut tcp, web, requests, deadline)?;
        linger(&tcp);
        return Ok(());
    };
    let mut stream = StreamOwned::new(ServerConnection::new(Arc::clone(tls)).map_err(io::Error::other)?, tcp);
    while stream.conn.is_handshaking() {
        past(deadline)?;
        stream.conn.complete_io(&mut stream.sock)?;
    }
    exchange(&mut stream, web, requests, deadline)?;
    stream.conn.send_close_notify();
    stream.conn.complete_io(&mut stream.sock)?;
    linger(&stream.sock);
    Ok(())
}

/// Closes our side and reads what the client still sends (its TLS
/// close_notify...) for a moment: closing a socket with unread bytes sends
/// a reset, which can cut off the answer the client has not read yet.
fn linger(tcp: &TcpStream) {
    let _ = tcp.shutdown(std::net::Shutdown::Write);
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0; 1024];
    let mut tcp = tcp;
    while matches!(tcp.read(&mut buf), Ok(n) if n > 0) {}
}

/// Reads the request head, checks basic auth, has the request answered
/// and writes the answer.
fn exchange(
    stream: &mut (impl Read + Write),
    web: &WebConfig,
    requests: &mpsc::Sender<Request>,
    deadline: Instant,
) -> io::Result<()> {
    let head = read_head(stream, deadline)?;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let (resp, minor, head_only, challenge) = match (req.parse(&head), head.len() > MAX_HEAD) {
        (_, true) => (Response::text(431, "request head too large\n".to_owned()), 1, false, false),
        (Ok(httparse::Status::Complete(_)), false) => {
            let method = req.method.unwrap_or_default();
            let authorization =
                req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("authorization")).map(|h| h.value);
            let minor = req.version.unwrap_or(1);
            let resp = if web.auth.as_ref().is_some_and(|a| !a.allows(authorization)) {
                Response::text(401, "unauthorized\n".to_owned())
            } else if method != "GET" && method != "HEAD" {
                not_found()
            } else {
                let (reply, answer) = mpsc::channel();
                let path = req.path.unwrap_or("/").to_owned();
                match requests.send(Request { path, reply }) {
                    Ok(()) => answer.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| unavailable()),
                    Err(_) => unavailable(),
                }
            };
            let challenge = resp.status == 401;
            (resp, minor, method == "HEAD", challenge)
        }
        _ => (Response::text(400, "bad request\n".to_owned()), 1, false, false),
    };
    let mut out = format!(
        "HTTP/1.{minor} {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    if challenge {
        out.push_str("WWW-Authenticate: Basic realm=\"netprobe\"\r\n");
    }
    for (name, value) in &web.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&resp.body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

fn unavailable() -> Response {
    Response::text(503, "netprobe is stopping\n".to_owned())
}

/// The bytes up to the blank line that ends the head (or a little past
/// MAX_HEAD, or what came before the client stopped sending).
fn read_head(stream: &mut impl Read, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0; 4096];
    while head.len() <= MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        past(deadline)?;
        match stream.read(&mut buf)? {
            0 => break,
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    Ok(head)
}

/// An error once `deadline` has passed.
fn past(deadline: Instant) -> io::Result<()> {
    if Instant::now() > deadline {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "the client took too long"));
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's bytes in, the answer out.
    struct Duplex {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Duplex {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Duplex {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The answer `exchange` writes for `request`; a request let through
    /// is answered "seen PATH".
    fn answer(web: &WebConfig, request: &str) -> String {
        let (tx, rx) = mpsc::channel::<Request>();
        let loop_ = std::thread::spawn(move || {
            for req in rx {
                let _ = req.reply.send(Response::text(200, format!("seen {}", req.path)));
            }
        });
        let mut stream = Duplex { input: io::Cursor::new(request.as_bytes().to_vec()), output: Vec::new() };
        exchange(&mut stream, web, &tx, Instant::now() + IO_TIMEOUT).unwrap();
        drop(tx);
        loop_.join().unwrap();
        String::from_utf8(stream.output).unwrap()
    }

    /// Asserts that `answer` starts with `start`, holds every one of
    /// `parts` and ends with `end`.
    fn check(answer: &str, start: &str, parts: &[&str], end: &str) {
        assert!(answer.starts_with(start) && answer.ends_with(end), "{start:?}...{end:?}: {answer}");
        for part in parts {
            assert!(answer.contains(part), "{part:?} not in: {answer}");
        }
    }

    #[test]
    fn requests_are_answered_once_with_a_length_and_close() {
        let web = WebConfig::default();
        let get = answer(&web, "GET /metrics?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
        check(
            &get,
            "HTTP/1.1 200 OK\r\n",
            &["\r\nContent-Length: 17\r\nConnection: close\r\n"],
            "\r\n\r\nseen /metrics?x=1",
        );
        check(&answer(&web, "HEAD /health HTTP/1.0\r\n\r\n"), "HTTP/1.0 200 OK\r\n", &[], "\r\n\r\n");
        check(&answer(&web, "POST /metrics HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 ", &[], "");
        check(&answer(&web, "\x16\x03\x01 not http\r\n\r\n"), "HTTP/1.1 400 ", &[], "");
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        check(&answer(&web, &huge), "HTTP/1.1 431 ", &[], "");
    }

    #[test]
    fn basic_auth_and_configured_headers_apply_to_every_answer() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let dir = std::env::temp_dir().join(format!("netprobe-serve-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web.yml");
        std::fs::write(
            &path,
            format!("basic_auth_users:\n  u: {hash}\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"),
        )
        .unwrap();
        let web = WebConfig::load(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let nosniff = "\r\nX-Content-Type-Options: nosniff\r\n";
        let denied = answer(&web, "GET /health HTTP/1.1\r\n\r\n");
        check(
            &denied,
            "HTTP/1.1 401 Unauthorized\r\n",
            &["\r\nWWW-Authenticate: Basic realm=\"netprobe\"\r\n", nosniff],
            "",
        );
        // u:pw
        let allowed = answer(&web, "GET /health HTTP/1.1\r\nAuthorization: Basic dTpwdw==\r\n\r\n");
        check(&allowed, "HTTP/1.1 200 OK\r\n", &[nosniff], "seen /health");
        assert!(!allowed.contains("WWW-Authenticate"), "{allowed}");
    }
}
