//! Everything that crosses the kernel/user boundary, defined once.
//!
//! The kernel programs (netprobe-ebpf) and the loader (netprobe) both use
//! these `#[repr(C)]` types, map names and hop ids. Sizes are asserted at
//! compile time so a layout change breaks the build instead of the data.
#![no_std]

pub mod hist;

/// Hop ids as the kernel programs know them. The meaning of each hop (its
/// tracepoint, path, direction) lives in the loader's catalog; the kernel
/// only needs the number and the per-hop flags the loader sends it.
pub mod hop {
    pub const NET_DEV_QUEUE: u8 = 1;
    pub const NET_DEV_START_XMIT: u8 = 2;
    pub const NETIF_RX: u8 = 3;
    pub const NETIF_RECEIVE_SKB: u8 = 4;
    pub const NAPI_GRO_RECEIVE_ENTRY: u8 = 5;
    pub const SKB_COPY_DATAGRAM_IOVEC: u8 = 6;
    pub const CONSUME_SKB: u8 = 7;
    pub const KFREE_SKB: u8 = 8;
    pub const OVS_DO_EXECUTE_ACTION: u8 = 9;
    pub const OVS_DP_UPCALL_TP: u8 = 10;
    /// Kernel-function hops use ids from here up; the loader's catalog
    /// assigns them (their programs are generic slots).
    pub const FIRST_FUNCTION: u8 = 16;
}

/// A kernel tracepoint a hop program attaches to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracepointHop {
    pub hop: u8,
    /// tracefs category (`net`, `skb`).
    pub category: &'static str,
    /// Tracepoint name; the programs are named `<backend prefix>_<name>`.
    pub name: &'static str,
}

/// The tracepoint hops the BPF object has programs for, each written once:
/// hop id, tracefs category, tracepoint name, the arguments its programs
/// read (netprobe-ebpf's `programs` says how), and its programs, one per
/// backend of [`Backend::TRACEPOINT`] in that order, each named
/// `<backend prefix>_<tracepoint>` (checked at compile time). Expands to
/// `$then! { list }`: [`TRACEPOINT_HOPS`] here, the programs there.
#[macro_export]
macro_rules! tracepoint_hops {
    ($then:ident) => {
        $then! {
            NET_DEV_QUEUE, "net", "net_dev_queue", [skb],
                btf_net_dev_queue, raw_net_dev_queue, tp_net_dev_queue;
            NET_DEV_START_XMIT, "net", "net_dev_start_xmit", [skb, dev],
                btf_net_dev_start_xmit, raw_net_dev_start_xmit, tp_net_dev_start_xmit;
            NETIF_RX, "net", "netif_rx", [skb],
                btf_netif_rx, raw_netif_rx, tp_netif_rx;
            NETIF_RECEIVE_SKB, "net", "netif_receive_skb", [skb],
                btf_netif_receive_skb, raw_netif_receive_skb, tp_netif_receive_skb;
            NAPI_GRO_RECEIVE_ENTRY, "net", "napi_gro_receive_entry", [skb],
                btf_napi_gro_receive_entry, raw_napi_gro_receive_entry, tp_napi_gro_receive_entry;
            SKB_COPY_DATAGRAM_IOVEC, "skb", "skb_copy_datagram_iovec", [skb],
                btf_skb_copy_datagram_iovec, raw_skb_copy_datagram_iovec, tp_skb_copy_datagram_iovec;
            CONSUME_SKB, "skb", "consume_skb", [skb],
                btf_consume_skb, raw_consume_skb, tp_consume_skb;
            KFREE_SKB, "skb", "kfree_skb", [skb, _, reason],
                btf_kfree_skb, raw_kfree_skb, tp_kfree_skb;
            OVS_DO_EXECUTE_ACTION, "openvswitch", "ovs_do_execute_action", [_, skb],
                btf_ovs_do_execute_action, raw_ovs_do_execute_action, tp_ovs_do_execute_action;
            OVS_DP_UPCALL_TP, "openvswitch", "ovs_dp_upcall", [_, skb],
                btf_ovs_dp_upcall, raw_ovs_dp_upcall, tp_ovs_dp_upcall;
        }
    };
}

/// The CPU-accounting programs (not packet hops), written once as
/// [`tracepoint_hops!`] writes the hops: tracefs category, tracepoint
/// name, and one program per backend of [`Backend::TRACEPOINT`].
#[macro_export]
macro_rules! cpu_tracepoints {
    ($then:ident) => {
        $then! {
            "sched", "sched_switch", btf_sched_switch, raw_sched_switch, tp_sched_switch;
            "irq", "softirq_entry", btf_softirq_entry, raw_softirq_entry, tp_softirq_entry;
            "irq", "softirq_exit", btf_softirq_exit, raw_softirq_exit, tp_softirq_exit;
        }
    };
}

/// Whether `program` is `<prefix>_<name>` (compile-time checks of the
/// program names written in [`tracepoint_hops!`] and the slot programs).
pub const fn is_program_name(program: &str, prefix: &str, name: &[u8]) -> bool {
    let (p, pre) = (program.as_bytes(), prefix.as_bytes());
    if p.len() != pre.len() + 1 + name.len() {
        return false;
    }
    let mut i = 0;
    while i < p.len() {
        let want = if i < pre.len() {
            pre[i]
        } else if i == pre.len() {
            b'_'
        } else {
            name[i - pre.len() - 1]
        };
        if p[i] != want {
            return false;
        }
        i += 1;
    }
    true
}

macro_rules! tracepoint_tables {
    ($($tp:literal, $btf:ident, $raw:ident, $classic:ident;)*) => {
        $(
            const _: () = assert!(
                is_program_name(stringify!($btf), Backend::TRACEPOINT[0].prefix(), $tp.as_bytes())
                    && is_program_name(stringify!($raw), Backend::TRACEPOINT[1].prefix(), $tp.as_bytes())
                    && is_program_name(stringify!($classic), Backend::TRACEPOINT[2].prefix(), $tp.as_bytes()),
                "a program is not named <backend prefix>_<tracepoint>"
            );
        )*
    };
}

