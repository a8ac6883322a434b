//! `cargo xtask lab`: the QEMU lab. Boots Debian's stock kernel under QEMU
//! (no KVM needed) with an initramfs holding the freshly built netprobe,
//! runs the demo scenarios inside (macvtap, tap+bridge, tap+OVS datapath,
//! macvtap with the guest stand-in on vhost-net) with real traffic, and
//! brings their JSON reports back to target/lab/. Debian packages are
//! fetched once and cached in ~/.cache/netprobe/lab; only the initramfs is
//! rebuilt after a code change.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use netprobe_testbed::guest::GUEST_READY;

use crate::{build, run, tools};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arch {
    /// Debian's amd64 kernel: BTF, fentry, kprobes, openvswitch.
    #[value(name = "x86_64")]
    X86_64,
    /// Debian's s390x kernel: no BTF, kprobes, qeth.
    S390x,
}

impl Arch {
    pub(crate) fn deb_arch(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::S390x => "s390x",
        }
    }

    /// RPM's name of the architecture (`%{ARCH}`).
    pub(crate) fn rpm_arch(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::S390x => "s390x",
        }
    }

    pub(crate) fn triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::S390x => "s390x-unknown-linux-gnu",
        }
    }

    /// A strip that reads this architecture's ELF files (binutils is
    /// per architecture; Debian's cross gcc brings the s390x one).
    pub(crate) fn strip_tool(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-linux-gnu-strip",
            Arch::S390x => "s390x-linux-gnu-strip",
        }
    }
}

#[derive(clap::Args, Clone)]
pub(crate) struct LabOpts {
    /// Architectures to boot (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "x86_64,s390x")]
    pub(crate) arch: Vec<Arch>,
    /// Scenarios to run in the x86_64 VM (comma separated); the s390x VM
    /// runs the macvtap scenario. `unload`: openvswitch unloaded and
    /// loaded again while `record` and `serve` run (see [`UNLOAD`]).
    /// `vhost`: the macvtap demo with the guest stand-in on vhost-net.
    /// `backends`: kprobe against fentry on the bridge's hops (see
    /// [`BACKENDS`]).
    #[arg(long, value_delimiter = ',', default_value = "macvtap,bridge,ovs,unload,vhost,backends")]
    pub(crate) scenarios: Vec<String>,
    /// Give up on the VM after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub(crate) timeout: u64,
}

/// Modules the scenarios need, loaded with their dependencies.
fn modules(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::X86_64 => &["crc32c_generic", "veth", "macvtap", "tun", "vhost_net", "bridge", "openvswitch"],
        Arch::S390x => &["veth", "macvtap", "tun", "vhost_net", "bridge", "ccwgroup", "qeth", "qeth_l2", "qeth_l3"],
    }
}

/// s390x userspace for the VM: busybox, iproute2 and the libraries it
/// needs (`apt-cache depends --recurse iproute2:s390x`, libraries only).
const S390X_DEBS: &[&str] = &[
    "busybox-static",
    "iproute2",
    "libbpf1",
    "libbsd0",
    "libc6",
    "libcap2",
    "libcom-err2",
    "libdb5.3",
    "libelf1",
    "libgcc-s1",
    "libgssapi-krb5-2",
    "libk5crypto3",
    "libkeyutils1",
    "libkrb5-3",
    "libkrb5support0",
    "libmd0",
    "libmnl0",
    "libpcre2-8-0",
    "libselinux1",
    "libssl3",
    "libtirpc3",
    "libxtables12",
    "zlib1g",
    "libzstd1",
];

/// Host programs copied into the VM with their shared libraries (bpftool:
/// the unload scenario counts the BPF programs and maps left after exit).
const PROGRAMS: &[&str] =
    &["/usr/sbin/ip", "/usr/bin/ping", "/usr/bin/iperf3", "/usr/sbin/sysctl", "/usr/sbin/bpftool"];

/// The `unload` scenario's text results besides its record report
/// (`unload.json`), each brought back as target/lab/amd64/NAME.txt.
const UNLOAD_TEXTS: [&str; 6] = [
    "unload-log",
    "unload-metrics-before",
    "unload-metrics-during",
    "unload-metrics-after",
    "unload-record-err",
    "unload-serve-err",
];

/// Hops for the unload scenario: the generic ones a ping crosses and the
/// OVS datapath's (fewer programs to load under TCG: a shorter VM run).
const UNLOAD_HOPS: &str =
    "queue,xmit,receive,consumed,ovs_rx_hook,ovs_vport_rx,ovs_flow_lookup,ovs_upcall,ovs_execute,ovs_output,ovs_vport_send";

