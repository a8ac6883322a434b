//! The catalog of hops: the one place that knows which kernel events mark a
//! packet's way through a KVM host, what each means, which path it belongs
//! to and where its skb is. Everything else (planning, attaching,
//! correlation, reports) reads it. Adding a hop is adding a row here.

use netprobe_common::{hop, hop_flags, TracepointHop, TRACEPOINT_HOPS};
use serde::Serialize;

/// The part of a KVM host's datapath a hop belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Path {
    /// macvtap/macvlan: the guest's tap queue and the macvlan rx_handler.
    Macvtap,
    /// tun/tap as used with a Linux bridge or OVS.
    Tun,
    /// The vhost-net worker moving packets between guest rings and tap.
    VhostNet,
    /// The Open vSwitch kernel datapath.
    Ovs,
    /// The s390 qeth driver, shared by OSA and HiperSockets.
    Qeth,
    /// qeth functions only HiperSockets (IQD) devices use.
    QethHipersockets,
    /// The Linux bridge.
    Bridge,
    /// Device-level hops every path crosses, and delivery/free.
    GenericStack,
}

impl Path {
    pub fn label(self) -> &'static str {
        match self {
            Path::Macvtap => "macvtap",
            Path::Tun => "tun/tap",
            Path::VhostNet => "vhost-net",
            Path::Ovs => "ovs",
            Path::Qeth => "qeth (OSA+HiperSockets)",
            Path::QethHipersockets => "qeth-hipersockets",
            Path::Bridge => "bridge",
            Path::GenericStack => "generic",
        }
    }
}

/// Which way the packets a hop sees travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Way {
    ToWire,
    ToGuest,
    Both,
}

/// Where a function's skb is among its arguments (as in Linux 6.1; BTF,
/// where present, overrides it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkbArg {
    /// The function has no skb argument: only its time inside is measured.
    None,
    /// `struct sk_buff *` at this argument index.
    Arg(u8),
    /// `struct sk_buff **` at this argument index (rx_handlers).
    Indirect(u8),
}

/// What marks a hop in the kernel.
#[derive(Clone, Copy, Debug)]
pub enum Site {
    Tracepoint(TracepointHop),
    Function {
        name: &'static str,
        /// Module that defines it on distro kernels; None = always built in.
        module: Option<&'static str>,
        skb: SkbArg,
    },
}

/// One hop of the catalog.
#[derive(Clone, Copy, Debug)]
pub struct Hop {
    pub id: u8,
    /// Short label used in reports (`label@device`).
    pub label: &'static str,
    pub path: Path,
    pub way: Way,
    pub site: Site,
    /// How the kernel side treats it ([`hop_flags`]), minus `ENABLED`.
    pub flags: u16,
    pub what: &'static str,
}

impl Hop {
    pub fn site_label(&self) -> String {
        match self.site {
            Site::Tracepoint(t) => format!("tracepoint {}:{}", t.category, t.name),
            Site::Function { name, module, .. } => match module {
                Some(m) => format!("function {name} [{m}]"),
                None => format!("function {name}"),
            },
        }
    }

    pub fn is_function(&self) -> bool {
        matches!(self.site, Site::Function { .. })
    }

    /// The module that defines the hop's function or tracepoint on distro
    /// kernels (None: always built in). A module's tracepoints are named
    /// by its category (`openvswitch:ovs_dp_upcall`).
    pub fn module(&self) -> Option<&'static str> {
        match self.site {
            Site::Function { module, .. } => module,
            Site::Tracepoint(t) => MODULE_TRACEPOINT_CATEGORIES.iter().copied().find(|m| *m == t.category),
        }
    }

    /// Whether the hop is a tracepoint defined in a module. A BPF program
    /// on one holds its module loaded (raw_tp and tp_btf take a module
    /// reference in `bpf_get_raw_tracepoint`, a classic tracepoint's perf
    /// event in `trace_event_try_get_ref`): `rmmod` fails "in use" while
    /// it is attached. Measured in the lab (Debian 6.1, raw_tp).
    pub fn is_module_tracepoint(&self) -> bool {
        matches!(self.site, Site::Tracepoint(_)) && self.module().is_some()
    }
}