macro_rules! hop_table {
    ($($hop:ident, $cat:literal, $tp:literal, $args:tt, $btf:ident, $raw:ident, $classic:ident;)*) => {
        /// The tracepoint hops the BPF object has programs for, one program per
        /// backend in [`Backend::TRACEPOINT`]. The loader's catalog says what they mean.
        pub const TRACEPOINT_HOPS: [TracepointHop; [$($tp),*].len()] =
            [$(TracepointHop { hop: hop::$hop, category: $cat, name: $tp }),*];
        tracepoint_tables! { $($tp, $btf, $raw, $classic;)* }
    };
}
tracepoint_hops!(hop_table);

macro_rules! cpu_table {
    ($($cat:literal, $tp:literal, $btf:ident, $raw:ident, $classic:ident;)*) => {
        /// The CPU-accounting programs (not packet hops): `<backend prefix>_<name>`.
        pub const CPU_TRACEPOINTS: [(&str, &str); [$($tp),*].len()] = [$(($cat, $tp)),*];
        tracepoint_tables! { $($tp, $btf, $raw, $classic;)* }
    };
}
cpu_tracepoints!(cpu_table);

/// Upper bound (exclusive) on hop ids; sizes the per-hop tables in [`Config`].
pub const MAX_HOPS: usize = 64;

/// Per-hop behaviour flags, set by the loader from its catalog.
pub mod hop_flags {
    /// The hop is attached; unset entries are ignored by the kernel side.
    pub const ENABLED: u16 = 1 << 0;
    /// The packet's journey ends here (its tracking state is removed).
    pub const TERMINAL: u16 = 1 << 1;
    /// The hop is a drop: aggregate it by drop reason too.
    pub const DROP: u16 = 1 << 2;
    /// Read the device from `skb->dev` at this hop.
    pub const SKB_DEV: u16 = 1 << 3;
    /// The device is the tracepoint's second argument (`net_dev_start_xmit`).
    pub const DEV_ARG1: u16 = 1 << 4;
    /// A packet not yet tracked may start being tracked here.
    pub const START: u16 = 1 << 5;
    /// A receive hop (netif_rx, netif_receive_skb, GRO).
    pub const RX: u16 = 1 << 6;
    /// A transmit hop (queueing, driver transmit).
    pub const TX: u16 = 1 << 7;
    /// Delivery to user memory: after it only delivery or terminal hops
    /// can follow for the same packet.
    pub const DELIVER: u16 = 1 << 8;
    /// After this hop at a device (`net_dev_queue`), the same packet's next
    /// tracepoint hop at a device is the driver transmit on that device:
    /// anything else is another packet in a recycled sk_buff.
    pub const NEXT_XMIT: u16 = 1 << 9;
    /// After this hop (`netif_rx`, GRO), the same packet's next tracepoint
    /// hop at a device is `netif_receive_skb`.
    pub const NEXT_RECEIVE: u16 = 1 << 10;
    /// Nothing holds the packet after this hop (`net_dev_start_xmit`,
    /// `netif_receive_skb`) before a hop where tracking could start: such a
    /// hop reached more than `Config::direct_gap_ns` later is another
    /// packet.
    pub const DIRECT: u16 = 1 << 11;
    /// Thread chains ([`ThreadChain`]), the steps of a journey where no
    /// skb exists: the function's first argument is a wait-queue entry
    /// woken by a kick (`vhost_poll_wakeup`); the time is kept in
    /// `NP_KICKS` under the work item it queues.
    pub const CHAIN_KICK: u16 = 1 << 12;
    /// A worker runs a work item (its first argument: `handle_tx_kick`,
    /// `handle_rx_net`): the kick's time is taken from `NP_KICKS` and the
    /// thread's chain starts here.
    pub const CHAIN_WORKER: u16 = 1 << 13;
    /// The worker hands a frame to a socket (`tap_sendmsg`,
    /// `tun_sendmsg`): the next packet whose tracking starts in the same
    /// thread is this frame's skb.
    pub const CHAIN_SEND: u16 = 1 << 14;
    /// After the last skb hop of a frame the worker delivered (its
    /// `consume_skb` after the copy to the guest): the completion and the
    /// signal to the guest (`vhost_add_used_and_signal_n`,
    /// `eventfd_signal`, KVM's `irqfd_wakeup`), in catalog id order.
    pub const CHAIN_SIGNAL: u16 = 1 << 15;
    /// Any of the chain flags.
    pub const CHAIN: u16 = CHAIN_KICK | CHAIN_WORKER | CHAIN_SEND | CHAIN_SIGNAL;
}

/// Name prefix of the threads of a guest stand-in: a process that drives a
/// macvtap's /dev/tapN or a tap the way QEMU does (the demo topology's
/// relay). The loader reports their CPU time under the role `guest`.
pub const GUEST_STANDIN_THREAD: &str = "guest-relay";

