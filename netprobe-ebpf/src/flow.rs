//! Which packets are followed: the device filter (`--iface`, `NP_FILTER`)
//! and the flow filter (`--filter`), decided where a packet's tracking
//! would start, and `--sample` there too. This module parses the header
//! fields the flow filter tests, the sample hash and the header
//! fingerprint (packet identity) read; the decision itself is `FlowFilter::passes` in netprobe-common,
//! the one the loader's tests run too.

use aya_ebpf::helpers::generated as gen;
use netprobe_common::{counter, header_fingerprint, sample_hash, FlowFields};

use crate::{
    config,
    kernel::{read_bytes, read_u32, read_u64, scalar_of, Dev},
    maps::{bump, NP_FILTER},
};

/// Key used in `NP_FILTER`: (netns inode << 32 | ifindex) for device
/// pointers, the name key for classic tracepoints.
#[inline(always)]
fn filter_key(dev: Dev<'_>) -> u64 {
    match dev {
        Dev::Ptr(p) => {
            let c = config::reader();
            let ifindex = read_u32(p + c.get(|c| &c.off.dev_ifindex) as u64);
            let net = read_u64(p + c.get(|c| &c.off.dev_nd_net) as u64);
            let inum = read_u32(net + c.get(|c| &c.off.net_ns_inum) as u64);
            ((inum as u64) << 32) | ifindex as u64
        }
        other => other.key(),
    }
}

/// Whether a packet first seen on `dev` may be followed: its device is
/// among `--iface`'s and its headers pass `--filter`. (The sample is
/// decided before this, by [`sampled_in`], so a packet it leaves out
/// costs no filter lookup.)
#[inline(always)]
pub(crate) fn passes_filter(dev: Dev<'_>, skb: u64, head: u64) -> bool {
    let enabled = config::get(|c| &c.filter_enabled);
    if enabled != 0 && NP_FILTER.get_ptr(&filter_key(dev)).is_none() {
        return false;
    }
    if config::get(|c| &c.flow.enabled) != 0 && flow_passes(skb, head) == 0 {
        bump(counter::FLOW_EXCLUDED);
        return false;
    }
    true
}

/// `--sample N`: whether a packet is the one in N followed. A hash of
/// its header fingerprint and its data buffer decides, so a packet gets
/// the same answer at every hop where its tracking could start, and
/// consecutive packets of a flow are mixed (headers that cannot be read
/// hash as 0, with the buffer).
#[inline(always)]
pub(crate) fn sampled_in(fp: u32, skb: u64, head: u64, every: u32) -> bool {
    // The buffer's address as a number: in tp_btf and fentry programs
    // `head` is a typed pointer, which the verifier refuses to hash
    // ("pointer ^= pointer prohibited"): every device hop then fell back
    // to raw_tp under `--sample`, and sampling cost more than following
    // every packet.
    let buffer = scalar_of::<true>(if head != 0 { head } else { skb });
    sample_hash(fp, buffer).is_multiple_of(every)
}