/// Tracepoint categories that belong to a module of the same name.
const MODULE_TRACEPOINT_CATEGORIES: &[&str] = &["openvswitch"];

const fn tp(id: u8) -> Site {
    let mut i = 0;
    while i < TRACEPOINT_HOPS.len() {
        if TRACEPOINT_HOPS[i].hop == id {
            return Site::Tracepoint(TRACEPOINT_HOPS[i]);
        }
        i += 1;
    }
    panic!("hop id without a tracepoint program");
}

const fn func(name: &'static str, module: Option<&'static str>, skb: SkbArg) -> Site {
    Site::Function { name, module, skb }
}

use hop_flags::{
    CHAIN_KICK, CHAIN_SEND, CHAIN_SIGNAL, CHAIN_WORKER, DELIVER, DEV_ARG1, DIRECT, DROP, NEXT_RECEIVE, NEXT_XMIT, RX,
    SKB_DEV, START, TERMINAL, TX,
};
use SkbArg::{Arg, Indirect, None as NoSkb};

const F: u8 = hop::FIRST_FUNCTION;

/// After a transmit or a receive ([`hop_flags::DIRECT`]), nothing holds a
/// packet before the next hop where tracking could start: the calls run
/// back to back with bottom halves off (`dev_queue_xmit` from a driver's
/// transmit, forwarding from `netif_receive_skb`), in microseconds. A
/// millisecond later it is another packet in a recycled sk_buff (seen with
/// a real guest pinging 100 times a second: 11-15 ms "steps" at the ping's
/// interval).
pub const DIRECT_GAP_NS: u64 = 1_000_000;

/// A function hop that sees packets: reads the device, may start tracking.
const PKT: u16 = SKB_DEV | START;

