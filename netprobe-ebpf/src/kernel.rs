//! Reads of kernel memory and what the programs know of a hop's device:
//! the guarded `bpf_probe_read_kernel` wrappers (an address below 4096 is
//! never read: 0 or `None`), the direct loads of BTF-typed pointers,
//! [`scalar_of`] (a typed pointer as a plain number) and [`Dev`].

use aya_ebpf::helpers::bpf_probe_read_kernel;
use netprobe_common::name_key;

use crate::{config, maps::NP_SCRATCH};

/// A kernel read: a plain load where the verifier knows the pointer's BTF
/// type (tp_btf and fentry arguments: it checks the field and the JIT
/// makes the load fault-safe, no helper call), else bpf_probe_read_kernel.
#[inline(always)]
pub(crate) fn load_u64<const DIRECT: bool>(addr: u64) -> u64 {
    if DIRECT {
        if addr < 4096 {
            return 0;
        }
        // SAFETY: with DIRECT, `addr` is a BTF-typed pointer plus the
        // offset of a field of that type: the verifier checks the access
        // against the type and the JIT turns a fault into a 0 (PROBE_MEM).
        unsafe { core::ptr::read_volatile(addr as *const u64) }
    } else {
        read_u64(addr)
    }
}

/// A 16-bit field, as [`load_u64`].
#[inline(always)]
pub(crate) fn load_u16<const DIRECT: bool>(addr: u64) -> u16 {
    if DIRECT {
        if addr < 4096 {
            return 0;
        }
        // SAFETY: as in `load_u64`: a field of a BTF-typed pointer, checked
        // by the verifier, made fault-safe by the JIT.
        unsafe { core::ptr::read_volatile(addr as *const u16) }
    } else {
        read_bytes::<2>(addr).map(u16::from_ne_bytes).unwrap_or(0)
    }
}

#[inline(always)]
pub(crate) fn read_u64(addr: u64) -> u64 {
    if addr < 4096 {
        return 0;
    }
    // SAFETY: bpf_probe_read_kernel copies through the kernel's fault-safe
    // read: a bad address fails (then 0), it never faults.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.unwrap_or(0)
}

#[inline(always)]
pub(crate) fn read_u32(addr: u64) -> u32 {
    if addr < 4096 {
        return 0;
    }
    // SAFETY: as in `read_u64`: a fault-safe copy, failures give 0.
    unsafe { bpf_probe_read_kernel(addr as *const u32) }.unwrap_or(0)
}

#[inline(always)]
pub(crate) fn read_bytes<const N: usize>(addr: u64) -> Option<[u8; N]> {
    if addr < 4096 {
        return None;
    }
    // SAFETY: as in `read_u64`: a fault-safe copy, failures give `None`.
    unsafe { bpf_probe_read_kernel(addr as *const [u8; N]) }.ok()
}

/// A pointer's address as a plain number. tp_btf and fentry arguments are
/// typed pointers on which the verifier refuses arithmetic (hashing), and
/// it refuses to refill them from the stack by halves. Stored in a map
/// value (allowed to a privileged loader) and loaded back, the copy is a
/// scalar: a per-CPU word, an inlined lookup and plain accesses, where
/// `bpf_probe_read_kernel` was a helper call per hop. A program nesting on
/// this CPU (an interrupt) between the store and the load could overwrite
/// the word; each use bumps a generation word first, so a changed
/// generation says so, and the helper is used then. (The copy cannot be
/// compared with the pointer: the compiler would reuse the pointer.)
/// `DIRECT` says the pointer is typed.
#[inline(always)]
pub(crate) fn scalar_of<const DIRECT: bool>(p: u64) -> u64 {
    if !DIRECT {
        return p;
    }
    if config::bench_bits() & netprobe_common::bench::PROBE_LAUNDER == 0 {
        if let Some(w) = NP_SCRATCH.get_ptr_mut(0) {
            let w = w as *mut u64;
            // SAFETY: `w` points to this CPU's `[u64; 2]` of NP_SCRATCH,
            // valid while the program runs: words 0 and 1 are in bounds and
            // aligned. Volatile, so every access happens, in order; a
            // nesting program's write is caught by the generation word.
            unsafe {
                let gen = core::ptr::read_volatile(w).wrapping_add(1);
                core::ptr::write_volatile(w, gen);
                core::ptr::write_volatile(w.add(1), p);
                let v = core::ptr::read_volatile(w.add(1));
                if core::ptr::read_volatile(w) == gen {
                    return v;
                }
            }
        }
    }
    let spill = [p];
    // SAFETY: reads our own stack array, valid and aligned, through the
    // fault-safe helper (which the verifier treats as an untyped copy).
    unsafe { bpf_probe_read_kernel(spill.as_ptr()) }.unwrap_or(0)
}

/// Where a hop's device comes from, decides how the device key is formed
/// and how the device is described.
#[derive(Clone, Copy)]
pub(crate) enum Dev<'a> {
    /// A `struct net_device *` (BTF-typed and raw tracepoints).
    Ptr(u64),
    /// A device name from a classic tracepoint record; the key is its hash.
    Name(&'a [u8; 16]),
    None,
}

impl Dev<'_> {
    #[inline(always)]
    pub(crate) fn key(&self) -> u64 {
        match self {
            Dev::Ptr(p) => *p,
            Dev::Name(n) => name_key(n),
            Dev::None => 0,
        }
    }
}
