//! The packages `cargo xtask package` makes (target/package/, or
//! NETPROBE_PACKAGE_DIR): the x86_64 .deb installed with dpkg into a fresh
//! Debian root (debootstrap --variant=minbase of this host's release,
//! plus systemd, cached as a tarball under ~/.cache/netprobe), where the packaged
//! netprobe proves its probes on this kernel and serves /metrics with the
//! unit's own command line and shipped defaults (localhost only), then is
//! purged; the installed unit checked by `systemd-analyze verify` and
//! rated by `systemd-analyze security`; the .rpms read back
//! with `rpm -qpl` and `rpm -qp --requires`; the s390x packages' architecture
//! fields and binaries.
//!
//! Everything runs in namespaces the test makes: `unshare --mount --net`
//! holds the chroot's /proc and /sys mounts and its network, so both are
//! gone when its process ends, whatever the test does.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use netprobe_tests::{netprobe_bin, require_root, require_tool};
use serde_json::Value;

fn package_dir() -> PathBuf {
    std::env::var_os("NETPROBE_PACKAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/package"))
}

/// The package of `arch` with this extension (`deb`, `rpm`), if made.
fn package(ext: &str, arch: &str) -> Option<PathBuf> {
    let suffix = match ext {
        "deb" => format!("_{arch}.deb"),
        _ => format!(".{arch}.rpm"),
    };
    std::fs::read_dir(package_dir()).ok()?.flatten().map(|e| e.path()).find(|p| {
        let name = p.file_name().unwrap().to_string_lossy();
        name.starts_with("netprobe") && name.ends_with(&suffix)
    })
}

fn require_package(ext: &str, arch: &str) -> Option<PathBuf> {
    let p = package(ext, arch);
    let what = format!("the {arch} .{ext} in {} (cargo xtask package)", package_dir().display());
    require_tool(p.is_some(), &what).then(|| p.unwrap())
}

fn tool(name: &str) -> bool {
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin"].iter().any(|d| Path::new(d).join(name).exists())
}

/// Runs `cmd`, asserts it succeeded; returns its standard output.
fn out(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
        .join("netprobe")
}

/// This host's Debian release: the packaged binary links against its C
/// library, so a root of the same release can run it.
fn codename() -> String {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    os.lines().find_map(|l| l.strip_prefix("VERSION_CODENAME=")).map_or("bookworm", |v| v.trim_matches('"')).to_owned()
}

