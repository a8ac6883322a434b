//! Facts about the running kernel that the programs need: struct member
//! offsets from BTF, classic tracepoint field offsets from tracefs `format`
//! files, and the names of drop reasons. Nothing here is compiled in: every
//! number is read from the kernel netprobe runs on (or a BTF file the user
//! names).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context, Result};
use btf_rs::{Btf, Type};
use netprobe_common::{ClassicFields, Offsets};

/// Where the running kernel's BTF lives.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

pub fn load_btf(path: Option<&Path>) -> Result<Option<Btf>> {
    let p = path.unwrap_or(Path::new(VMLINUX_BTF));
    if !p.exists() {
        if path.is_some() {
            bail!("BTF file {} does not exist", p.display());
        }
        return Ok(None);
    }
    Btf::from_file(p).map(Some).map_err(|e| anyhow!("cannot parse BTF {}: {e}", p.display()))
}

fn named_struct(btf: &Btf, name: &str) -> Result<btf_rs::Struct> {
    for t in btf.resolve_types_by_name(name).map_err(|e| anyhow!("BTF has no type {name}: {e}"))? {
        if let Type::Struct(s) = t {
            if !s.members.is_empty() {
                return Ok(s);
            }
        }
    }
    bail!("BTF has no struct {name}")
}

/// Byte offset of member `member` of `s`, looking through anonymous
/// structs and unions; also returns the member's type.
fn find_member(btf: &Btf, s: &btf_rs::Struct, member: &str) -> Result<Option<(u32, Type)>> {
    for m in &s.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let ty = btf.resolve_chained_type(m).map_err(|e| anyhow!("BTF: {e}"))?;
        if name == member {
            return Ok(Some((m.bit_offset() / 8, ty)));
        }
        if name.is_empty() {
            if let Type::Struct(inner) | Type::Union(inner) = &ty {
                if let Some((off, t)) = find_member(btf, inner, member)? {
                    return Ok(Some((m.bit_offset() / 8 + off, t)));
                }
            }
        }
    }
    Ok(None)
}

/// Offset of a member path (`["nd_net", "net"]`) inside `struct name`.
pub fn member_offset(btf: &Btf, name: &str, path: &[&str]) -> Result<u32> {
    let mut s = named_struct(btf, name)?;
    let mut total = 0;
    for (i, m) in path.iter().enumerate() {
        let (off, mut ty) = find_member(btf, &s, m)?
            .with_context(|| format!("BTF: struct {name} has no member {}", path[..=i].join(".")))?;
        total += off;
        if i + 1 < path.len() {
            // Descend through typedefs/qualifiers into the member's struct.
            loop {
                match ty {
                    Type::Struct(inner) | Type::Union(inner) => {
                        s = inner;
                        break;
                    }
                    Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::TypeTag(_) => {
                        let t = ty.as_btf_type().unwrap();
                        ty = btf.resolve_chained_type(t).map_err(|e| anyhow!("BTF: {e}"))?;
                    }
                    _ => bail!("BTF: {name}.{} is not a struct", path[..=i].join(".")),
                }
            }
        }
    }
    Ok(total)
}

/// `struct vhost_poll`: the offset of its `work` minus that of its `wait`
/// (a kick's wait-queue entry to the work item the worker runs), from the
/// BTF of the vhost module (split on `vmlinux`), which must be loaded.
pub fn vhost_wait_to_work(vmlinux: &Btf) -> Result<u32> {
    let mut last = None;
    for m in ["vhost", "vhost_net"] {
        let path = format!("/sys/kernel/btf/{m}");
        match Btf::from_split_file(&path, vmlinux) {
            Ok(btf) => {
                let work = member_offset(&btf, "vhost_poll", &["work"])?;
                let wait = member_offset(&btf, "vhost_poll", &["wait"])?;
                return work.checked_sub(wait).filter(|d| *d > 0).with_context(|| {
                    format!("{path}: struct vhost_poll has its work ({work}) before its wait ({wait})")
                });
            }
            Err(e) => last = Some(format!("{path}: {e}")),
        }
    }
    bail!("no BTF of the vhost module ({}): load vhost_net before recording", last.unwrap_or_default())
}

/// The struct offsets the kernel programs read, from BTF.
pub fn offsets(btf: &Btf) -> Result<Offsets> {
    Ok(Offsets {
        skb_dev: member_offset(btf, "sk_buff", &["dev"])?,
        dev_name: member_offset(btf, "net_device", &["name"])?,
        dev_ifindex: member_offset(btf, "net_device", &["ifindex"])?,
        dev_nd_net: member_offset(btf, "net_device", &["nd_net", "net"])?,
        net_ns_inum: member_offset(btf, "net", &["ns", "inum"])?,
        dev_link_ops: member_offset(btf, "net_device", &["rtnl_link_ops"])?,
        link_ops_kind: member_offset(btf, "rtnl_link_ops", &["kind"])?,
        skb_head: member_offset(btf, "sk_buff", &["head"])?,
        valid: 1,
        skb_mac_header: member_offset(btf, "sk_buff", &["mac_header"])?,
    })
}

/// `enum skb_drop_reason` values and names (without the SKB_DROP_REASON_ prefix).
pub fn drop_reasons_from_btf(btf: &Btf) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    if let Ok(types) = btf.resolve_types_by_name("skb_drop_reason") {
        for t in types {
            if let Type::Enum(e) = t {
                for m in &e.members {
                    if let Ok(name) = btf.resolve_name(m) {
                        let short = name.strip_prefix("SKB_DROP_REASON_").unwrap_or(&name);
                        out.insert(m.val(), short.to_owned());
                    }
                }
            }
        }
    }
    out
}