/// The `unload` scenario (issue 18): an OVS datapath between two veths
/// (guest and peer namespaces, 198.18.0.0/24), a ping through it, `netprobe
/// record --wait-for-modules` and `netprobe serve` running; then `rmmod
/// openvswitch` (which destroys the datapath), a pause, the module loaded
/// again and the datapath made anew, both ended with SIGINT. Brings back
/// the record report, a /metrics scrape before, during and after, and a
/// log of key=value lines: the module's reference count while netprobe
/// runs, rmmod's exit code, the BPF programs and maps (bpftool) before and
/// after. `{OVS_KO}` is the module's path.
const UNLOAD: &str = r#"IP=/usr/sbin/ip
t() { cut -d' ' -f1 /proc/uptime; }
bpfcount() { echo "bpf_progs_$1=$(bpftool prog show | grep -c '^[0-9]*:')"; echo "bpf_maps_$1=$(bpftool map show | grep -c '^[0-9]*:')"; }
dp() { $IP netns exec npu-h ovs-dpctl "$@"; }
mkdp() { dp add-dp npudp && dp add-if npudp npug && dp add-if npudp npuu && dp add-flow npudp 'in_port(1),eth()' 2 && dp add-flow npudp 'in_port(2),eth()' 1; }
scrape() { wget -q -O /tmp/unload-metrics-$1.txt http://127.0.0.1:9464/metrics; echo "scrape_$1_rc=$?"; }
refcnt() { echo "refcnt_$1=$(grep '^openvswitch ' /proc/modules | cut -d' ' -f3)"; }
L=/tmp/unload-log.txt
bpfcount before > $L
for n in npu-h npu-g npu-p; do $IP netns add $n; $IP -n $n link set lo up; done
$IP -n npu-h link add npug type veth peer name npugv netns npu-g
$IP -n npu-h link add npuu type veth peer name npupv netns npu-p
$IP -n npu-g addr add 198.18.0.1/24 dev npugv; $IP -n npu-g link set npugv up
$IP -n npu-p addr add 198.18.0.2/24 dev npupv; $IP -n npu-p link set npupv up
$IP -n npu-h link set npug up; $IP -n npu-h link set npuu up
mkdp; echo "dp_made=$?" >> $L
refcnt with_dp >> $L
echo "t_start=$(t)" >> $L
/usr/bin/netprobe record --wait-for-modules --quiet --hops {HOPS} --format json > /tmp/unload.json 2>/tmp/unload-record-err.txt &
RP=$!
/usr/bin/netprobe serve --listen 127.0.0.1:9464 --rescan-every 1s --hops {HOPS} 2>/tmp/unload-serve-err.txt &
SP=$!
for i in $(seq 300); do grep -q recording /tmp/unload-record-err.txt && grep -q serving /tmp/unload-serve-err.txt && break; sleep 1; done
echo "t_attached=$(t)" >> $L
$IP netns exec npu-g ping -q -i 0.2 198.18.0.2 > /tmp/unload-ping.txt 2>&1 &
PP=$!
sleep 6
scrape before >> $L
refcnt with_dp_and_netprobe >> $L
# Each vport holds the module (ovs_vport_add): the datapath goes first, as
# when an operator stops OVS to reload its module.
dp del-dp npudp; echo "dp_deleted=$?" >> $L
refcnt with_netprobe >> $L
echo "t_rmmod=$(t)" >> $L
rmmod openvswitch 2>>$L; echo "rmmod_rc=$?" >> $L
grep -q '^openvswitch ' /proc/modules && echo "module_gone=0" >> $L || echo "module_gone=1" >> $L
sleep 5
scrape during >> $L
echo "t_modprobe=$(t)" >> $L
insmod {OVS_KO} 2>>$L; echo "modprobe_rc=$?" >> $L
mkdp; echo "dp_made_again=$?" >> $L
sleep 6
scrape after >> $L
kill -INT $PP; wait $PP
echo "ping: $(grep -E 'transmitted|received' /tmp/unload-ping.txt)" >> $L
echo "t_stop=$(t)" >> $L
kill -INT $RP $SP; wait $RP; echo "record_rc=$?" >> $L; wait $SP; echo "serve_rc=$?" >> $L
dp del-dp npudp
for n in npu-h npu-g npu-p; do $IP netns del $n; done
# Programs and maps are freed after an RCU grace period once their last
# file descriptor is closed.
sleep 2
bpfcount after >> $L
echo "netprobe_processes_after=$(ps | grep -c '[n]etprobe ')" >> $L
# --pin-modules: openvswitch's own tracepoints attached, the module held
# while netprobe runs and let go when it exits.
/usr/bin/netprobe record --pin-modules --quiet --hops queue,ovs_action,ovs_upcall_tp --format json > /tmp/unload-pin.json 2>/tmp/unload-pin.err &
RP=$!
for i in $(seq 120); do grep -q recording /tmp/unload-pin.err && break; sleep 1; done
refcnt pinned >> $L
rmmod openvswitch 2>>$L; echo "rmmod_pinned_rc=$?" >> $L
kill -INT $RP; wait $RP; echo "record_pinned_rc=$?" >> $L
for h in ovs_action ovs_upcall_tp; do
  echo "pinned_backend_$h=$(sed -n "/\"hop\": \"$h\"/,/\"backend\"/p" /tmp/unload-pin.json | grep -o '"backend": [^,]*' | cut -d' ' -f2 | tr -d '"')" >> $L
done
sleep 1
refcnt pin_released >> $L
rmmod openvswitch 2>>$L; echo "rmmod_after_pin_rc=$?" >> $L
"#;

