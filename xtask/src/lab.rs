//! `cargo xtask lab`: the QEMU lab. Boots Debian's stock kernel under QEMU
//! (no KVM needed) with an initramfs holding the freshly built netprobe,
//! runs the demo scenarios inside (macvtap, tap+bridge, tap+OVS datapath)
//! with real traffic, and brings their JSON reports back to target/lab/.
//! Debian packages are fetched once and cached in ~/.cache/netprobe/lab;
//! only the initramfs is rebuilt after a code change.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{build, run, tools};

#[derive(clap::Args, Clone)]
pub(crate) struct LabOpts {
    /// Scenarios to run in the VM (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "macvtap,bridge,ovs")]
    pub(crate) scenarios: Vec<String>,
    /// Give up on the VM after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub(crate) timeout: u64,
}

/// Modules the scenarios need, loaded with their dependencies.
const MODULES: &[&str] = &[
    "kernel/crypto/crc32c_generic.ko",
    "kernel/drivers/net/veth.ko",
    "kernel/drivers/net/macvtap.ko",
    "kernel/drivers/net/tun.ko",
    "kernel/drivers/vhost/vhost_net.ko",
    "kernel/net/bridge/bridge.ko",
    "kernel/net/openvswitch/openvswitch.ko",
];

/// Host programs copied into the VM with their shared libraries.
const PROGRAMS: &[&str] = &["/usr/sbin/ip", "/usr/bin/ping", "/usr/bin/iperf3", "/usr/sbin/sysctl"];

const BEGIN: &str = "=== NETPROBE-LAB BEGIN";
const END: &str = "=== NETPROBE-LAB END";

fn cache_dir() -> PathBuf {
    tools::cache_dir().join("lab/amd64")
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Downloads (once) and unpacks Debian's stock amd64 kernel and Open
/// vSwitch userspace; returns (unpacked tree, kernel release).
fn debian_parts() -> Result<(PathBuf, String)> {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache)?;
    let depends = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    let pkg = depends
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .filter(|p| p.starts_with("linux-image-"))
        .map(str::to_owned)
        .context("apt-cache knows no linux-image-amd64 (run apt-get update)")?;
    let release = pkg.trim_start_matches("linux-image-").to_owned();
    let tree = cache.join(format!("root-{release}"));
    if tree.join("boot").join(format!("vmlinuz-{release}")).exists() {
        return Ok((tree, release));
    }
    eprintln!("xtask lab: fetching {pkg} and openvswitch-switch from Debian's archive (cached in {})", cache.display());
    let debs = [pkg.as_str(), "openvswitch-switch", "openvswitch-common"];
    if !Command::new("apt-get").args(["download"]).args(debs).current_dir(&cache).status()?.success() {
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        run(Command::new("apt-get").args(["download"]).args(debs).current_dir(&cache))?;
    }
    let tmp = cache.join("unpack.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for entry in std::fs::read_dir(&cache)? {
        let p = entry?.path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".deb") && debs.iter().any(|d| name.starts_with(&format!("{d}_"))) {
            run(Command::new("dpkg-deb").arg("-x").arg(&p).arg(&tmp))?;
        }
    }
    // The .deb ships no modules.dep.
    run(Command::new("depmod").arg("-b").arg(&tmp).arg(&release))?;
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::rename(&tmp, &tree)?;
    Ok((tree, release))
}

/// Module load order: each module after its dependencies (modules.dep).
fn module_order(tree: &Path, release: &str) -> Result<Vec<String>> {
    let dep = std::fs::read_to_string(tree.join("lib/modules").join(release).join("modules.dep"))?;
    let deps: std::collections::HashMap<&str, Vec<&str>> =
        dep.lines().filter_map(|l| l.split_once(':')).map(|(m, d)| (m, d.split_whitespace().collect())).collect();
    fn visit<'a>(
        m: &'a str,
        deps: &std::collections::HashMap<&'a str, Vec<&'a str>>,
        seen: &mut BTreeSet<&'a str>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(m) {
            return;
        }
        for d in deps.get(m).map(Vec::as_slice).unwrap_or_default().iter().rev() {
            visit(d, deps, seen, out);
        }
        out.push(m.to_owned());
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for m in MODULES {
        if !deps.contains_key(m) {
            bail!("module {m} is not in the Debian kernel package");
        }
        visit(m, &deps, &mut seen, &mut out);
    }
    Ok(out)
}

/// Copies `bin` to `root` at the same path, with every shared library
/// `ldd` names (and the dynamic loader).
fn copy_with_libs(bin: &Path, root: &Path, dest: &Path) -> Result<()> {
    let to = root.join(dest.strip_prefix("/").unwrap_or(dest));
    std::fs::create_dir_all(to.parent().unwrap())?;
    std::fs::copy(bin, &to).with_context(|| format!("copying {}", bin.display()))?;
    let ldd = Command::new("ldd").arg(bin).output()?;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if line.contains("not found") {
            bail!("{}: shared library missing on this machine: {}", bin.display(), line.trim());
        }
        let path = line.split("=>").nth(1).unwrap_or(line).split_whitespace().next().filter(|p| p.starts_with('/'));
        if let Some(lib) = path {
            let dst = root.join(lib.trim_start_matches('/'));
            if !dst.exists() {
                std::fs::create_dir_all(dst.parent().unwrap())?;
                std::fs::copy(lib, &dst).with_context(|| format!("copying {lib}"))?;
            }
        }
    }
    Ok(())
}

