//! `netprobe probes`: attaches every catalog hop for a moment and reports
//! what each got (its backend, or why none), optionally saving this
//! kernel's facts for the planner's tests.

use std::path::Path;

use anyhow::Result;

use super::record::{RecordOptions, Recorder};
use crate::{analyze::analyze, model::report::Report, probe::facts::KernelFacts};

/// The report of a moment's attach (its coverage is the answer); with
/// `save_facts`, this kernel's facts are written there too, including
/// what only a trial load shows: whether the kernel allows fentry.
pub fn run(opts: &RecordOptions, save_facts: Option<&Path>) -> Result<Report> {
    let mut rec = Recorder::start(opts)?;
    let fentry = rec.fentry_allowed();
    let report = analyze(&rec.recording(false)?)?.report;
    drop(rec);
    if let Some(dir) = save_facts {
        let mut facts = KernelFacts::live()?;
        if fentry.is_some() {
            facts.fentry = fentry;
        }
        facts.save(dir)?;
        crate::say!("netprobe: kernel facts written to {}", dir.display());
    }
    Ok(report)
}