/// Declares the BPF object's global and maps, each under its one name: the
/// loader's `names` constants come from the same list as the kernel side's
/// statics ([`bpf_global!`], [`bpf_map!`]), so the two cannot disagree.
/// (`$d` is a `$`, for the macros declared inside.)
macro_rules! object_symbols {
    (
        $d:tt
        global: $(#[$gdoc:meta])* $global:ident = $gsym:ident;
        maps: $($(#[$doc:meta])* $konst:ident = $sym:ident;)*
    ) => {
        /// Names of the maps and globals in the BPF object.
        pub mod names {
            $(#[$gdoc])*
            pub const $global: &str = stringify!($gsym);
            $($(#[$doc])* pub const $konst: &str = stringify!($sym);)*
            pub const ALL_MAPS: [&str; [$($konst),*].len()] = [$($konst),*];
        }

        /// The kernel side's declaration of the load-time global,
        /// `bpf_global!(CONFIG: Config = Config::zeroed())`: a static
        /// under the symbol name the loader overrides (`names::CONFIG`).
        #[macro_export]
        macro_rules! bpf_global {
            ($d(#[$d a:meta])* $d v:vis $global: $d t:ty = $d e:expr) => {
                $d(#[$d a])*
                #[unsafe(no_mangle)]
                $d v static $gsym: $d t = $d e;
            };
        }

        /// The kernel side's declaration of a map, by its `names` constant:
        /// `bpf_map!(pub(crate) HOPS: PerCpuHashMap<PairKey, Hist> = ...)`
        /// declares the static `NP_HOPS`, an aya-ebpf map of that symbol name.
        #[macro_export]
        macro_rules! bpf_map {
            $(($d(#[$d a:meta])* $d v:vis $konst: $d t:ty = $d e:expr) => {
                $d(#[$d a])*
                #[::aya_ebpf::macros::map]
                $d v static $sym: $d t = $d e;
            };)*
        }
    };
}

object_symbols! {
    $
    global:
    /// The load-time [`crate::Config`] global.
    CONFIG = NP_CONFIG;
    maps:
    TRACK = NP_TRACK;
    HOPS = NP_HOPS;
    /// Per-CPU direct-mapped cache of hop-pair histograms ([`crate::PairSlot`]).
    PAIRS = NP_PAIRS;
    DROPS = NP_DROPS;
    DEVS = NP_DEVS;
    FILTER = NP_FILTER;
    COUNTERS = NP_COUNTERS;
    ZERO = NP_ZERO;
    /// Entry timestamps of function hops, keyed by [`crate::EntryKey`].
    ENTRY = NP_ENTRY;
    /// Time inside hop functions: `u32` hop id -> histogram.
    FUNCS = NP_FUNCS;
    /// Ring buffer of [`crate::JourneyRecord`]s (trace mode).
    EVENTS = NP_EVENTS;
    /// Trace mode: each tracked packet's journey so far, in the slot of its
    /// `NP_TRACK` state (one entry unless tracing).
    JOURNEY = NP_JOURNEY;
    /// On-CPU time per thread ([`crate::CpuTime`]).
    CPU = NP_CPU;
    /// Per-CPU time of the last context switch.
    CPU_LAST = NP_CPU_LAST;
    /// Per-CPU softirq time by vector, and entry times.
    SOFTIRQ = NP_SOFTIRQ;
    /// Per-CPU scratch word: turns a BTF-typed pointer into a plain number.
    SCRATCH = NP_SCRATCH;
    /// `--drop-stacks`: kernel stacks of drops (a `BPF_MAP_TYPE_STACK_TRACE`,
    /// stack id -> return addresses, innermost first).
    DROP_STACKS = NP_DROP_STACKS;
    /// `--drop-stacks`: drops counted per [`crate::DropStackKey`] (the drop's
    /// key and its stack id), per CPU.
    DROP_STACK_COUNTS = NP_DROP_STACK_COUNTS;
    /// Kick times of work items not yet run: work item address -> ns.
    KICKS = NP_KICKS;
    /// Per-CPU [`crate::ThreadChain`]: a worker's steps where no skb exists.
    CHAIN = NP_CHAIN;
}

/// `Config::bench` bits: what `cargo xtask bench` switches to separate
/// netprobe's own cost from the tracepoints' (environment variables of the
/// loader, see `attach`).
pub mod bench {
    /// Every program returns at once (`netprobe record --bench-empty-programs`, for `cargo xtask bench`): the
    /// floor any tool with programs on the same tracepoints pays.
    pub const EMPTY: u32 = 1 << 0;
    /// Launder the skb pointer with `bpf_probe_read_kernel` (a helper call
    /// per hop; `--bench-probe-launder`), as before the scratch word.
    pub const PROBE_LAUNDER: u32 = 1 << 1;
    /// One clock read per hop (`--bench-one-clock`): a followed packet's
    /// next hop measures from this hop's entry, not from the end of its
    /// work, which is what the second read costs.
    pub const ONE_CLOCK: u32 = 1 << 2;
}

/// How a kernel program is attached; also the prefix of its program name.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    TpBtf = 1,
    RawTp = 2,
    Tracepoint = 3,
    /// fentry on entry, fexit on return (BTF trampolines).
    Fentry = 4,
    /// kprobe on entry, kretprobe on return.
    Kprobe = 5,
}

impl Backend {
    /// Backends of tracepoint hops, best first.
    pub const TRACEPOINT: [Backend; 3] = [Backend::TpBtf, Backend::RawTp, Backend::Tracepoint];
    /// Backends of kernel-function hops, best first.
    pub const FUNCTION: [Backend; 2] = [Backend::Fentry, Backend::Kprobe];

    /// Prefix of the program names for this backend: `<prefix>_<tracepoint>`
    /// for tracepoint hops, `<prefix>_<slot>` (and `<exit prefix>_<slot>`)
    /// for function hops.
    pub const fn prefix(self) -> &'static str {
        match self {
            Backend::TpBtf => "btf",
            Backend::RawTp => "raw",
            Backend::Tracepoint => "tp",
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
        }
    }

    /// Prefix of the return-side programs of function backends.
    pub const fn exit_prefix(self) -> Option<&'static str> {
        match self {
            Backend::Fentry => Some("fexit"),
            Backend::Kprobe => Some("kretprobe"),
            _ => None,
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Backend::TpBtf => "tp_btf",
            Backend::RawTp => "raw_tp",
            Backend::Tracepoint => "tracepoint",
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
        }
    }

    pub fn from_label(s: &str) -> Option<Backend> {
        [Backend::TpBtf, Backend::RawTp, Backend::Tracepoint, Backend::Fentry, Backend::Kprobe]
            .into_iter()
            .find(|b| b.label() == s)
    }
}

/// Kernel-function hops attach through generic programs, one per slot and
/// backend; the loader tells each slot its hop and whether its skb argument
/// is a `struct sk_buff **`.
pub const MAX_SLOTS: usize = 48;

/// The argument each slot's programs read the skb from, fixed at compile
/// time: the verifier accepts context reads only at constant offsets.
/// [`SlotConfig::NO_SKB`] slots read none. The loader gives a function a
/// slot whose position matches its skb argument.
pub const SLOT_ARG: [u8; MAX_SLOTS] = {
    let mut t = [SlotConfig::NO_SKB; MAX_SLOTS];
    let mut i = 0;
    while i < MAX_SLOTS {
        t[i] = match i {
            0..=13 => 0,
            14..=25 => 1,
            26..=28 => 2,
            29..=31 => 3,
            32..=33 => 4,
            _ => SlotConfig::NO_SKB,
        };
        i += 1;
    }
    t
};

/// Slots `0..INDIRECT_SLOTS` (all reading argument 0) can also read a
/// `struct sk_buff **` (the rx_handlers) under fentry: untyped, through
/// bpf_get_func_arg, with the skb then read as a number. The other slots'
/// fentry programs have only the typed read (each such path is a second
/// inlined copy of the hop's code in the object).
pub const INDIRECT_SLOTS: usize = 6;
const _: () = assert!(SLOT_ARG[INDIRECT_SLOTS - 1] == 0, "indirect slots read argument 0");

/// Where a function's `struct sk_buff *` is among its arguments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotConfig {
    pub hop: u8,
    /// Argument index of the skb, or [`SlotConfig::NO_SKB`].
    pub skb_arg: u8,
    /// Nonzero: the argument is a `struct sk_buff **` (rx_handlers).
    pub skb_indirect: u8,
    pub _pad: u8,
}

impl SlotConfig {
    pub const NO_SKB: u8 = 0xff;
}

/// Offsets of the kernel struct fields the programs read, taken by the
/// loader from the running kernel's BTF. Zero means "unknown": the program
/// then skips that read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    /// `struct sk_buff`, member `dev`.
    pub skb_dev: u32,
    /// `struct net_device`, member `name`.
    pub dev_name: u32,
    /// `struct net_device`, member `ifindex`.
    pub dev_ifindex: u32,
    /// `struct net_device`, member `nd_net` (its `net` pointer).
    pub dev_nd_net: u32,
    /// `struct net` member `ns` plus `struct ns_common` member `inum`.
    pub net_ns_inum: u32,
    /// `struct net_device`, member `rtnl_link_ops`.
    pub dev_link_ops: u32,
    /// `struct rtnl_link_ops`, member `kind`.
    pub link_ops_kind: u32,
    /// `struct sk_buff`, member `head`: with the skb address, the packet's
    /// identity (a reused sk_buff gets a new data buffer).
    pub skb_head: u32,
    /// Nonzero when the offsets above are valid.
    pub valid: u32,
    /// `struct sk_buff`, member `mac_header` (a `u16` offset from `head`):
    /// where the flow filter finds the packet's Ethernet header.
    pub skb_mac_header: u32,
}

/// Where a classic (tracefs) tracepoint keeps the fields netprobe reads,
/// from the tracepoint's `format` file. Zero means "absent".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassicFields {
    pub skbaddr: u16,
    /// Offset of the `__data_loc char[] name` field.
    pub name_loc: u16,
    pub reason: u16,
    pub reason_size: u16,
}

/// The load-time configuration, written by the loader into the global
/// `NP_CONFIG` before the programs are loaded.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub off: Offsets,
    /// Gap after which a tracked packet is considered stale (ns).
    pub max_gap_ns: u64,
    /// Gap after a [`hop_flags::DIRECT`] hop after which a hop where
    /// tracking could start is another packet (ns; 0: no such rule).
    pub direct_gap_ns: u64,
    /// Nonzero: only packets first seen on a device in `NP_FILTER` are tracked.
    pub filter_enabled: u32,
    /// Nonzero: per-packet trace mode, every hop-pair sample is also sent
    /// to userspace, in a [`JourneyRecord`] on `NP_EVENTS` (lost ones counted).
    pub trace: u32,
    pub hop_flags: [u16; MAX_HOPS],
    pub classic: [ClassicFields; MAX_HOPS],
    pub slots: [SlotConfig; MAX_SLOTS],
    /// Offset of `vec` in the classic `irq:softirq_entry/exit` records
    /// (from their tracefs format files).
    pub softirq_vec_off: u32,
    /// Benchmark switches ([`bench`] bits; 0 in normal use).
    pub bench: u32,
    /// Nonzero (`--drop-stacks`): each counted drop's kernel stack goes to
    /// `NP_DROP_STACKS`, its count to `NP_DROP_STACK_COUNTS`.
    pub drop_stacks: u32,
    /// `struct vhost_poll`: offset of member `work` minus that of `wait`
    /// (from the vhost module's BTF), which takes a kick's wait-queue
    /// entry to the work item its worker runs (0: unknown, no kick is
    /// timed).
    pub vhost_wait_to_work: u32,
    /// The flow filter (`--filter`), applied where a packet's tracking
    /// would start.
    pub flow: FlowFilter,
    /// `--sample N`: follow one packet in N (0 or 1: all), decided where
    /// its tracking would start from a hash of header fields that differ
    /// from packet to packet ([`sample_hash`]).
    pub sample_every: u32,
    /// Gap (ns) after which a tracked packet's header fingerprint is
    /// checked again ([`TrackState::fp`]); a different one is another
    /// packet in a recycled sk_buff (0: never checked, none taken).
    pub fingerprint_gap_ns: u32,
    /// Nonzero: hops of thread chains ([`hop_flags::CHAIN`]) can be attached (kprobes),
    /// so the hops where an skb's tracking starts, where it is delivered
    /// and where it is freed after delivery look for the current thread's
    /// [`ThreadChain`].
    pub chains: u32,
    /// The catalog's id of the kick hop (`CHAIN_KICK`), which the chain's
    /// first pair starts from (0: none attached).
    pub chain_kick_hop: u32,
}

impl Config {
    pub const fn zeroed() -> Self {
        Config {
            off: Offsets {
                skb_dev: 0,
                dev_name: 0,
                dev_ifindex: 0,
                dev_nd_net: 0,
                net_ns_inum: 0,
                dev_link_ops: 0,
                link_ops_kind: 0,
                skb_head: 0,
                valid: 0,
                skb_mac_header: 0,
            },
            max_gap_ns: 0,
            direct_gap_ns: 0,
            filter_enabled: 0,
            trace: 0,
            hop_flags: [0; MAX_HOPS],
            classic: [ClassicFields { skbaddr: 0, name_loc: 0, reason: 0, reason_size: 0 }; MAX_HOPS],
            slots: [SlotConfig { hop: 0, skb_arg: SlotConfig::NO_SKB, skb_indirect: 0, _pad: 0 }; MAX_SLOTS],
            softirq_vec_off: 0,
            bench: 0,
            drop_stacks: 0,
            vhost_wait_to_work: 0,
            flow: FlowFilter::zeroed(),
            sample_every: 0,
            fingerprint_gap_ns: 0,
            chains: 0,
            chain_kick_hop: 0,
        }
    }
}

/// Alternatives (OR) in a [`FlowFilter`].
pub const FLOW_TERMS: usize = 8;
/// Conditions (AND) in one alternative of a [`FlowFilter`].
pub const FLOW_LITS: usize = 6;

/// Packet header fields a [`FlowLit`] tests.
pub mod flow_field {
    /// EtherType (after one VLAN tag): `ip`, `ip6`, `arp`.
    pub const ETHERTYPE: u8 = 1;
    /// IP protocol / IPv6 next header: `tcp`, `udp`, `icmp`, `proto N`.
    pub const PROTO: u8 = 2;
    /// Source address (`value`/`mask` words in packet byte order; IPv4 in
    /// word 0; [`super::FlowLit::family`] says which).
    pub const SADDR: u8 = 3;
    pub const DADDR: u8 = 4;
    /// TCP/UDP/SCTP ports (host order in `value[0]`); false without ports.
    pub const SPORT: u8 = 5;
    pub const DPORT: u8 = 6;
}

/// One condition of the flow filter: `(field & mask) == value`, negated
/// when `negate` is set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowLit {
    /// A [`flow_field`] constant.
    pub field: u8,
    pub negate: u8,
    /// 4 or 6 for address fields (the packet's family must match).
    pub family: u8,
    pub _pad: u8,
    pub value: [u32; 4],
    pub mask: [u32; 4],
}

/// The in-kernel flow filter in disjunctive normal form: a packet passes
/// when all literals of at least one of the first `terms` alternatives
/// hold. The loader compiles `--filter EXPR` into it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowFilter {
    /// Nonzero: the filter applies (then `terms == 0` matches nothing).
    pub enabled: u32,
    pub terms: u32,
    /// Literals used in each alternative.
    pub lits: [u8; FLOW_TERMS],
    pub lit: [[FlowLit; FLOW_LITS]; FLOW_TERMS],
}

impl FlowFilter {
    pub const fn zeroed() -> Self {
        FlowFilter {
            enabled: 0,
            terms: 0,
            lits: [0; FLOW_TERMS],
            lit: [[FlowLit { field: 0, negate: 0, family: 0, _pad: 0, value: [0; 4], mask: [0; 4] }; FLOW_LITS];
                FLOW_TERMS],
        }
    }

    /// The flow filter's decision on one packet: it passes when the filter
    /// is off, or when all literals of one of the first `terms`
    /// alternatives hold. The kernel programs and the loader share this one
    /// definition. Shaped for the BPF verifier: both loops are bounded by
    /// constants ([`FLOW_TERMS`], [`FLOW_LITS`]), the counts from the
    /// configuration only end them early.
    #[inline(always)]
    pub fn passes(&self, f: &FlowFields) -> bool {
        if self.enabled == 0 {
            return true;
        }
        let terms = self.terms as usize;
        let mut t = 0;
        while t < FLOW_TERMS {
            if t >= terms {
                break;
            }
            let n = self.lits[t] as usize;
            let mut all = true;
            let mut l = 0;
            while l < FLOW_LITS {
                if l >= n {
                    break;
                }
                if !self.lit[t][l].holds(f) {
                    all = false;
                    break;
                }
                l += 1;
            }
            if all {
                return true;
            }
            t += 1;
        }
        false
    }
}

/// The header fields of one packet the flow filter looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowFields {
    pub ethertype: u32,
    /// 4, 6, or 0 when the packet is not IP.
    pub family: u32,
    pub proto: u32,
    /// Nonzero when `sport`/`dport` were read (TCP, UDP, SCTP; first fragment).
    pub has_ports: u32,
    pub sport: u32,
    pub dport: u32,
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
    /// What changes from one packet of a flow to the next: the IPv4
    /// identification (or IPv6 flow label word) and the 8 bytes after the
    /// ports (TCP sequence and acknowledgement, UDP length and checksum).
    pub ip_id: u32,
    pub l4_words: [u32; 2],
}