/// The bootstrapped minimal Debian root (with systemd) as a tarball, made once with
/// debootstrap from Debian's archive and cached.
fn debian_root_tarball() -> PathBuf {
    let tar = cache_dir().join(format!("debian-{}-minbase-systemd-amd64.tar", codename()));
    if tar.exists() {
        return tar;
    }
    let started = Instant::now();
    let work = cache_dir().join(format!("debootstrap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    out(Command::new("debootstrap")
        // systemd: the units `systemd-analyze verify --root` resolves the
        // unit's dependencies against, as on a host that runs it.
        .args(["--variant=minbase", "--include=systemd", "--arch=amd64", &codename()])
        .arg(&work)
        .arg("http://deb.debian.org/debian"));
    let bootstrapped = started.elapsed();
    let partial = tar.with_extension("tar.partial");
    out(Command::new("tar").arg("-C").arg(&work).args(["--numeric-owner", "-cf"]).arg(&partial).arg("."));
    std::fs::rename(&partial, &tar).unwrap();
    std::fs::remove_dir_all(&work).unwrap();
    eprintln!(
        "debootstrap --variant=minbase {}: {:.1} s, tarball {:.1} s more ({} MB, cached in {})",
        codename(),
        bootstrapped.as_secs_f64(),
        (started.elapsed() - bootstrapped).as_secs_f64(),
        std::fs::metadata(&tar).unwrap().len() >> 20,
        tar.display()
    );
    tar
}

/// A fresh Debian root unpacked from the cached tarball; removed on drop,
/// unless something is still mounted below it.
struct FreshRoot(PathBuf);

impl FreshRoot {
    fn unpack() -> FreshRoot {
        let dir = std::env::temp_dir().join(format!("netprobe-debroot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let root = FreshRoot(dir);
        out(Command::new("tar").arg("-C").arg(&root.0).args(["--numeric-owner", "-xf"]).arg(debian_root_tarball()));
        root
    }

    /// `unshare` with a private mount namespace and a new network namespace
    /// (loopback up), /proc and /sys (with /sys/fs/bpf, /sys/kernel/btf,
    /// tracefs) mounted in the root, then `chroot ROOT ARGS...`.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--net", "--fork", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                r#"set -e; r="$1"; shift; ip link set lo up; mount -t proc proc "$r/proc"; mount --rbind /sys "$r/sys"; exec chroot "$r" "$@""#,
            )
            .arg("sh")
            .arg(&self.0)
            .args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        c
    }

    fn run(&self, args: &[&str]) -> String {
        out(&mut self.command(args))
    }

    fn path(&self, p: &str) -> PathBuf {
        self.0.join(p.trim_start_matches('/'))
    }
}

impl Drop for FreshRoot {
    fn drop(&mut self) {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.0.to_string_lossy().into_owned();
        if mounts.lines().any(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir))) {
            eprintln!("{dir} still has mounts below it: left in place");
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A scratch directory removed on drop, also when an assertion fails.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process killed (SIGKILL) on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The command line systemd would run for the unit: ExecStart with
/// `${VAR}` as one word and `$VAR` split at white space, VAR from
/// Environment= lines, then each EnvironmentFile= that exists in `root`.
fn unit_command(unit: &str, root: &Path) -> Vec<String> {
    let mut env = BTreeMap::new();
    let mut exec = None;
    for line in unit.lines().map(str::trim) {
        if let Some(kv) = line.strip_prefix("Environment=") {
            let (k, v) = kv.split_once('=').unwrap();
            env.insert(k.to_owned(), v.to_owned());
        } else if let Some(file) = line.strip_prefix("EnvironmentFile=") {
            let file = file.trim_start_matches('-');
            for l in std::fs::read_to_string(root.join(file.trim_start_matches('/'))).unwrap_or_default().lines() {
                let l = l.trim();
                if l.starts_with('#') || l.is_empty() {
                    continue;
                }
                let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{file}: not KEY=VALUE: {l}"));
                env.insert(k.to_owned(), v.trim_matches('"').to_owned());
            }
        } else if let Some(cmd) = line.strip_prefix("ExecStart=") {
            exec = Some(cmd.to_owned());
        }
    }
    let mut argv = Vec::new();
    for word in exec.expect("the unit has no ExecStart").split_whitespace() {
        if let Some(var) = word.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
            argv.push(env.get(var).unwrap_or_else(|| panic!("${{{var}}} is never set")).clone());
        } else if let Some(var) = word.strip_prefix('$') {
            argv.extend(
                env.get(var).map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>()).unwrap_or_default(),
            );
        } else {
            argv.push(word.to_owned());
        }
    }
    argv
}

/// `curl` inside the network namespace of `pid`: the status code, or None
/// when nothing answered.
fn http_status_in(pid: u32, url: &str) -> Option<u16> {
    let o = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", url])
        .output()
        .ok()?;
    String::from_utf8_lossy(&o.stdout).trim().parse().ok().filter(|&c| c != 0)
}

/// The backend each hop got (`netprobe probes --format json`).
fn backends(probes: &str) -> BTreeMap<String, Option<String>> {
    let v: Value = serde_json::from_str(probes).unwrap_or_else(|e| panic!("probes printed no JSON ({e}): {probes}"));
    v["hops"]
        .as_array()
        .expect("probes JSON has no hops")
        .iter()
        .map(|h| (h["hop"].as_str().unwrap().to_owned(), h["backend"].as_str().map(str::to_owned)))
        .collect()
}

