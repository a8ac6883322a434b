//! The flow filter (`--filter EXPR`): a useful subset of pcap-filter
//! syntax, parsed into an expression and compiled into the disjunctive
//! normal form the kernel programs evaluate where a packet's tracking
//! would start ([`netprobe_common::FlowFilter`]). Filtered-out packets are
//! never followed, so they cost one header parse per sighting and no
//! aggregation.
//!
//! Grammar (case-insensitive keywords, as in pcap-filter):
//!
//! ```text
//! expr  := and ( ("or" | "||") and )*
//! and   := unary ( ("and" | "&&") unary )*
//! unary := ("not" | "!") unary | "(" expr ")" | prim
//! prim  := "ip" | "ip6" | "arp" | "tcp" | "udp" | "sctp" | "icmp" | "icmp6"
//!        | ["ip" | "ip6"] "proto" NUM
//!        | [dir] "host" ADDR | [dir] "net" ADDR/LEN | [dir] "port" NUM
//! dir   := "src" | "dst"
//! ```

use std::net::IpAddr;

use anyhow::{bail, Result};
use netprobe_common::{flow_field, FlowFields, FlowFilter, FlowLit, FLOW_LITS, FLOW_TERMS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Src,
    Dst,
    Either,
}

/// One primitive of the filter language.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prim {
    EtherType(u16),
    /// IP protocol number, optionally restricted to one family.
    Proto(u8, Option<u8>),
    Net(Dir, IpAddr, u8),
    Port(Dir, u16),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    Prim(Prim),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// A parse or compile error, naming the position and what to write.
fn err<T>(expr: &str, at: usize, what: impl std::fmt::Display) -> Result<T> {
    bail!("--filter {expr:?}: {what} (at word {}); e.g. --filter 'udp and dst port 5001'", at + 1)
}

fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let single = matches!(c, '(' | ')' | '!');
        let double = (c == '&' || c == '|') && chars.peek() == Some(&c);
        if c.is_whitespace() || single || double {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            if single {
                out.push(c.to_string());
            } else if double {
                chars.next();
                out.push(if c == '&' { "and" } else { "or" }.to_owned());
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<String>,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.pos).map(String::as_str)
    }

    fn next(&mut self) -> Option<String> {
        let t = self.toks.get(self.pos).map(|t| t.to_ascii_lowercase());
        self.pos += 1;
        t
    }

    fn is(&self, word: &str) -> bool {
        self.peek().is_some_and(|t| t.eq_ignore_ascii_case(word))
    }

    fn or(&mut self, depth: usize) -> Result<Expr> {
        let mut e = self.and(depth)?;
        while self.is("or") {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and(depth)?));
        }
        Ok(e)
    }

    fn and(&mut self, depth: usize) -> Result<Expr> {
        let mut e = self.unary(depth)?;
        while self.is("and") {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary(depth)?));
        }
        Ok(e)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr> {
        if depth > 64 {
            return err(self.src, self.pos, "nested too deeply");
        }
        if self.is("not") || self.is("!") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary(depth + 1)?)));
        }
        if self.is("(") {
            self.pos += 1;
            let e = self.or(depth + 1)?;
            if !self.is(")") {
                return err(self.src, self.pos, "missing ')'");
            }
            self.pos += 1;
            return Ok(e);
        }
        self.prim()
    }

    fn number<T: std::str::FromStr>(&mut self, what: &str) -> Result<T> {
        let at = self.pos;
        match self.next() {
            Some(t) => t.parse().or_else(|_| err(self.src, at, format!("{t:?} is not a valid {what}"))),
            None => err(self.src, at, format!("a {what} is missing at the end")),
        }
    }

    fn prim(&mut self) -> Result<Expr> {
        let at = self.pos;
        let Some(word) = self.next() else {
            return err(self.src, at, "an expression is missing at the end");
        };
        let p = match word.as_str() {
            "ip" | "ip6" if self.is("proto") => {
                self.pos += 1;
                Prim::Proto(self.number("protocol number (0-255)")?, Some(if word == "ip" { 4 } else { 6 }))
            }
            "ip" => Prim::EtherType(0x0800),
            "ip6" => Prim::EtherType(0x86dd),
            "arp" => Prim::EtherType(0x0806),
            "tcp" => Prim::Proto(6, None),
            "udp" => Prim::Proto(17, None),
            "sctp" => Prim::Proto(132, None),
            "icmp" => Prim::Proto(1, Some(4)),
            "icmp6" => Prim::Proto(58, Some(6)),
            "proto" => Prim::Proto(self.number("protocol number (0-255)")?, None),
            "src" | "dst" | "host" | "net" | "port" => {
                let (dir, kind) = match word.as_str() {
                    "src" | "dst" => {
                        let dir = if word == "src" { Dir::Src } else { Dir::Dst };
                        let k = self.next().unwrap_or_default();
                        if !matches!(k.as_str(), "host" | "net" | "port") {
                            return err(self.src, at + 1, format!("expected host, net or port after {word}"));
                        }
                        (dir, k)
                    }
                    _ => (Dir::Either, word.clone()),
                };
                match kind.as_str() {
                    "port" => Prim::Port(dir, self.number("port (0-65535)")?),
                    "host" => {
                        let a: IpAddr = self.number("IPv4 or IPv6 address")?;
                        Prim::Net(dir, a, if a.is_ipv4() { 32 } else { 128 })
                    }
                    _ => {
                        let at = self.pos;
                        let t = self.next().unwrap_or_default();
                        let Some((a, len)) = t.split_once('/') else {
                            return err(self.src, at, format!("{t:?}: write a network as ADDRESS/LENGTH"));
                        };
                        let (Ok(a), Ok(len)) = (a.parse::<IpAddr>(), len.parse::<u8>()) else {
                            return err(self.src, at, format!("{t:?} is not a network (ADDRESS/LENGTH)"));
                        };
                        if len > if a.is_ipv4() { 32 } else { 128 } {
                            return err(self.src, at, format!("{t:?}: prefix length too long"));
                        }
                        Prim::Net(dir, a, len)
                    }
                }
            }
            other => {
                return err(
                    self.src,
                    at,
                    format!(
                        "unknown word {other:?} (known: ip ip6 arp tcp udp sctp icmp icmp6 proto host net port src \
                         dst and or not)"
                    ),
                )
            }
        };
        Ok(Expr::Prim(p))
    }
}

