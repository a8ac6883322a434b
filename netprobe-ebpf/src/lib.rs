//! netprobe's kernel programs.
//!
//! Every hop program, whatever its attach backend, ends in
//! [`tracking::track`]: the packet is identified by its skb address; the
//! time since its previous hop is added to the histogram of that (previous
//! hop, hop, devices) pair in a per-CPU map, so the always-on mode sends
//! nothing per packet to userspace. Struct offsets, per-hop flags and
//! tracefs field offsets come from the loader at load time (`NP_CONFIG`);
//! nothing about the kernel's layout is compiled in.
//!
//! By concern: [`config`] (the load-time configuration), [`maps`] (every
//! map, named from `netprobe_common::names`), [`kernel`] (reads of kernel
//! memory), [`flow`] (which packets are followed), [`tracking`] (the
//! per-packet state machine), [`chain`] (the steps of a journey where no
//! skb exists: vhost-net's kick, worker and signal), [`aggregation`]
//! (histograms, drops, function times), [`journeys`] (trace mode), and the programs: [`programs`]
//! (tracepoint hops), [`functions`] (kernel-function hops), [`cpu`] (CPU
//! accounting).
//!
//! `cargo xtask build` compiles this crate with `--cfg netprobe_bpf`: only
//! then is it `no_std` with its own panic handler. Without it (cargo
//! check, clippy, test) it is an ordinary library, so workspace-wide
//! feature unification cannot bring std in twice.
#![cfg_attr(netprobe_bpf, no_std)]
#![warn(clippy::undocumented_unsafe_blocks)]
// Map keys and values are passed by reference on purpose: by value they
// would be copied onto the 512-byte BPF stack (a histogram is 4.7 KiB).
#![allow(clippy::needless_borrows_for_generic_args, reason = "see above")]

mod aggregation;
mod chain;
mod config;
mod cpu;
mod flow;
mod functions;
mod journeys;
mod kernel;
mod maps;
mod programs;
mod tracking;

#[cfg(netprobe_bpf)]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