/// `systemd-analyze verify` of the installed unit against the root (its
/// systemd units, the program, the man pages of Documentation=), a
/// negative control, and `systemd-analyze security`'s exposure rating.
fn verify_unit(root: &FreshRoot, unit_path: &str) {
    let verify = |unit: &Path| {
        let o = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.0.display()))
            .arg(unit)
            // Documentation=man:... is looked up with the host's man.
            .env("MANPATH", root.path("usr/share/man"))
            .output()
            .unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout))
    };
    let unit = root.path(unit_path);
    let (ok, said) = verify(&unit);
    assert!(ok && said.trim().is_empty(), "systemd-analyze verify {unit_path}: {said}");
    // The same check refuses a unit whose program is not there: it reads
    // the root, it does not only parse.
    let broken = unit.with_file_name("netprobe-broken.service");
    let text = std::fs::read_to_string(&unit).unwrap().replace("/usr/bin/netprobe", "/usr/bin/netprobe-missing");
    std::fs::write(&broken, text).unwrap();
    let (ok, said) = verify(&broken);
    std::fs::remove_file(&broken).unwrap();
    assert!(
        !ok && said.contains("netprobe-missing"),
        "systemd-analyze verify accepted a unit without its program: {said}"
    );
    // Its hardening, as systemd rates it (0 safest .. 10).
    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(format!("--root={}", root.0.display()))
        .arg(&unit)
        .output()
        .unwrap();
    let rating = String::from_utf8_lossy(&o.stdout).into_owned();
    let exposure = rating
        .lines()
        .find_map(|l| l.split("Overall exposure level for netprobe.service:").nth(1))
        .and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("systemd-analyze security rated nothing: {rating}"));
    eprintln!("systemd-analyze security: netprobe.service exposure {exposure}");
    assert!(exposure < 6.0, "netprobe.service exposure {exposure} (without hardening: 9.6): {rating}");
}