/// Parses a filter expression.
pub fn parse(src: &str) -> Result<Expr> {
    let mut p = Parser { src, toks: tokens(src), pos: 0 };
    if p.toks.is_empty() {
        bail!("--filter is empty; e.g. --filter 'udp and dst port 5001'");
    }
    let e = p.or(0)?;
    if let Some(t) = p.peek() {
        return err(src, p.pos, format!("unexpected {t:?} (missing 'and' or 'or'?)"));
    }
    Ok(e)
}

fn addr_words(a: IpAddr, len: u8) -> (u8, [u32; 4], [u32; 4]) {
    let (family, bytes, bits): (u8, [u8; 16], u32) = match a {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (4, b, 32)
        }
        IpAddr::V6(v6) => (6, v6.octets(), 128),
    };
    let mut mask_bytes = [0u8; 16];
    for (i, m) in mask_bytes.iter_mut().enumerate().take(bits as usize / 8) {
        let from = (i * 8) as u32;
        let ones = (len as u32).saturating_sub(from).min(8);
        *m = if ones == 0 { 0 } else { 0xffu8 << (8 - ones) };
    }
    let w = |b: &[u8; 16], i: usize| u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    let mut value = [0u32; 4];
    let mut mask = [0u32; 4];
    for i in 0..4 {
        mask[i] = w(&mask_bytes, i);
        value[i] = w(&bytes, i) & mask[i];
    }
    (family, value, mask)
}

fn lit(field: u8, value: u32, mask: u32) -> FlowLit {
    FlowLit { field, value: [value, 0, 0, 0], mask: [mask, 0, 0, 0], ..FlowLit::default() }
}

/// A primitive as alternatives of conjunctions of (positive) literals.
fn prim_dnf(p: &Prim) -> Vec<Vec<FlowLit>> {
    let either = |dir: Dir, src: FlowLit, dst: FlowLit| match dir {
        Dir::Src => vec![vec![src]],
        Dir::Dst => vec![vec![dst]],
        Dir::Either => vec![vec![src], vec![dst]],
    };
    match *p {
        Prim::EtherType(t) => vec![vec![lit(flow_field::ETHERTYPE, t as u32, 0xffff)]],
        Prim::Proto(n, family) => {
            let proto = lit(flow_field::PROTO, n as u32, 0xff);
            match family {
                Some(4) => vec![vec![lit(flow_field::ETHERTYPE, 0x0800, 0xffff), proto]],
                Some(_) => vec![vec![lit(flow_field::ETHERTYPE, 0x86dd, 0xffff), proto]],
                None => vec![vec![proto]],
            }
        }
        Prim::Port(dir, port) => {
            either(dir, lit(flow_field::SPORT, port as u32, 0xffff), lit(flow_field::DPORT, port as u32, 0xffff))
        }
        Prim::Net(dir, a, len) => {
            let (family, value, mask) = addr_words(a, len);
            let l = |field| FlowLit { field, family, value, mask, ..FlowLit::default() };
            either(dir, l(flow_field::SADDR), l(flow_field::DADDR))
        }
    }
}

