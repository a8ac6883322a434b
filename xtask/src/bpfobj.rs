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
//! length is set to 0, and its bytes are cut off where they end the
//! section). What is lost: source lines in a verifier log; the
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
        drop_tail(&mut ext, start, len, big_endian);
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

/// Where the line info is the data's last part (nothing but empty parts
/// after it), its bytes go too, not only its length: 8.5 MB of netprobe's
/// 21 MB object, embedded in the binary and copied by aya-obj into every
/// parse of the object (its `BtfExt` keeps the section's bytes). Empty
/// parts are pointed at the new end, so every offset stays in bounds.
fn drop_tail(ext: &mut Vec<u8>, start: u64, len: u64, big_endian: bool) {
    let hdr = u32_at(ext, HDR_LEN_AT, big_endian) as usize;
    // (func_info, line_info and, with a 32-byte header, core_relo: each an
    // offset from the header's end and a length.)
    let parts: Vec<usize> = [8usize, 16, 24].into_iter().filter(|at| at + 8 <= hdr).collect();
    let start = start as usize;
    if start + len as usize != ext.len() || start < hdr {
        return;
    }
    for &at in parts.iter().filter(|&&at| at != LINE_INFO_OFF_AT) {
        let (off, n) = (u32_at(ext, at, big_endian) as usize, u32_at(ext, at + 4, big_endian) as usize);
        if n != 0 && hdr + off + n > start {
            return;
        }
    }
    let end = ((start - hdr) as u32).to_le_bytes();
    let end = if big_endian { ((start - hdr) as u32).to_be_bytes() } else { end };
    for &at in &parts {
        if u32_at(ext, at + 4, big_endian) == 0 && u32_at(ext, at, big_endian) as usize > start - hdr {
            ext[at..at + 4].copy_from_slice(&end);
        }
    }
    ext.truncate(start);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.BTF.ext` of a 32-byte header and parts at these (offset, len)
    /// from the header's end: func_info, line_info, core_relo.
    fn ext(parts: [(u32, u32); 3], body: usize, big_endian: bool) -> Vec<u8> {
        let put = |v: &mut Vec<u8>, x: u32| v.extend(if big_endian { x.to_be_bytes() } else { x.to_le_bytes() });
        let mut v = if big_endian { BTF_EXT_MAGIC.to_be_bytes() } else { BTF_EXT_MAGIC.to_le_bytes() }.to_vec();
        v.extend([1, 0]);
        put(&mut v, 32);
        for (off, len) in parts {
            put(&mut v, off);
            put(&mut v, len);
        }
        v.resize(32 + body, 0xaa);
        v
    }

    #[test]
    fn line_info_at_the_end_is_cut_off_and_empty_parts_point_at_the_end() {
        for big_endian in [false, true] {
            // func_info 0..100, line_info 100..1100, no core_relo (its
            // offset past the line info).
            let mut e = ext([(0, 100), (100, 1000), (1100, 0)], 1100, big_endian);
            drop_tail(&mut e, 32 + 100, 1000, big_endian);
            assert_eq!(e.len(), 32 + 100, "big_endian {big_endian}");
            assert_eq!(u32_at(&e, 24, big_endian), 100, "core_relo's offset moved to the new end");
            assert_eq!(u32_at(&e, 8, big_endian), 0, "func_info untouched");
            assert_eq!(u32_at(&e, 12, big_endian), 100);
        }
    }

    #[test]
    fn line_info_before_other_data_is_left_in_place() {
        // core_relo after the line info: cutting would lose it.
        let mut e = ext([(0, 100), (100, 1000), (1100, 40)], 1140, false);
        let before = e.clone();
        drop_tail(&mut e, 32 + 100, 1000, false);
        assert_eq!(e, before);
        // func_info after the line info.
        let mut e = ext([(1000, 100), (0, 1000), (1100, 0)], 1100, false);
        let before = e.clone();
        drop_tail(&mut e, 32, 1000, false);
        assert_eq!(e, before);
    }
}
