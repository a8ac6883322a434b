//! JSON output: the report model as it is, for scripts and tests.

use std::io::Write;

use anyhow::Result;

use crate::model::report::Report;

pub fn write(report: &Report, out: &mut dyn Write) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)?;
    Ok(())
}