pub const HOPS: &[Hop] = &[
    // Generic stack: tracepoints present on every kernel.
    Hop {
        id: hop::NET_DEV_QUEUE,
        label: "queue",
        path: Path::GenericStack,
        way: Way::Both,
        site: tp(hop::NET_DEV_QUEUE),
        flags: SKB_DEV | START | TX | NEXT_XMIT,
        what: "dev_queue_xmit: the packet enters a device's transmit queue (qdisc)",
    },
    Hop {
        id: hop::NET_DEV_START_XMIT,
        label: "xmit",
        path: Path::GenericStack,
        way: Way::Both,
        site: tp(hop::NET_DEV_START_XMIT),
        flags: DEV_ARG1 | START | TX | DIRECT,
        what: "the driver's ndo_start_xmit is called (macvtap/macvlan, veth, tun, qeth...)",
    },
    Hop {
        id: hop::NETIF_RX,
        label: "netif_rx",
        path: Path::GenericStack,
        way: Way::Both,
        site: tp(hop::NETIF_RX),
        flags: SKB_DEV | START | RX | NEXT_RECEIVE,
        what: "a driver hands a received packet to the backlog (veth, tun without NAPI)",
    },
    Hop {
        id: hop::NETIF_RECEIVE_SKB,
        label: "receive",
        path: Path::GenericStack,
        way: Way::Both,
        site: tp(hop::NETIF_RECEIVE_SKB),
        flags: SKB_DEV | START | RX | DIRECT,
        what: "__netif_receive_skb: rx_handlers (macvlan, bridge, OVS) and the protocol stack",
    },
    Hop {
        id: hop::NAPI_GRO_RECEIVE_ENTRY,
        label: "gro",
        path: Path::GenericStack,
        way: Way::Both,
        site: tp(hop::NAPI_GRO_RECEIVE_ENTRY),
        flags: SKB_DEV | START | RX | NEXT_RECEIVE,
        what: "a NAPI driver passes a received packet to GRO (physical NICs, qeth)",
    },
    Hop {
        id: hop::SKB_COPY_DATAGRAM_IOVEC,
        label: "copy_out",
        path: Path::GenericStack,
        way: Way::Both,
        site: tp(hop::SKB_COPY_DATAGRAM_IOVEC),
        flags: SKB_DEV | DELIVER,
        what: "the packet is copied to user memory: QEMU/vhost reading a tap queue, or a socket read",
    },
    Hop {
        id: hop::CONSUME_SKB,
        label: "consumed",
        path: Path::GenericStack,
        way: Way::Both,
        site: tp(hop::CONSUME_SKB),
        flags: TERMINAL,
        what: "the packet's buffer is released after successful delivery",
    },
    Hop {
        id: hop::KFREE_SKB,
        label: "dropped",
        path: Path::GenericStack,
        way: Way::Both,
        site: tp(hop::KFREE_SKB),
        flags: TERMINAL | DROP,
        what: "the packet is dropped, with the kernel's drop reason",
    },
    Hop {
        id: F,
        label: "ip_rcv",
        path: Path::GenericStack,
        way: Way::Both,
        site: func("ip_rcv", None, Arg(0)),
        flags: PKT | RX,
        what: "IPv4 input of the host's own stack",
    },
    // MacVTap: macvlan on the uplink, the tap queue to QEMU/vhost.
    Hop {
        id: F + 1,
        label: "tap_write",
        path: Path::Macvtap,
        way: Way::ToWire,
        site: func("tap_get_user", Some("tap"), NoSkb),
        flags: 0,
        what: "QEMU/vhost writes a guest frame into the macvtap (builds the skb)",
    },
    Hop {
        id: F + 2,
        label: "tap_enqueue",
        path: Path::Macvtap,
        way: Way::ToGuest,
        site: func("tap_handle_frame", Some("tap"), Indirect(0)),
        flags: PKT | RX,
        what: "macvtap rx_handler: the frame is queued on the tap's ptr_ring for the guest",
    },
    Hop {
        id: F + 3,
        label: "tap_read",
        path: Path::Macvtap,
        way: Way::ToGuest,
        site: func("tap_do_read", Some("tap"), Arg(3)),
        flags: PKT | DELIVER,
        what: "QEMU/vhost reads a frame from the tap queue",
    },
    Hop {
        id: F + 4,
        label: "tap_recvmsg",
        path: Path::Macvtap,
        way: Way::ToGuest,
        site: func("tap_recvmsg", Some("tap"), NoSkb),
        flags: 0,
        what: "vhost-net receives from the macvtap socket",
    },
    Hop {
        id: F + 5,
        label: "macvlan_rx",
        path: Path::Macvtap,
        way: Way::ToGuest,
        site: func("macvlan_handle_frame", Some("macvlan"), Indirect(0)),
        flags: PKT | RX,
        what: "macvlan rx_handler on the lower device picks the macvlan/macvtap by MAC",
    },
    Hop {
        id: F + 6,
        label: "macvlan_xmit",
        path: Path::Macvtap,
        way: Way::ToWire,
        site: func("macvlan_start_xmit", Some("macvlan"), Arg(0)),
        flags: PKT | TX,
        what: "macvlan/macvtap transmit",
    },
    Hop {
        id: F + 7,
        label: "macvlan_fwd",
        path: Path::Macvtap,
        way: Way::ToWire,
        site: func("macvlan_queue_xmit", Some("macvlan"), Arg(0)),
        flags: PKT | TX,
        what: "macvlan bridge-mode forwarding or hand-off to the lower device",
    },
    // tun/tap.
    Hop {
        id: F + 8,
        label: "tun_write",
        path: Path::Tun,
        way: Way::ToWire,
        site: func("tun_get_user", Some("tun"), NoSkb),
        flags: 0,
        what: "QEMU/vhost writes a guest frame into a tap (builds the skb)",
    },
    Hop {
        id: F + 9,
        label: "tun_xmit",
        path: Path::Tun,
        way: Way::ToGuest,
        site: func("tun_net_xmit", Some("tun"), Arg(0)),
        flags: PKT | TX,
        what: "a frame is queued on the tap for the guest",
    },
    Hop {
        id: F + 10,
        label: "tun_read",
        path: Path::Tun,
        way: Way::ToGuest,
        site: func("tun_do_read", Some("tun"), NoSkb),
        flags: 0,
        what: "QEMU/vhost reads from the tap",
    },
    // vhost-net workers.
    Hop {
        id: F + 11,
        label: "vhost_tx",
        path: Path::VhostNet,
        way: Way::ToWire,
        site: func("handle_tx", Some("vhost_net"), NoSkb),
        flags: 0,
        what: "vhost-net worker: guest TX ring -> tap/macvtap",
    },
    Hop {
        id: F + 12,
        label: "vhost_rx",
        path: Path::VhostNet,
        way: Way::ToGuest,
        site: func("handle_rx", Some("vhost_net"), NoSkb),
        flags: 0,
        what: "vhost-net worker: tap/macvtap -> guest RX ring",
    },
    Hop {
        id: F + 35,
        label: "tap_sendmsg",
        path: Path::VhostNet,
        way: Way::ToWire,
        site: func("tap_sendmsg", Some("tap"), NoSkb),
        flags: CHAIN_SEND,
        what: "vhost-net sends a guest frame into the macvtap (its tap_get_user follows)",
    },
    // vhost-net where no skb exists (README, "Before the first skb and
    // after the last"): thread chains, in this id order.
    Hop {
        id: F + 36,
        label: "vhost_kick",
        path: Path::VhostNet,
        way: Way::Both,
        site: func("vhost_poll_wakeup", Some("vhost"), NoSkb),
        flags: CHAIN_KICK,
        what: "a virtqueue is kicked (the guest's ioeventfd, or a write of its kick eventfd) or the tap has data: \
               vhost queues the work for its worker",
    },
    Hop {
        id: F + 37,
        label: "vhost_tx_kick",
        path: Path::VhostNet,
        way: Way::ToWire,
        site: func("handle_tx_kick", Some("vhost_net"), NoSkb),
        flags: CHAIN_WORKER | TX,
        what: "the vhost worker runs a kicked TX queue (after its wake-up and scheduling delay)",
    },
    Hop {
        id: F + 38,
        label: "vhost_rx_wake",
        path: Path::VhostNet,
        way: Way::ToGuest,
        site: func("handle_rx_net", Some("vhost_net"), NoSkb),
        flags: CHAIN_WORKER | RX,
        what: "the vhost worker runs the RX queue the tap woke (frames queued for the guest)",
    },
    Hop {
        id: F + 43,
        label: "vhost_tx_wake",
        path: Path::VhostNet,
        way: Way::ToWire,
        site: func("handle_tx_net", Some("vhost_net"), NoSkb),
        flags: CHAIN_WORKER | TX,
        what: "the vhost worker resumes a TX queue when the tap's socket has room again",
    },
    Hop {
        id: F + 44,
        label: "vhost_rx_kick",
        path: Path::VhostNet,
        way: Way::ToGuest,
        site: func("handle_rx_kick", Some("vhost_net"), NoSkb),
        flags: CHAIN_WORKER | RX,
        what: "the vhost worker runs the RX queue the guest kicked (buffers posted for frames)",
    },
    Hop {
        id: F + 39,
        label: "tun_sendmsg",
        path: Path::VhostNet,
        way: Way::ToWire,
        site: func("tun_sendmsg", Some("tun"), NoSkb),
        flags: CHAIN_SEND,
        what: "vhost-net sends a guest frame into a tap (its tun_get_user follows)",
    },
    Hop {
        id: F + 40,
        label: "vhost_signal",
        path: Path::VhostNet,
        way: Way::ToGuest,
        site: func("vhost_add_used_and_signal_n", Some("vhost"), NoSkb),
        flags: CHAIN_SIGNAL,
        what: "vhost puts the delivered buffers in the used ring and signals the guest if it asked",
    },
    Hop {
        id: F + 41,
        label: "eventfd_signal",
        path: Path::VhostNet,
        way: Way::ToGuest,
        site: func("eventfd_signal", None, NoSkb),
        flags: CHAIN_SIGNAL,
        what: "the call eventfd is signalled (KVM's irqfd, or QEMU/the stand-in reading it)",
    },
    Hop {
        id: F + 42,
        label: "irqfd_wakeup",
        path: Path::VhostNet,
        way: Way::ToGuest,
        site: func("irqfd_wakeup", Some("kvm"), NoSkb),
        flags: CHAIN_SIGNAL,
        what: "KVM's irqfd takes the signal and injects the guest's interrupt",
    },
    // Open vSwitch kernel datapath.
    Hop {
        id: F + 13,
        label: "ovs_rx_hook",
        path: Path::Ovs,
        way: Way::Both,
        site: func("netdev_frame_hook", Some("openvswitch"), Indirect(0)),
        flags: PKT | RX,
        what: "OVS rx_handler on a port (tap or uplink)",
    },
    Hop {
        id: F + 14,
        label: "ovs_vport_rx",
        path: Path::Ovs,
        way: Way::Both,
        site: func("ovs_vport_receive", Some("openvswitch"), Arg(1)),
        flags: PKT | RX,
        what: "OVS vport receive: flow key extraction",
    },
    Hop {
        id: F + 15,
        label: "ovs_flow_lookup",
        path: Path::Ovs,
        way: Way::Both,
        site: func("ovs_dp_process_packet", Some("openvswitch"), Arg(0)),
        flags: PKT,
        what: "OVS flow table lookup (hit: execute; miss: upcall)",
    },
    Hop {
        id: F + 16,
        label: "ovs_upcall",
        path: Path::Ovs,
        way: Way::Both,
        site: func("ovs_dp_upcall", Some("openvswitch"), Arg(1)),
        flags: PKT,
        what: "flow miss: the packet goes up to userspace (ovs-vswitchd)",
    },
    Hop {
        id: F + 17,
        label: "ovs_execute",
        path: Path::Ovs,
        way: Way::Both,
        site: func("ovs_execute_actions", Some("openvswitch"), Arg(1)),
        flags: PKT,
        what: "OVS executes the flow's actions",
    },
    Hop {
        id: F + 18,
        label: "ovs_output",
        path: Path::Ovs,
        way: Way::Both,
        site: func("do_output", Some("openvswitch"), Arg(1)),
        flags: PKT,
        what: "OVS output action to a port",
    },
    Hop {
        id: F + 19,
        label: "ovs_vport_send",
        path: Path::Ovs,
        way: Way::Both,
        site: func("ovs_vport_send", Some("openvswitch"), Arg(1)),
        flags: PKT | TX,
        what: "OVS sends on a vport (dev_queue_xmit follows)",
    },
    Hop {
        id: hop::OVS_DO_EXECUTE_ACTION,
        label: "ovs_action",
        path: Path::Ovs,
        way: Way::Both,
        site: tp(hop::OVS_DO_EXECUTE_ACTION),
        flags: SKB_DEV,
        what: "tracepoint: one OVS action executed",
    },
    Hop {
        id: hop::OVS_DP_UPCALL_TP,
        label: "ovs_upcall_tp",
        path: Path::Ovs,
        way: Way::Both,
        site: tp(hop::OVS_DP_UPCALL_TP),
        flags: SKB_DEV,
        what: "tracepoint: an upcall to userspace",
    },
    // s390 qeth (OSA and HiperSockets).
    Hop {
        id: F + 20,
        label: "qeth_l2_xmit",
        path: Path::Qeth,
        way: Way::ToWire,
        site: func("qeth_l2_hard_start_xmit", Some("qeth_l2"), Arg(0)),
        flags: PKT | TX,
        what: "qeth layer-2 device transmit",
    },
    Hop {
        id: F + 21,
        label: "qeth_l3_xmit",
        path: Path::Qeth,
        way: Way::ToWire,
        site: func("qeth_l3_hard_start_xmit", Some("qeth_l3"), Arg(0)),
        flags: PKT | TX,
        what: "qeth layer-3 device transmit",
    },
    Hop {
        id: F + 22,
        label: "qeth_xmit",
        path: Path::Qeth,
        way: Way::ToWire,
        site: func("qeth_xmit", Some("qeth"), Arg(1)),
        flags: PKT,
        what: "qeth core transmit: header and buffer preparation",
    },
    Hop {
        id: F + 23,
        label: "qeth_fill_buffer",
        path: Path::Qeth,
        way: Way::ToWire,
        site: func("qeth_fill_buffer", Some("qeth"), Arg(1)),
        flags: PKT,
        what: "qeth maps the packet into a QDIO output buffer",
    },
    Hop {
        id: F + 24,
        label: "qeth_flush",
        path: Path::Qeth,
        way: Way::ToWire,
        site: func("qeth_flush_buffers", Some("qeth"), NoSkb),
        flags: 0,
        what: "qeth hands QDIO output buffers to the device (SIGA)",
    },
    Hop {
        id: F + 25,
        label: "qeth_iqd_select_queue",
        path: Path::QethHipersockets,
        way: Way::ToWire,
        site: func("qeth_iqd_select_queue", Some("qeth"), Arg(1)),
        flags: PKT,
        what: "HiperSockets (IQD) output queue selection",
    },
    Hop {
        id: F + 26,
        label: "qeth_tx_poll",
        path: Path::Qeth,
        way: Way::ToWire,
        site: func("qeth_tx_poll", Some("qeth"), NoSkb),
        flags: 0,
        what: "qeth TX completion NAPI poll",
    },
    Hop {
        id: F + 27,
        label: "qeth_tx_complete",
        path: Path::Qeth,
        way: Way::ToWire,
        site: func("qeth_tx_complete_buf", Some("qeth"), NoSkb),
        flags: 0,
        what: "qeth completes a transmitted QDIO buffer",
    },
    Hop {
        id: F + 28,
        label: "qeth_notify_skbs",
        path: Path::Qeth,
        way: Way::ToWire,
        site: func("qeth_notify_skbs", Some("qeth"), NoSkb),
        flags: 0,
        what: "qeth notifies the skbs of a completed buffer (IQD completion queue)",
    },
    Hop {
        id: F + 29,
        label: "qeth_rx_poll",
        path: Path::Qeth,
        way: Way::ToGuest,
        site: func("qeth_poll", Some("qeth"), NoSkb),
        flags: 0,
        what: "qeth RX NAPI poll: packets extracted from QDIO input buffers",
    },
    Hop {
        id: F + 30,
        label: "qeth_rx_refill",
        path: Path::Qeth,
        way: Way::ToGuest,
        site: func("qeth_rx_refill_queue", Some("qeth"), NoSkb),
        flags: 0,
        what: "qeth returns QDIO input buffers to the device",
    },
    Hop {
        id: F + 31,
        label: "qeth_extract_skb",
        path: Path::Qeth,
        way: Way::ToGuest,
        site: func("qeth_extract_skb", Some("qeth"), NoSkb),
        flags: 0,
        what: "qeth builds an skb from an input buffer (inlined in Linux 6.1)",
    },
    // Linux bridge.
    Hop {
        id: F + 32,
        label: "br_rx",
        path: Path::Bridge,
        way: Way::Both,
        site: func("br_handle_frame", Some("bridge"), Indirect(0)),
        flags: PKT | RX,
        what: "bridge rx_handler on a port",
    },
    Hop {
        id: F + 33,
        label: "br_forward",
        path: Path::Bridge,
        way: Way::Both,
        site: func("br_forward", Some("bridge"), Arg(1)),
        flags: PKT,
        what: "bridge forwards to the destination port",
    },
    Hop {
        id: F + 34,
        label: "br_xmit",
        path: Path::Bridge,
        way: Way::Both,
        site: func("br_dev_queue_push_xmit", Some("bridge"), Arg(2)),
        flags: PKT | TX,
        what: "bridge hands the packet to the port's dev_queue_xmit",
    },
];

