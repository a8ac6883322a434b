//! netprobe: an eBPF datapath profiler for KVM hosts.
//!
//! A house in layers, each importing only from the layers below it (the
//! test `netprobe/tests/layers.rs` checks it):
//!
//! 1. `model`: the shared words (direction, hop-pair names, thread roles,
//!    guests, workload) and the report model. Depends on nothing.
//! 2. `probe`: the kernel side. `catalog` (which hops exist) -> `facts`
//!    (what this kernel offers) -> `plan` (backends to try per hop) ->
//!    `attach` (proved by loading; the `Probe` handle, the only holder of
//!    aya's `Ebpf`) -> `collect` (the maps read into a `Snapshot`).
//! 3. `recording`: the durable file: schema and the conversions from the
//!    kernel's types, codec, spool.
//! 4. `analyze`: one pure function from a recording to an analysis (the
//!    report model plus histograms and journeys); `compare`.
//! 5. `render`: one module per output format.
//! 6. `session`: record, top, serve, demo and probes as loops over
//!    probe -> recording -> analyze, with the workload, guest discovery and
//!    signals beside them.
//!
//! `main.rs` (the CLI) parses arguments and calls one session per
//! subcommand.

pub mod analyze;
pub mod model;
pub mod probe;
pub mod recording;
pub mod render;
pub mod session;

/// Prints a line on stderr and never panics (`eprintln!` does when stderr
/// is gone): a session whose terminal or SSH connection went away must
/// still write what it recorded and detach every probe.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