/// The bridge's function hops, which the `backends` scenario attaches by
/// kprobe and by fentry in turn (not its rx_handler, `br_rx`, which gets
/// no fentry in a module: see plan_hop).
const BACKEND_HOPS: &str = "br_forward,br_xmit";
/// Pings of one measured round, and rounds per mode.
const BACKEND_PINGS: u32 = 10000;
const BACKEND_ROUNDS: u32 = 3;

/// The `backends` scenario (issue 16, item 5): kprobe against fentry on
/// the same module functions, in one VM run. A bridge between two veths
/// (198.18.1.0/24); in each round, untraced, then `record --backend
/// kprobe`, then `record --backend fentry`, on the bridge's two hops after its rx_handler,
/// each under the same ping flood. For each it brings back the host's busy
/// CPU (/proc/stat: user, nice, system, irq, softirq, in USER_HZ ticks)
/// over the flood, netprobe's own (its /proc/PID/stat utime and stime),
/// the pings sent and their mean round trip, the report, and bpftool's program list with bpf_stats
/// on, as one JSON document.
const BACKENDS: &str = r#"IP=/usr/sbin/ip
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
for n in npb-h npb-a npb-b; do $IP netns add $n; $IP -n $n link set lo up; done
$IP -n npb-h link add npbbr type bridge; $IP -n npb-h link set npbbr up
$IP -n npb-h link add npba type veth peer name npbav netns npb-a
$IP -n npb-h link add npbb type veth peer name npbbv netns npb-b
$IP -n npb-h link set npba master npbbr up; $IP -n npb-h link set npbb master npbbr up
$IP -n npb-a addr add 198.18.1.1/24 dev npbav; $IP -n npb-a link set npbav up
$IP -n npb-b addr add 198.18.1.2/24 dev npbbv; $IP -n npb-b link set npbbv up
$IP netns exec npb-a ping -q -c 3 -W 5 198.18.1.2 > /dev/null
sysctl -qw kernel.bpf_stats_enabled=1
O=/tmp/backends.json
echo '{"pings_asked": {PINGS}, "rounds": [' > $O
sep=
for r in $(seq {ROUNDS}); do
  for mode in none kprobe fentry; do
    RP=
    if [ $mode != none ]; then
      /usr/bin/netprobe record --backend $mode --hops {HOPS} --quiet --format json > /tmp/bk-rec.json 2>/tmp/bk-rec.err &
      RP=$!
      for i in $(seq 300); do grep -q recording /tmp/bk-rec.err && break; sleep 1; done
      n0=$(ticks $RP)
    fi
    b0=$(busy)
    $IP netns exec npb-a ping -f -q -c {PINGS} 198.18.1.2 > /tmp/bk-ping.txt
    b1=$(busy)
    sent=$(grep transmitted /tmp/bk-ping.txt | cut -d' ' -f1)
    rtt=$(grep rtt /tmp/bk-ping.txt | cut -d= -f2 | cut -d/ -f2)
    nt=0
    if [ -n "$RP" ]; then
      nt=$(( $(ticks $RP) - n0 ))
      bpftool prog show -j > /tmp/bk-progs.json
      kill -INT $RP; wait $RP
    else
      echo '[]' > /tmp/bk-progs.json; echo '{}' > /tmp/bk-rec.json
    fi
    echo "$sep{\"mode\": \"$mode\", \"round\": $r, \"busy_ticks\": $((b1 - b0)), \"netprobe_ticks\": $nt, \"pings\": ${sent:-0}, \"rtt_avg_ms\": ${rtt:-0}, \"progs\": " >> $O
    cat /tmp/bk-progs.json >> $O
    echo ', "record": ' >> $O
    cat /tmp/bk-rec.json >> $O
    echo '}' >> $O
    sep=,
  done
done
echo ']}' >> $O
sysctl -qw kernel.bpf_stats_enabled=0
for n in npb-h npb-a npb-b; do $IP netns del $n; done
"#;

const BEGIN: &str = "=== NETPROBE-LAB BEGIN";
const FACT_FILES: [&str; 4] = ["kernel.txt", "kallsyms.txt", "btf_funcs.txt", "tracepoints.txt"];
const END: &str = "=== NETPROBE-LAB END";