pub fn by_id(id: u8) -> Option<&'static Hop> {
    HOPS.iter().find(|h| h.id == id)
}

/// Whether a journey whose first hop is `id`, at a guest-facing device of
/// `kind` ("tun", "macvtap", or "" where the kind is unknown), carries a
/// packet into the guest rather than out of it. A tap's own transmit
/// (`queue`, `xmit`: `dev_queue_xmit` -> `tun_net_xmit`) and any read
/// toward the guest (`copy_out`, the to-guest function hops) go in; on a
/// macvtap `queue`/`xmit` is the guest's frame leaving (`tap_get_user` ->
/// `dev_queue_xmit`), and where the kind is unknown the two cannot be told
/// apart, so the frame is taken as the guest's.
pub fn starts_toward_guest(id: u8, kind: &str) -> bool {
    let Some(h) = by_id(id) else { return false };
    match h.way {
        Way::ToGuest => true,
        Way::ToWire => false,
        Way::Both => {
            id == hop::SKB_COPY_DATAGRAM_IOVEC
                || (kind == "tun" && (id == hop::NET_DEV_QUEUE || id == hop::NET_DEV_START_XMIT))
        }
    }
}

/// Label of a hop id, or `hop<N>` for an id this build does not know.
pub fn label(id: u8) -> String {
    by_id(id).map_or_else(|| format!("hop{id}"), |h| h.label.to_owned())
}

