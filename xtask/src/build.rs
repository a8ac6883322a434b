//! Building netprobe: the kernel programs as LLVM bitcode linked into a BPF
//! object by bpf-linker (stable Rust, no rust-src), then the loader with
//! that object embedded.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};
use netprobe_common::{names, Backend, CPU_TRACEPOINTS, MAX_SLOTS, TRACEPOINT_HOPS};

use crate::{run, tools};

#[derive(clap::Args, Clone, Default)]
pub(crate) struct BuildOpts {
    /// Target triple of the netprobe binary (default: this machine's).
    #[arg(long)]
    pub(crate) target: Option<String>,
    /// Build the loader without optimisations.
    #[arg(long)]
    pub(crate) debug: bool,
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub(crate) fn host_triple() -> Result<String> {
    let out = Command::new("rustc").arg("-vV").output()?;
    String::from_utf8(out.stdout)?
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV printed no host triple")
}

impl BuildOpts {
    fn triple(&self) -> Result<String> {
        match &self.target {
            Some(t) => Ok(t.clone()),
            None => host_triple(),
        }
    }
}

/// BPF byte order of a target: the BPF object must match the host's.
fn bpf_target(triple: &str) -> &'static str {
    if ["s390x", "powerpc64-", "sparc64", "mips64-", "aarch64_be"].iter().any(|p| triple.starts_with(p)) {
        "bpfeb"
    } else {
        "bpfel"
    }
}

/// The symbols the BPF object must keep: every program, map and global.
fn exports() -> Vec<String> {
    let mut v: Vec<String> = names::ALL_MAPS.iter().map(|s| s.to_string()).collect();
    v.push(names::CONFIG.to_owned());
    for tp in TRACEPOINT_HOPS {
        for b in Backend::TRACEPOINT {
            v.push(format!("{}_{}", b.prefix(), tp.name));
        }
    }
    for (_, tp) in CPU_TRACEPOINTS {
        for b in Backend::TRACEPOINT {
            v.push(format!("{}_{tp}", b.prefix()));
        }
    }
    for slot in 0..MAX_SLOTS {
        for b in Backend::FUNCTION {
            v.push(format!("{}_{slot}", b.prefix()));
            v.extend(b.exit_prefix().map(|p| format!("{p}_{slot}")));
        }
    }
    v
}

fn object_path(triple: &str) -> PathBuf {
    workspace_root().join("target/bpf").join(format!("netprobe-{}.bpf.o", bpf_target(triple)))
}

/// Builds the BPF object for the byte order of `triple`; returns its path.
pub(crate) fn build_ebpf(triple: &str) -> Result<PathBuf> {
    let linker = tools::bpf_linker()?;
    let root = workspace_root();
    let target_dir = root.join("target/ebpf");
    // The eBPF crate is compiled for the (host or cross) target as bitcode
    // (linker-plugin-lto) and re-targeted to BPF by bpf-linker. RUSTFLAGS
    // apply only to target artifacts because --target is explicit.
    run(Command::new("cargo")
        .current_dir(&root)
        .args(["rustc", "-p", "netprobe-ebpf", "--release", "--crate-type", "staticlib"])
        .args(["--target", triple])
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        // aya-ebpf picks pt_regs layouts (kprobe arguments) by this.
        .env("AYA_BPF_TARGET_ARCH", triple.split('-').next().unwrap_or_default())
        .env("RUSTFLAGS", "--cfg netprobe_bpf -C linker-plugin-lto -C panic=abort -C debuginfo=2 -C codegen-units=1"))
    .context("compiling netprobe-ebpf failed")?;
    let lib = target_dir.join(triple).join("release/libnetprobe_ebpf.a");
    let obj = object_path(triple);
    std::fs::create_dir_all(obj.parent().unwrap())?;
    let linked = obj.with_extension("o.new");
    run(Command::new(&linker)
        .args(["--target", bpf_target(triple), "--btf", "-O", "3"])
        .arg("--export")
        .arg(exports().join(","))
        .arg("-o")
        .arg(&linked)
        .arg(&lib))
    .context("bpf-linker failed to link the BPF object")?;
    let (before, after) = crate::bpfobj::slim(&linked)?;
    eprintln!("BPF object: {after} bytes ({before} before its debug info was removed)");
    // The same object keeps its file (and time stamp): netprobe's build
    // script reruns when it changes, and a rebuild of netprobe takes minutes.
    if std::fs::read(&obj).ok() == Some(std::fs::read(&linked)?) {
        std::fs::remove_file(&linked)?;
    } else {
        std::fs::rename(&linked, &obj)?;
    }
    Ok(obj)
}

/// Sets the variable that tells netprobe's build script which BPF object to
/// embed (the object for the host, already built by [`build_all`]).
pub(crate) fn with_bpf_object_env<'a>(cmd: &'a mut Command, opts: &BuildOpts) -> &'a mut Command {
    let triple = opts.triple().unwrap_or_default();
    cmd.env("NETPROBE_BPF_OBJECT", object_path(&triple))
}

/// Builds the BPF object and the netprobe binary; returns the binary's path.
pub(crate) fn build_all(opts: &BuildOpts) -> Result<PathBuf> {
    let triple = opts.triple()?;
    tools::ensure_target(&triple, &host_triple()?)?;
    let obj = build_ebpf(&triple)?;
    let root = workspace_root();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&root).args(["build", "-p", "netprobe"]);
    if !opts.debug {
        cmd.arg("--release");
    }
    if opts.target.is_some() {
        cmd.args(["--target", &triple]);
    }
    run(cmd.env("NETPROBE_BPF_OBJECT", &obj)).context("building netprobe failed")?;
    let mut bin = root.join("target");
    if opts.target.is_some() {
        bin.push(&triple);
    }
    bin.push(if opts.debug { "debug" } else { "release" });
    bin.push("netprobe");
    Ok(bin)
}

/// The IBM Z build: a static s390x netprobe with a big-endian BPF object
/// embedded. Builds it and checks both ELF headers; returns its path.
pub(crate) fn check_s390x_build() -> Result<PathBuf> {
    let opts = BuildOpts { target: Some("s390x-unknown-linux-gnu".to_owned()), debug: false };
    let bin = build_all(&opts)?;
    let data = std::fs::read(&bin)?;
    let obj = std::fs::read(object_path("s390x-unknown-linux-gnu"))?;
    // ELF64 (class 2), big-endian (data 2); e_machine EM_S390 = 22, EM_BPF = 247.
    let is = |b: &[u8], machine: u16| {
        b.len() > 20 && &b[..4] == b"\x7fELF" && b[4] == 2 && b[5] == 2 && b[18..20] == machine.to_be_bytes()
    };
    anyhow::ensure!(is(&data, 22), "{} is not a big-endian s390x ELF", bin.display());
    anyhow::ensure!(is(&obj, 247), "the s390x BPF object is not a big-endian (bpfeb) BPF ELF");
    anyhow::ensure!(
        data.windows(obj.len().min(4096)).any(|w| w == &obj[..obj.len().min(4096)]),
        "the bpfeb object is not embedded in {}",
        bin.display()
    );
    let static_ok = !data.windows(b"/lib/ld64.so".len()).any(|w| w == b"/lib/ld64.so");
    anyhow::ensure!(static_ok, "{} is dynamically linked; it must be static", bin.display());
    println!("xtask: s390x build ok: {} (static, bpfeb object embedded)", bin.display());
    Ok(bin)
}