impl FlowFields {
    /// The packet's header fingerprint ([`TrackState::fp`]): the fields
    /// that tell one packet of a flow from the next and that no hop of a
    /// host's datapath rewrites: IP ID, protocol, and the L4 words after
    /// the ports (TCP sequence and acknowledgement; ICMP identifier and
    /// sequence, then data; UDP length and the first payload word, not
    /// the checksum, which offloads fill in on the way). Never 0; 0 stands
    /// for headers that could not be read (`family` 0).
    #[inline(always)]
    pub fn fingerprint(&self) -> u32 {
        if self.family == 0 {
            return 0;
        }
        header_fingerprint(self.ip_id, self.proto, self.l4_words)
    }
}

/// The hash `--sample` decides by, from the packet's header fingerprint
/// ([`header_fingerprint`], 0 where unreadable) and its data buffer
/// (`skb->head`): the same for a packet at every hop where its tracking
/// could start (no field a router rewrites), and different for
/// consecutive packets of one flow. The buffer, with the skb what
/// netprobe tells packets apart by, separates packets with identical
/// headers (a DF datagram's IP ID is 0; identical payloads); a packet
/// whose buffer changes is a new journey anyway.
#[inline(always)]
pub fn sample_hash(fp: u32, buffer: u64) -> u32 {
    let words = [buffer as u32, (buffer >> 32) as u32, fp];
    // A multiply-xorshift mix (murmur3's finaliser) over the words.
    let mut h: u32 = 0x9e37_79b9;
    let mut i = 0;
    while i < words.len() {
        h ^= words[i];
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        i += 1;
    }
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// [`FlowFields::fingerprint`] from its three inputs (the kernel side
/// reads just these, keeping its stack small).
#[inline(always)]
pub fn header_fingerprint(ip_id: u32, proto: u32, l4_words: [u32; 2]) -> u32 {
    let mut w0 = l4_words[0];
    if proto == 17 {
        w0 &= u32::from_ne_bytes([0xff, 0xff, 0, 0]); // length, not checksum
    }
    let mut h = (ip_id ^ (proto << 24)).wrapping_mul(0x9e37_79b1);
    h = (h ^ w0).wrapping_mul(0x85eb_ca77);
    h = (h ^ l4_words[1]).wrapping_mul(0xc2b2_ae3d);
    (h ^ (h >> 16)) | 1
}

impl FlowLit {
    /// Whether the literal holds for a packet (the kernel programs and the
    /// loader's tests share this one definition).
    #[inline(always)]
    pub fn holds(&self, f: &FlowFields) -> bool {
        let v = match self.field {
            flow_field::ETHERTYPE => (f.ethertype & self.mask[0]) == self.value[0],
            flow_field::PROTO => f.family != 0 && (f.proto & self.mask[0]) == self.value[0],
            flow_field::SADDR | flow_field::DADDR => {
                let a = if self.field == flow_field::SADDR { &f.saddr } else { &f.daddr };
                f.family == self.family as u32
                    && (a[0] & self.mask[0]) == self.value[0]
                    && (a[1] & self.mask[1]) == self.value[1]
                    && (a[2] & self.mask[2]) == self.value[2]
                    && (a[3] & self.mask[3]) == self.value[3]
            }
            flow_field::SPORT => f.has_ports != 0 && (f.sport & self.mask[0]) == self.value[0],
            flow_field::DPORT => f.has_ports != 0 && (f.dport & self.mask[0]) == self.value[0],
            _ => false,
        };
        v != (self.negate != 0)
    }
}

/// Entries of the packet tracking table `NP_TRACK`: a direct-mapped array
/// indexed by a hash of the skb address (a power of two). An array lookup
/// is inlined by the verifier, where a hash map costs a call, hashing and
/// locking on every hop; a slot taken by another packet is counted.
pub const TRACK_SLOTS: u32 = 1 << 16;

/// The `NP_TRACK` slot of an skb address.
#[inline(always)]
pub fn track_slot(skb: u64) -> u32 {
    // sk_buffs are 256-byte slab objects: drop the low bits, then mix.
    (((skb >> 8).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 40) as u32 & (TRACK_SLOTS - 1)
}

/// Tracking state of one packet, in its slot of `NP_TRACK`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrackState {
    /// The skb address this slot follows; 0 when free.
    pub skb: u64,
    /// Time of the last hop (ns, CLOCK_MONOTONIC).
    pub ts: u64,
    /// Device key of the last hop that had a device.
    pub dev: u64,
    /// Device key where tracking started.
    pub origin: u64,
    /// `skb->head` when tracking started (0 where it cannot be read).
    pub head: u64,
    /// Network namespace (`struct net *`) of the last hop's device, 0 if unknown.
    pub net: u64,
    pub hop: u8,
    pub origin_hop: u8,
    /// Not 0: `--sample` left this packet out. The slot only remembers
    /// the decision, so the packet's later hops where tracking could
    /// start do not read its headers again; no pair is counted for it.
    /// (It takes the place of a padding word: the struct keeps its size.)
    pub excluded: u16,
    /// Fingerprint of the packet's headers where tracking started (IP ID,
    /// TCP sequence and acknowledgement, UDP length and payload words,
    /// ICMP id and sequence; 0: not taken or not readable), checked after
    /// long gaps (`Config::fingerprint_gap_ns`).
    pub fp: u32,
}

/// What a thread did where no skb exists (README, "Before the first skb
/// and after the last"), one per CPU in `NP_CHAIN`: a vhost-net worker
/// woken by a kick, taking a frame from the guest's ring and handing it to
/// the tap's `sendmsg`, whose skb's tracking then starts in the same
/// thread; or, after it delivered a frame to the guest, completing it and
/// signalling the guest. Its steps become hop pairs of the device where
/// the skb was, aggregated like the others.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadChain {
    /// `bpf_get_current_pid_tgid` of the thread (0: no chain).
    pub tid: u64,
    /// When its work was kicked (0: no kick on record).
    pub kick_ts: u64,
    /// When the worker started the work.
    pub worker_ts: u64,
    /// Time of the chain's last hop.
    pub ts: u64,
    /// After an skb: its last device and origin.
    pub dev: u64,
    pub origin: u64,
    /// The chain's last hop, and its worker hop (before an skb).
    pub hop: u8,
    pub worker_hop: u8,
    /// [`ThreadChain::BEFORE`] or [`ThreadChain::AFTER`] (0: none).
    pub mode: u8,
    /// Before an skb: the first frame's skb was met, so the kick and the
    /// worker's start were counted already.
    pub joined: u8,
    /// After an skb: the hop where its tracking started.
    pub origin_hop: u8,
    pub _pad: [u8; 3],
}