fn cache_dir(arch: Arch) -> PathBuf {
    tools::cache_dir().join("lab").join(arch.deb_arch())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Downloads (once) and unpacks Debian's stock kernel for `arch` and the
/// userspace the VM needs; returns (unpacked tree, kernel release).
fn debian_parts(arch: Arch) -> Result<(PathBuf, String)> {
    let cache = cache_dir(arch);
    std::fs::create_dir_all(&cache)?;
    if arch == Arch::S390x {
        let foreign = output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
        if !foreign.lines().any(|l| l.trim() == "s390x") {
            run(Command::new("dpkg").args(["--add-architecture", "s390x"]))?;
            run(Command::new("apt-get").args(["update", "-q"]))?;
        }
    }
    // The kernel the distro's metapackage points at (s390x may lag amd64).
    let meta = format!("linux-image-{0}:{0}", arch.deb_arch());
    let depends = output(Command::new("apt-cache").args(["depends", &meta]))?;
    let pkg = depends
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .filter(|p| p.starts_with("linux-image-"))
        .map(|p| p.split(':').next().unwrap_or(p).to_owned())
        .with_context(|| format!("apt-cache knows no {meta} (run apt-get update)"))?;
    let release = pkg.trim_start_matches("linux-image-").to_owned();
    let tree = cache.join(format!("root-{release}"));
    if tree.join("boot").join(format!("vmlinuz-{release}")).exists() {
        return Ok((tree, release));
    }
    let mut debs: Vec<String> = vec![pkg.clone()];
    match arch {
        Arch::X86_64 => debs.extend(["openvswitch-switch".to_owned(), "openvswitch-common".to_owned()]),
        Arch::S390x => debs.extend(S390X_DEBS.iter().map(|d| (*d).to_owned())),
    }
    let qualified: Vec<String> = debs.iter().map(|d| format!("{d}:{}", arch.deb_arch())).collect();
    eprintln!("xtask lab: fetching {} packages from Debian's archive (cached in {})", qualified.len(), cache.display());
    if !Command::new("apt-get").arg("download").args(&qualified).current_dir(&cache).status()?.success() {
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        run(Command::new("apt-get").arg("download").args(&qualified).current_dir(&cache))?;
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

/// Module load order: `names` each after its dependencies (modules.dep).
fn module_order(tree: &Path, release: &str, names: &[&str]) -> Result<Vec<String>> {
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
    for name in names {
        let file = format!("/{name}.ko");
        let m = deps
            .keys()
            .find(|k| k.ends_with(&file))
            .with_context(|| format!("module {name} is not in the Debian kernel package"))?;
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

/// A fresh, empty initramfs root in `work`/root.
fn new_root(work: &Path) -> Result<PathBuf> {
    let root = work.join("root");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "proc", "sys", "dev", "run", "tmp", "etc", "usr/bin", "usr/sbin"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    Ok(root)
}

/// An amd64 userspace from this host: busybox-static and `programs` with
/// their shared libraries.
fn stage_host_root(root: &Path, programs: &[&str]) -> Result<()> {
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).context("busybox-static")?;
    for p in programs {
        copy_with_libs(Path::new(p), root, Path::new(p))?;
    }
    Ok(())
}

/// Copies the kernel modules `names` and their dependencies from the
/// unpacked Debian kernel into `root`; returns them in load order.
fn copy_modules(tree: &Path, release: &str, names: &[&str], root: &Path) -> Result<Vec<String>> {
    let modules = module_order(tree, release, names)?;
    for m in &modules {
        let rel = Path::new("lib/modules").join(release).join(m);
        std::fs::create_dir_all(root.join(&rel).parent().unwrap())?;
        std::fs::copy(tree.join(&rel), root.join(&rel))?;
    }
    Ok(modules)
}

/// Writes `init` into `root` and packs the root as `work`/initrd.gz.
fn pack_initrd(root: &Path, init: &str, work: &Path) -> Result<PathBuf> {
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    let init_path = root.join("init");
    std::fs::write(&init_path, init)?;
    run(Command::new("chmod").arg("+x").arg(&init_path))?;
    let initrd = work.join("initrd.gz");
    run(Command::new("sh").arg("-c").arg(format!(
        "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
        root.display(),
        initrd.display()
    )))?;
    Ok(initrd)
}

/// The start of every VM's init: busybox's applets, the pseudo file
/// systems, the loopback, and `modules` loaded in order.
fn init_prologue(release: &str, modules: &[String]) -> String {
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
    s
}

/// The real guest's programs (with their libraries): addresses, ping, a
/// TCP stream (iperf3) and UDP request-response (sockperf).
const GUEST_PROGRAMS: &[&str] = &["/usr/sbin/ip", "/usr/bin/ping", "/usr/bin/iperf3", "/usr/bin/sockperf"];
/// virtio-net over PCI, with what it needs (modules.dep decides the order).
const GUEST_MODULES: &[&str] = &["virtio_pci", "virtio_net"];

/// `cargo xtask guest-image`: a real guest for the tests, made of Debian's
/// stock amd64 kernel (the lab's cached download) and an initramfs with
/// busybox, the virtio-net modules and the traffic tools. Its init brings
/// the network drivers up, prints [`GUEST_READY`] and then runs each line
/// it reads on its console (the serial port) as a shell command, so the
/// test that boots it decides the workload. Returns the folder holding
/// `vmlinuz` and `initrd.gz`.
pub(crate) fn guest_image() -> Result<PathBuf> {
    tools::ensure_debs(&["busybox-static", "cpio", "kmod", "iproute2", "iputils-ping", "iperf3", "sockperf"])?;
    let (tree, release) = debian_parts(Arch::X86_64)?;
    let work = build::workspace_root().join("target/guest-image");
    let root = new_root(&work)?;
    stage_host_root(&root, GUEST_PROGRAMS)?;
    let modules = copy_modules(&tree, &release, GUEST_MODULES, &root)?;
    let init = init_prologue(&release, &modules)
        + &format!("stty -echo\necho '{GUEST_READY}'\nwhile read -r line; do eval \"$line\"; done\npoweroff -f\n");
    pack_initrd(&root, &init, &work)?;
    std::fs::copy(tree.join("boot").join(format!("vmlinuz-{release}")), work.join("vmlinuz"))?;
    std::fs::write(work.join("release"), &release)?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(work)
}

/// The shell text of the `unload` scenario, its results between markers.
fn unload_scenario(release: &str, modules: &[String]) -> String {
    let ko = modules
        .iter()
        .find(|m| m.ends_with("/openvswitch.ko"))
        .map_or("openvswitch.ko".to_owned(), |m| format!("/lib/modules/{release}/{m}"));
    let mut s = UNLOAD.replace("{HOPS}", UNLOAD_HOPS).replace("{OVS_KO}", &ko);
    s += &format!("echo '{BEGIN} unload'\ncat /tmp/unload.json\necho '{END} unload'\n");
    for name in UNLOAD_TEXTS {
        s += &format!("echo '{BEGIN} {name}'\ncat /tmp/{name}.txt\necho '{END} {name}'\n");
    }
    s
}

fn init_script(release: &str, modules: &[String], scenarios: &[String]) -> String {
    // (Same script for both architectures: busybox provides the basics.)
    let mut s = init_prologue(release, modules);
    s += &format!(
        "echo '{BEGIN} probes'\nNETPROBE_VERIFIER_LOG=/tmp/verifier.log /usr/bin/netprobe probes --format json --save-facts /tmp/facts 2>/tmp/probes.err\necho '{END} probes'\ncat /tmp/probes.err\n[ -f /tmp/verifier.log ] && tail -n 150 /tmp/verifier.log\n"
    );
    // The same under --sample: the sample's code paths, which the verifier
    // prunes when sampling is off, must load with the same backends.
    s += &format!(
        "echo '{BEGIN} probes-sample'\n/usr/bin/netprobe probes --format json --sample 64 2>/tmp/probes-sample.err\necho '{END} probes-sample'\ncat /tmp/probes-sample.err\n"
    );
    // This kernel's facts (kallsyms, BTF records, tracepoints, what a trial
    // load showed), the fixtures netprobe's planning tests use.
    for f in FACT_FILES {
        s += &format!("echo '{BEGIN} facts/{f}'\ncat /tmp/facts/{f}\necho '{END} facts/{f}'\n");
    }
    // --drop-stacks: the drops' kernel stacks, with frames in modules
    // (tap, veth, openvswitch are modules in Debian's kernels).
    for sc in scenarios {
        if sc == "unload" {
            s += &unload_scenario(release, modules);
            continue;
        }
        if sc == "backends" {
            s += &BACKENDS
                .replace("{HOPS}", BACKEND_HOPS)
                .replace("{PINGS}", &BACKEND_PINGS.to_string())
                .replace("{ROUNDS}", &BACKEND_ROUNDS.to_string());
            s += &format!("echo '{BEGIN} backends'\ncat /tmp/backends.json\necho '{END} backends'\n");
            continue;
        }
        // `vhost`: the macvtap topology, the guest stand-in on vhost-net;
        // its log (with the frames the stand-in moved) comes back too.
        let args = if sc == "vhost" { "macvtap --vhost".to_owned() } else { format!("{sc} --drop-stacks") };
        s += &format!(
            "echo '{BEGIN} {sc}'\n/usr/bin/netprobe demo --topology {args} --format json 2>/tmp/{sc}.err\nrc=$?\necho '{END} {sc}'\necho \"lab: scenario {sc} exit $rc\"; cat /tmp/{sc}.err\n"
        );
        if sc == "vhost" {
            s += &format!("echo '{BEGIN} vhost-log'\ncat /tmp/vhost.err\necho '{END} vhost-log'\n");
        }
    }
    // fentry on module functions, asked for: not offered by default
    // before Linux 6.6 (netprobe's plan::MODULE_FENTRY_FROM: after it,
    // unloading and loading openvswitch again crashed this kernel). Last,
    // since no module is unloaded after it.
    // (openvswitch, unloaded and loaded again by `unload`, is loaded here
    // if a scenario left it out.)
    if let Some(ko) = modules.iter().find(|m| m.ends_with("/openvswitch.ko")) {
        s += &format!("grep -q '^openvswitch ' /proc/modules || insmod /lib/modules/{release}/{ko}\n");
    }
    s += &format!(
        "echo '{BEGIN} probes-module-fentry'\nNETPROBE_MODULE_FENTRY=1 /usr/bin/netprobe probes --format json 2>/tmp/probes-mf.err\necho '{END} probes-module-fentry'\ncat /tmp/probes-mf.err\n"
    );
    s += "echo 'lab: done'\npoweroff -f\n";
    s
}

pub(crate) fn lab(opts: &LabOpts) -> Result<()> {
    for &arch in &opts.arch {
        lab_arch(arch, opts)?;
    }
    Ok(())
}

fn lab_arch(arch: Arch, opts: &LabOpts) -> Result<()> {
    let (qemu_pkg, triple) = match arch {
        Arch::X86_64 => ("qemu-system-x86", None),
        Arch::S390x => ("qemu-system-misc", Some("s390x-unknown-linux-gnu".to_owned())),
    };
    tools::ensure_debs(&[
        qemu_pkg,
        "busybox-static",
        "cpio",
        "kmod",
        "iproute2",
        "iputils-ping",
        "iperf3",
        "procps",
        "libxdp1",
        "bpftool",
    ])?;
    let started = Instant::now();
    let host_bin = build::build_all(&build::BuildOpts::default())?;
    let bin = match &triple {
        None => host_bin.clone(),
        Some(t) => build::build_all(&build::BuildOpts { target: Some(t.clone()), debug: false })?,
    };
    let (tree, release) = debian_parts(arch)?;
    let scenarios: Vec<String> = match arch {
        Arch::X86_64 => opts.scenarios.clone(),
        Arch::S390x => vec!["macvtap".to_owned()],
    };
    let work = build::workspace_root().join("target/lab").join(arch.deb_arch());
    let root = new_root(&work)?;
    match arch {
        Arch::X86_64 => {
            stage_host_root(&root, PROGRAMS)?;
            copy_with_libs(&bin, &root, Path::new("/usr/bin/netprobe"))?;
            copy_with_libs(&tree.join("usr/bin/ovs-dpctl"), &root, Path::new("/usr/bin/ovs-dpctl"))?;
        }
        Arch::S390x => {
            // Debian's s390x userspace as unpacked (busybox, iproute2 and its
            // libraries), and the static s390x netprobe.
            for d in ["bin", "sbin", "lib", "usr"] {
                if tree.join(d).exists() {
                    run(Command::new("cp").arg("-a").arg(tree.join(d)).arg(&root))?;
                }
            }
            let _ = std::fs::remove_dir_all(root.join("lib/modules"));
            let _ = std::fs::remove_dir_all(root.join("usr/share"));
            std::fs::copy(&bin, root.join("usr/bin/netprobe"))?;
        }
    }
    let modules = copy_modules(&tree, &release, modules(arch), &root)?;
    let initrd = pack_initrd(&root, &init_script(&release, &modules, &scenarios), &work)?;

    let console = work.join("console.log");
    // Software emulation (TCG) always: the same on every machine, KVM or not.
    eprintln!("xtask lab: booting Debian {release} under QEMU (TCG), scenarios {scenarios:?}");
    let boot = Instant::now();
    let kernel = tree.join("boot").join(format!("vmlinuz-{release}"));
    // Now and then (one s390x boot in a few) a module's init dies under
    // TCG (seen: "illegal operation" in qeth_core_init, Debian 6.1.0-50,
    // QEMU 7.2), and modules that need it then wait 30 s per symbol until
    // the timeout. Such a boot is given up at once and the VM booted again.
    const ATTEMPTS: usize = 3;
    let mut attempt = 1;
    let text = loop {
        let log = std::fs::File::create(&console)?;
        let mut qemu = match arch {
            Arch::X86_64 => {
                let mut q = Command::new("qemu-system-x86_64");
                q.args(["-m", "2048", "-smp", "2", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"])
                    .args(["-accel", "tcg", "-cpu", "max"])
                    .args(["-append", &format!("console=ttyS0 panic=-1 rdinit=/init quiet loglevel=3 {LOCKUP}")]);
                q
            }
            Arch::S390x => {
                let mut q = Command::new("qemu-system-s390x");
                q.args(["-M", "s390-ccw-virtio", "-m", "1024", "-smp", "2", "-nographic", "-no-reboot"])
                    .args(["-append", &format!("console=ttysclp0 panic=-1 rdinit=/init quiet loglevel=3 {LOCKUP}")]);
                q
            }
        };
        qemu.arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = qemu.spawn().with_context(|| format!("cannot start {qemu:?}"))?;
        let deadline = Instant::now() + Duration::from_secs(opts.timeout);
        let mut checked = Instant::now();
        let mut crashed = false;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            if checked.elapsed() > Duration::from_secs(1) {
                checked = Instant::now();
                if module_init_crashed(&std::fs::read_to_string(&console).unwrap_or_default()) {
                    let _ = child.kill();
                    let _ = child.wait();
                    crashed = true;
                    break None;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        let tail = || console_tail(&text);
        // A boot that cannot go on usefully is given up and booted again:
        // a module's init that died under TCG, or a vCPU that stopped
        // scheduling, which panics (LOCKUP) so the boot ends at once with
        // the stacks of both CPUs on the console instead of running into
        // the timeout. A lockup was seen once (2026-12-02, a clean-clone CI
        // run): CPU#1 stuck in the first `netprobe probes` for 800 s; the
        // same step passed in the runs before and after it.
        let failed = if kernel_locked_up(&text) {
            Some("a CPU locked up")
        } else if crashed {
            Some("a kernel module's init crashed")
        } else {
            None
        };
        if let Some(what) = failed {
            let kept = work.join(format!("console-failed-boot-{attempt}.log"));
            std::fs::copy(&console, &kept)?;
            if attempt == ATTEMPTS {
                bail!(
                    "{what} in the {arch:?} VM in {ATTEMPTS} boots (consoles kept in {}); console tail:\n{}",
                    work.display(),
                    tail()
                );
            }
            eprintln!(
                "xtask lab: {what} in the {arch:?} VM (attempt {attempt} of {ATTEMPTS}; whole console kept in {}); \
                 booting again. Console tail:\n{}",
                kept.display(),
                tail()
            );
            attempt += 1;
            continue;
        }
        if status.is_none() {
            bail!("the {arch:?} lab VM did not finish within {} s; console tail:\n{}", opts.timeout, tail());
        }
        break text;
    };
    let tail = || console_tail(&text);
    let facts = work.join("facts");
    std::fs::create_dir_all(&facts)?;
    for f in FACT_FILES {
        if let Some(text) = section(&text, &format!("facts/{f}")) {
            std::fs::write(facts.join(f), text)?;
        }
    }
    let mut failed = Vec::new();
    let mut sections = vec!["probes".to_owned(), "probes-sample".to_owned(), "probes-module-fentry".to_owned()];
    sections.extend(scenarios.iter().cloned());
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
        if sc == "vhost" {
            std::fs::write(work.join("vhost-log.txt"), section(&text, "vhost-log").unwrap_or_default())?;
        }
        if sc == "unload" {
            for name in UNLOAD_TEXTS {
                let text = section(&text, name).unwrap_or_default();
                std::fs::write(work.join(format!("{name}.txt")), text)?;
            }
        }
        if !sc.starts_with("probes") {
            eprintln!("\n===== lab {arch:?} scenario {sc} (Debian {release}) =====");
            let _ = Command::new(&host_bin).arg("report").arg(&out).status();
        }
    }
    if failed.is_empty() {
        compare_macvtap_ovs(&host_bin, &work)?;
        backends_summary(&work)?;
    }
    eprintln!(
        "\nxtask lab: {arch:?} VM ran {:.0} s, whole {arch:?} lab {:.0} s; results in {}",
        boot.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64(),
        work.display()
    );
    if !failed.is_empty() {
        bail!("{arch:?} lab scenarios without a valid result: {failed:?}; console tail:\n{}", tail());
    }
    Ok(())
}

/// The question netprobe was built for: a guest on MacVTap against a
/// guest on an OVS bridge, the same traffic through each (the demo's
/// ping, iperf3 TCP and UDP, blackholed datagrams). Written as
/// `compare-macvtap-ovs.{txt,html,json}` next to the scenarios' reports,
/// and the table printed; whether real guests or the stand-in carried the
/// traffic is in its `guests` lines.
fn compare_macvtap_ovs(bin: &Path, work: &Path) -> Result<()> {
    let (a, b) = (work.join("macvtap.json"), work.join("ovs.json"));
    if !a.exists() || !b.exists() {
        return Ok(());
    }
    for (format, ext) in [("table", "txt"), ("html", "html"), ("json", "json")] {
        let text = output(Command::new(bin).arg("compare").arg(&a).arg(&b).args(["--format", format]))
            .with_context(|| format!("netprobe compare of the macvtap and ovs scenarios ({format})"))?;
        std::fs::write(work.join(format!("compare-macvtap-ovs.{ext}")), &text)?;
        if format == "table" {
            eprintln!("\n===== MacVTap (A) against OVS (B), the same traffic =====\n{text}");
        }
    }
    Ok(())
}

/// The `backends` scenario's figures: per mode (kprobe, fentry) and round,
/// the hop programs' runs per ping and their own time per run (bpf_stats),
/// and the host CPU each run adds to the flood (busy CPU less netprobe's
/// own process, less the untraced round's, per run); the medians, and
/// kprobe's over fentry's as ratios. Printed, and written as
/// `backends-summary.json`.
fn backends_summary(work: &Path) -> Result<()> {
    let path = work.join("backends.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let rounds = v["rounds"].as_array().context("backends.json: no rounds")?;
    // USER_HZ ticks of /proc/stat and /proc/PID/stat.
    const TICK_NS: f64 = 10_000_000.0;
    let cpu_per_ping = |r: &serde_json::Value| {
        let busy = r["busy_ticks"].as_f64().unwrap_or(0.0) - r["netprobe_ticks"].as_f64().unwrap_or(0.0);
        busy * TICK_NS / r["pings"].as_f64().unwrap_or(0.0).max(1.0)
    };
    let mut summary = serde_json::Map::new();
    for (mode, prefixes) in [("kprobe", ["kprobe_", "kretprobe_"]), ("fentry", ["fentry_", "fexit_"])] {
        let mut per_round = Vec::new();
        for r in rounds.iter().filter(|r| r["mode"] == mode) {
            let Some(base) = rounds.iter().find(|b| b["mode"] == "none" && b["round"] == r["round"]) else { continue };
            let (mut runs, mut ns) = (0.0, 0.0);
            for p in r["progs"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap_or_default();
                if prefixes.iter().any(|x| name.starts_with(x)) {
                    runs += p["run_cnt"].as_f64().unwrap_or(0.0);
                    ns += p["run_time_ns"].as_f64().unwrap_or(0.0);
                }
            }
            let pings = r["pings"].as_f64().unwrap_or(0.0).max(1.0);
            let runs_per_ping = runs / pings;
            per_round.push(serde_json::json!({
                "round": r["round"],
                "runs_per_ping": runs_per_ping,
                "bpf_ns_per_run": ns / runs.max(1.0),
                "added_ns_per_run": (cpu_per_ping(r) - cpu_per_ping(base)) / runs_per_ping.max(1e-9),
                // Every program run of a ping is on its round trip.
                "rtt_added_ns_per_run": (r["rtt_avg_ms"].as_f64().unwrap_or(0.0)
                    - base["rtt_avg_ms"].as_f64().unwrap_or(0.0))
                    * 1e6
                    / runs_per_ping.max(1e-9),
                "rtt_avg_ms": r["rtt_avg_ms"],
                "untraced_rtt_avg_ms": base["rtt_avg_ms"],
                "backends": r["record"]["coverage"].as_array().into_iter().flatten()
                    .map(|c| format!("{}={}", c["hop"].as_str().unwrap_or("?"), c["backend"].as_str().unwrap_or("-")))
                    .collect::<Vec<_>>(),
            }));
        }
        let median = |k: &str| {
            let mut x: Vec<f64> = per_round.iter().filter_map(|r| r[k].as_f64()).collect();
            x.sort_by(f64::total_cmp);
            x.get(x.len() / 2).copied().unwrap_or(0.0)
        };
        summary.insert(
            mode.to_owned(),
            serde_json::json!({
                "runs_per_ping": median("runs_per_ping"),
                "bpf_ns_per_run": median("bpf_ns_per_run"),
                "added_ns_per_run": median("added_ns_per_run"),
                "rtt_added_ns_per_run": median("rtt_added_ns_per_run"),
                "rounds": per_round,
            }),
        );
    }
    let ratio = |k: &str| summary["kprobe"][k].as_f64().unwrap_or(0.0) / summary["fentry"][k].as_f64().unwrap_or(0.0);
    let (added, bpf, rtt) = (ratio("added_ns_per_run"), ratio("bpf_ns_per_run"), ratio("rtt_added_ns_per_run"));
    summary.insert("kprobe_over_fentry_added".into(), added.into());
    summary.insert("kprobe_over_fentry_bpf".into(), bpf.into());
    summary.insert("kprobe_over_fentry_rtt".into(), rtt.into());
    eprintln!(
        "\n===== kprobe against fentry on the bridge's hops ({BACKEND_HOPS}), medians of {BACKEND_ROUNDS} rounds ====="
    );
    for mode in ["kprobe", "fentry"] {
        let m = &summary[mode];
        eprintln!(
            "{mode:>7}: {:.2} program runs per ping, {:.0} ns in the program per run (bpf_stats), {:.0} ns of host \
             CPU and {:.0} ns of round trip added per run",
            m["runs_per_ping"].as_f64().unwrap_or(0.0),
            m["bpf_ns_per_run"].as_f64().unwrap_or(0.0),
            m["added_ns_per_run"].as_f64().unwrap_or(0.0),
            m["rtt_added_ns_per_run"].as_f64().unwrap_or(0.0)
        );
    }
    eprintln!(
        "kprobe / fentry: {added:.2}x the CPU added per run, {rtt:.2}x the round trip added per run, {bpf:.2}x the \
         program's own time per run"
    );
    std::fs::write(work.join("backends-summary.json"), serde_json::to_string_pretty(&summary)?)?;
    Ok(())
}

/// The console's last 40 lines, for an error message.
fn console_tail(text: &str) -> String {
    text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Kernel arguments that turn a soft lockup into a panic that prints the
/// stacks of all CPUs (`panic_print=0x20` replays the messages `loglevel=3`
/// kept off the console), so a hung VM exits at once (`panic=-1`,
/// `-no-reboot`) and says where it hung.
const LOCKUP: &str = "softlockup_panic=1 softlockup_all_cpu_backtrace=1 panic_print=0x20";

/// Whether the kernel reported a CPU that stopped scheduling.
fn kernel_locked_up(console: &str) -> bool {
    console.contains("BUG: soft lockup")
}

/// Whether a module's init crashed during boot (its insmod failed with an
/// oops): the boot cannot go on usefully.
fn module_init_crashed(console: &str) -> bool {
    console.contains("illegal operation")
        || console.lines().any(|l| l.starts_with("lab: insmod") && l.contains("failed"))
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_crashed_module_init_is_recognised_and_a_clean_boot_is_not() {
        // From a real s390x boot (Debian 6.1.0-50 under QEMU 7.2 TCG).
        let crashed = "KASLR disabled: CPU has no PRNG\n\
            [    5.739967] illegal operation: 0001 ilc:1 [#1] SMP \n\
            [    5.741562] Krnl PSW : 0704c00180000000 000003ff7fdb8046 (qeth_core_init+0x46/0x1000 [qeth])\n\
            Segmentation fault\n\
            lab: insmod kernel/drivers/s390/net/qeth.ko failed\n";
        assert!(super::module_init_crashed(crashed));
        assert!(super::module_init_crashed("lab: insmod kernel/net/openvswitch/openvswitch.ko failed\n"));
        let clean =
            "KASLR disabled: CPU has no PRNG\nlab-begin probes\n{}\nlab-end probes\nlab: scenario macvtap exit 0\n";
        assert!(!super::module_init_crashed(clean));
        assert!(!super::kernel_locked_up(clean));
        assert!(super::kernel_locked_up(
            "=== NETPROBE-LAB BEGIN probes\n[   64.762089] watchdog: BUG: soft lockup - CPU#1 stuck for 45s! [netprobe:119]\n"
        ));
    }
}
