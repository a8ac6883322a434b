//! The printers: one module per output format, each a function of the
//! analysis (or, for table, JSON and CSV, of its report model alone) and
//! nothing else. `top` draws the live view, `openmetrics` encodes what
//! `serve` answers, `compare_table` and `compare_html` show a comparison,
//! `sweep_table` and `sweep_html` a sweep of many recordings;
//! `context` is what both table and HTML open with (host configuration,
//! the workload's own figures).

pub mod compare_html;
pub mod compare_table;
mod context;
pub mod csv;
#[cfg(test)]
mod golden;
pub mod hlog;
pub mod html;
pub mod json;
pub mod openmetrics;
pub mod perfetto;
mod svg;
pub mod sweep_html;
pub mod sweep_table;
pub mod table;
pub mod top;

use std::io::Write;

use anyhow::{bail, Result};

use crate::{analyze::Analysis, model::report::Report};

/// The output formats of `report`, `record` and `demo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text for the terminal.
    Table,
    /// The report model as JSON.
    Json,
    /// One row per hop pair, drop reason and function hop.
    Csv,
    /// HdrHistogram interval log, one tagged histogram per hop pair and interval.
    Hlog,
    /// Chrome JSON trace of the packet journeys (trace mode) for the Perfetto UI.
    Perfetto,
    /// One self-contained HTML page with charts.
    Html,
}

/// Writes an analysis in `format`.
pub fn write(a: &Analysis, format: Format, out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Hlog => hlog::write(a, out),
        Format::Perfetto => perfetto::write(a, out),
        Format::Html => html::write(a, out),
        Format::Table | Format::Json | Format::Csv => write_report(&a.report, format, out),
    }
}

/// Writes a report model (say, a saved JSON report) in a format that needs
/// nothing else.
pub fn write_report(report: &Report, format: Format, out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Table => table::write(report, out),
        Format::Json => json::write(report, out),
        Format::Csv => csv::write(report, out),
        Format::Hlog | Format::Perfetto | Format::Html => bail!(
            "this format needs a recording (`record -o FILE`): a JSON report keeps no histograms or packet samples"
        ),
    }
}
