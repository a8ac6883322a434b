//! Program entry points: one per (hop, backend). Each is a thin shell over
//! [`crate::tracking::ptr_hop`] or [`crate::tracking::classic_hop`]; the
//! loader picks one backend per hop and loads only that program.
//! (Kernel-function hops are in `functions`.) Program names follow
//! `<backend prefix>_<tracepoint>` (see `netprobe_common::Backend::prefix`).

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use netprobe_common::hop;

use crate::tracking::{classic_hop, ptr_hop};

/// A program may only read the arguments its tracepoint has (the verifier
/// refuses tp_btf loads, the kernel raw_tp attaches, that read past them),
/// so each hop names the ones it needs: `[skb]`, `[skb, dev]` (argument 1
/// is the device) or `[skb, _, reason]` (argument 2 is the drop reason).
macro_rules! args {
    ($ctx:ident, [skb]) => {
        ($ctx.arg(0), 0, 0)
    };
    ($ctx:ident, [skb, dev]) => {
        ($ctx.arg(0), $ctx.arg(1), 0)
    };
    ($ctx:ident, [skb, _, reason]) => {
        ($ctx.arg(0), 0, $ctx.arg(2))
    };
    ($ctx:ident, [_, skb]) => {
        ($ctx.arg(1), 0, 0)
    };
}

macro_rules! hop_programs {
    ($hop:expr, $tp:tt, $cat:tt, $btf:ident, $raw:ident, $classic:ident) => {
        hop_programs!($hop, $tp, $cat, $btf, $raw, $classic, [skb]);
    };
    ($hop:expr, $tp:tt, $cat:tt, $btf:ident, $raw:ident, $classic:ident, $args:tt) => {
        #[btf_tracepoint(function = $tp)]
        fn $btf(ctx: BtfTracePointContext) -> i32 {
            let (skb, a1, a2) = args!(ctx, $args);
            ptr_hop::<true>($hop, skb, a1, a2);
            0
        }

        #[raw_tracepoint(tracepoint = $tp)]
        fn $raw(ctx: RawTracePointContext) -> i32 {
            let (skb, a1, a2) = args!(ctx, $args);
            ptr_hop::<false>($hop, skb, a1, a2);
            0
        }

        #[tracepoint(category = $cat, name = $tp)]
        fn $classic(ctx: TracePointContext) -> u32 {
            classic_hop(&ctx, $hop);
            0
        }
    };
}

hop_programs!(hop::NET_DEV_QUEUE, "net_dev_queue", "net", btf_net_dev_queue, raw_net_dev_queue, tp_net_dev_queue);
hop_programs!(
    hop::NET_DEV_START_XMIT,
    "net_dev_start_xmit",
    "net",
    btf_net_dev_start_xmit,
    raw_net_dev_start_xmit,
    tp_net_dev_start_xmit,
    [skb, dev]
);
hop_programs!(hop::NETIF_RX, "netif_rx", "net", btf_netif_rx, raw_netif_rx, tp_netif_rx);
hop_programs!(
    hop::NETIF_RECEIVE_SKB,
    "netif_receive_skb",
    "net",
    btf_netif_receive_skb,
    raw_netif_receive_skb,
    tp_netif_receive_skb
);
hop_programs!(
    hop::NAPI_GRO_RECEIVE_ENTRY,
    "napi_gro_receive_entry",
    "net",
    btf_napi_gro_receive_entry,
    raw_napi_gro_receive_entry,
    tp_napi_gro_receive_entry
);
hop_programs!(
    hop::SKB_COPY_DATAGRAM_IOVEC,
    "skb_copy_datagram_iovec",
    "skb",
    btf_skb_copy_datagram_iovec,
    raw_skb_copy_datagram_iovec,
    tp_skb_copy_datagram_iovec
);
hop_programs!(hop::CONSUME_SKB, "consume_skb", "skb", btf_consume_skb, raw_consume_skb, tp_consume_skb);
hop_programs!(hop::KFREE_SKB, "kfree_skb", "skb", btf_kfree_skb, raw_kfree_skb, tp_kfree_skb, [skb, _, reason]);
hop_programs!(
    hop::OVS_DO_EXECUTE_ACTION,
    "ovs_do_execute_action",
    "openvswitch",
    btf_ovs_do_execute_action,
    raw_ovs_do_execute_action,
    tp_ovs_do_execute_action,
    [_, skb]
);
hop_programs!(
    hop::OVS_DP_UPCALL_TP,
    "ovs_dp_upcall",
    "openvswitch",
    btf_ovs_dp_upcall,
    raw_ovs_dp_upcall,
    tp_ovs_dp_upcall,
    [_, skb]
);