/// tracefs, mounted if it is not yet.
pub fn tracefs() -> Result<PathBuf> {
    for p in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(p).join("events").is_dir() {
            return Ok(PathBuf::from(p));
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: plain mount(2) with static C strings.
    let rc = unsafe { libc::mount(c"nodev".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        bail!(
            "tracefs is not mounted and mounting it failed ({}); mount it with `mount -t tracefs nodev /sys/kernel/tracing`",
            std::io::Error::last_os_error()
        );
    }
    Ok(PathBuf::from("/sys/kernel/tracing"))
}

/// A parsed tracefs `format` file.
#[derive(Debug, Default)]
pub struct TraceFormat {
    /// field name -> (offset, size)
    pub fields: BTreeMap<String, (u16, u16)>,
    pub print_fmt: String,
}

pub fn parse_format(text: &str) -> Result<TraceFormat> {
    let mut f = TraceFormat::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(pf) = line.strip_prefix("print fmt:") {
            f.print_fmt = pf.trim().to_owned();
            continue;
        }
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';').map(str::trim);
        let decl = parts.next().unwrap_or_default();
        let name = decl
            .split_whitespace()
            .last()
            .map(|n| n.split('[').next().unwrap_or(n))
            .context("empty field declaration")?;
        let mut off = None;
        let mut size = None;
        for p in parts {
            if let Some(v) = p.strip_prefix("offset:") {
                off = Some(v.parse::<u16>()?);
            } else if let Some(v) = p.strip_prefix("size:") {
                size = Some(v.parse::<u16>()?);
            }
        }
        if let (Some(o), Some(s)) = (off, size) {
            f.fields.insert(name.to_owned(), (o, s));
        }
    }
    if f.fields.is_empty() {
        bail!("no fields in tracepoint format");
    }
    Ok(f)
}

impl TraceFormat {
    /// The offsets a classic hop program needs.
    pub fn classic_fields(&self) -> Result<ClassicFields> {
        let skbaddr = self.fields.get("skbaddr").context("tracepoint has no skbaddr field")?.0;
        let name_loc = self.fields.get("name").map_or(0, |f| f.0);
        let (reason, reason_size) = self.fields.get("reason").copied().unwrap_or((0, 0));
        Ok(ClassicFields { skbaddr, name_loc, reason, reason_size })
    }

    /// `{ N, "NAME" }` pairs of a `__print_symbolic` in the print format
    /// (how kfree_skb names drop reasons on kernels without BTF).
    pub fn symbols(&self) -> BTreeMap<u32, String> {
        let mut out = BTreeMap::new();
        let s = &self.print_fmt;
        let mut rest = s.as_str();
        while let Some(i) = rest.find('{') {
            rest = &rest[i + 1..];
            let Some(j) = rest.find('}') else { break };
            let item = &rest[..j];
            if let Some((num, name)) = item.split_once(',') {
                let name = name.trim().trim_matches('"');
                if let Ok(n) = num.trim().parse::<u32>() {
                    out.insert(n, name.to_owned());
                }
            }
            rest = &rest[j + 1..];
        }
        out
    }
}

pub fn read_format(tracefs: &Path, category: &str, name: &str) -> Result<TraceFormat> {
    let p = tracefs.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    parse_format(&text).with_context(|| format!("parsing {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KFREE_SKB_FORMAT: &str = r#"name: kfree_skb
ID: 1544
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:void * skbaddr;	offset:8;	size:8;	signed:0;
	field:void * location;	offset:16;	size:8;	signed:0;
	field:unsigned short protocol;	offset:24;	size:2;	signed:0;
	field:enum skb_drop_reason reason;	offset:28;	size:4;	signed:0;

print fmt: "skbaddr=%p protocol=%u location=%pS reason: %s", REC->skbaddr, REC->protocol, REC->location, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 5, "TCP_CSUM" })
"#;

    const NET_DEV_QUEUE_FORMAT: &str = r#"name: net_dev_queue
ID: 1500
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:void * skbaddr;	offset:8;	size:8;	signed:0;
	field:unsigned int len;	offset:16;	size:4;	signed:0;
	field:__data_loc char[] name;	offset:20;	size:4;	signed:0;

print fmt: "dev=%s skbaddr=%p len=%u", __get_str(name), REC->skbaddr, REC->len
"#;

    #[test]
    fn parses_classic_fields_and_drop_reason_names() {
        let f = parse_format(KFREE_SKB_FORMAT).unwrap();
        let c = f.classic_fields().unwrap();
        assert_eq!((c.skbaddr, c.name_loc, c.reason, c.reason_size), (8, 0, 28, 4));
        let sym = f.symbols();
        assert_eq!(sym.get(&3).map(String::as_str), Some("NO_SOCKET"));
        assert_eq!(sym.len(), 3);

        let q = parse_format(NET_DEV_QUEUE_FORMAT).unwrap().classic_fields().unwrap();
        assert_eq!((q.skbaddr, q.name_loc, q.reason), (8, 20, 0));
    }

    #[test]
    fn format_without_fields_is_an_error() {
        assert!(parse_format("name: x\nprint fmt: \"\"").is_err());
    }

    #[test]
    fn offsets_from_running_kernel_btf_are_sane() {
        let Some(btf) = load_btf(None).unwrap() else {
            eprintln!("skipped: this kernel has no {VMLINUX_BTF}");
            return;
        };
        let o = offsets(&btf).unwrap();
        // sk_buff starts with next/prev (16 bytes on 64-bit); dev follows.
        assert_eq!(o.skb_dev, 16);
        assert!(o.dev_name < o.dev_ifindex || o.dev_ifindex > 0);
        assert!(o.link_ops_kind > 0 || o.dev_link_ops > 0);
        assert!(!drop_reasons_from_btf(&btf).is_empty());
    }
}