fn init_script(release: &str, modules: &[String], scenarios: &[String]) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mount -t tmpfs tmpfs /run\n\
         mount -t tmpfs tmpfs /tmp\n\
         mount -t tracefs nodev /sys/kernel/tracing\n\
         mount -t debugfs nodev /sys/kernel/debug\n\
         mkdir -p /var /dev/net; ln -s /run /var/run\n\
         ip link set lo up\n",
    );
    for m in modules {
        s += &format!("insmod /lib/modules/{release}/{m} || echo 'lab: insmod {m} failed'\n");
    }
    s += &format!(
        "echo '{BEGIN} probes'\nNETPROBE_DEBUG=1 /usr/bin/netprobe probes --format json 2>/tmp/probes.err\necho '{END} probes'\ncat /tmp/probes.err\n"
    );
    for sc in scenarios {
        s += &format!(
            "echo '{BEGIN} {sc}'\n/usr/bin/netprobe demo --topology {sc} --format json 2>/tmp/{sc}.err\nrc=$?\necho '{END} {sc}'\necho \"lab: scenario {sc} exit $rc\"; cat /tmp/{sc}.err\n"
        );
    }
    s += "echo 'lab: done'\npoweroff -f\n";
    s
}

pub(crate) fn lab(opts: &LabOpts) -> Result<()> {
    tools::ensure_debs(&[
        "qemu-system-x86",
        "busybox-static",
        "cpio",
        "kmod",
        "iproute2",
        "iputils-ping",
        "iperf3",
        "procps",
        "libxdp1",
    ])?;
    let started = Instant::now();
    let bin = build::build_all(&build::BuildOpts::default())?;
    let (tree, release) = debian_parts()?;
    let work = build::workspace_root().join("target/lab/amd64");
    let root = work.join("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("bin"))?;
    for d in ["proc", "sys", "dev", "run", "tmp", "etc", "usr/bin", "usr/sbin"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).context("busybox-static")?;
    for p in PROGRAMS {
        copy_with_libs(Path::new(p), &root, Path::new(p))?;
    }
    copy_with_libs(&bin, &root, Path::new("/usr/bin/netprobe"))?;
    copy_with_libs(&tree.join("usr/bin/ovs-dpctl"), &root, Path::new("/usr/bin/ovs-dpctl"))?;
    let modules = module_order(&tree, &release)?;
    for m in &modules {
        let rel = Path::new("lib/modules").join(&release).join(m);
        std::fs::create_dir_all(root.join(&rel).parent().unwrap())?;
        std::fs::copy(tree.join(&rel), root.join(&rel))?;
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    let init = root.join("init");
    std::fs::write(&init, init_script(&release, &modules, &opts.scenarios))?;
    run(Command::new("chmod").arg("+x").arg(&init))?;
    let initrd = work.join("initrd.gz");
    run(Command::new("sh").arg("-c").arg(format!(
        "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
        root.display(),
        initrd.display()
    )))?;

    let console = work.join("console.log");
    // Software emulation (TCG) always: the same on every machine, KVM or not.
    eprintln!("xtask lab: booting Debian {release} under qemu-system-x86_64 (TCG), scenarios {:?}", opts.scenarios);
    let boot = Instant::now();
    let log = std::fs::File::create(&console)?;
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-m", "2048", "-smp", "2", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"])
        .args(["-accel", "tcg", "-cpu", "max"])
        .arg("-kernel")
        .arg(tree.join("boot").join(format!("vmlinuz-{release}")))
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 rdinit=/init quiet loglevel=3"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut child = qemu.spawn().context("cannot start qemu-system-x86_64")?;
    let deadline = Instant::now() + Duration::from_secs(opts.timeout);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    let tail = || text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    if status.is_none() {
        bail!("the lab VM did not finish within {} s; console tail:\n{}", opts.timeout, tail());
    }
    let mut failed = Vec::new();
    let mut sections = vec!["probes".to_owned()];
    sections.extend(opts.scenarios.iter().cloned());
    for sc in &sections {
        let Some(json) = section(&text, sc) else {
            failed.push(sc.clone());
            continue;
        };
        if serde_json_valid(&json).is_err() {
            failed.push(sc.clone());
            continue;
        }
        let out = work.join(format!("{sc}.json"));
        std::fs::write(&out, &json)?;
        if sc != "probes" {
            eprintln!("\n===== lab scenario {sc} (Debian {release}) =====");
            let _ = Command::new(&bin).arg("report").arg(&out).status();
        }
    }
    eprintln!(
        "\nxtask lab: VM ran {:.0} s, whole lab {:.0} s; results in {}",
        boot.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64(),
        work.display()
    );
    if !failed.is_empty() {
        bail!("lab scenarios without a valid result: {failed:?}; console tail:\n{}", tail());
    }
    Ok(())
}

/// The text between the BEGIN and END markers of `name`.
fn section(text: &str, name: &str) -> Option<String> {
    let begin = format!("{BEGIN} {name}\n");
    let end = format!("{END} {name}");
    let text = text.replace("\r\n", "\n");
    let a = text.find(&begin)? + begin.len();
    let b = text[a..].find(&end)? + a;
    Some(text[a..b].to_owned())
}

/// A minimal well-formedness check (the report itself is read by netprobe).
fn serde_json_valid(s: &str) -> Result<()> {
    let t = s.trim();
    if t.starts_with('{') && t.ends_with('}') {
        Ok(())
    } else {
        bail!("not a JSON object")
    }
}