/// Alternatives x alternatives: every pairing, conjoined.
fn product(a: Vec<Vec<FlowLit>>, b: &[Vec<FlowLit>]) -> Vec<Vec<FlowLit>> {
    a.iter().flat_map(|ta| b.iter().map(move |tb| ta.iter().chain(tb).copied().collect())).collect()
}

/// Disjunctive normal form of `e` (negated when `neg`).
fn dnf(e: &Expr, neg: bool) -> Vec<Vec<FlowLit>> {
    match (e, neg) {
        (Expr::Prim(p), false) => prim_dnf(p),
        (Expr::Prim(p), true) => {
            // not (t1 or t2 ...) = (not t1) and (not t2) ..., where
            // not (l1 and l2) = (not l1) or (not l2).
            prim_dnf(p).into_iter().fold(vec![vec![]], |acc, term| {
                let negated: Vec<Vec<FlowLit>> =
                    term.into_iter().map(|l| vec![FlowLit { negate: 1 - l.negate, ..l }]).collect();
                product(acc, &negated)
            })
        }
        (Expr::Not(inner), n) => dnf(inner, !n),
        (Expr::And(a, b), false) | (Expr::Or(a, b), true) => product(dnf(a, neg), &dnf(b, neg)),
        (Expr::Or(a, b), false) | (Expr::And(a, b), true) => {
            let mut v = dnf(a, neg);
            v.extend(dnf(b, neg));
            v
        }
    }
}

/// Removes repeated literals and alternatives that can never hold (a
/// literal with its own negation).
fn simplify(terms: Vec<Vec<FlowLit>>) -> Vec<Vec<FlowLit>> {
    let mut out: Vec<Vec<FlowLit>> = Vec::new();
    for t in terms {
        let mut lits: Vec<FlowLit> = Vec::new();
        for l in t {
            if !lits.contains(&l) {
                lits.push(l);
            }
        }
        let contradiction = lits.iter().any(|l| lits.contains(&FlowLit { negate: 1 - l.negate, ..*l }));
        if !contradiction && !out.contains(&lits) {
            out.push(lits);
        }
    }
    out
}

/// Compiles an expression for the kernel, or says why it does not fit.
pub fn compile(src: &str) -> Result<FlowFilter> {
    let terms = simplify(dnf(&parse(src)?, false));
    let widest = terms.iter().map(Vec::len).max().unwrap_or(0);
    if terms.len() > FLOW_TERMS || widest > FLOW_LITS {
        bail!(
            "--filter {src:?} is too complex for the kernel side: it expands to {} alternatives of up to {widest} \
             conditions (at most {FLOW_TERMS} of {FLOW_LITS}); split it into simpler filters or use fewer \
             'host'/'port' without src/dst",
            terms.len()
        );
    }
    let mut f = FlowFilter::zeroed();
    f.enabled = 1;
    f.terms = terms.len() as u32;
    for (i, t) in terms.iter().enumerate() {
        f.lits[i] = t.len() as u8;
        f.lit[i][..t.len()].copy_from_slice(t);
    }
    Ok(f)
}

/// What the kernel programs decide for a packet: the very function they
/// run, [`FlowFilter::passes`].
pub fn passes(f: &FlowFilter, p: &FlowFields) -> bool {
    f.passes(p)
}

