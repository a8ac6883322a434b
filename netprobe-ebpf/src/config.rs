//! The load-time configuration, `NP_CONFIG`: struct offsets, per-hop flags,
//! tracefs field offsets, function slots and the flow filter, written by
//! the loader into the object's `.rodata` before loading (aya's
//! `override_global`). This module owns the global and the only ways to
//! read it: [`get`] (one field), [`reader`] (several), getters for the
//! lookups with a bounds check, and [`flow`].
//!
//! The compiled-in value is all zeroes: LLVM must not fold it in. So the
//! global's address is itself taken with a volatile load (LLVM cannot tell
//! what it points to), and each field is read with a volatile load too.
//! The verifier still sees a load from the frozen map at a constant offset
//! and knows the value, which lets it skip the branches a value rules out.

use netprobe_common::{ClassicFields, Config, FlowFilter, SlotConfig, MAX_HOPS, MAX_SLOTS};

netprobe_common::bpf_global! {
    /// Load-time configuration, written by the loader before loading.
    CONFIG: Config = Config::zeroed()
}

/// The configuration, through a pointer LLVM cannot see through: it cannot
/// assume the compiled-in zeroes, whatever is read through it.
#[inline(always)]
fn cfg() -> &'static Config {
    // SAFETY: the volatile read copies a pointer to the `NP_CONFIG`
    // static out of a local, which is valid and aligned; the pointer it
    // yields is that static's address, valid for `'static` and never
    // written by the program (only by the loader, before loading).
    unsafe { &*core::ptr::read_volatile(&&raw const NP_CONFIG) }
}

/// One configuration field, read with a volatile load:
/// `config::get(|c| &c.max_gap_ns)`.
#[inline(always)]
pub(crate) fn get<T: Copy + 'static>(field: impl FnOnce(&'static Config) -> &'static T) -> T {
    reader().get(field)
}

/// For several fields in a row: one load of the configuration's address,
/// then a volatile load per field (`get` reloads the address each time).
#[inline(always)]
pub(crate) fn reader() -> Reader {
    Reader(cfg())
}

/// The configuration, for reading fields: see [`reader`].
#[derive(Clone, Copy)]
pub(crate) struct Reader(&'static Config);

impl Reader {
    /// One field, read with a volatile load: `r.get(|c| &c.off.skb_head)`.
    #[inline(always)]
    pub(crate) fn get<T: Copy + 'static>(self, field: impl FnOnce(&'static Config) -> &'static T) -> T {
        // SAFETY: `field` returns a reference into the static
        // configuration, valid and aligned for `T`, which is `Copy`.
        unsafe { core::ptr::read_volatile(field(self.0)) }
    }
}

/// `Config::bench` bits (0 in normal use).
#[inline(always)]
pub(crate) fn bench_bits() -> u32 {
    get(|c| &c.bench)
}

/// The bench's floor: programs that return at once.
#[inline(always)]
pub(crate) fn empty() -> bool {
    bench_bits() & netprobe_common::bench::EMPTY != 0
}

/// Trace mode: whether hops are gathered into journeys.
#[inline(always)]
pub(crate) fn tracing() -> bool {
    get(|c| &c.trace) != 0
}

/// Whether thread chains' hops are attached (`chain`).
#[inline(always)]
pub(crate) fn chains() -> bool {
    get(|c| &c.chains) != 0
}

/// `--drop-stacks`: whether drops are also counted by kernel stack.
#[inline(always)]
pub(crate) fn drop_stacks() -> bool {
    get(|c| &c.drop_stacks) != 0
}

/// A hop's [`netprobe_common::hop_flags`] (0 for an id past the table).
#[inline(always)]
pub(crate) fn hop_flags(hop: u8) -> u16 {
    let i = hop as usize;
    if i < MAX_HOPS {
        get(|c| &c.hop_flags[i])
    } else {
        0
    }
}

/// Where a hop's classic tracepoint record keeps its fields.
#[inline(always)]
pub(crate) fn classic(hop: u8) -> ClassicFields {
    get(|c| &c.classic[(hop as usize) & (MAX_HOPS - 1)])
}

/// Function slot `n`'s hop and skb argument.
#[inline(always)]
pub(crate) fn slot(n: usize) -> SlotConfig {
    if n < MAX_SLOTS {
        get(|c| &c.slots[n])
    } else {
        SlotConfig::default()
    }
}

/// The flow filter, by reference (1.7 KiB: too large to copy onto the BPF
/// stack). Its fields are read with plain loads, through the pointer of
/// [`cfg`]: LLVM cannot fold them either.
#[inline(always)]
pub(crate) fn flow() -> &'static FlowFilter {
    &cfg().flow
}