/// A set of catalog hops (`--hops`): which ones a recording attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HopSet(u64);

impl Default for HopSet {
    fn default() -> Self {
        HopSet::ALL
    }
}

impl HopSet {
    /// Every hop of the catalog (the default).
    pub const ALL: HopSet = HopSet(u64::MAX);

    pub fn contains(self, id: u8) -> bool {
        self.0 & (1u64 << id) != 0
    }

    /// The hops named by `labels` (each a catalog label, e.g. `queue`,
    /// `xmit`, `tap_read`). Refuses an unknown label, naming the known ones,
    /// and a set in which no hop starts following a packet.
    pub fn of_labels(labels: &[String]) -> anyhow::Result<HopSet> {
        let mut set = 0u64;
        for l in labels.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
            let Some(h) = HOPS.iter().find(|h| h.label == l) else {
                let known: Vec<&str> = HOPS.iter().map(|h| h.label).collect();
                anyhow::bail!(
                    "--hops: no hop is called {l:?}; the catalog's hops are {} (`netprobe probes` shows each with its kernel event)",
                    known.join(", ")
                );
            };
            set |= 1u64 << h.id;
        }
        if set == 0 {
            anyhow::bail!(
                "--hops names no hop: give catalog labels separated by commas, e.g. --hops queue,xmit,consumed"
            );
        }
        let set = HopSet(set);
        if !HOPS.iter().any(|h| set.contains(h.id) && h.flags & hop_flags::START != 0) {
            let starts: Vec<&str> = HOPS.iter().filter(|h| h.flags & hop_flags::START != 0).map(|h| h.label).collect();
            anyhow::bail!(
                "--hops: none of these hops starts following a packet, so nothing would be measured; add one of {}",
                starts.join(", ")
            );
        }
        Ok(set)
    }
}

