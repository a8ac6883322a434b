//! `cargo xtask`: the one entry point for building, running, demoing and
//! testing netprobe. It installs what the build needs (bpf-linker built
//! against the active rustc's LLVM, Debian packages for the demo and tests)
//! so a fresh machine needs nothing but stable Rust.

mod bench;
mod bpfobj;
mod build;
mod lab;
mod package;
mod rtt;
mod tools;

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "netprobe's build, run, demo and test tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the BPF object and the netprobe binary with the object embedded.
    Build(build::BuildOpts),
    /// Build, then run netprobe with the given arguments (as root).
    Run {
        #[command(flatten)]
        build: build::BuildOpts,
        /// Arguments for netprobe.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up the demo MacVTap topology, record real traffic through it,
    /// print the per-hop breakdown and tear everything down.
    Demo {
        /// A real QEMU guest instead of the guest stand-in (builds the
        /// guest image first).
        #[arg(long)]
        guest: bool,
        /// Extra arguments for `netprobe demo`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmarks: what netprobe costs the datapath (ratios to untraced,
    /// against bpftrace), per-hop cost, trace delivery, memory.
    Bench(bench::BenchOpts),
    /// Boot Debian's stock kernel under QEMU and run the demo scenarios
    /// inside (fentry, kprobe and OVS hops live); results in target/lab/.
    Lab(lab::LabOpts),
    /// Build the .deb and .rpm packages (cargo-deb, cargo-generate-rpm) of
    /// netprobe into target/package/: stripped binary, systemd unit for
    /// `serve`, shell completions, man pages.
    Package(package::PackageOpts),
    /// Build the real guest the tests boot (Debian's stock amd64 kernel,
    /// busybox, virtio-net, traffic tools); prints its folder.
    GuestImage,
    /// Run the whole test suite: formatting, lints, unit and privileged
    /// integration tests.
    Test {
        /// Skip cargo fmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Skip the s390x cross-build check.
        #[arg(long)]
        no_cross: bool,
        /// Skip the QEMU lab (its tests then read older results, or skip).
        #[arg(long)]
        no_lab: bool,
        /// Extra arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Build(opts) => {
            let bin = build::build_all(&opts)?;
            println!("netprobe binary: {}", bin.display());
        }
        Cmd::Run { build, args } => {
            let bin = build::build_all(&build)?;
            run(Command::new(bin).args(args))?;
        }
        Cmd::Demo { guest, args } => {
            tools::ensure_debs(tools::DEMO_DEBS)?;
            let mut demo = vec!["demo".into()];
            if guest {
                tools::ensure_debs(&["qemu-system-x86", "sockperf"])?;
                demo.extend(["--guest".into(), lab::guest_image()?.into_os_string()]);
            }
            let bin = build::build_all(&build::BuildOpts::default())?;
            run(Command::new(bin).args(demo).args(args))?;
        }
        Cmd::Lab(opts) => lab::lab(&opts)?,
        Cmd::Package(opts) => {
            package::package(&opts)?;
        }
        Cmd::GuestImage => println!("{}", lab::guest_image()?.display()),
        Cmd::Bench(opts) => bench::bench(&opts)?,
        Cmd::Test { no_lint, no_cross, no_lab, args } => test(no_lint, no_cross, no_lab, &args)?,
    }
    Ok(())
}

fn test(no_lint: bool, no_cross: bool, no_lab: bool, args: &[String]) -> Result<()> {
    tools::ensure_debs(tools::TEST_DEBS)?;
    let s390x_bin = if no_cross { None } else { Some(build::check_s390x_build()?) };
    if !no_lab {
        // Fresh lab results for the lab tests (tests/tests/lab.rs).
        let _ = std::fs::remove_dir_all(build::workspace_root().join("target/lab"));
        lab::lab(&lab::LabOpts {
            arch: vec![lab::Arch::X86_64, lab::Arch::S390x],
            scenarios: vec![
                "macvtap".into(),
                "bridge".into(),
                "ovs".into(),
                "unload".into(),
                "vhost".into(),
                "backends".into(),
            ],
            timeout: 900,
        })?;
    }
    // The real guest tests/tests/real_guest.rs boots under QEMU.
    let guest_image = lab::guest_image()?;
    let bin = build::build_all(&build::BuildOpts::default())?;
    // The packages tests/tests/packages.rs installs and reads back (s390x
    // ones with the cross build), of the binaries just built.
    let mut bins = vec![(lab::Arch::X86_64, bin.clone())];
    bins.extend(s390x_bin.map(|b| (lab::Arch::S390x, b)));
    package::package_built(&bin, &bins)?;
    if !no_lint {
        run(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))
            .context("cargo fmt found unformatted code; run `cargo fmt --all`")?;
        run(build::with_bpf_object_env(
            Command::new("cargo").args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
            &build::BuildOpts::default(),
        ))?;
    }
    let mut cmd = Command::new("cargo");
    // One test at a time: the privileged tests load BPF programs and check
    // with bpftool that none is left behind, which a concurrent test's
    // programs would confuse.
    cmd.args(["test", "--workspace"])
        .env("NETPROBE_BIN", &bin)
        .env("NETPROBE_GUEST_IMAGE", &guest_image)
        .env("NETPROBE_PACKAGE_DIR", package::out_dir())
        .args(["--", "--test-threads=1"])
        .args(args);
    run(build::with_bpf_object_env(&mut cmd, &build::BuildOpts::default()))
}

/// Runs a command, failing with its exit status.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
