//! The tools the build and the tests need, installed on demand: bpf-linker
//! (built once per rustc against rustc's own LLVM and cached under
//! `~/.cache/netprobe`) and Debian packages.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::run;

/// bpf-linker release known to build against LLVM 22 (rustc 1.95).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// cargo-deb and cargo-generate-rpm (`cargo xtask package`), installed with
/// `cargo install --locked` into the cache like bpf-linker: the packaging
/// tools of the Rust ecosystem, run as the commands they are meant to be
/// (their libraries are not their interface), at a pinned version.
pub(crate) const CARGO_DEB_VERSION: &str = "3.8.0";
pub(crate) const CARGO_GENERATE_RPM_VERSION: &str = "0.21.1";

/// Debian packages the demo needs: iproute2 for the topology, traffic tools.
pub(crate) const DEMO_DEBS: &[&str] = &["iproute2", "iputils-ping", "iperf3"];
/// Debian packages the test suite needs on top of the demo's: sockperf
/// (request/response workload), QEMU (a real guest to boot and discover), Prometheus
/// and tmux (the exporter and `top`), openssl and curl (a throwaway PKI and
/// a TLS client for `serve --web-config`), chromium (renders the HTML
/// report headless), HdrHistogram's Java HistogramLogProcessor and a JRE
/// (read the hlog output), nftables (a firewall rule that drops packets,
/// whose drop reason and kernel stack the drop-stacks test checks); for
/// the packages: debootstrap (a fresh Debian root to install the .deb
/// into), rpm (reads the .rpm back), systemd (`systemd-analyze verify` of
/// the unit), dpkg-dev and binutils (cargo-deb's dependencies, strip).
pub(crate) const TEST_DEBS: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "iperf3",
    "sockperf",
    "bpftool",
    "qemu-system-x86",
    "prometheus",
    "tmux",
    "openssl",
    "curl",
    "chromium",
    "libhdrhistogram-java",
    "default-jre-headless",
    "nftables",
    "debootstrap",
    "rpm",
    "systemd",
    "dpkg-dev",
    "binutils",
];

pub(crate) fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("netprobe")
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Path of a bpf-linker that links with the LLVM of the active rustc,
/// building and caching one if there is none.
pub(crate) fn bpf_linker() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("NETPROBE_BPF_LINKER") {
        return Ok(PathBuf::from(p));
    }
    let sysroot = PathBuf::from(output(Command::new("rustc").args(["--print", "sysroot"]))?);
    let verbose = output(Command::new("rustc").arg("-vV"))?;
    let field = |k: &str| {
        verbose
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_owned())
            .with_context(|| format!("rustc -vV has no {k}"))
    };
    let llvm_version = field("LLVM version:")?;
    let llvm_major = llvm_version.split('.').next().unwrap_or_default().to_owned();
    let rustc_hash = field("commit-hash:")?;
    let short = &rustc_hash[..rustc_hash.len().min(12)];
    let root = cache_dir().join(format!("bpf-linker-{BPF_LINKER_VERSION}-rustc-{short}"));
    let bin = root.join("bin/bpf-linker");
    if bin.exists() && Command::new(&bin).arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Ok(bin);
    }

    // rustc ships its LLVM as one shared library; bpf-linker's llvm-sys
    // wants a prefix whose lib/ has libLLVM.so. Point one at rustc's copy.
    let libllvm = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") || (n.starts_with("libLLVM-") && n.ends_with(".so")))
        })
        .context("the active rustc ships no libLLVM shared library; cannot build bpf-linker against it")?;
    let prefix = root.join("llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    for name in ["libLLVM.so".to_owned(), libllvm.file_name().unwrap().to_string_lossy().into_owned()] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)?;
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against rustc's LLVM {llvm_version} (once, cached in {})",
        root.display()
    );
    run(Command::new("cargo")
        .args(["install", "--locked", "--force", "--no-default-features"])
        .args(["--features", &format!("llvm-{llvm_major}")])
        .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
        .arg("--root")
        .arg(&root)
        .env("LLVM_PREFIX", &prefix)
        .env(format!("LLVM_SYS_{llvm_major}1_PREFIX"), &prefix))
    .context("building bpf-linker failed")?;
    Ok(bin)
}

/// A cargo subcommand binary (`krate` at `version`), installed once with
/// `cargo install --locked` into the cache; returns its path.
pub(crate) fn cargo_tool(krate: &str, version: &str) -> Result<PathBuf> {
    let root = cache_dir().join(format!("{krate}-{version}"));
    let bin = root.join("bin").join(krate);
    if Command::new(&bin).arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Ok(bin);
    }
    eprintln!("xtask: building {krate} {version} (once, cached in {})", root.display());
    run(Command::new("cargo")
        .args(["install", "--locked", "--force"])
        .arg(format!("{krate}@{version}"))
        .arg("--root")
        .arg(&root))
    .with_context(|| format!("building {krate} failed"))?;
    Ok(bin)
}

fn deb_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Installs the Debian packages that are missing (needs root and the
/// package archive; refuses with a clear message otherwise).
pub(crate) fn ensure_debs(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !deb_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!("missing packages {missing:?} and no apt-get here: install them by hand");
    }
    eprintln!("xtask: installing Debian packages {missing:?}");
    run(Command::new("apt-get").arg("update").arg("-q"))
        .context("apt-get update failed (are you root, is the archive reachable?)")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("installing {missing:?} failed"))
}

/// Makes sure a cross target can be built: rustup's standard library for
/// it and Debian's cross linker and C library.
pub(crate) fn ensure_target(triple: &str, host: &str) -> Result<()> {
    if triple == host {
        return Ok(());
    }
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup is needed to add the standard library of another target")?;
    if !installed.lines().any(|l| l.trim() == triple) {
        eprintln!("xtask: adding the Rust standard library for {triple}");
        run(Command::new("rustup").args(["target", "add", triple]))?;
    }
    let arch = triple.split('-').next().unwrap_or_default();
    let gnu = match arch {
        "s390x" => "s390x-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "powerpc64le" => "powerpc64le-linux-gnu",
        _ => return Ok(()),
    };
    let cross = [format!("gcc-{gnu}"), format!("libc6-dev-{}-cross", gnu.split('-').next().unwrap_or_default())];
    let cross: Vec<&str> = cross.iter().map(String::as_str).collect();
    ensure_debs(&cross)
}