/// The catalog's kernel functions, for looking them up in kallsyms/BTF.
pub fn functions() -> impl Iterator<Item = (&'static Hop, &'static str, Option<&'static str>)> {
    HOPS.iter().filter_map(|h| match h.site {
        Site::Function { name, module, .. } => Some((h, name, module)),
        Site::Tracepoint(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_sets_by_label() {
        assert!(HOPS.iter().all(|h| h.id < 64), "HopSet is a 64-bit mask");
        let s = HopSet::of_labels(&["queue".into(), " consumed".into()]).unwrap();
        assert!(s.contains(by_label("queue").id) && s.contains(by_label("consumed").id));
        assert!(!s.contains(by_label("xmit").id));
        let e = HopSet::of_labels(&["queue".into(), "xmitt".into()]).unwrap_err().to_string();
        assert!(e.contains("\"xmitt\"") && e.contains("tap_read"), "{e}");
        let e = HopSet::of_labels(&["consumed".into()]).unwrap_err().to_string();
        assert!(e.contains("starts following") && e.contains("queue"), "{e}");
        assert!(HopSet::of_labels(&[]).is_err());
    }

    fn by_label(l: &str) -> &'static Hop {
        HOPS.iter().find(|h| h.label == l).unwrap()
    }

    #[test]
    fn ids_labels_and_programs_are_consistent() {
        for tp in TRACEPOINT_HOPS {
            assert_eq!(
                HOPS.iter().filter(|h| matches!(h.site, Site::Tracepoint(t) if t.hop == tp.hop)).count(),
                1,
                "{}",
                tp.name
            );
        }
        let mut ids: Vec<_> = HOPS.iter().map(|h| h.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), HOPS.len(), "duplicate hop id");
        let mut labels: Vec<_> = HOPS.iter().map(|h| h.label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), HOPS.len(), "duplicate hop label");
        assert!(HOPS.iter().all(|h| (h.id as usize) < netprobe_common::MAX_HOPS));
        for (h, _, _) in functions() {
            assert!(h.id >= hop::FIRST_FUNCTION, "{}: function hops use ids from FIRST_FUNCTION", h.label);
        }
        // Hops that see packets know where the skb is.
        for h in HOPS {
            if let Site::Function { skb, .. } = h.site {
                assert_eq!(skb != SkbArg::None, h.flags & SKB_DEV != 0, "{}", h.label);
            }
        }
    }

    /// netprobe-ebpf's `chain` relies on these: one kick hop; the signal
    /// steps after the last skb follow `consumed` and each other in id
    /// order; a worker hop says which way its frames go.
    #[test]
    fn thread_chain_hops_are_ordered_as_the_kernel_side_expects() {
        let with = |f: u16| HOPS.iter().filter(move |h| h.flags & f != 0);
        assert_eq!(with(CHAIN_KICK).count(), 1);
        let signals: Vec<u8> = with(CHAIN_SIGNAL).map(|h| h.id).collect();
        assert_eq!(
            signals.iter().map(|&i| label(i)).collect::<Vec<_>>(),
            ["vhost_signal", "eventfd_signal", "irqfd_wakeup"]
        );
        assert!(signals.windows(2).all(|w| w[0] < w[1]) && signals[0] > hop::CONSUME_SKB);
        for h in with(CHAIN_WORKER) {
            let way = if h.flags & TX != 0 { Way::ToWire } else { Way::ToGuest };
            assert!(h.flags & (TX | RX) != 0 && h.way == way, "{}", h.label);
        }
        for h in with(hop_flags::CHAIN) {
            assert!(matches!(h.site, Site::Function { skb: SkbArg::None, .. }), "{}: a chain hop has no skb", h.label);
        }
    }

    #[test]
    fn covers_every_path() {
        for p in [
            Path::Macvtap,
            Path::Tun,
            Path::VhostNet,
            Path::Ovs,
            Path::Qeth,
            Path::QethHipersockets,
            Path::Bridge,
            Path::GenericStack,
        ] {
            assert!(HOPS.iter().any(|h| h.path == p), "{p:?}");
        }
    }
}
