//! The guest stand-in's vhost-net mode: instead of reading and writing the
//! macvtap's /dev/tapN itself, the stand-in hands it to the kernel's
//! vhost-net worker as QEMU does with `vhost=on`, and plays the guest's
//! virtio-net driver on the other side of two split virtqueues (rx = 0,
//! tx = 1) in its own memory. Frames to the wire: read (with their 12-byte
//! virtio-net header) from the guest namespace's tap, put in a tx
//! descriptor, published in the avail ring, kicked; the worker
//! (`handle_tx`) sends them with the tap's `sendmsg`. Frames to the guest:
//! rx buffers stay posted; the worker (`handle_rx`) fills them with the
//! tap's `recvmsg`, and on the call eventfd the stand-in writes them to the
//! guest tap and posts them again. Every frame is counted, moved or not.
//!
//! Interfaces from the kernel's uapi headers: `linux/vhost.h` (ioctls),
//! `linux/vhost_types.h` (their structs), `linux/virtio_ring.h` (the split
//! ring layout, little-endian with VIRTIO_F_VERSION_1).

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::fd::{AsRawFd, FromRawFd},
    sync::{
        atomic::{fence, AtomicBool, AtomicU16, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

use anyhow::{bail, Context, Result};

use crate::topology::{RelayStats, RELAY_THREAD};

const DEV: &str = "/dev/vhost-net";

// ioctl numbers (linux/vhost.h): _IO/_IOR/_IOW(VHOST_VIRTIO = 0xAF, nr,
// size) in the generic encoding (x86, arm64, s390x).
const fn ioc(dir: libc::c_ulong, nr: libc::c_ulong, size: usize) -> libc::c_ulong {
    (dir << 30) | ((size as libc::c_ulong) << 16) | (0xAF << 8) | nr
}
const WRITE: libc::c_ulong = 1;
const READ: libc::c_ulong = 2;
const VHOST_GET_FEATURES: libc::c_ulong = ioc(READ, 0x00, 8);
const VHOST_SET_FEATURES: libc::c_ulong = ioc(WRITE, 0x00, 8);
const VHOST_SET_OWNER: libc::c_ulong = ioc(0, 0x01, 0);
const VHOST_SET_MEM_TABLE: libc::c_ulong = ioc(WRITE, 0x03, std::mem::size_of::<MemoryHeader>());
const VHOST_SET_VRING_NUM: libc::c_ulong = ioc(WRITE, 0x10, std::mem::size_of::<VringState>());
const VHOST_SET_VRING_ADDR: libc::c_ulong = ioc(WRITE, 0x11, std::mem::size_of::<VringAddr>());
const VHOST_SET_VRING_BASE: libc::c_ulong = ioc(WRITE, 0x12, std::mem::size_of::<VringState>());
const VHOST_SET_VRING_KICK: libc::c_ulong = ioc(WRITE, 0x20, std::mem::size_of::<VringFile>());
const VHOST_SET_VRING_CALL: libc::c_ulong = ioc(WRITE, 0x21, std::mem::size_of::<VringFile>());
const VHOST_NET_SET_BACKEND: libc::c_ulong = ioc(WRITE, 0x30, std::mem::size_of::<VringFile>());

/// linux/virtio_config.h: the modern (little-endian) virtio; with it the
/// virtio-net header is `virtio_net_hdr_v1`, 12 bytes, the tap's
/// TUNSETVNETHDRSZ. Without VHOST_NET_F_VIRTIO_NET_HDR the tap, not
/// vhost, reads and writes that header.
const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// linux/virtio_ring.h: the buffer is written by the device (rx).
const VRING_DESC_F_WRITE: u16 = 2;

/// struct vhost_vring_state.
#[repr(C)]
struct VringState {
    index: u32,
    num: u32,
}

/// struct vhost_vring_file.
#[repr(C)]
struct VringFile {
    index: u32,
    fd: i32,
}

/// struct vhost_vring_addr.
#[repr(C)]
struct VringAddr {
    index: u32,
    flags: u32,
    desc_user_addr: u64,
    used_user_addr: u64,
    avail_user_addr: u64,
    log_guest_addr: u64,
}

/// struct vhost_memory without its flexible array of regions (the
/// ioctl's size is this header's).
#[repr(C)]
struct MemoryHeader {
    nregions: u32,
    padding: u32,
}

/// struct vhost_memory with one struct vhost_memory_region.
#[repr(C)]
struct MemoryOne {
    header: MemoryHeader,
    guest_phys_addr: u64,
    memory_size: u64,
    userspace_addr: u64,
    flags_padding: u64,
}

const _: () = assert!(std::mem::size_of::<VringAddr>() == 40);
const _: () = assert!(std::mem::size_of::<MemoryOne>() == 8 + 32);

/// Descriptors per ring (a power of two; 256 keeps each ring part within
/// one page: descriptors 16 B, avail 4 + 2 B, used 4 + 8 B per entry).
pub const QUEUE_SIZE: u16 = 256;
const PAGE: usize = 4096;
/// One buffer per descriptor: a 12-byte header and a frame of up to the
/// tap's MTU (no offloads are negotiated, so no frame is bigger).
const BUF: usize = 4096;
/// Virtqueue indexes of virtio-net.
const RX: u32 = 0;
const TX: u32 = 1;
/// A ring's share of the region: descriptors, avail, used, then buffers.
const RING_SPAN: usize = 3 * PAGE + QUEUE_SIZE as usize * BUF;

/// The opened vhost-net device and the memory it shares with the stand-in
/// (one anonymous mapping, registered as guest memory at its own address).
struct Device {
    fd: Option<File>,
    mem: *mut u8,
    len: usize,
}

// SAFETY: the mapping is shared with the kernel anyway; each ring's part of
// it is touched by one thread only (see `Ring`).
unsafe impl Send for Device {}
// SAFETY: as above; `Device` itself is not mutated after setup.
unsafe impl Sync for Device {}

impl Drop for Device {
    fn drop(&mut self) {
        // Closing the device stops and flushes its worker (vhost_net_release)
        // before the memory it reads goes away.
        drop(self.fd.take());
        // SAFETY: the mapping made in `Device::open`, unmapped once.
        unsafe { libc::munmap(self.mem.cast(), self.len) };
    }
}

fn ioctl<T>(fd: &File, req: libc::c_ulong, arg: &T, what: &str) -> Result<()> {
    // SAFETY: a vhost ioctl with the argument struct its number encodes.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *const T) } != 0 {
        bail!("{what} on {DEV}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn eventfd() -> Result<File> {
    // SAFETY: eventfd(2) with no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        bail!("eventfd: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Opens /dev/vhost-net, or says how to get it.
fn open_device() -> Result<File> {
    OpenOptions::new().read(true).write(true).open(DEV).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "{DEV} does not exist: the vhost-net module is not loaded (modprobe vhost_net), or this kernel has no \
             vhost-net (CONFIG_VHOST_NET); run without --vhost to relay with read/write instead"
        ),
        _ => anyhow::anyhow!("cannot open {DEV}: {e} (it needs root)"),
    })
}

/// Whether this host can run the vhost stand-in (for an early, clear error).
pub fn check_available() -> Result<()> {
    open_device().map(drop)
}

/// One split virtqueue, owned by the one thread that drives it.
struct Ring {
    dev: Arc<Device>,
    base: *mut u8,
    kick: File,
    call: File,
    /// The avail index the next published entry gets (shadow of avail.idx).
    avail_idx: u16,
    /// The used index up to which entries have been taken.
    last_used: u16,
}

// SAFETY: a ring's memory is touched only by the thread that owns it.
unsafe impl Send for Ring {}

impl Ring {
    fn desc(&self) -> *mut u8 {
        self.base
    }
    fn avail(&self) -> *mut u8 {
        // SAFETY: within the ring's span of the mapping.
        unsafe { self.base.add(PAGE) }
    }
    fn used(&self) -> *mut u8 {
        // SAFETY: within the ring's span of the mapping.
        unsafe { self.base.add(2 * PAGE) }
    }
    fn buf(&self, id: u16) -> *mut u8 {
        // SAFETY: id < QUEUE_SIZE: within the ring's span of the mapping.
        unsafe { self.base.add(3 * PAGE + id as usize * BUF) }
    }

    /// Configures the ring in vhost (number, base, addresses, eventfds).
    fn setup(dev: &Arc<Device>, index: u32, base: *mut u8) -> Result<Ring> {
        let fd = dev.fd.as_ref().unwrap();
        let ring = Ring { dev: dev.clone(), base, kick: eventfd()?, call: eventfd()?, avail_idx: 0, last_used: 0 };
        ioctl(fd, VHOST_SET_VRING_NUM, &VringState { index, num: QUEUE_SIZE.into() }, "VHOST_SET_VRING_NUM")?;
        ioctl(fd, VHOST_SET_VRING_BASE, &VringState { index, num: 0 }, "VHOST_SET_VRING_BASE")?;
        let addr = VringAddr {
            index,
            flags: 0,
            desc_user_addr: ring.desc() as u64,
            used_user_addr: ring.used() as u64,
            avail_user_addr: ring.avail() as u64,
            log_guest_addr: 0,
        };
        ioctl(fd, VHOST_SET_VRING_ADDR, &addr, "VHOST_SET_VRING_ADDR")?;
        ioctl(fd, VHOST_SET_VRING_KICK, &VringFile { index, fd: ring.kick.as_raw_fd() }, "VHOST_SET_VRING_KICK")?;
        ioctl(fd, VHOST_SET_VRING_CALL, &VringFile { index, fd: ring.call.as_raw_fd() }, "VHOST_SET_VRING_CALL")?;
        Ok(ring)
    }

    /// Writes descriptor `id`: its buffer, `len` bytes, `flags`.
    fn set_desc(&self, id: u16, len: u32, flags: u16) {
        let buf = self.buf(id) as u64;
        // SAFETY: descriptor `id` (16 bytes: addr u64, len u32, flags u16,
        // next u16) within the descriptor page; the device reads it only
        // after it is published.
        unsafe {
            let d = self.desc().add(id as usize * 16);
            std::ptr::write_volatile(d.cast::<u64>(), buf.to_le());
            std::ptr::write_volatile(d.add(8).cast::<u32>(), len.to_le());
            std::ptr::write_volatile(d.add(12).cast::<u16>(), flags.to_le());
            std::ptr::write_volatile(d.add(14).cast::<u16>(), 0);
        }
    }

    /// Puts descriptor `id` in the avail ring (not yet published).
    fn push_avail(&mut self, id: u16) {
        let slot = (self.avail_idx % QUEUE_SIZE) as usize;
        // SAFETY: avail.ring[slot], after avail.flags and avail.idx.
        unsafe { std::ptr::write_volatile(self.avail().add(4 + 2 * slot).cast::<u16>(), id.to_le()) };
        self.avail_idx = self.avail_idx.wrapping_add(1);
    }

    /// Publishes the avail entries pushed so far and kicks the worker.
    fn publish(&self) {
        // The descriptors and ring entries before the index that shows them.
        fence(Ordering::Release);
        // SAFETY: avail.idx, 2-byte aligned, shared with the kernel.
        let idx = unsafe { &*self.avail().add(2).cast::<AtomicU16>() };
        idx.store(self.avail_idx.to_le(), Ordering::Release);
        // The index before the kick (and before reading used.flags, were we
        // to honour VRING_USED_F_NO_NOTIFY; the stand-in always kicks).
        fence(Ordering::SeqCst);
        let _ = (&self.kick).write(&1u64.to_ne_bytes());
    }

    /// The next used entry (descriptor id, bytes written), if any.
    fn pop_used(&mut self) -> Option<(u16, u32)> {
        // SAFETY: used.idx, 2-byte aligned, shared with the kernel.
        let idx = unsafe { &*self.used().add(2).cast::<AtomicU16>() };
        let idx = u16::from_le(idx.load(Ordering::Acquire));
        if idx == self.last_used {
            return None;
        }
        let slot = (self.last_used % QUEUE_SIZE) as usize;
        // SAFETY: used.ring[slot] (id u32, len u32), written before used.idx.
        let (id, len) = unsafe {
            let e = self.used().add(4 + 8 * slot);
            (
                u32::from_le(std::ptr::read_volatile(e.cast::<u32>())),
                u32::from_le(std::ptr::read_volatile(e.add(4).cast::<u32>())),
            )
        };
        self.last_used = self.last_used.wrapping_add(1);
        Some((id as u16 % QUEUE_SIZE, len))
    }

    /// Waits up to `ms` for the worker's call (and consumes it).
    fn wait_call(&self, ms: i32) {
        let mut pfd = libc::pollfd { fd: self.call.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, ms) } > 0 {
            let mut b = [0u8; 8];
            let _ = (&self.call).read(&mut b);
        }
    }
}