impl ThreadChain {
    /// A worker's chain before its frame's skb exists.
    pub const BEFORE: u8 = 1;
    /// A worker's chain after its frame's skb was freed.
    pub const AFTER: u8 = 2;
}

/// Key of the per-hop-pair latency aggregates in `NP_HOPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairKey {
    /// Device key where the packet was first seen (decides its direction).
    pub origin: u64,
    pub from_dev: u64,
    /// Zero when the hop has no device of its own (consume, drop).
    pub to_dev: u64,
    pub from_hop: u8,
    pub to_hop: u8,
    pub origin_hop: u8,
    // Words, not a byte array (see `TrackState`).
    pub _pad: u8,
    pub _pad2: u32,
}

/// Entries of the per-CPU hop-pair cache `NP_PAIRS` (a power of two): a
/// direct-mapped array in front of the `NP_HOPS` hash map, so the common
/// pairs cost an inlined array lookup instead of a hash map call per hop.
pub const PAIR_SLOTS: u32 = 256;

/// The `NP_PAIRS` slot of a pair. Only the fields the kernel side holds as
/// numbers enter the hash (the current device is a typed pointer there).
#[inline(always)]
pub fn pair_slot(origin: u64, from_dev: u64, from_hop: u8, to_hop: u8) -> u32 {
    let x = origin.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ from_dev.rotate_left(17).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ ((from_hop as u64) << 8 | to_hop as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
    ((x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 48) as u32 & (PAIR_SLOTS - 1)
}

/// One slot of `NP_PAIRS`: the pair it holds (all zero: free) and its
/// histogram on this CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PairSlot {
    pub key: PairKey,
    pub hist: hist::Hist,
}

/// Key of the drop aggregates in `NP_DROPS`; the value is a per-CPU count.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropKey {
    pub origin: u64,
    /// Device of the last hop before the drop.
    pub last_dev: u64,
    /// `enum skb_drop_reason` value.
    pub reason: u32,
    pub last_hop: u8,
    pub origin_hop: u8,
    pub _pad: [u8; 2],
}

