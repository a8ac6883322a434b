//! The live consumers end to end, in front of the demo MacVTap topology
//! under real traffic: `netprobe serve` scraped directly and by Debian's
//! Prometheus server (queried for a hop's p99 and packet rate through its
//! HTTP API), and `netprobe top` driven in tmux. Every process started here
//! is ended by a guard, also when an assertion fails.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use netprobe_testbed::topology::Topology;
use netprobe_tests::{netprobe_bin, program_ids_of, require_root, still_loaded};
use serde_json::Value;

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A plain HTTP/1.0 GET on loopback: (status, content type, body).
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (status, head, body) = split_response(&raw);
    let ctype = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.trim()))
        .unwrap_or_default()
        .to_owned();
    Ok((status, ctype, body))
}

/// An HTTP response: (status, head, body).
fn split_response(raw: &str) -> (u16, String, String) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// Percent-encoding for a query parameter.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn sigterm(child: &Child) {
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

/// Waits up to `limit` for the child to exit.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// A running `netprobe serve`: SIGTERM (then SIGKILL) on drop.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    fn start(t: &Topology) -> Serve {
        Serve::start_with(t, &[], |addr| http_get(addr, "/health").ok().map(|(status, _, body)| (status, body)))
    }

    /// Starts it with `args` added and waits until `health(addr)` (status
    /// and body of /health) says ok.
    fn start_with(t: &Topology, args: &[&str], health: impl Fn(&str) -> Option<(u16, String)>) -> Serve {
        let addr = format!("127.0.0.1:{}", free_port());
        let ifaces = t.ifaces();
        let child = Command::new(netprobe_bin())
            .args(["serve", "--listen", &addr, "--host", "testhost", "--max-series", "50"])
            .args(["--iface", &ifaces[0], "--iface", &ifaces[1], "--softirq-vectors"])
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("start netprobe serve");
        let mut s = Serve { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, body)) = health(&s.addr) {
                assert!(body.starts_with("ok"), "{body}");
                break;
            }
            assert!(s.child.try_wait().unwrap().is_none(), "netprobe serve exited before serving");
            assert!(Instant::now() < deadline, "netprobe serve did not answer /health in 30 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        s
    }

    /// SIGTERM must end it cleanly, with every probe detached.
    fn stop(mut self) {
        let ids = program_ids_of(self.child.id());
        assert!(ids.len() >= 7, "serve holds {} programs, expected the tracepoint hops at least", ids.len());
        sigterm(&self.child);
        let st = wait_exit(&mut self.child, Duration::from_secs(15)).expect("netprobe serve ignored SIGTERM");
        assert!(st.success(), "netprobe serve exited with {st}");
        let left = still_loaded(&ids);
        assert!(left.is_empty(), "programs of netprobe serve still loaded after it ended: {left:?}");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            sigterm(&self.child);
            if wait_exit(&mut self.child, Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// The label selector of the demo's guest-side hop pair queue@m -> xmit@m.
fn macvtap_pair(m: &str) -> String {
    format!(r#"direction="to-wire",path="generic",from_hop="queue",from_dev="{m}",to_hop="xmit",to_dev="{m}""#)
}

/// Value of the exposition line `name{host="testhost",labels}`.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{host=\"testhost\",{labels}}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.parse().unwrap())
}

#[test]
fn serve_exports_hop_histograms_and_counters() {
    if !require_root("serve_exports_hop_histograms_and_counters") {
        return;
    }
    let t = Topology::create().unwrap();
    let serve = Serve::start(&t);
    assert_eq!(t.ping(30, "0.02").unwrap(), 30, "ping through the demo topology failed");
    std::thread::sleep(Duration::from_millis(300));

    let (status, ctype, text) = http_get(&serve.addr, "/metrics").unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    let pair = macvtap_pair(&t.macvtap);
    let packets = sample(&text, "netprobe_hop_packets_total", &pair)
        .unwrap_or_else(|| panic!("no packet counter for {pair} in:\n{text}"));
    assert!(packets >= 30.0, "{packets} packets for queue -> xmit on the macvtap, sent 30 pings");
    // The histogram: cumulative, ending at +Inf = _count = packets; every
    // packet took less than a second.
    let count = sample(&text, "netprobe_hop_latency_seconds_count", &pair).unwrap();
    assert_eq!(count, packets);
    let buckets: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("netprobe_hop_latency_seconds_bucket{host=\"testhost\",le=\""))
        .filter_map(|l| l.split_once("\",").map(|(le, rest)| (le.to_owned(), rest)))
        .filter(|(_, rest)| rest.starts_with(&format!("{pair}}} ")))
        .map(|(le, rest)| (le, rest.rsplit(' ').next().unwrap().parse().unwrap()))
        .collect();
    assert!(buckets.len() > 10, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "buckets not cumulative: {buckets:?}");
    assert_eq!(buckets.last().unwrap(), &("+Inf".to_owned(), count));
    let under_1s = buckets.iter().find(|(le, _)| le == "1.073741824").unwrap().1;
    assert_eq!(under_1s, count, "a hop latency of a second or more: {buckets:?}");
    assert!(buckets[0].1 < count, "every packet under 128 ns is not plausible: {buckets:?}");
    let sum = sample(&text, "netprobe_hop_latency_seconds_sum", &pair).unwrap();
    assert!(sum > 0.0 && sum / count < 1e-3, "mean {} s", sum / count);
    // Accounting and CPU.
    let followed = sample(&text, "netprobe_tracking_total", r#"counter="track_started""#).unwrap();
    assert!(followed >= packets, "{followed}");
    assert_eq!(sample(&text, "netprobe_tracking_total", r#"counter="pair_lost""#), Some(0.0));
    assert!(sample(&text, "netprobe_softirq_seconds_total", r#"softirq="net_rx""#).unwrap() > 0.0);
    assert!(text.contains("netprobe_cpu_seconds_total{host=\"testhost\",role="), "no CPU by role");

    // Counters only grow between scrapes; other paths answer sensibly.
    assert_eq!(t.ping(5, "0.02").unwrap(), 5);
    let (_, _, again) = http_get(&serve.addr, "/metrics").unwrap();
    let later = sample(&again, "netprobe_hop_packets_total", &pair).unwrap();
    assert!(later >= packets + 5.0, "{later} after {packets} + 5 pings");
    let (status, _, body) = http_get(&serve.addr, "/healthz").unwrap();
    assert!(status == 200 && body.contains("hops attached"), "{status} {body}");
    assert_eq!(http_get(&serve.addr, "/nothing").unwrap().0, 404);

    // The guest, its macvtap and the uplink go away: the exporter keeps
    // serving, and the counters it exported stay (they never go back).
    drop(t);
    std::thread::sleep(Duration::from_millis(300));
    let (status, _, after) = http_get(&serve.addr, "/metrics").unwrap();
    assert_eq!(status, 200, "{after}");
    // (Not equal: the devices' own IPv6/ARP chatter may still have passed
    // between the two scrapes.)
    let kept = sample(&after, "netprobe_hop_packets_total", &pair).unwrap_or(0.0);
    assert!(kept >= later, "counter went back from {later} to {kept} after the devices vanished: {after}");
    assert_eq!(http_get(&serve.addr, "/health").unwrap().0, 200);
    serve.stop();
}

/// Debian's Prometheus on a loopback port with its own storage directory,
/// scraping one target every second; killed and its directory removed on
/// drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl Prometheus {
    /// `job` is added to the scrape job's configuration (YAML lines
    /// indented by four spaces).
    fn start(target: &str, job: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("netprobe-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: netprobe\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: ['{target}']\n{job}"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's prometheus package; cargo xtask test installs it)");
        let p = Prometheus { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(http_get(&p.addr, "/-/ready"), Ok((200, _, _))) {
            assert!(Instant::now() < deadline, "prometheus not ready in 30 s: {}", p.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Waits until the target is up (Prometheus applies new targets a few
    /// seconds after it is ready).
    fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.query("up{job=\"netprobe\"}") != Some(1.0) {
            assert!(Instant::now() < deadline, "Prometheus never scraped netprobe serve: {}", self.log());
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The value of an instant query's single result, if it has one.
    fn query(&self, promql: &str) -> Option<f64> {
        let (status, _, body) = http_get(&self.addr, &format!("/api/v1/query?query={}", urlencode(promql))).ok()?;
        assert_eq!(status, 200, "{promql}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{promql}: {body}");
        let result = v["data"]["result"].as_array()?;
        assert!(result.len() <= 1, "{promql}: more than one series: {body}");
        result.first()?["value"][1].as_str()?.parse().ok().filter(|x: &f64| x.is_finite())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn prometheus_scrapes_a_hop_p99_and_packet_rate() {
    if !require_root("prometheus_scrapes_a_hop_p99_and_packet_rate") {
        return;
    }
    let t = Topology::create().unwrap();
    let serve = Serve::start(&t);
    let prom = Prometheus::start(&serve.addr, "");
    prom.wait_up();
    let sel = format!("{{job=\"netprobe\",host=\"testhost\",{}}}", macvtap_pair(&t.macvtap));
    let p99_query =
        format!("histogram_quantile(0.99, sum by (le) (rate(netprobe_hop_latency_seconds_bucket{sel}[5s])))");
    let rate_query = format!("sum(rate(netprobe_hop_packets_total{sel}[5s]))");
    let (mut p99, mut rate) = (None, None);
    std::thread::scope(|s| {
        // 20 echo requests a second for 15 s: the guest's frames through the macvtap.
        let traffic = s.spawn(|| t.ping(300, "0.05"));
        // Past the first 8 s, the 5 s window holds traffic only.
        let (start, deadline) = (Instant::now(), Instant::now() + Duration::from_secs(14));
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(1));
            (p99, rate) = (prom.query(&p99_query), prom.query(&rate_query));
            if start.elapsed() > Duration::from_secs(8) && p99.is_some() && rate.is_some_and(|r| r > 10.0) {
                break;
            }
        }
        assert_eq!(prom.query("up{job=\"netprobe\"}"), Some(1.0), "scrape target down: {}", prom.log());
        let replies = traffic.join().unwrap().unwrap();
        assert!(replies >= 290, "{replies}/300 ping replies");
    });
    let p99 = p99.unwrap_or_else(|| panic!("no p99 from Prometheus for {p99_query}; log: {}", prom.log()));
    let rate = rate.unwrap_or_else(|| panic!("no rate from Prometheus for {rate_query}"));
    eprintln!("Prometheus: queue -> xmit on the macvtap: p99 {:.3} us, {rate:.1} packets/s", p99 * 1e6);
    assert!(p99 > 0.0 && p99 < 1.0, "p99 {p99} s is not plausible");
    // 20 pings a second (plus the odd ARP frame).
    assert!((10.0..40.0).contains(&rate), "rate {rate}/s for 20 pings a second");
    drop(prom);
    serve.stop();
    drop(t);
}

/// A throwaway PKI made with Debian's openssl in a directory of its own
/// (removed on drop): a CA, a server certificate for 127.0.0.1 and two
/// client certificates it signed (scraper.netprobe.test and another name),
/// and a client certificate from another CA.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("netprobe-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki { dir };
        for ca in ["ca", "other-ca"] {
            pki.openssl(&["req", "-x509", "-days", "1", "-keyout", &format!("{ca}.key"), "-out", &format!("{ca}.pem")]);
        }
        pki.leaf("server", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
        pki.leaf("client", "ca", "subjectAltName=DNS:scraper.netprobe.test\nextendedKeyUsage=clientAuth\n");
        pki.leaf("unnamed", "ca", "subjectAltName=DNS:other.netprobe.test\nextendedKeyUsage=clientAuth\n");
        pki.leaf("stranger", "other-ca", "extendedKeyUsage=clientAuth\n");
        pki
    }

    /// `openssl` in the PKI's directory; new keys are P-256 without a passphrase.
    fn openssl(&self, args: &[&str]) {
        let mut cmd = Command::new("openssl");
        cmd.args(args).current_dir(&self.dir);
        if args[0] == "req" {
            let cn = format!("/CN=netprobe test {}", args.last().unwrap());
            cmd.args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", &cn]);
        }
        let out = cmd.output().expect("openssl (Debian's openssl package; cargo xtask test installs it)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// NAME.pem and NAME.key, signed by CA, with the extensions `ext`.
    fn leaf(&self, name: &str, ca: &str, ext: &str) {
        std::fs::write(self.dir.join(format!("{name}.ext")), ext).unwrap();
        self.openssl(&["req", "-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr")]);
        self.openssl(&[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// curl over TLS (the server checked against the CA), with `args`
    /// added: Ok((status, head, body)) or Err(curl's complaint).
    fn curl(&self, addr: &str, path: &str, args: &[String]) -> Result<(u16, String, String), String> {
        let out = Command::new("curl")
            .args(["-sS", "-i", "--max-time", "10", "--cacert", &self.path("ca.pem")])
            .args(args)
            .arg(format!("https://{addr}{path}"))
            .output()
            .expect("curl (Debian's curl package; cargo xtask test installs it)");
        if !out.status.success() {
            return Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(split_response(&String::from_utf8_lossy(&out.stdout)))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn prometheus_scrapes_over_tls_with_a_client_certificate_and_basic_auth() {
    if !require_root("prometheus_scrapes_over_tls_with_a_client_certificate_and_basic_auth") {
        return;
    }
    let pki = Pki::new();
    let hash = bcrypt::hash("scrape-secret", 4).unwrap();
    // Relative names: taken from the configuration file's directory.
    std::fs::write(
        pki.dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n  curve_preferences: [X25519, CurveP256]\n  client_allowed_sans: [scraper.netprobe.test]\nbasic_auth_users:\n  prometheus: {hash}\n"
        ),
    )
    .unwrap();
    let owned = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    let cert = owned(&["--cert", &pki.path("client.pem"), "--key", &pki.path("client.key")]);
    let good = [cert.clone(), owned(&["-u", "prometheus:scrape-secret"])].concat();
    let wrong = [cert.clone(), owned(&["-u", "prometheus:not-it"])].concat();

    let t = Topology::create().unwrap();
    let serve = Serve::start_with(&t, &["--web-config", &pki.path("web.yml")], |addr| {
        pki.curl(addr, "/health", &good).ok().map(|(status, _, body)| (status, body))
    });

    // The right certificate and password: the metrics.
    let (status, _, text) = pki.curl(&serve.addr, "/metrics", &good).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("netprobe_hops_attached{host=\"testhost\"}"), "{text}");
    // TLS 1.2 with the one suite the config allows.
    let tls12 = [good.clone(), owned(&["--tls-max", "1.2"])].concat();
    assert_eq!(pki.curl(&serve.addr, "/health", &tls12).unwrap().0, 200);
    let other_suite = [tls12, owned(&["--ciphers", "ECDHE-ECDSA-AES256-GCM-SHA384"])].concat();
    assert!(pki.curl(&serve.addr, "/health", &other_suite).is_err(), "a TLS 1.2 suite outside cipher_suites");
    // The right certificate, no credentials or a wrong password: 401 with
    // a Basic challenge.
    let (status, head, _) = pki.curl(&serve.addr, "/metrics", &cert).unwrap();
    assert_eq!(status, 401, "{head}");
    assert!(head.to_ascii_lowercase().contains("\r\nwww-authenticate: basic"), "{head}");
    eprintln!("no credentials: {}", head.lines().next().unwrap());
    let (status, head, _) = pki.curl(&serve.addr, "/metrics", &wrong).unwrap();
    assert_eq!(status, 401, "{head}");
    eprintln!("wrong password: {}", head.lines().next().unwrap());
    // No client certificate, or one another CA signed: no HTTP at all.
    let no_cert = pki.curl(&serve.addr, "/metrics", &owned(&["-u", "prometheus:scrape-secret"]));
    let err = no_cert.expect_err("a client without a certificate was answered");
    eprintln!("no client certificate: {err}");
    let stranger = owned(&["--cert", &pki.path("stranger.pem"), "--key", &pki.path("stranger.key")]);
    let err = pki.curl(&serve.addr, "/metrics", &stranger).expect_err("a certificate of another CA was accepted");
    eprintln!("client certificate of another CA: {err}");
    let unnamed = owned(&["--cert", &pki.path("unnamed.pem"), "--key", &pki.path("unnamed.key")]);
    let err = pki.curl(&serve.addr, "/metrics", &unnamed).expect_err("a name outside client_allowed_sans was accepted");
    eprintln!("client certificate of the CA for a name not allowed: {err}");
    // Plain HTTP gets no answer either.
    assert!(!matches!(http_get(&serve.addr, "/health"), Ok((200, _, _))), "plain HTTP answered");

    // Prometheus scrapes it as a fleet's Prometheus would.
    let job = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n    basic_auth:\n      username: prometheus\n      password: scrape-secret\n",
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key")
    );
    let prom = Prometheus::start(&serve.addr, &job);
    prom.wait_up();
    let hops = prom.query("netprobe_hops_attached{job=\"netprobe\",host=\"testhost\"}");
    assert!(hops.is_some_and(|h| h >= 7.0), "netprobe_hops_attached {hops:?}: {}", prom.log());
    eprintln!("Prometheus over TLS: up 1, netprobe_hops_attached {}", hops.unwrap());
    drop(prom);
    // A renewed certificate (here from the other CA) is served without a
    // restart.
    pki.leaf("renewed", "other-ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    for ext in ["key", "pem"] {
        std::fs::rename(pki.dir.join(format!("renewed.{ext}")), pki.dir.join(format!("server.{ext}"))).unwrap();
    }
    let trust_other = [good.clone(), owned(&["--cacert", &pki.path("other-ca.pem")])].concat();
    let renewed = pki.curl(&serve.addr, "/health", &trust_other);
    assert_eq!(renewed.as_ref().map(|r| r.0), Ok(200), "the renewed certificate is not served: {renewed:?}");
    assert!(pki.curl(&serve.addr, "/health", &good).is_err(), "the old certificate is still served");
    serve.stop();
    drop(t);
}

#[test]
fn serve_with_a_bad_web_config_fails_before_attaching() {
    let dir = std::env::temp_dir().join(format!("netprobe-bad-web-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("web.yml");
    for (text, field) in [
        ("tls_server_config:\n  cert_file: server.pem\n  key_fil: server.key\n", "key_fil"),
        ("tls_server_config:\n  cert_file: nowhere.pem\n  key_file: server.key\n", "tls_server_config.cert_file"),
        ("basic_auth_users:\n  alice: hunter2\n", "basic_auth_users.alice"),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = Command::new(netprobe_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--web-config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&config.display().to_string()) && err.contains(field), "{field}: {err}");
        assert!(!err.contains("serving metrics"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tmux session on its own server socket, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").args(["-L", &self.socket]).args(args).output().expect("tmux (Debian's tmux package)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    fn pane(&self, format: &str) -> String {
        String::from_utf8_lossy(&self.cmd(&["display-message", "-p", "-t", "top", format]).stdout).trim().to_owned()
    }

    /// `netprobe top ARGS` in a fresh 160x40 session; waits for its screen.
    fn start_top(socket: &str, args: &[String]) -> Tmux {
        let args: Vec<String> = std::iter::once("top".to_owned()).chain(args.iter().cloned()).collect();
        Tmux::start_netprobe(socket, &args, "netprobe top on")
    }

    /// `netprobe ARGS` in a fresh 160x40 session; waits for `ready` on
    /// its screen.
    fn start_netprobe(socket: &str, args: &[String], ready: &str) -> Tmux {
        let tm = Tmux { socket: socket.to_owned() };
        let cmd = std::iter::once(netprobe_bin().display().to_string())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        // The shell prints netprobe's exit status and stays, so the pane
        // shows what netprobe left on the terminal (tmux's remain-on-exit
        // resets the pane and may lose the last output).
        let cmd = format!("{cmd}; echo \"{EXITED}$?\"; sleep 600");
        let out = tm.cmd(&["new-session", "-d", "-s", "top", "-x", "160", "-y", "40", &cmd]);
        assert!(out.status.success(), "tmux: {}", String::from_utf8_lossy(&out.stderr));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !tm.screen().contains(ready) {
            assert!(Instant::now() < deadline, "netprobe did not show {ready:?}: {}", tm.screen());
            std::thread::sleep(Duration::from_millis(200));
        }
        tm
    }

    /// The BPF programs the netprobe in the pane holds (the pane's process,
    /// or its child when a shell runs it).
    fn top_programs(&self) -> Vec<u32> {
        let pane: u32 = self.pane("#{pane_pid}").parse().unwrap();
        let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let pid = if comm(pane).trim() == "netprobe" {
            pane
        } else {
            std::fs::read_to_string(format!("/proc/{pane}/task/{pane}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .find(|&p| comm(p).trim() == "netprobe")
                .unwrap_or_else(|| panic!("no netprobe under the pane's process {pane}"))
        };
        program_ids_of(pid)
    }

    /// Sends `key` and waits for netprobe to exit; returns its status.
    fn quit_with(&self, key: &str) -> String {
        let ids = self.top_programs();
        assert!(ids.len() >= 7, "top holds {} programs, expected the tracepoint hops at least", ids.len());
        self.cmd(&["send-keys", "-t", "top", key]);
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            let screen = self.screen();
            if let Some(st) = screen.lines().find_map(|l| l.strip_prefix(EXITED)) {
                break st.trim().to_owned();
            }
            assert!(Instant::now() < deadline, "top did not exit on {key}: screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(self.pane("#{alternate_on}"), "0", "terminal left in the alternate screen");
        let left = still_loaded(&ids);
        assert!(left.is_empty(), "programs of netprobe top still loaded after it quit: {left:?}");
        status
    }
}

/// What the pane's shell prints after netprobe exits, before its status.
const EXITED: &str = "netprobe exited with status ";

impl Drop for Tmux {
    fn drop(&mut self) {
        self.cmd(&["kill-server"]);
    }
}

#[test]
fn top_shows_hop_rows_and_quits_cleanly() {
    if !require_root("top_shows_hop_rows_and_quits_cleanly") {
        return;
    }
    let t = Topology::create().unwrap();
    let ifaces = t.ifaces();
    let args: Vec<String> = ["--iface", &ifaces[0], "--iface", &ifaces[1]].iter().map(|s| s.to_string()).collect();
    let socket = format!("netprobe-test-{}", std::process::id());
    let tm = Tmux::start_top(&format!("{socket}-q"), &args);
    let row = format!("queue@{m} -> xmit@{m}", m = t.macvtap);
    let mut screen = String::new();
    std::thread::scope(|s| {
        let traffic = s.spawn(|| t.ping(100, "0.05"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            screen = tm.screen();
            if screen.contains(&row) {
                break;
            }
        }
        traffic.join().unwrap().unwrap();
    });
    eprintln!("netprobe top under ping:\n{screen}");
    assert!(screen.contains(&row), "no row {row} on the screen:\n{screen}");
    let line = screen.lines().find(|l| l.contains(&row)).unwrap();
    let rate: f64 = line.split_whitespace().nth(4).and_then(|r| r.parse().ok()).unwrap_or(0.0);
    assert!(rate > 0.0 && rate < 1000.0, "rate {rate} in {line:?}");
    assert!(screen.contains("to-guest"), "no to-guest rows:\n{screen}");
    assert!(screen.contains("CPU (% of one CPU)"), "no CPU line:\n{screen}");
    assert_eq!(tm.quit_with("q"), "0", "top exit status after q");
    drop(tm);

    // Ctrl-C quits as cleanly.
    let tm = Tmux::start_top(&format!("{socket}-c"), &args);
    assert_eq!(tm.quit_with("C-c"), "0", "top exit status after Ctrl-C");
    drop(tm);
    drop(t);
}

/// The SSH session or terminal window closes under `top`: it must notice
/// (hang-up, end of input), detach everything and exit at once, not spin
/// on a dead terminal.
#[test]
fn top_exits_when_its_terminal_goes_away() {
    if !require_root("top_exits_when_its_terminal_goes_away") {
        return;
    }
    let tm = Tmux::start_top(&format!("netprobe-test-{}-gone", std::process::id()), &[]);
    kill_terminal_and_wait_for_exit(tm);
}

/// The same under `record -o FILE`: the hang-up ends the recording as
/// Ctrl-C would, and the file is written whole.
#[test]
fn record_writes_its_file_when_its_terminal_goes_away() {
    if !require_root("record_writes_its_file_when_its_terminal_goes_away") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("netprobe-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("run.rec");
    let args: Vec<String> = ["record", "-o", file.to_str().unwrap()].iter().map(|s| s.to_string()).collect();
    let tm = Tmux::start_netprobe(&format!("netprobe-test-{}-rec", std::process::id()), &args, "packets followed");
    kill_terminal_and_wait_for_exit(tm);
    let out = Command::new(netprobe_bin()).args(["report", "--format", "json"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "no whole recording after the hang-up: {}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["interrupted"], true, "the hang-up ended the recording");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Kills the tmux server (the pane's terminal hangs up), then checks that
/// the netprobe in it exits within 2 s without burning CPU and leaves no
/// program loaded.
fn kill_terminal_and_wait_for_exit(tm: Tmux) {
    let ids = tm.top_programs();
    assert!(ids.len() >= 7, "netprobe holds {} programs", ids.len());
    let pid = netprobe_pid_with(&ids);
    // CPU ticks of a running process; None once it has exited (a zombie
    // waiting for its new parent to reap it has exited too).
    let cpu_ticks = |pid: u32| -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        if f.first() == Some(&"Z") {
            return None;
        }
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    };
    let before = cpu_ticks(pid).unwrap();
    let killed = Instant::now();
    drop(tm);
    let mut last = before;
    while let Some(t) = cpu_ticks(pid) {
        last = t;
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "netprobe (pid {pid}) still running {:?} after its terminal went away, {} CPU ticks since",
            killed.elapsed(),
            t - before
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("netprobe exited {:?} after its terminal went away", killed.elapsed());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    assert!((last - before) * 1000 / hz < 500, "netprobe burnt {} ticks while its terminal was gone", last - before);
    // (still_loaded waits out the kernel's grace period.)
    let left = still_loaded(&ids);
    assert!(left.is_empty(), "programs still loaded after netprobe's terminal went away: {left:?}");
}

/// The netprobe process that holds BPF program `ids[0]`.
fn netprobe_pid_with(ids: &[u32]) -> u32 {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "netprobe"))
        .find(|&p| program_ids_of(p).contains(&ids[0]))
        .expect("the netprobe process of the pane")
}

#[test]
fn serve_on_a_busy_port_fails_before_attaching() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = Command::new(netprobe_bin()).args(["serve", "--listen", &addr]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(!err.contains("serving metrics"), "{err}");
}
