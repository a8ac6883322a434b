//! Slims the linked BPF object before it is embedded in netprobe.
//!
//! bpf-linker needs full debug info to emit BTF, and leaves it in the
//! object: 13 MB, of which the DWARF sections (and their relocations) are
//! about 9 MB and `.BTF.ext`'s line info 1 MB. Neither is loaded into the
//! kernel, yet both cost the agent memory at every start: the embedded
//! object is paged in when aya parses it, aya turns every DWARF relocation
//! into a `Relocation`, and aya-obj 0.3 clones a section's whole line info
//! for every function in it (36 MB at peak for netprobe's object).
//!
//! So the DWARF sections go, and `.BTF.ext` keeps its function info and
//! CO-RE relocations but declares no line info (its header's line-info
//! length is set to 0). What is lost: source lines in a verifier log; the
//! BTF types, function info and instruction stream are unchanged.

use std::path::Path;

use anyhow::{bail, Context, Result};
use object::build::elf::{Builder, SectionData};

/// Offsets in `struct btf_ext_header` (include/uapi/linux/btf.h):
/// magic u16, version u8, flags u8, hdr_len u32, func_info_off u32,
/// func_info_len u32, line_info_off u32, line_info_len u32.
const BTF_EXT_MAGIC: u16 = 0xeb9f;
const HDR_LEN_AT: usize = 4;
const LINE_INFO_OFF_AT: usize = 16;
const LINE_INFO_LEN_AT: usize = 20;

/// Rewrites `path` in place; returns (bytes before, bytes after).
pub(crate) fn slim(path: &Path) -> Result<(usize, usize)> {
    let data = std::fs::read(path).with_context(|| format!("reading BPF object {}", path.display()))?;
    let mut b = Builder::read(&*data).with_context(|| format!("parsing BPF object {}", path.display()))?;
    let big_endian = b.endian == object::Endianness::Big;
    let mut debug = Vec::new();
    for s in b.sections.iter_mut() {
        if s.name.starts_with(b".debug_") {
            s.delete = true;
            debug.push(s.id());
        }
    }
    for s in b.sections.iter_mut() {
        if s.sh_info_section.is_some_and(|t| debug.contains(&t)) {
            s.delete = true;
        }
    }
    let mut line_info = None;
    for s in b.sections.iter_mut() {
        if &*s.name != b".BTF.ext" {
            continue;
        }
        let SectionData::Data(bytes) = &s.data else { bail!(".BTF.ext is not a data section") };
        let mut ext = bytes.to_vec();
        if ext.len() < LINE_INFO_LEN_AT + 4 || u16_at(&ext, 0, big_endian) != BTF_EXT_MAGIC {
            bail!(".BTF.ext of {} has no valid header", path.display());
        }
        // Offsets in the header count from the header's end.
        let start =
            u64::from(u32_at(&ext, HDR_LEN_AT, big_endian)) + u64::from(u32_at(&ext, LINE_INFO_OFF_AT, big_endian));
        let len = u64::from(u32_at(&ext, LINE_INFO_LEN_AT, big_endian));
        ext[LINE_INFO_LEN_AT..LINE_INFO_LEN_AT + 4].fill(0);
        s.data = SectionData::Data(ext.into());
        line_info = Some((s.id(), start..start + len));
    }
    let Some((ext_id, lines)) = line_info else {
        bail!("BPF object {} has no .BTF.ext (was it linked with --btf?)", path.display());
    };
    // The line records' relocations (one per record) go with them.
    for s in b.sections.iter_mut() {
        if s.sh_info_section == Some(ext_id) {
            if let SectionData::Relocation(r) = &mut s.data {
                r.retain(|r| !lines.contains(&r.r_offset));
            }
        }
    }
    b.delete_orphans();
    // LLVM names sections from `.strtab`, shared with the symbols; the
    // writer wants a section-name table of its own.
    if !b.sections.iter().any(|s| matches!(s.data, SectionData::SectionString)) {
        let s = b.sections.add();
        s.name = b".shstrtab"[..].into();
        s.sh_type = object::elf::SHT_STRTAB;
        s.sh_addralign = 1;
        s.data = SectionData::SectionString;
    }
    let mut out = Vec::with_capacity(data.len() / 4);
    b.write(&mut out).with_context(|| format!("writing slimmed BPF object {}", path.display()))?;
    std::fs::write(path, &out)?;
    Ok((data.len(), out.len()))
}

fn u16_at(v: &[u8], at: usize, big_endian: bool) -> u16 {
    let b = [v[at], v[at + 1]];
    if big_endian {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

fn u32_at(v: &[u8], at: usize, big_endian: bool) -> u32 {
    let b = [v[at], v[at + 1], v[at + 2], v[at + 3]];
    if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}
