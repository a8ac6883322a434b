//! The catalog of hops: the one place that knows which kernel events mark a
//! packet's way through the host, what each means and how the kernel side
//! must treat it. Everything else (attach, correlation, reports) reads it.

use netprobe_common::{hop, hop_flags, TracepointHop, TRACEPOINT_HOPS};
use serde::Serialize;

/// Which part of a KVM host's datapath a hop belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Path {
    /// Device-level hops every path crosses (queueing, transmit, receive).
    GenericStack,
    /// Socket and tap-queue reads, buffer release.
    Delivery,
}

/// One hop of the catalog.
#[derive(Clone, Copy, Debug)]
pub struct Hop {
    pub id: u8,
    /// Short label used in reports.
    pub label: &'static str,
    pub path: Path,
    pub tracepoint: TracepointHop,
    /// How the kernel side treats it ([`hop_flags`]), minus `ENABLED`.
    pub flags: u16,
    pub what: &'static str,
}

const fn tp(id: u8) -> TracepointHop {
    let mut i = 0;
    while i < TRACEPOINT_HOPS.len() {
        if TRACEPOINT_HOPS[i].hop == id {
            return TRACEPOINT_HOPS[i];
        }
        i += 1;
    }
    panic!("hop id without a tracepoint program");
}

use hop_flags::{DELIVER, DEV_ARG1, DROP, RX, SKB_DEV, START, TERMINAL, TX};

pub const HOPS: &[Hop] = &[
    Hop {
        id: hop::NET_DEV_QUEUE,
        label: "queue",
        path: Path::GenericStack,
        tracepoint: tp(hop::NET_DEV_QUEUE),
        flags: SKB_DEV | START | TX,
        what: "dev_queue_xmit: the packet enters a device's transmit queue (qdisc)",
    },
    Hop {
        id: hop::NET_DEV_START_XMIT,
        label: "xmit",
        path: Path::GenericStack,
        tracepoint: tp(hop::NET_DEV_START_XMIT),
        flags: DEV_ARG1 | START | TX,
        what: "the driver's ndo_start_xmit is called (macvtap/macvlan, veth, tun, qeth...)",
    },
    Hop {
        id: hop::NETIF_RX,
        label: "netif_rx",
        path: Path::GenericStack,
        tracepoint: tp(hop::NETIF_RX),
        flags: SKB_DEV | START | RX,
        what: "a driver hands a received packet to the backlog (veth, tun without NAPI)",
    },
    Hop {
        id: hop::NETIF_RECEIVE_SKB,
        label: "receive",
        path: Path::GenericStack,
        tracepoint: tp(hop::NETIF_RECEIVE_SKB),
        flags: SKB_DEV | START | RX,
        what: "__netif_receive_skb: rx_handlers (macvlan, bridge, OVS) and the protocol stack",
    },
    Hop {
        id: hop::NAPI_GRO_RECEIVE_ENTRY,
        label: "gro",
        path: Path::GenericStack,
        tracepoint: tp(hop::NAPI_GRO_RECEIVE_ENTRY),
        flags: SKB_DEV | START | RX,
        what: "a NAPI driver passes a received packet to GRO (physical NICs, qeth)",
    },
    Hop {
        id: hop::SKB_COPY_DATAGRAM_IOVEC,
        label: "copy_out",
        path: Path::Delivery,
        tracepoint: tp(hop::SKB_COPY_DATAGRAM_IOVEC),
        flags: SKB_DEV | DELIVER,
        what:
            "the packet is copied to user memory: QEMU/vhost reading a tap queue, or a socket read",
    },
    Hop {
        id: hop::CONSUME_SKB,
        label: "consumed",
        path: Path::Delivery,
        tracepoint: tp(hop::CONSUME_SKB),
        flags: TERMINAL,
        what: "the packet's buffer is released after successful delivery",
    },
    Hop {
        id: hop::KFREE_SKB,
        label: "dropped",
        path: Path::Delivery,
        tracepoint: tp(hop::KFREE_SKB),
        flags: TERMINAL | DROP,
        what: "the packet is dropped, with the kernel's drop reason",
    },
];

pub fn by_id(id: u8) -> Option<&'static Hop> {
    HOPS.iter().find(|h| h.id == id)
}

/// Label of a hop id, or `hop<N>` for an id this build does not know.
pub fn label(id: u8) -> String {
    by_id(id).map_or_else(|| format!("hop{id}"), |h| h.label.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tracepoint_program_has_a_catalog_entry_and_ids_are_unique() {
        for tp in TRACEPOINT_HOPS {
            assert_eq!(
                HOPS.iter().filter(|h| h.id == tp.hop).count(),
                1,
                "{}",
                tp.name
            );
        }
        let mut labels: Vec<_> = HOPS.iter().map(|h| h.label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), HOPS.len());
        assert!(HOPS
            .iter()
            .all(|h| (h.id as usize) < netprobe_common::MAX_HOPS));
    }
}