#[inline(always)]
fn word(b: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The header fields the flow filter tests, parsed from the packet's
/// Ethernet header on (`skb->head + skb->mac_header`, one VLAN tag
/// skipped): EtherType, IPv4/IPv6 addresses and protocol, TCP/UDP/SCTP
/// ports. Fields it cannot read stay zero (the packet is then not IP).
#[inline(always)]
fn flow_fields(skb: u64, head: u64) -> FlowFields {
    let mut f = FlowFields::default();
    let c = config::reader();
    let head_off = c.get(|c| &c.off.skb_head) as u64;
    let mac_off = c.get(|c| &c.off.skb_mac_header) as u64;
    if head_off == 0 || mac_off == 0 {
        return f;
    }
    // The hop read skb->head already, except classic tracepoints.
    let head = if head != 0 { head } else { read_u64(skb + head_off) };
    let Some(mac) = read_bytes::<2>(skb + mac_off) else { return f };
    let mac = u16::from_ne_bytes(mac);
    if mac == 0xffff {
        return f; // no MAC header set yet
    }
    let mut l3 = head + mac as u64 + 14;
    let Some(eth) = read_bytes::<4>(l3 - 2) else { return f };
    let mut ethertype = u16::from_be_bytes([eth[0], eth[1]]) as u32;
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        let Some(tag) = read_bytes::<4>(l3) else { return f };
        ethertype = u16::from_be_bytes([tag[2], tag[3]]) as u32;
        l3 += 4;
    }
    f.ethertype = ethertype;
    let l4;
    if ethertype == 0x0800 {
        let Some(ip) = read_bytes::<20>(l3) else { return f };
        f.family = 4;
        f.proto = ip[9] as u32;
        f.saddr[0] = word(&ip, 12);
        f.daddr[0] = word(&ip, 16);
        f.ip_id = u16::from_be_bytes([ip[4], ip[5]]) as u32;
        if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
            return f; // a later fragment: no ports
        }
        l4 = l3 + ((ip[0] & 0x0f) as u64) * 4;
    } else if ethertype == 0x86dd {
        let Some(ip) = read_bytes::<40>(l3) else { return f };
        f.family = 6;
        f.proto = ip[6] as u32;
        f.ip_id = word(&ip, 0);
        let mut i = 0;
        while i < 4 {
            f.saddr[i] = word(&ip, 8 + 4 * i);
            f.daddr[i] = word(&ip, 24 + 4 * i);
            i += 1;
        }
        l4 = l3 + 40;
    } else {
        return f;
    }
    if f.proto == 1 || f.proto == 58 {
        // ICMP: identifier and sequence, then 4 bytes of data (no ports).
        if let Some(p) = read_bytes::<12>(l4) {
            f.l4_words = [word(&p, 4), word(&p, 8)];
        }
    } else if f.proto == 6 || f.proto == 17 || f.proto == 132 {
        if let Some(p) = read_bytes::<12>(l4) {
            f.has_ports = 1;
            f.sport = u16::from_be_bytes([p[0], p[1]]) as u32;
            f.dport = u16::from_be_bytes([p[2], p[3]]) as u32;
            f.l4_words = [word(&p, 4), word(&p, 8)];
        } else if let Some(p) = read_bytes::<4>(l4) {
            f.has_ports = 1;
            f.sport = u16::from_be_bytes([p[0], p[1]]) as u32;
            f.dport = u16::from_be_bytes([p[2], p[3]]) as u32;
        }
    }
    f
}

/// `mac` for [`fingerprint`] when the hop could not load
/// `skb->mac_header` directly (kprobe and raw tracepoint hops): read it
/// then, only if a fingerprint is wanted.
pub(crate) const MAC_UNREAD: u32 = u32::MAX;

/// Bytes of the header block [`fingerprint`] reads from the EtherType
/// on: EtherType (2), an IPv4 header without options (20), and the first
/// 12 bytes of the L4 header.
const BLOCK: usize = 34;

