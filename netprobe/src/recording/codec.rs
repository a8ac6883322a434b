//! The recording's file form: a header line `netprobe-recording
//! <version>`, the body as one line of JSON, and a trailer `end <body
//! bytes> <crc32 hex>`. A truncated or corrupted file fails the length or
//! checksum test with an error saying so, before anything is parsed.
//! Files are written with mode 0600, never through a symbolic link, and
//! atomically.

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use super::{Recording, FORMAT_VERSION, MAGIC};

impl Recording {
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let body = serde_json::to_vec(self)?;
        let mut out = format!("{MAGIC} {FORMAT_VERSION}\n").into_bytes();
        out.extend_from_slice(&body);
        out.extend_from_slice(format!("\nend {} {:08x}\n", body.len(), crc32fast::hash(&body)).as_bytes());
        Ok(out)
    }

    pub fn from_bytes(data: &[u8]) -> Result<Recording> {
        let nl = data.iter().position(|&b| b == b'\n').context("not a netprobe recording (no header line)")?;
        let header = std::str::from_utf8(&data[..nl]).unwrap_or_default();
        // Exactly `netprobe-recording <version>`, the version as written
        // (no sign, no leading zero, no other spacing).
        let version: u32 = header
            .strip_prefix(MAGIC)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.parse().ok().filter(|n: &u32| *n >= 1 && n.to_string() == v))
            .context("not a netprobe recording (its first line is not `netprobe-recording <version>`)")?;
        if version > FORMAT_VERSION {
            bail!(
                "this recording has format {version}, written by a newer netprobe; this one ({}) reads formats up to {FORMAT_VERSION}: \
                 read it with a newer netprobe",
                env!("CARGO_PKG_VERSION")
            );
        }
        let rest = &data[nl + 1..];
        let trailer_at = rest
            .windows(5)
            .rposition(|w| w == b"\nend ")
            .context("recording is truncated: its end marker is missing (was the recording cut short?)")?;
        let body = &rest[..trailer_at];
        let trailer = std::str::from_utf8(&rest[trailer_at + 1..]).unwrap_or_default();
        let mut parts = trailer.split_whitespace().skip(1);
        let (len, crc) = (parts.next().and_then(|l| l.parse::<usize>().ok()), parts.next());
        let (Some(len), Some(crc)) = (len, crc) else {
            bail!("recording is truncated: its end marker is incomplete");
        };
        if crc.len() != 8 || !trailer.ends_with('\n') {
            bail!("recording is truncated: its end marker is incomplete");
        }
        if len != body.len() {
            bail!("recording is truncated or damaged: its body has {} bytes, the end marker says {len}", body.len());
        }
        if format!("{:08x}", crc32fast::hash(body)) != crc {
            bail!("recording is corrupted: the checksum of its body does not match (bit flip or edit)");
        }
        serde_json::from_slice(body)
            .context("recording body is not valid (checksum matched: written by a buggy netprobe?)")
    }

    /// Writes the recording: mode 0600, never through a symlink, and
    /// atomically (a temporary file renamed over the target), so a reader
    /// sees either the previous file or this whole one.
    pub fn write(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            bail!("{} is a symbolic link; netprobe does not write through links (choose another path)", path.display());
        }
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let tmp: PathBuf =
            dir.join(format!(".{}.tmp{}", path.file_name().unwrap_or_default().to_string_lossy(), std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .with_context(|| format!("cannot create {} (is {} writable?)", tmp.display(), dir.display()))?;
        f.write_all(&bytes).and_then(|()| f.sync_all()).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot move the recording to {}", path.display()))?;
        Ok(())
    }

    pub fn read(path: &Path) -> Result<Recording> {
        let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Recording::from_bytes(&data).with_context(|| format!("{}", path.display()))
    }
}