/// The expression's meaning evaluated directly, without the normal form:
/// the reference the compiled filter is tested against.
pub fn eval(e: &Expr, p: &FlowFields) -> bool {
    match e {
        Expr::Not(a) => !eval(a, p),
        Expr::And(a, b) => eval(a, p) && eval(b, p),
        Expr::Or(a, b) => eval(a, p) || eval(b, p),
        Expr::Prim(prim) => match *prim {
            Prim::EtherType(t) => p.ethertype == t as u32,
            Prim::Proto(n, family) => {
                p.family != 0 && p.proto == n as u32 && family.is_none_or(|f| p.family == f as u32)
            }
            Prim::Port(dir, port) => {
                let port = port as u32;
                p.has_ports != 0
                    && match dir {
                        Dir::Src => p.sport == port,
                        Dir::Dst => p.dport == port,
                        Dir::Either => p.sport == port || p.dport == port,
                    }
            }
            Prim::Net(dir, a, len) => {
                let (family, value, mask) = addr_words(a, len);
                let m = |addr: &[u32; 4]| p.family == family as u32 && (0..4).all(|i| addr[i] & mask[i] == value[i]);
                match dir {
                    Dir::Src => m(&p.saddr),
                    Dir::Dst => m(&p.daddr),
                    Dir::Either => m(&p.saddr) || m(&p.daddr),
                }
            }
        },
    }
}