/// Stacks `NP_DROP_STACKS` holds with `--drop-stacks` (one entry
/// otherwise). The kernel keeps a stack in bucket `hash % entries` and
/// refuses (-EEXIST, counted as `drop_stack_collision`) a different stack
/// whose bucket is taken, so the map is made roomy: 8192 stacks of 127
/// frames are ~8.5 MiB, allocated only when asked for.
pub const DROP_STACK_ENTRIES: u32 = 8192;

/// (drop key, stack) counts `NP_DROP_STACK_COUNTS` holds with
/// `--drop-stacks` (one entry otherwise: 0.5 MiB of per-CPU values saved).
pub const DROP_STACK_COUNT_ENTRIES: u32 = 4096;

/// Key of `NP_DROP_STACK_COUNTS` (`--drop-stacks`): a drop's
/// [`DropKey`] and the id of its kernel stack in `NP_DROP_STACKS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropStackKey {
    pub drop: DropKey,
    pub stack_id: u32,
    pub _pad: u32,
}

/// Hops a [`JourneyRecord`] carries after the one it starts from.
pub const JOURNEY_HOPS: usize = 6;

/// One hop of a [`JourneyRecord`]: one hop-pair sample of the packet (the
/// previous hop to this one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JourneyHop {
    /// Device key of this hop (0 where the hop has no device).
    pub dev: u64,
    /// Time since the packet's previous hop.
    pub gap_ns: u32,
    pub hop: u8,
    pub _pad: u8,
    pub _pad2: u16,
}

