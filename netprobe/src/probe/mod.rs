//! The probe layer: everything that touches the kernel. `catalog` (the
//! hops, as data) -> `facts` (what this kernel offers) -> `plan` (the
//! backends to try per hop) -> `attach` (proved by loading; the `Probe`
//! handle, the only holder of aya's `Ebpf`) -> `collect` (the maps read
//! into a `Snapshot`). `kernel` reads BTF and tracefs, `filter` compiles
//! `--filter`, `module_fentry` loads fentry on module functions
//! (which aya cannot), `trace` drains trace mode's journey ring, `stacks` names
//! and folds the kernel stacks of drops (`--drop-stacks`). Nothing here
//! knows recordings, reports or sessions.

pub mod attach;
pub mod catalog;
pub mod collect;
pub mod facts;
pub mod filter;
pub mod kernel;
pub mod module_fentry;
pub mod plan;
pub mod stacks;
pub mod trace;