#[test]
fn the_deb_installs_into_a_fresh_debian_root_and_serves_on_localhost_by_default() {
    if !require_root("the_deb_installs_into_a_fresh_debian_root_and_serves_on_localhost_by_default") {
        return;
    }
    let Some(deb) = require_package("deb", "amd64") else { return };
    if !require_tool(
        tool("debootstrap") && tool("unshare") && tool("nsenter") && tool("curl") && tool("systemd-analyze"),
        "debootstrap, curl, systemd-analyze (systemd)",
    ) {
        return;
    }
    let t0 = Instant::now();
    let root = FreshRoot::unpack();
    let unpacked = t0.elapsed();
    assert!(!root.path("usr/bin/netprobe").exists());

    std::fs::copy(&deb, root.path("tmp/netprobe.deb")).unwrap();
    let t1 = Instant::now();
    root.run(&["dpkg", "-i", "/tmp/netprobe.deb"]);
    let installed = t1.elapsed();
    let status =
        root.run(&["dpkg-query", "-W", "-f", "${Status} ${Version} ${Architecture}\n${Conffiles}\n", "netprobe"]);
    assert!(status.starts_with("install ok installed 0.1.0-1 amd64"), "{status}");
    assert!(status.contains("/etc/default/netprobe"), "the options file is no conffile: {status}");
    let listed = root.run(&["dpkg", "-L", "netprobe"]);
    for f in [
        "/usr/bin/netprobe",
        "/etc/default/netprobe",
        "/systemd/system/netprobe.service",
        "/usr/share/bash-completion/completions/netprobe",
        "/usr/share/zsh/vendor-completions/_netprobe",
        "/usr/share/fish/vendor_completions.d/netprobe.fish",
        "/usr/share/man/man1/netprobe.1.gz",
        "/usr/share/man/man1/netprobe-serve.1.gz",
    ] {
        assert!(listed.lines().any(|l| l.ends_with(f)), "{f} not installed:\n{listed}");
    }
    // Installed, not started or enabled: loading BPF is the admin's call.
    let unit_path = listed.lines().find(|l| l.ends_with("/systemd/system/netprobe.service")).unwrap().to_owned();
    assert!(!root.path("etc/systemd/system/multi-user.target.wants/netprobe.service").exists());

    // The completion script is one bash accepts and registers.
    let complete =
        root.run(&["bash", "-c", "source /usr/share/bash-completion/completions/netprobe && complete -p netprobe"]);
    assert!(complete.contains("netprobe"), "{complete}");
    // The man page is a gzipped roff page naming the subcommand.
    let page = root.run(&["zcat", "/usr/share/man/man1/netprobe-serve.1.gz"]);
    assert!(page.contains(".TH netprobe-serve 1") && page.contains(r"\-\-web\-config"), "{page}");

    verify_unit(&root, &unit_path);

    // The packaged binary proves its probes on this kernel inside the root,
    // and finds what the binary it was made from finds.
    let t2 = Instant::now();
    let probes = root.run(&["netprobe", "probes", "--format", "json"]);
    let probed = t2.elapsed();
    let inside = backends(&probes);
    let attachable = inside.values().filter(|b| b.is_some()).count();
    assert!(attachable >= 7, "only {attachable} hops attachable in the Debian root: {inside:?}");
    let host = backends(&out(Command::new(netprobe_bin()).args(["probes", "--format", "json"])));
    assert_eq!(inside, host, "the packaged binary and the build's binary see this kernel differently");

    // What netprobe.service runs, with the shipped options file, in a
    // network namespace of its own: /metrics answers on 127.0.0.1:9464 and
    // nothing answers on another address of the namespace.
    let unit = std::fs::read_to_string(root.path(&unit_path)).unwrap();
    let argv = unit_command(&unit, &root.0);
    assert_eq!(argv[..4], ["/usr/bin/netprobe", "serve", "--quiet", "--listen"], "{argv:?}");
    assert_eq!(argv[4], "127.0.0.1:9464", "the shipped default listen address: {argv:?}");
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut serve = Killed(root.command(&args).stdin(Stdio::null()).spawn().unwrap());
    let ns = serve.0.id();
    let t3 = Instant::now();
    loop {
        if http_status_in(ns, "http://127.0.0.1:9464/health") == Some(200) {
            break;
        }
        assert!(serve.0.try_wait().unwrap().is_none(), "netprobe serve ({argv:?}) exited in the Debian root");
        assert!(t3.elapsed() < Duration::from_secs(60), "netprobe serve did not answer /health in 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let serving = t3.elapsed();
    let metrics = out(Command::new("nsenter").arg(format!("--net=/proc/{ns}/ns/net")).args([
        "curl",
        "-sf",
        "http://127.0.0.1:9464/metrics",
    ]));
    assert!(metrics.contains("# TYPE netprobe_"), "{metrics}");
    out(Command::new("nsenter").arg(format!("--net=/proc/{ns}/ns/net")).args([
        "sh",
        "-c",
        "ip link add np0 type veth peer name np1 && ip addr add 198.18.0.1/24 dev np0 && ip link set np0 up && ip link set np1 up",
    ]));
    assert_eq!(http_status_in(ns, "http://198.18.0.1:9464/health"), None, "serve answers beyond localhost");
    // SIGTERM ends it cleanly (what `systemctl stop` sends).
    // SAFETY: kill(2) on our own child, the unshare whose child runs serve.
    let netprobe_pid = out(Command::new("pgrep").args(["-P", &ns.to_string()])).trim().parse::<i32>().unwrap();
    unsafe { libc::kill(netprobe_pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let st = loop {
        if let Some(st) = serve.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "netprobe serve ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(st.success(), "netprobe serve exited with {st} on SIGTERM");

    // Purge: the binary, the unit and the conffile go.
    root.run(&["dpkg", "--purge", "netprobe"]);
    for f in ["usr/bin/netprobe", "etc/default/netprobe", unit_path.as_str()] {
        assert!(!root.path(f).exists(), "{f} left after dpkg --purge");
    }
    eprintln!(
        "fresh root unpacked {:.1} s, dpkg -i {:.1} s, probes {:.1} s, serve answering after {:.1} s; {} s in all",
        unpacked.as_secs_f64(),
        installed.as_secs_f64(),
        probed.as_secs_f64(),
        serving.as_secs_f64(),
        t0.elapsed().as_secs()
    );
}

/// `rpm -qp QUERY... FILE`.
fn rpm_query(rpm: &Path, query: &[&str]) -> String {
    out(Command::new("rpm").arg("-qp").args(query).arg(rpm))
}

/// Section names of an ELF file (readelf -S -W).
fn sections(elf: &Path) -> String {
    out(Command::new("readelf").args(["-S", "-W"]).arg(elf))
}

/// The netprobe binary of a .deb, extracted into `dir`.
fn binary_of_deb(deb: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    out(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir));
    dir.join("usr/bin/netprobe")
}

#[test]
fn the_rpms_and_debs_list_their_files_for_x86_64_and_s390x() {
    if !require_tool(tool("rpm") && tool("readelf") && tool("rpm2cpio"), "rpm, binutils") {
        return;
    }
    for (deb_arch, rpm_arch, machine) in
        [("amd64", "x86_64", "Advanced Micro Devices X86-64"), ("s390x", "s390x", "IBM S/390")]
    {
        let (Some(deb), Some(rpm)) = (require_package("deb", deb_arch), require_package("rpm", rpm_arch)) else {
            return;
        };
        assert_eq!(out(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg("Architecture")).trim(), deb_arch);
        assert_eq!(rpm_query(&rpm, &["--qf", "%{ARCH}"]), rpm_arch);
        let files = rpm_query(&rpm, &["-l"]);
        for f in [
            "/usr/bin/netprobe",
            "/usr/lib/systemd/system/netprobe.service",
            "/etc/sysconfig/netprobe",
            "/usr/share/bash-completion/completions/netprobe",
            "/usr/share/zsh/site-functions/_netprobe",
            "/usr/share/fish/vendor_completions.d/netprobe.fish",
            "/usr/share/man/man1/netprobe.1.gz",
            "/usr/share/man/man1/netprobe-serve.1.gz",
        ] {
            assert!(files.lines().any(|l| l == f), "{rpm_arch} rpm lacks {f}:\n{files}");
        }
        let config = rpm_query(&rpm, &["-c"]);
        assert_eq!(config.trim(), "/etc/sysconfig/netprobe", "config files of the {rpm_arch} rpm");
        let requires = rpm_query(&rpm, &["--requires"]);
        // x86_64 links glibc dynamically; the s390x binary is static.
        let needs_libc = requires.lines().any(|l| l.starts_with("libc.so.6"));
        assert_eq!(needs_libc, rpm_arch == "x86_64", "{rpm_arch} rpm requires:\n{requires}");
        let depends = out(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Depends"));
        assert_eq!(depends.contains("libc6"), deb_arch == "amd64", "{deb_arch} deb depends: {depends}");

        // The same stripped binary in both: no symbols, no debug info, the
        // architecture named, the BPF object embedded.
        let scratch = Scratch(std::env::temp_dir().join(format!("netprobe-pkg-{deb_arch}-{}", std::process::id())));
        let dir = &scratch.0;
        let _ = std::fs::remove_dir_all(dir);
        let from_deb = binary_of_deb(&deb, &dir.join("deb"));
        let rpm_root = dir.join("rpm");
        std::fs::create_dir_all(&rpm_root).unwrap();
        out(Command::new("sh")
            .arg("-c")
            .arg(r#"rpm2cpio "$1" | (cd "$2" && cpio -idm --quiet ./usr/bin/netprobe)"#)
            .arg("sh")
            .arg(&rpm)
            .arg(&rpm_root));
        let from_rpm = rpm_root.join("usr/bin/netprobe");
        let (a, b) = (std::fs::read(&from_deb).unwrap(), std::fs::read(&from_rpm).unwrap());
        assert!(a == b, "the {deb_arch} .deb and .rpm carry different binaries");
        let secs = sections(&from_deb);
        assert!(
            !secs.contains(".symtab") && !secs.contains(".debug_info") && !secs.contains(".debug_line"),
            "{deb_arch} binary not stripped:\n{secs}"
        );
        let header = out(Command::new("readelf").arg("-h").arg(&from_deb));
        assert!(header.contains(machine), "{deb_arch} binary:\n{header}");
        let be = deb_arch == "s390x";
        let bpf_order: &[u8] = if be { b"\x7fELF\x02\x02\x01" } else { b"\x7fELF\x02\x01\x01" };
        let is_bpf = a.windows(20).skip(64).any(|w| {
            let machine = if be { u16::from_be_bytes([w[18], w[19]]) } else { u16::from_le_bytes([w[18], w[19]]) };
            w.starts_with(bpf_order) && machine == 247
        });
        assert!(is_bpf, "no {deb_arch}-order BPF object embedded in the packaged binary");
        drop(scratch);
        eprintln!(
            "{deb_arch}: {} ({} KiB), {} ({} KiB), binary {} KiB stripped",
            deb.file_name().unwrap().to_string_lossy(),
            std::fs::metadata(&deb).unwrap().len() >> 10,
            rpm.file_name().unwrap().to_string_lossy(),
            std::fs::metadata(&rpm).unwrap().len() >> 10,
            a.len() >> 10
        );
    }
}
