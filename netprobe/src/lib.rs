//! netprobe: an eBPF datapath profiler for KVM hosts.
//!
//! Data flows one way: `catalog` (which hops exist) -> `facts` (what this
//! kernel offers) -> `plan` (backends to try per hop) -> `attach` (proved
//! by loading) -> kernel aggregates -> `collect` (read the maps) ->
//! `correlate` (per-hop numbers) -> `report` (one module per format).
//! `record` drives a session; `top` (live terminal view) and `serve`
//! (OpenMetrics exporter) are live consumers of the same aggregates;
//! `demo` builds the demo topology; `spool` keeps a long recording's
//! time series out of memory.

pub mod attach;
pub mod catalog;
pub mod collect;
pub mod compare;
pub mod correlate;
pub mod demo;
pub mod facts;
pub mod filter;
pub mod guests;
pub mod kernel;
pub mod netns;
pub mod plan;
pub mod record;
pub mod recording;
pub mod report;
pub mod serve;
pub mod spool;
pub mod top;
pub mod trace;