/// The packet's header fingerprint ([`FlowFields::fingerprint`]; 0 where
/// the headers cannot be read). It reads only the fields the fingerprint
/// takes, not a whole `FlowFields`: it is called from every hop program,
/// whose stack and its callees' share 512 bytes (one buffer, read in
/// place: with a second one for a VLAN's headers, Debian 6.1 counted 544
/// and refused every tracepoint hop). A BPF subprogram of its own: each
/// hop program reaches it from several paths, and inlined it was a fifth
/// of each program's instructions. (The deepest call chain, a hop's entry
/// down to `aggregate`'s `note_dev_ptr` and `memset`, is 5 frames of the
/// verifier's 8; the QEMU labs' Debian 6.1 kernels load every hop.)
///
/// `mac` is `skb->mac_header` as the hop loaded it, or [`MAC_UNREAD`].
/// An IPv4 packet's headers come in one `bpf_probe_read_kernel` of
/// [`BLOCK`] bytes from the EtherType on; a VLAN tag, IPv4 options and
/// IPv6 take a second read. (It was four reads, one per header, and a
/// fingerprint is taken where tracking starts and again after every long
/// gap: some 110 ns of a veth flood's start hop, by bpf_stats.) Reading
/// past a short packet's end stays inside its buffer (the tail room and
/// `skb_shared_info` follow the data), and gives the bytes the
/// per-header reads did.
#[inline(never)]
pub(crate) fn fingerprint(skb: u64, head: u64, mac: u32) -> u32 {
    let c = config::reader();
    let mac_off = c.get(|c| &c.off.skb_mac_header) as u64;
    let head = if head != 0 { head } else { read_u64(skb + c.get(|c| &c.off.skb_head) as u64) };
    if mac_off == 0 || head == 0 {
        return 0;
    }
    let mac = if mac != MAC_UNREAD {
        mac as u16
    } else {
        let Some(mac) = read_bytes::<2>(skb + mac_off) else { return 0 };
        u16::from_ne_bytes(mac)
    };
    if mac == 0xffff {
        return 0;
    }
    let mut b = [0u8; BLOCK];
    let mut l3 = head + mac as u64 + 14;
    if !read_into(&mut b, BLOCK, l3 - 2) {
        return 0;
    }
    let mut ethertype = u16::from_be_bytes([b[0], b[1]]);
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        ethertype = u16::from_be_bytes([b[4], b[5]]);
        l3 += 4;
        if !read_into(&mut b, BLOCK, l3 - 2) {
            return 0;
        }
    }
    // (`b[2..]` is the L3 header; `l4`: where to read the L4 words if
    // they are not in `b`, 0 if they are.)
    let (ip_id, proto, l4) = if ethertype == 0x0800 {
        let (ip_id, proto) = (u16::from_be_bytes([b[6], b[7]]) as u32, b[11] as u32);
        if u16::from_be_bytes([b[8], b[9]]) & 0x1fff != 0 {
            return header_fingerprint(ip_id, proto, [0, 0]); // a later fragment: no L4 header
        }
        let ihl = (b[2] & 0x0f) as u64;
        (ip_id, proto, if ihl == 5 { 0 } else { l3 + ihl * 4 })
    } else if ethertype == 0x86dd {
        (word(&b, 2), b[8] as u32, l3 + 40)
    } else {
        return 0;
    };
    if !matches!(proto, 1 | 6 | 17 | 58 | 132) {
        return header_fingerprint(ip_id, proto, [0, 0]);
    }
    // The L4 header's 12 bytes at `b[22..]`: read there when elsewhere.
    let l4_words = if l4 == 0 || read_l4(&mut b, l4) { [word(&b, 26), word(&b, 30)] } else { [0, 0] };
    header_fingerprint(ip_id, proto, l4_words)
}

/// Reads `len` bytes at `addr` into the start of `buf` (fault-safe);
/// false where they cannot be read.
#[inline(always)]
fn read_into(buf: &mut [u8; BLOCK], len: usize, addr: u64) -> bool {
    if addr < 4096 || len > BLOCK {
        return false;
    }
    // SAFETY: writes at most `len <= BLOCK` bytes into `buf`; the source
    // is copied through the kernel's fault-safe read (a bad address fails).
    unsafe { gen::bpf_probe_read_kernel(buf.as_mut_ptr().cast(), len as u32, addr as *const _) == 0 }
}

/// Reads the 12 bytes of an L4 header at `addr` into `b[22..34]`.
#[inline(always)]
fn read_l4(b: &mut [u8; BLOCK], addr: u64) -> bool {
    if addr < 4096 {
        return false;
    }
    let dst = &mut b[22..BLOCK];
    // SAFETY: writes exactly 12 bytes, the length of `dst`, fault-safely.
    unsafe { gen::bpf_probe_read_kernel(dst.as_mut_ptr().cast(), 12, addr as *const _) == 0 }
}

/// The flow filter (`NP_CONFIG.flow`, disjunctive normal form) on one
/// packet: 1 when it passes. Out of line: it runs only where tracking
/// would start, and only with `--filter`.
#[inline(never)]
fn flow_passes(skb: u64, head: u64) -> u32 {
    let f = flow_fields(skb, head);
    config::flow().passes(&f) as u32
}