/// Whether a file starts like a recording (as opposed to a JSON report).
pub fn looks_like_recording(data: &[u8]) -> bool {
    data.starts_with(MAGIC.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use netprobe_common::{counter, hist::bucket_of, hist::Hist, hop, DevInfo, PairKey};

    use super::*;
    use crate::{probe::collect::Snapshot, recording::Meta};

    fn name16(s: &str) -> [u8; 16] {
        let mut n = [0u8; 16];
        n[..s.len()].copy_from_slice(s.as_bytes());
        n
    }

    fn sample() -> Recording {
        let mut snap = Snapshot::default();
        let mut h = Hist::zeroed();
        for v in [900u64, 1200, 5000, 80_000] {
            h.count += 1;
            h.sum_ns += v;
            h.max_ns = h.max_ns.max(v);
            h.min_ns = if h.min_ns == 0 { v } else { h.min_ns.min(v) };
            h.buckets[bucket_of(v)] += 1;
        }
        let key = PairKey {
            origin: 0x10,
            from_dev: 0x10,
            to_dev: 0x20,
            from_hop: hop::NET_DEV_QUEUE,
            to_hop: hop::NET_DEV_START_XMIT,
            origin_hop: hop::NET_DEV_QUEUE,
            _pad: 0,
            _pad2: 0,
        };
        snap.pairs.insert(key, h);
        snap.devs.insert(0x10, DevInfo { name: name16("macvtap0"), kind: name16("macvtap"), ifindex: 3, netns: 7 });
        snap.counters[counter::TRACK_STARTED as usize] = 4;
        Recording::new(&snap, Meta::now(1.5, true), Vec::new(), BTreeMap::new(), Vec::new(), BTreeMap::new())
    }

    #[test]
    fn round_trip_keeps_full_resolution() {
        let r = sample();
        let back = Recording::from_bytes(&r.to_bytes().unwrap()).unwrap();
        assert_eq!(back.pairs[0].hist, r.pairs[0].hist);
        let json = |r: &Recording| {
            let mut v = serde_json::to_value(r).unwrap();
            // JSON floats keep 17 significant digits, not every last bit.
            v["meta"]["started_unix_s"] = serde_json::Value::Null;
            v
        };
        assert_eq!(json(&back), json(&r));
        assert_eq!(back.pairs[0].hist.count, 4);
        assert_eq!(back.counters["track_started"], 4);
        assert!(back.meta.interrupted);
    }

    #[test]
    fn truncated_bit_flipped_newer_and_foreign_files_are_rejected_clearly() {
        let bytes = sample().to_bytes().unwrap();
        for cut in [bytes.len() - 3, bytes.len() / 2, 30] {
            let e = format!("{:#}", Recording::from_bytes(&bytes[..cut]).unwrap_err());
            assert!(e.contains("truncated"), "cut at {cut}: {e}");
        }
        let mut flipped = bytes.clone();
        flipped[60] ^= 0x04;
        let e = format!("{:#}", Recording::from_bytes(&flipped).unwrap_err());
        assert!(e.contains("corrupted") || e.contains("truncated"), "{e}");
        let newer = String::from_utf8(bytes.clone()).unwrap().replacen(
            &format!("{MAGIC} {FORMAT_VERSION}"),
            &format!("{MAGIC} 99"),
            1,
        );
        let e = format!("{:#}", Recording::from_bytes(newer.as_bytes()).unwrap_err());
        assert!(e.contains("format 99") && e.contains("newer netprobe"), "{e}");
        let e = format!("{:#}", Recording::from_bytes(b"{\"hello\": 1}\n").unwrap_err());
        assert!(e.contains("not a netprobe recording"), "{e}");
    }

    #[test]
    fn written_files_are_private_and_links_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("netprobe-rec-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.rec");
        sample().write(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(Recording::read(&path).is_ok());
        let link = dir.join("link.rec");
        std::os::unix::fs::symlink(dir.join("elsewhere"), &link).unwrap();
        let e = format!("{:#}", sample().write(&link).unwrap_err());
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
