//! The recording's time series off the heap: each closed interval's full
//! histograms (one per active hop pair, ~1.5 KiB each under a flood) go to
//! an unlinked temporary file as the interval closes, and come back once,
//! when the recording is assembled. A long `record` then holds only the
//! series' summaries in memory (packets, p50, p99 per pair and second), so
//! its memory stays flat however long it runs. Where no file can be made,
//! the histograms simply stay in memory.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Seek, SeekFrom, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use anyhow::{Context, Result};

use super::{HistRec, IntervalRec};

pub struct HistSpool {
    file: File,
    /// Per interval pushed: whether its histograms are in the file (a
    /// failed write leaves them in memory instead).
    spooled: Vec<bool>,
}

impl HistSpool {
    /// An unlinked file in `dir`; None where the file system cannot make
    /// one (the histograms then stay in memory).
    pub fn new(dir: &Path) -> Option<HistSpool> {
        let open = || OpenOptions::new().read(true).append(true).mode(0o600).custom_flags(libc::O_TMPFILE).open(dir);
        let file = open().or_else(|_| {
            // No O_TMPFILE here: a named file, unlinked at once.
            let path = dir.join(format!(".netprobe-spool-{}", std::process::id()));
            let f = OpenOptions::new().read(true).append(true).create_new(true).mode(0o600).open(&path)?;
            std::fs::remove_file(&path)?;
            Ok::<_, std::io::Error>(f)
        });
        file.ok().map(|file| HistSpool { file, spooled: Vec::new() })
    }

    /// Moves `iv`'s histograms to the file (one JSON line per interval).
    pub fn push(&mut self, iv: &mut IntervalRec) {
        let hists: Vec<Option<&HistRec>> = iv.pairs.iter().map(|p| p.hist.as_ref()).collect();
        let written = serde_json::to_vec(&hists).ok().is_some_and(|mut line| {
            line.push(b'\n');
            self.file.write_all(&line).is_ok()
        });
        if written {
            for p in &mut iv.pairs {
                p.hist = None;
            }
        }
        self.spooled.push(written);
    }

    /// Puts the histograms back into `intervals` (the ones pushed, in the
    /// same order; any after them are left as they are).
    pub fn restore(&self, intervals: &mut [IntervalRec]) -> Result<()> {
        // (Appends go to the end whatever the read position: O_APPEND.)
        let mut file = &self.file;
        file.seek(SeekFrom::Start(0)).context("rewinding the interval spool")?;
        let mut lines = BufReader::new(file).lines();
        for (iv, &spooled) in intervals.iter_mut().zip(&self.spooled) {
            if !spooled {
                continue;
            }
            let line = lines.next().context("the interval spool ended early")?.context("reading the interval spool")?;
            let hists: Vec<Option<HistRec>> = serde_json::from_str(&line).context("a corrupt interval spool line")?;
            for (p, h) in iv.pairs.iter_mut().zip(hists) {
                p.hist = h;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::IntervalPair;

    fn interval(t: f64, counts: &[u64]) -> IntervalRec {
        let pairs = counts
            .iter()
            .map(|&c| IntervalPair {
                origin: 1,
                origin_hop: None,
                from_dev: 2,
                to_dev: 3,
                from_hop: 1,
                to_hop: 2,
                packets: c,
                p50_ns: 10,
                p99_ns: 20,
                total_ns: c * 10,
                hist: Some(HistRec { count: c, sum_ns: c * 10, min_ns: 8, max_ns: 24, buckets: vec![[8, c]] }),
            })
            .collect();
        IntervalRec { t_s: t, pairs, load: Default::default() }
    }

    #[test]
    fn histograms_leave_memory_and_come_back_in_order() {
        let dir = std::env::temp_dir();
        let mut spool = HistSpool::new(&dir).expect("a temporary file");
        let mut ivs = vec![interval(1.0, &[5, 7]), interval(2.0, &[]), interval(3.0, &[9])];
        let want: Vec<Vec<Option<HistRec>>> =
            ivs.iter().map(|iv| iv.pairs.iter().map(|p| p.hist.clone()).collect()).collect();
        for iv in &mut ivs {
            spool.push(iv);
        }
        assert!(ivs.iter().flat_map(|iv| &iv.pairs).all(|p| p.hist.is_none()), "histograms moved out");
        // One interval closed after the last push keeps its own.
        ivs.push(interval(4.0, &[11]));
        spool.restore(&mut ivs).unwrap();
        let got: Vec<Vec<Option<HistRec>>> =
            ivs[..3].iter().map(|iv| iv.pairs.iter().map(|p| p.hist.clone()).collect()).collect();
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
        assert_eq!(ivs[3].pairs[0].hist.as_ref().map(|h| h.count), Some(11));
        // Restoring twice (two recordings of one run) gives the same.
        for iv in &mut ivs[..3] {
            for p in &mut iv.pairs {
                p.hist = None;
            }
        }
        spool.restore(&mut ivs).unwrap();
        assert_eq!(ivs[0].pairs[1].hist.as_ref().map(|h| h.count), Some(7));
    }
}