/// Sets up vhost-net on `tap` (the macvtap's character device, with its
/// 12-byte vnet header set) and starts the stand-in's two threads between
/// the rings and `guest` (the guest namespace's tap). They run until
/// `stop`; the last one to end closes the device and frees the rings.
pub(crate) fn start(
    guest: Arc<File>,
    tap: Arc<File>,
    stop: Arc<AtomicBool>,
    stats: Arc<RelayStats>,
) -> Result<Vec<JoinHandle<()>>> {
    let fd = open_device()?;
    let len = 2 * RING_SPAN;
    // SAFETY: a fresh anonymous private mapping.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        bail!("mmap of {len} bytes for the vhost rings: {}", std::io::Error::last_os_error());
    }
    let dev = Arc::new(Device { fd: Some(fd), mem: mem.cast(), len });
    let f = dev.fd.as_ref().unwrap();
    // SAFETY: VHOST_SET_OWNER takes no argument; it binds the device to
    // this process's memory and starts its worker thread.
    if unsafe { libc::ioctl(f.as_raw_fd(), VHOST_SET_OWNER) } != 0 {
        bail!("VHOST_SET_OWNER on {DEV}: {}", std::io::Error::last_os_error());
    }
    let mut features = 0u64;
    // SAFETY: VHOST_GET_FEATURES writes one u64.
    if unsafe { libc::ioctl(f.as_raw_fd(), VHOST_GET_FEATURES, &mut features as *mut u64) } != 0 {
        bail!("VHOST_GET_FEATURES on {DEV}: {}", std::io::Error::last_os_error());
    }
    if features & VIRTIO_F_VERSION_1 == 0 {
        bail!(
            "{DEV} does not offer VIRTIO_F_VERSION_1 (features {features:#x}): the stand-in needs a modern vhost-net"
        );
    }
    ioctl(f, VHOST_SET_FEATURES, &VIRTIO_F_VERSION_1, "VHOST_SET_FEATURES")?;
    let table = MemoryOne {
        header: MemoryHeader { nregions: 1, padding: 0 },
        guest_phys_addr: mem as u64,
        memory_size: len as u64,
        userspace_addr: mem as u64,
        flags_padding: 0,
    };
    ioctl(f, VHOST_SET_MEM_TABLE, &table, "VHOST_SET_MEM_TABLE")?;
    let mut rx = Ring::setup(&dev, RX, dev.mem)?;
    // SAFETY: the second ring's span, within the mapping.
    let tx = Ring::setup(&dev, TX, unsafe { dev.mem.add(RING_SPAN) })?;
    // Every rx buffer posted before the backend starts the worker.
    for id in 0..QUEUE_SIZE {
        rx.set_desc(id, BUF as u32, VRING_DESC_F_WRITE);
        rx.push_avail(id);
    }
    rx.publish();
    for index in [RX, TX] {
        ioctl(f, VHOST_NET_SET_BACKEND, &VringFile { index, fd: tap.as_raw_fd() }, "VHOST_NET_SET_BACKEND")?;
    }
    // vhost holds its own reference to the tap file now.
    drop(tap);
    drop(dev);

    let mut threads = Vec::new();
    let (g, s, st) = (guest.clone(), stop.clone(), stats.clone());
    threads.push(
        std::thread::Builder::new()
            .name(format!("{RELAY_THREAD}-vtx"))
            .spawn(move || to_wire(tx, &g, &s, &st))
            .context("cannot start the guest stand-in")?,
    );
    threads.push(
        std::thread::Builder::new()
            .name(format!("{RELAY_THREAD}-vrx"))
            .spawn(move || to_guest(rx, &guest, &stop, &stats))
            .context("cannot start the guest stand-in")?,
    );
    Ok(threads)
}