/// `JourneyRecord::flags`.
pub mod journey {
    /// The packet reached a terminal hop (consumed, dropped): its journey
    /// ends with this record.
    pub const END: u8 = 1;
    /// The packet's tracking ended otherwise (its skb address reappeared as
    /// another packet, it went unseen past --max-gap, or another packet took
    /// its tracking slot): the journey ends here, incomplete.
    pub const CUT: u8 = 2;
}

/// Trace mode's unit on `NP_EVENTS`: a stretch of one packet's journey.
/// The kernel side gathers a packet's hops in its slot of `NP_JOURNEY` and
/// sends them in one record (at its end, or every [`JOURNEY_HOPS`] hops),
/// where one ring-buffer record per hop pair cost a reservation (a lock
/// and atomics shared by every CPU) each. A journey's records arrive in
/// order: the next is only gathered after the previous was sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JourneyRecord {
    /// The packet (its skb address).
    pub skb: u64,
    /// Time of the hop this stretch starts from (ns, CLOCK_MONOTONIC).
    pub ts: u64,
    /// Device key of that hop.
    pub from_dev: u64,
    pub from_hop: u8,
    /// Hops filled in `hops`.
    pub n: u8,
    /// [`journey`] flags.
    pub flags: u8,
    /// Set on the first stretch of a journey (it starts where tracking did).
    pub first: u8,
    pub _pad: u32,
    pub hops: [JourneyHop; JOURNEY_HOPS],
}

/// Size of `NP_EVENTS` in bytes in trace mode (a power of two; the loader
/// makes it one page otherwise). At ~1.2 million events/s in ~4-event
/// records, 16 MiB hold ~0.4 s: how long the reader may be off the CPU.
/// (4 MiB lost 91,388 events over a 600 s flood, in stalls of 0.1 s.)
pub const EVENTS_BYTES: u32 = 1 << 24;

/// On-CPU time of one thread, from `sched:sched_switch` (in `NP_CPU`,
/// keyed by `pid_tgid`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub ns: u64,
    pub comm: [u8; 16],
}

/// Softirq vectors counted in `NP_SOFTIRQ` (per CPU, ns).
pub const NET_TX_SOFTIRQ: u32 = 2;
pub const NET_RX_SOFTIRQ: u32 = 3;

/// A function hop's entry, waiting for its return on the same thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EntryKey {
    /// `bpf_get_current_pid_tgid()`.
    pub pid_tgid: u64,
    pub hop: u32,
    pub _pad: u32,
}

/// What the kernel side learnt about a device key, in `NP_DEVS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevInfo {
    pub name: [u8; 16],
    /// `rtnl_link_ops->kind` ("macvtap", "veth", "tun", ...), empty for none.
    pub kind: [u8; 16],
    pub ifindex: u32,
    /// Inode number of the device's network namespace.
    pub netns: u32,
}

