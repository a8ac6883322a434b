//! Property tests (proptest) of what netprobe reads from outside: the
//! recording reader against damaged and arbitrary files, and the flow
//! filter parser and compiler against arbitrary text and expressions.
//! Failing inputs are shrunk to a minimal counterexample.

use std::net::IpAddr;

use netprobe::{
    probe::filter::{self, Dir, Expr, Prim},
    recording::Recording,
};
use netprobe_common::FlowFields;
use proptest::prelude::*;

fn fixture() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/test_data/recordings/demo-v2.rec")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every single-bit flip anywhere in a recording is refused with an
    /// error (header, body through its CRC32, end marker), never a panic.
    #[test]
    fn every_bit_flip_is_rejected(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut data = fixture();
        let i = pos.index(data.len());
        data[i] ^= 1 << bit;
        let r = Recording::from_bytes(&data);
        prop_assert!(r.is_err(), "flip of bit {} at byte {} was accepted", bit, i);
    }

    /// Every truncation is refused, with a message that says so.
    #[test]
    fn every_truncation_is_rejected(pos in any::<prop::sample::Index>()) {
        let data = fixture();
        let cut = pos.index(data.len());
        let e = Recording::from_bytes(&data[..cut]).expect_err("a truncated recording was accepted");
        let msg = format!("{e:#}");
        prop_assert!(msg.contains("truncated") || msg.contains("not a netprobe recording"), "{}", msg);
    }

    /// Arbitrary bytes, and arbitrary bytes after a valid header, are an
    /// error or (by chance) a recording, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(mut data in prop::collection::vec(any::<u8>(), 0..2048), header in any::<bool>()) {
        if header {
            let mut h = b"netprobe-recording 2\n".to_vec();
            h.append(&mut data);
            data = h;
        }
        let _ = Recording::from_bytes(&data);
    }

    /// Any text given to --filter is compiled or refused with an error.
    #[test]
    fn arbitrary_filter_text_never_panics(s in "[a-z0-9 ()!&|:./-]{0,60}") {
        let _ = filter::compile(&s);
    }

    /// Any expression, written out, parses back to itself; compiled for
    /// the kernel (when it fits), it decides every packet exactly as the
    /// expression does.
    #[test]
    fn compiled_filter_decides_as_the_expression(
        e in expr(),
        packets in prop::collection::vec(packet(), 32),
    ) {
        let text = print(&e);
        let parsed = filter::parse(&text).unwrap();
        prop_assert_eq!(&parsed, &e, "{}", text);
        if let Ok(f) = filter::compile(&text) {
            for p in &packets {
                prop_assert_eq!(filter::passes(&f, p), filter::eval(&e, p), "{} on {:?}", text, p);
            }
        }
    }
}

const V4: [[u8; 4]; 3] = [[198, 18, 0, 1], [198, 18, 0, 2], [198, 19, 0, 1]];
const V6: [&str; 2] = ["2001:db8::1", "2001:db8:1::2"];
const PORTS: [u16; 3] = [22, 53, 5001];
const PROTOS: [u8; 5] = [1, 6, 17, 58, 132];

fn dir() -> impl Strategy<Value = Dir> {
    prop_oneof![Just(Dir::Src), Just(Dir::Dst), Just(Dir::Either)]
}

fn prim() -> impl Strategy<Value = Prim> {
    let addr = prop_oneof![
        (0..V4.len(), prop::sample::select(vec![16u8, 24, 31, 32])).prop_map(|(i, l)| (IpAddr::from(V4[i]), l)),
        (0..V6.len(), prop::sample::select(vec![32u8, 48, 128])).prop_map(|(i, l)| (V6[i].parse().unwrap(), l)),
    ];
    prop_oneof![
        prop::sample::select(vec![0x0800u16, 0x86dd, 0x0806]).prop_map(Prim::EtherType),
        (prop::sample::select(PROTOS.to_vec()), prop::sample::select(vec![None, Some(4u8), Some(6)]))
            .prop_map(|(n, f)| Prim::Proto(n, f)),
        (dir(), addr).prop_map(|(d, (a, l))| Prim::Net(d, a, l)),
        (dir(), prop::sample::select(PORTS.to_vec())).prop_map(|(d, p)| Prim::Port(d, p)),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    prim().prop_map(Expr::Prim).prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
        ]
    })
}

fn words(a: IpAddr) -> [u32; 4] {
    let mut w = [0u32; 4];
    match a {
        IpAddr::V4(v) => w[0] = u32::from_ne_bytes(v.octets()),
        IpAddr::V6(v) => {
            for (i, c) in v.octets().chunks(4).enumerate() {
                w[i] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
    }
    w
}

fn packet() -> impl Strategy<Value = FlowFields> {
    (0u8..3, 0..PROTOS.len(), 0..3usize, 0..3usize, 0..PORTS.len(), 0..PORTS.len(), any::<bool>()).prop_map(
        |(kind, proto, s, d, sp, dp, ports)| {
            let (ethertype, family, saddr, daddr) = match kind {
                0 => (0x0800, 4, words(V4[s].into()), words(V4[d].into())),
                1 => (0x86dd, 6, words(V6[s % 2].parse().unwrap()), words(V6[d % 2].parse().unwrap())),
                _ => (0x0806, 0, [0; 4], [0; 4]),
            };
            let ip = family != 0;
            let proto = if ip { PROTOS[proto] as u32 } else { 0 };
            let has_ports = ip && ports && matches!(proto, 6 | 17 | 132);
            FlowFields {
                ethertype,
                family,
                proto,
                has_ports: has_ports as u32,
                sport: if has_ports { PORTS[sp] as u32 } else { 0 },
                dport: if has_ports { PORTS[dp] as u32 } else { 0 },
                saddr,
                daddr,
                ..FlowFields::default()
            }
        },
    )
}

/// An expression as `--filter` text, fully parenthesised.
fn print(e: &Expr) -> String {
    let d = |d: Dir| match d {
        Dir::Src => "src ",
        Dir::Dst => "dst ",
        Dir::Either => "",
    };
    match e {
        Expr::Not(a) => format!("not ({})", print(a)),
        Expr::And(a, b) => format!("({}) and ({})", print(a), print(b)),
        Expr::Or(a, b) => format!("({}) or ({})", print(a), print(b)),
        Expr::Prim(p) => match *p {
            Prim::EtherType(0x0800) => "ip".to_owned(),
            Prim::EtherType(0x86dd) => "ip6".to_owned(),
            Prim::EtherType(_) => "arp".to_owned(),
            Prim::Proto(n, None) => format!("proto {n}"),
            Prim::Proto(n, Some(4)) => format!("ip proto {n}"),
            Prim::Proto(n, Some(_)) => format!("ip6 proto {n}"),
            Prim::Net(dir, a, l) => format!("{}net {a}/{l}", d(dir)),
            Prim::Port(dir, p) => format!("{}port {p}", d(dir)),
        },
    }
}