/// Header fields of an IPv4 packet (for tests and examples).
pub fn ipv4_fields(proto: u8, src: [u8; 4], dst: [u8; 4], ports: Option<(u16, u16)>) -> FlowFields {
    let (sport, dport) = ports.unwrap_or_default();
    FlowFields {
        ethertype: 0x0800,
        family: 4,
        proto: proto as u32,
        has_ports: ports.is_some() as u32,
        sport: sport as u32,
        dport: dport as u32,
        saddr: [u32::from_ne_bytes(src), 0, 0, 0],
        daddr: [u32::from_ne_bytes(dst), 0, 0, 0],
        ..FlowFields::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--sample 64` over one flow: consecutive packets (IP IDs counting
    /// up), and packets whose headers are all alike (a DF datagram's IP ID
    /// is 0) told apart only by their data buffers, recycled from a small
    /// pool. Each keeps close to one in 64, and a packet's answer is the
    /// same every time it is asked.
    #[test]
    fn sample_hash_keeps_one_packet_in_n_of_one_flow() {
        let n = 64;
        let mut f = udp([198, 18, 0, 1], [198, 18, 0, 2], 40000, 5001);
        let by_id = (0..64_000u32)
            .filter(|&id| {
                f.ip_id = id & 0xffff;
                f.l4_words = [72 << 16, 0x1234];
                netprobe_common::sample_hash(f.fingerprint(), 0xffff_8880_1234_5000).is_multiple_of(n)
            })
            .count();
        f.ip_id = 0;
        let by_buffer = (0..64_000u64)
            .filter(|&i| {
                netprobe_common::sample_hash(f.fingerprint(), 0xffff_8880_0000_0000 + (i % 4096) * 2048)
                    .is_multiple_of(n)
            })
            .count();
        for (what, kept) in [("by IP ID", by_id), ("by buffer", by_buffer)] {
            assert!((700..=1300).contains(&kept), "{what}: kept {kept} of 64000 at 1 in 64 (expected about 1000)");
        }
        let h = netprobe_common::sample_hash(f.fingerprint(), 0xffff_8880_0000_8000);
        assert_eq!(h, netprobe_common::sample_hash(f.fingerprint(), 0xffff_8880_0000_8000));
    }

    /// The header fingerprint (packet identity): consecutive packets of a
    /// flow differ (pings by ICMP sequence, TCP segments by sequence, UDP
    /// datagrams by IP ID or payload), while what a host's datapath may
    /// rewrite on the way (a UDP checksum an offload fills in) leaves it
    /// unchanged; unreadable headers give 0, never judged.
    #[test]
    fn fingerprint_tells_consecutive_packets_apart_but_not_a_filled_in_checksum() {
        let word = |a: u16, b: u16| {
            let (a, b) = (a.to_be_bytes(), b.to_be_bytes());
            u32::from_ne_bytes([a[0], a[1], b[0], b[1]])
        };
        let mut ping = ipv4_fields(1, GUEST, PEER, None);
        let fps: std::collections::BTreeSet<u32> = (0..1000u16)
            .map(|seq| {
                ping.l4_words = [word(0x4242, seq), 0x6565_0000];
                ping.fingerprint()
            })
            .collect();
        assert_eq!(fps.len(), 1000, "pings of one id, seq 0..1000 (DF, IP ID 0)");
        let mut tcp = ipv4_fields(6, GUEST, PEER, Some((40000, 5201)));
        tcp.ip_id = 7;
        let a = tcp.fingerprint();
        tcp.l4_words[0] = 1448;
        assert_ne!(a, tcp.fingerprint(), "the next segment's sequence");
        let mut u = udp(GUEST, PEER, 40000, 11111);
        u.ip_id = 0x1234;
        u.l4_words = [word(72, 0x0000), 0xdead_beef];
        let partial = u.fingerprint();
        u.l4_words[0] = word(72, 0xbeef);
        assert_eq!(partial, u.fingerprint(), "a checksum filled in on the way is the same packet");
        u.ip_id = 0x1235;
        assert_ne!(partial, u.fingerprint(), "the next datagram's IP ID");
        assert!(fps.iter().all(|&f| f != 0) && partial != 0);
        assert_eq!(FlowFields::default().fingerprint(), 0, "unreadable headers are never judged");
    }

    fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> FlowFields {
        ipv4_fields(17, src, dst, Some((sport, dport)))
    }

    const GUEST: [u8; 4] = [198, 18, 0, 1];
    const PEER: [u8; 4] = [198, 18, 0, 2];

    #[test]
    fn ports_protocols_and_hosts() {
        let f = compile("udp and dst port 5001").unwrap();
        assert!(passes(&f, &udp(GUEST, PEER, 40000, 5001)));
        assert!(!passes(&f, &udp(GUEST, PEER, 5001, 40000)), "src port is not dst port");
        assert!(!passes(&f, &ipv4_fields(6, GUEST, PEER, Some((40000, 5001)))), "tcp is not udp");

        let f = compile("host 198.18.0.2 and not port 22").unwrap();
        assert!(passes(&f, &udp(GUEST, PEER, 1, 2)));
        assert!(passes(&f, &udp(PEER, GUEST, 1, 2)));
        assert!(!passes(&f, &udp(PEER, GUEST, 22, 2)));
        assert!(!passes(&f, &udp(GUEST, [198, 18, 0, 3], 1, 2)));

        let f = compile("src net 198.18.0.0/31 && (icmp || tcp)").unwrap();
        assert!(passes(&f, &ipv4_fields(1, GUEST, PEER, None)));
        assert!(!passes(&f, &ipv4_fields(1, [198, 18, 0, 2], PEER, None)));
        assert!(!passes(&f, &udp(GUEST, PEER, 1, 2)));
    }

    #[test]
    fn non_ip_packets() {
        let arp = FlowFields { ethertype: 0x0806, ..FlowFields::default() };
        assert!(passes(&compile("arp").unwrap(), &arp));
        assert!(!passes(&compile("port 53").unwrap(), &arp));
        assert!(passes(&compile("not port 53").unwrap(), &arp), "pcap: 'not port 53' matches ARP");
        assert!(!passes(&compile("ip").unwrap(), &arp));
    }

    #[test]
    fn ipv6_addresses() {
        let f = compile("ip6 and dst net 2001:db8::/32").unwrap();
        let mut p = FlowFields { ethertype: 0x86dd, family: 6, proto: 58, ..FlowFields::default() };
        let a: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
        let o = a.octets();
        for i in 0..4 {
            p.daddr[i] = u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]);
        }
        assert!(passes(&f, &p));
        assert!(passes(&compile("icmp6").unwrap(), &p));
        assert!(!passes(&compile("icmp").unwrap(), &p));
        p.daddr[0] ^= 1 << 31;
        assert!(!passes(&f, &p));
    }

    #[test]
    fn errors_name_the_problem() {
        let e = |s: &str| compile(s).unwrap_err().to_string();
        assert!(e("udp and").contains("missing at the end"), "{}", e("udp and"));
        assert!(e("prot 5").contains("unknown word \"prot\""));
        assert!(e("port http").contains("not a valid port"));
        assert!(e("port 70000").contains("not a valid port"));
        assert!(e("(udp").contains("missing ')'"));
        assert!(e("udp tcp").contains("missing 'and' or 'or'"));
        assert!(e("host 1.2.3").contains("not a valid IPv4 or IPv6 address"));
        assert!(e("net 10.0.0.0").contains("ADDRESS/LENGTH"));
        assert!(e("").contains("empty"));
        let complex = "(port 1 or port 2) and (port 3 or port 4) and (port 5 or port 6)";
        assert!(e(complex).contains("too complex"), "{}", e(complex));
    }

    #[test]
    fn contradictions_match_nothing() {
        let f = compile("tcp and not tcp").unwrap();
        assert_eq!((f.enabled, f.terms), (1, 0));
        assert!(!passes(&f, &ipv4_fields(6, GUEST, PEER, Some((1, 2)))));
    }
}