/// Indices into the per-CPU `NP_COUNTERS` array: every packet netprobe
/// stops following, and why, is counted here.
pub mod counter {
    /// Packets whose tracking started.
    pub const TRACK_STARTED: u32 = 0;
    /// Packets whose journey ended at a terminal hop.
    pub const TRACK_ENDED: u32 = 1;
    /// Tracking state found older than `max_gap_ns` and restarted.
    pub const TRACK_STALE: u32 = 2;
    /// A tracked packet lost its slot to another packet (hash collision
    /// in `NP_TRACK`, or a packet whose free no hop saw): its journey ends
    /// unmeasured.
    pub const TRACK_EVICTED: u32 = 3;
    /// A hop-pair aggregate could not be created (map full): sample lost.
    pub const PAIR_LOST: u32 = 4;
    /// A drop aggregate could not be created (map full): drop not counted by reason.
    pub const DROP_LOST: u32 = 5;
    /// Reading a kernel field failed.
    pub const READ_FAILED: u32 = 6;
    /// A tracked skb address reappeared as another packet (another data
    /// buffer, a transmit or receive in another namespace right after a
    /// receive, any hop after delivery): a recycled sk_buff whose free no
    /// hop saw. The old journey ends unmeasured instead of being joined to
    /// the new one.
    pub const TRACK_REUSED: u32 = 7;
    /// A function returned without its entry on record (entry map full or
    /// the program attached mid-call): its time inside is not measured.
    pub const EXIT_UNMATCHED: u32 = 8;
    /// Trace mode: hop-pair events the ring buffer had no room for
    /// (userspace too slow): each event of a record that could not be sent
    /// is counted here, never silently dropped.
    pub const EVENTS_LOST: u32 = 9;
    /// Sightings of a packet where tracking could start that the flow
    /// filter (`--filter`) excluded (a packet is counted at each such hop).
    pub const FLOW_EXCLUDED: u32 = 10;
    /// A tracked skb address reappeared at a hop no packet can take after
    /// its previous one (a queue not followed by the transmit on its
    /// device, a backlog not followed by the receive): another packet in
    /// a recycled sk_buff. Its journey starts anew; the old one ends
    /// unmeasured.
    pub const TRACK_IMPOSSIBLE: u32 = 11;
    /// A tracked skb address reappeared where tracking could start, longer
    /// than `direct_gap_ns` after a hop that holds no packet (a transmit,
    /// a receive): another packet in a recycled sk_buff, restarted.
    pub const TRACK_LATE: u32 = 12;
    /// `--drop-stacks`: a drop whose stack hashed to a bucket of
    /// `NP_DROP_STACKS` another stack holds (-EEXIST): counted by reason,
    /// without its stack.
    pub const DROP_STACK_COLLISION: u32 = 13;
    /// `--drop-stacks`: any other failure of `bpf_get_stackid` (no
    /// callchain buffer, an empty stack): the drop is counted by reason,
    /// without its stack.
    pub const DROP_STACK_FAILED: u32 = 14;
    /// `--drop-stacks`: a (drop, stack) count could not be created in
    /// `NP_DROP_STACK_COUNTS` (map full).
    pub const DROP_STACK_LOST: u32 = 15;
    /// A tracked skb address reappeared more than
    /// `Config::fingerprint_gap_ns` after its previous hop with other
    /// headers than where its tracking started (IP ID, sequence numbers):
    /// another packet in an sk_buff whose struct and data buffer both came
    /// back. Its journey starts anew; the old one ends unmeasured.
    pub const TRACK_FINGERPRINT: u32 = 16;
    /// A worker ran a kicked work item whose kick is not on record (kicked
    /// before the probes attached, or evicted from `NP_KICKS`): its
    /// kick-to-worker step is not measured.
    pub const CHAIN_KICK_MISSED: u32 = 17;
    /// A worker's chain that sent a frame whose skb's tracking did not
    /// start in the same thread soon after (the thread moved to another
    /// CPU, another chain began on that CPU first, or the skb was not
    /// followed): the frame's steps before its skb are not measured.
    pub const CHAIN_LOST: u32 = 18;
    /// A kicked worker run that moved no frame (the ring or the tap's
    /// queue was empty by then: an earlier run took its frames): its kick
    /// to worker time has no frame, so no device, to be counted at.
    pub const CHAIN_EMPTY: u32 = 19;
    pub const COUNT: u32 = 20;
    // (Samples per pair are the histograms' counts: no counter on the
    // per-hop fast path for them.)
    pub const NAMES: [&str; COUNT as usize] = [
        "track_started",
        "track_ended",
        "track_stale",
        "track_evicted",
        "pair_lost",
        "drop_lost",
        "read_failed",
        "track_reused",
        "exit_unmatched",
        "events_lost",
        "flow_excluded",
        "track_impossible",
        "track_late",
        "drop_stack_collision",
        "drop_stack_failed",
        "drop_stack_lost",
        "track_fingerprint",
        "chain_kick_missed",
        "chain_lost",
        "chain_empty",
    ];
}

/// Bit set in classic-tracepoint device keys (a hash of the device name),
/// so they can never equal a kernel `struct net_device` address.
pub const NAME_KEY_BIT: u64 = 1;

/// FNV-1a over a NUL-padded 16-byte device name, with [`NAME_KEY_BIT`] set:
/// the device key classic tracepoints use, where no `net_device` pointer is
/// available.
#[inline(always)]
pub fn name_key(name: &[u8; 16]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < 16 {
        let b = name[i];
        if b == 0 {
            break;
        }
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h | NAME_KEY_BIT
}

const _: () = {
    assert!(core::mem::size_of::<Offsets>() == 40);
    assert!(core::mem::size_of::<ClassicFields>() == 8);
    assert!(core::mem::size_of::<FlowLit>() == 36);
    assert!(core::mem::size_of::<FlowFilter>() == 8 + FLOW_TERMS + 36 * FLOW_TERMS * FLOW_LITS);
    assert!(
        core::mem::size_of::<Config>()
            == 40 + 24 + 2 * MAX_HOPS + 8 * MAX_HOPS + 4 * MAX_SLOTS + 16 + core::mem::size_of::<FlowFilter>() + 16
    );
    assert!(core::mem::size_of::<TrackState>() == 56);
    assert!(core::mem::size_of::<ThreadChain>() == 56);
    assert!(core::mem::size_of::<PairKey>() == 32);
    assert!(core::mem::size_of::<DropKey>() == 24);
    assert!(core::mem::size_of::<DropStackKey>() == 32);
    assert!(core::mem::size_of::<DevInfo>() == 40);
    assert!(core::mem::size_of::<EntryKey>() == 16);
    assert!(core::mem::size_of::<JourneyHop>() == 16);
    assert!(core::mem::size_of::<JourneyRecord>() == 32 + 16 * JOURNEY_HOPS);
    assert!(core::mem::size_of::<CpuTime>() == 24);
    assert!(core::mem::size_of::<SlotConfig>() == 4);
    assert!(core::mem::size_of::<PairSlot>() == 32 + core::mem::size_of::<hist::Hist>());
    assert!(core::mem::size_of::<hist::Hist>() == 32 + 8 * hist::BUCKETS);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], Copy, contain only integers and
    // arrays of integers, and have no implicit padding (sizes asserted above).
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::TrackState {}
    unsafe impl aya::Pod for super::ThreadChain {}
    unsafe impl aya::Pod for super::PairKey {}
    unsafe impl aya::Pod for super::DropKey {}
    unsafe impl aya::Pod for super::DropStackKey {}
    unsafe impl aya::Pod for super::DevInfo {}
    unsafe impl aya::Pod for super::EntryKey {}
    unsafe impl aya::Pod for super::PairSlot {}
    unsafe impl aya::Pod for super::JourneyRecord {}
    unsafe impl aya::Pod for super::CpuTime {}
    unsafe impl aya::Pod for super::hist::Hist {}
}