/// Guest -> wire: frames from the guest tap into tx descriptors. A frame
/// vhost has taken (its descriptor came back used) is counted as moved;
/// one read while every descriptor stayed in flight is counted as not.
fn to_wire(mut ring: Ring, guest: &File, stop: &AtomicBool, stats: &RelayStats) {
    let mut free: Vec<u16> = (0..QUEUE_SIZE).rev().collect();
    let mut scratch = vec![0u8; 65536];
    let mut pfd = [
        libc::pollfd { fd: guest.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: ring.call.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    let reclaim = |ring: &mut Ring, free: &mut Vec<u16>| {
        while let Some((id, _)) = ring.pop_used() {
            free.push(id);
            stats.to_wire_frames.fetch_add(1, Ordering::Relaxed);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        for p in &mut pfd {
            p.revents = 0;
        }
        // SAFETY: poll on two valid pollfds.
        let n = unsafe { libc::poll(pfd.as_mut_ptr(), 2, 100) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if pfd[1].revents & libc::POLLIN != 0 {
            let mut b = [0u8; 8];
            let _ = (&ring.call).read(&mut b);
        }
        reclaim(&mut ring, &mut free);
        if pfd[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return;
        }
        if pfd[0].revents & libc::POLLIN == 0 {
            continue;
        }
        if free.is_empty() {
            // Every descriptor in flight: give the worker a moment.
            ring.wait_call(200);
            reclaim(&mut ring, &mut free);
        }
        let Some(id) = free.pop() else {
            // Still full: the frame is read and counted, not left to the
            // guest tap's queue to drop unseen.
            if (&*guest).read(&mut scratch).is_ok() {
                stats.to_wire_unmoved.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        };
        // SAFETY: descriptor `id`'s buffer, BUF bytes, not in flight.
        let buf = unsafe { std::slice::from_raw_parts_mut(ring.buf(id), BUF) };
        match (&*guest).read(buf) {
            Ok(0) => return,
            Ok(len) => {
                ring.set_desc(id, len as u32, 0);
                ring.push_avail(id);
                ring.publish();
            }
            Err(e) => {
                free.push(id);
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return;
                }
            }
        }
    }
}

/// Wire -> guest: filled rx buffers to the guest tap, posted again.
fn to_guest(mut ring: Ring, guest: &File, stop: &AtomicBool, stats: &RelayStats) {
    while !stop.load(Ordering::Relaxed) {
        ring.wait_call(100);
        let mut reposted = false;
        while let Some((id, len)) = ring.pop_used() {
            let len = len as usize;
            // SAFETY: descriptor `id`'s buffer, returned by the device.
            let buf = unsafe { std::slice::from_raw_parts(ring.buf(id), len.min(BUF)) };
            let moved = len > 0 && len <= BUF && (&*guest).write(buf).is_ok();
            let c = if moved { &stats.to_guest_frames } else { &stats.to_guest_unmoved };
            c.fetch_add(1, Ordering::Relaxed);
            ring.set_desc(id, BUF as u32, VRING_DESC_F_WRITE);
            ring.push_avail(id);
            reposted = true;
        }
        if reposted {
            ring.publish();
        }
    }
    // (The ring's `dev` reference ends with the thread.)
    let _ = &ring.dev;
}
