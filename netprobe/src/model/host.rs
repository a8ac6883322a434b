//! The host's configuration as a recording captured it: what a study's
//! report opens with, and what `compare` lists first when two recordings
//! differ in it. Plain data; `session::hostconfig` reads it from the live
//! host, `analyze::compare` diffs it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostConfig {
    /// /proc/sys/kernel/osrelease.
    #[serde(default)]
    pub kernel_release: String,
    /// /proc/cmdline.
    #[serde(default)]
    pub kernel_cmdline: String,
    /// /proc/cpuinfo: `model name`, or on s390x the machine type.
    #[serde(default)]
    pub cpu_model: String,
    /// /sys/devices/system/cpu/online, e.g. `0-7`.
    #[serde(default)]
    pub cpus_online: String,
    /// /sys/devices/system/cpu/smt/control (`on`, `off`, `notsupported`...).
    #[serde(default)]
    pub smt_control: Option<String>,
    /// /sys/devices/system/cpu/smt/active.
    #[serde(default)]
    pub smt_active: Option<bool>,
    /// /sys/kernel/mm/transparent_hugepage/enabled, the selected mode.
    #[serde(default)]
    pub thp: Option<String>,
    /// The devices on the measured paths: those the recording saw and
    /// those named with --iface.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Open vSwitch kernel datapaths, where the openvswitch module is loaded.
    #[serde(default)]
    pub ovs_datapaths: Vec<OvsDatapath>,
    /// QEMU guests: vCPUs and where their threads may run.
    #[serde(default)]
    pub guests: Vec<GuestConfig>,
    /// What could not be read, and why.
    #[serde(default)]
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceConfig {
    pub name: String,
    /// The network namespace it is in: an `ip netns` name, `host` (the
    /// namespace netprobe ran in), or `inode N`.
    pub netns: String,
    /// The driver (ethtool GDRVINFO), e.g. `macvlan`, `veth`, `tun`, `qeth_l2`.
    #[serde(default)]
    pub driver: Option<String>,
    /// The link kind (rtnetlink IFLA_INFO_KIND), e.g. `macvtap`, `veth`.
    #[serde(default)]
    pub kind: Option<String>,
    /// macvtap/macvlan mode: `private`, `vepa`, `bridge`, `passthru`, `source`.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub txqueuelen: Option<u32>,
    #[serde(default)]
    pub tx_queues: Option<u32>,
    #[serde(default)]
    pub rx_queues: Option<u32>,
    /// Feature flags (ethtool -k names) and whether each is active, read
    /// with ETHTOOL_GFEATURES.
    #[serde(default)]
    pub features: BTreeMap<String, bool>,
    /// Interrupts of the device and the CPUs each may run on.
    #[serde(default)]
    pub irqs: Vec<IrqConfig>,
    /// qeth (s390x OSA/HiperSockets) settings from
    /// /sys/bus/ccwgroup/drivers/qeth/*/: card_type, layer2, buffer_count...
    #[serde(default)]
    pub qeth: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IrqConfig {
    pub irq: u32,
    /// The action's name in /proc/interrupts (e.g. `virtio0-input.0`).
    pub name: String,
    /// /proc/irq/N/smp_affinity_list.
    pub affinity: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OvsDatapath {
    pub name: String,
    pub netns: String,
    /// Flows installed in the kernel datapath.
    pub flows: u64,
    /// Packets that matched a flow, missed (upcalled), were lost.
    pub hit: u64,
    pub missed: u64,
    pub lost: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestConfig {
    pub name: String,
    pub pid: u32,
    pub vcpus: usize,
    /// Per vCPU thread (in vCPU order): the CPUs it may run on
    /// (/proc/PID/task/TID/status `Cpus_allowed_list`).
    pub vcpu_affinity: Vec<String>,
}

/// Features whose state a study names first (ethtool -k's segmentation,
/// receive offload, checksum and scatter-gather flags).
pub const KEY_FEATURES: [&str; 8] = [
    "tx-tcp-segmentation",
    "tx-generic-segmentation",
    "rx-gro",
    "rx-lro",
    "tx-scatter-gather",
    "rx-checksum",
    "tx-checksum-ip-generic",
    "rx-gro-hw",
];

impl HostConfig {
    /// Every setting as (name, value), in a stable order: what `compare`
    /// diffs and what a reader scans. Devices are named `device NAME`.
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("kernel".to_owned(), self.kernel_release.clone()),
            ("kernel command line".to_owned(), self.kernel_cmdline.clone()),
            ("CPU model".to_owned(), self.cpu_model.clone()),
            ("online CPUs".to_owned(), self.cpus_online.clone()),
        ];
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "unknown".to_owned());
        out.push(("SMT".to_owned(), smt_word(self.smt_control.as_deref(), self.smt_active)));
        out.push(("THP".to_owned(), opt(&self.thp)));
        for d in &self.devices {
            out.extend(d.settings().into_iter().map(|(k, v)| (format!("{} {k}", d.name), v)));
        }
        for dp in &self.ovs_datapaths {
            out.push((format!("OVS datapath {} flows", dp.name), dp.flows.to_string()));
        }
        for g in &self.guests {
            out.push((format!("guest {} vCPUs", g.name), g.vcpus.to_string()));
            out.push((format!("guest {} vCPU pinning", g.name), g.vcpu_affinity.join(" ")));
        }
        out
    }
}

/// `on`, `off` or the control's word, from smt/control and smt/active.
pub fn smt_word(control: Option<&str>, active: Option<bool>) -> String {
    match (control, active) {
        (_, Some(true)) => "on".to_owned(),
        (Some("on" | "off"), Some(false)) => "off".to_owned(),
        (Some(c), _) => c.to_owned(),
        (None, Some(false)) => "off".to_owned(),
        (None, None) => "unknown".to_owned(),
    }
}

impl DeviceConfig {
    /// The device's settings as (name, value), without the device's name.
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push((k.to_owned(), v));
            }
        };
        put("driver", self.driver.clone());
        put("kind", self.kind.clone());
        put("mode", self.mode.clone());
        put("MTU", self.mtu.map(|v| v.to_string()));
        put("txqueuelen", self.txqueuelen.map(|v| v.to_string()));
        put("tx queues", self.tx_queues.map(|v| v.to_string()));
        put("rx queues", self.rx_queues.map(|v| v.to_string()));
        for (f, on) in &self.features {
            put(f, Some(if *on { "on" } else { "off" }.to_owned()));
        }
        for i in &self.irqs {
            put(&format!("IRQ {} ({}) affinity", i.irq, i.name), Some(i.affinity.clone()));
        }
        for (k, v) in &self.qeth {
            put(&format!("qeth {k}"), Some(v.clone()));
        }
        out
    }
}
