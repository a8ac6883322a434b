//! fentry and fexit on functions of kernel modules (tap, macvlan, tun,
//! vhost, openvswitch, bridge), which aya 0.14 cannot load: its
//! `FEntry::load` finds the target in the BTF it is given but passes the
//! kernel no `attach_btf_obj_fd`, so the kernel looks the id up in
//! vmlinux's BTF and a module's function cannot be named. This is the one
//! load aya leaves out, done here:
//!
//! - the program is the slot's own, as aya's loader relocates it: the same
//!   object parsed by aya-obj, its map references pointed at the maps aya
//!   made ([`MapFds`], taken when the object was loaded);
//! - it is loaded with the module's BTF object (found by name among the
//!   kernel's BTF objects) and the function's id in it (from the facts);
//! - it is attached as aya attaches fentry (BPF_RAW_TRACEPOINT_OPEN).
//!
//! Dropping a [`ModuleLink`] detaches and unloads it. The kernel holds the
//! module loaded while a program is attached this way (its trampoline
//! takes a reference), which is why `plan` offers it only where that is
//! wanted.

use std::{
    collections::{BTreeMap, HashSet},
    ffi::CString,
    io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use aya::maps::{Map, MapData};
use aya_obj::generated::{bpf_attach_type, bpf_cmd, bpf_insn, bpf_prog_type};

/// Why a module function's fentry program was not loaded or attached
/// (`attach` turns it into its `LoadError`).
#[derive(Debug)]
pub enum LoadError {
    /// EPERM at load: the kernel refuses fentry.
    Refused,
    /// The verifier rejected it; its log says where.
    Verifier {
        io_error: io::Error,
        verifier_log: String,
    },
    MissingProgram(String),
    Unavailable(String),
}

impl LoadError {
    fn brief(&self) -> String {
        match self {
            LoadError::Refused => "refused by the kernel (EPERM at load)".into(),
            LoadError::Verifier { io_error, .. } => format!("the verifier rejected it ({io_error})"),
            LoadError::MissingProgram(n) => format!("program {n} missing from the object"),
            LoadError::Unavailable(why) => why.clone(),
        }
    }
}

/// The fds of the maps aya created for netprobe's object, by name (taken
/// before any map is moved out of the `Ebpf`). The maps outlive every
/// program loaded with them: they are the probe's.
#[derive(Default)]
pub struct MapFds(BTreeMap<String, RawFd>);

impl MapFds {
    pub fn of(ebpf: &aya::Ebpf) -> MapFds {
        MapFds(ebpf.maps().filter_map(|(n, m)| Some((n.to_owned(), map_data(m)?.fd().as_fd().as_raw_fd()))).collect())
    }
}

fn map_data(m: &Map) -> Option<&MapData> {
    use Map::*;
    match m {
        Array(d)
        | ArrayOfMaps(d)
        | BloomFilter(d)
        | CgroupArray(d)
        | CgroupStorage(d)
        | CgrpStorage(d)
        | CpuMap(d)
        | DevMap(d)
        | DevMapHash(d)
        | HashMap(d)
        | HashOfMaps(d)
        | InodeStorage(d)
        | LpmTrie(d)
        | LruHashMap(d)
        | PerCpuArray(d)
        | PerCpuCgroupStorage(d)
        | PerCpuHashMap(d)
        | PerCpuLruHashMap(d)
        | PerfEventArray(d)
        | ProgramArray(d)
        | Queue(d)
        | ReusePortSockArray(d)
        | RingBuf(d)
        | SockHash(d)
        | SockMap(d)
        | SkStorage(d)
        | Stack(d)
        | StackTraceMap(d)
        | Unsupported(d)
        | XskMap(d) => Some(d),
    }
}

/// What the probe keeps for loading module fentry: its maps' fds, and
/// the relocated object while an attach pass needs it.
pub struct Loader {
    object: &'static [u8],
    maps: MapFds,
    relocated: Option<Result<Relocated, String>>,
}

impl Loader {
    pub fn new(object: &'static [u8], maps: MapFds) -> Loader {
        Loader { object, maps, relocated: None }
    }

    /// [`Relocated::attach`], relocating the object first if this attach
    /// pass has not yet.
    pub fn attach(&mut self, name: &str, module: &str, func: &str, btf_id: u32) -> Result<ModuleLink, LoadError> {
        let r = self.relocated.get_or_insert_with(|| Relocated::new(self.object, &self.maps).map_err(|e| e.brief()));
        match r {
            Ok(r) => r.attach(name, module, func, btf_id),
            Err(e) => Err(LoadError::Unavailable(e.clone())),
        }
    }

    /// The end of an attach pass: the relocated object (tens of MB) goes.
    pub fn done(&mut self) {
        self.relocated = None;
    }
}

/// netprobe's object relocated against its live maps: parsed once per
/// attach pass and dropped after it.
pub struct Relocated {
    obj: aya_obj::Object,
}

impl Relocated {
    pub fn new(object: &[u8], maps: &MapFds) -> Result<Relocated, LoadError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| LoadError::Unavailable(format!("{what}: {e}"));
        let mut obj = aya_obj::Object::parse(object).map_err(|e| fail("parsing netprobe's object", &e))?;
        if obj.has_btf_relocations() {
            // aya relocates them against the kernel's BTF; this loader
            // does not, and netprobe's Rust programs carry none.
            return Err(LoadError::Unavailable("the object has CO-RE relocations".into()));
        }
        // Only the function slots' fentry and fexit programs are loaded
        // from here: the others are not linked, and their code goes once
        // the maps are relocated (linking copies every callee into each
        // program).
        obj.programs.retain(|name, _| name.starts_with("fentry_") || name.starts_with("fexit_"));
        let defs: Vec<(String, aya_obj::Map)> = obj.maps.drain().collect();
        let text: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
        let mut missing = Vec::new();
        let with_fds: Vec<(&str, RawFd, &aya_obj::Map)> = defs
            .iter()
            .filter_map(|(n, m)| match maps.0.get(n) {
                Some(&fd) => Some((n.as_str(), fd, m)),
                None => {
                    missing.push(n.clone());
                    None
                }
            })
            .collect();
        obj.relocate_maps(with_fds.into_iter(), &text)
            .map_err(|e| fail(&format!("relocating map references (maps without fd: {missing:?})"), &e))?;
        obj.relocate_calls(&text).map_err(|e| fail("linking calls", &e))?;
        let kept: HashSet<(usize, u64)> = obj.programs.values().map(|p| p.function_key()).collect();
        obj.functions.retain(|key, _| kept.contains(key));
        obj.sanitize_functions(aya::features());
        Ok(Relocated { obj })
    }

    /// Loads program `name` (`fentry_N` or `fexit_N`) on function `func`
    /// of module `module`, whose BTF id in the module's BTF is `btf_id`,
    /// and attaches it.
    pub fn attach(&self, name: &str, module: &str, func: &str, btf_id: u32) -> Result<ModuleLink, LoadError> {
        let prog = self.obj.programs.get(name).ok_or_else(|| LoadError::MissingProgram(name.to_owned()))?;
        let attach_type = match prog.section {
            aya_obj::ProgramSection::FEntry { .. } => bpf_attach_type::BPF_TRACE_FENTRY,
            aya_obj::ProgramSection::FExit { .. } => bpf_attach_type::BPF_TRACE_FEXIT,
            _ => return Err(LoadError::Unavailable(format!("{name} is not an fentry or fexit program"))),
        };
        let insns = &self
            .obj
            .functions
            .get(&prog.function_key())
            .ok_or_else(|| LoadError::MissingProgram(name.to_owned()))?
            .instructions;
        let btf = module_btf(module)?;
        let prog_fd = load(name, insns, &prog.license, attach_type as u32, btf.as_fd().as_raw_fd(), btf_id)?;
        let link = raw_tracepoint_open(prog_fd.as_raw_fd()).map_err(|e| {
            LoadError::Unavailable(format!("attaching {name} to {func} [{module}]: {e} (BPF_RAW_TRACEPOINT_OPEN)"))
        })?;
        let id = prog_id(prog_fd.as_raw_fd()).unwrap_or(0);
        Ok(ModuleLink { program: name.to_owned(), id, _link: link, _prog: prog_fd })
    }
}

/// A program attached by this loader: closing the link detaches it, the
/// program's fd unloads it (the link is closed first).
pub struct ModuleLink {
    pub program: String,
    /// The kernel's id of the program (0 if it could not be read).
    pub id: u32,
    _link: OwnedFd,
    _prog: OwnedFd,
}

// The kernel's bpf_attr for BPF_PROG_LOAD up to `log_true_size` (Linux
// 6.4; older kernels take the zeros they do not know).
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_btf_obj_fd: u32,
    core_relo_cnt: u32,
    fd_array: u64,
    core_relos: u64,
    core_relo_rec_size: u32,
    log_true_size: u32,
}

fn sys_bpf<T>(cmd: bpf_cmd, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a live, fully initialised #[repr(C)] bpf_attr
    // prefix of the size given; the kernel writes back at most that much.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_long, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel as a new descriptor
    // that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

fn load(
    name: &str,
    insns: &[bpf_insn],
    license: &CString,
    attach_type: u32,
    btf_obj_fd: RawFd,
    btf_id: u32,
) -> Result<OwnedFd, LoadError> {
    let mut prog_name = [0u8; 16];
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let attr = |log: &mut Vec<u8>| ProgLoad {
        prog_type: bpf_prog_type::BPF_PROG_TYPE_TRACING as u32,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: log.len() as u32,
        log_buf: if log.is_empty() { 0 } else { log.as_mut_ptr() as u64 },
        prog_name,
        expected_attach_type: attach_type,
        attach_btf_id: btf_id,
        attach_btf_obj_fd: btf_obj_fd as u32,
        ..ProgLoad::default()
    };
    let mut log = Vec::new();
    let first = sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr(&mut log));
    let err = match first {
        Ok(fd) => return Ok(owned(fd)),
        Err(e) => e,
    };
    if err.raw_os_error() == Some(libc::EPERM) {
        return Err(LoadError::Refused);
    }
    // Again with the verifier's log, in a buffer grown until it fits.
    let mut size = 1 << 20;
    loop {
        log = vec![0u8; size];
        match sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr(&mut log)) {
            Ok(fd) => return Ok(owned(fd)),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && size < 1 << 26 => size <<= 3,
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                return Err(LoadError::Verifier {
                    io_error: e,
                    verifier_log: String::from_utf8_lossy(&log[..end]).into_owned(),
                });
            }
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct RawTpOpen {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

fn raw_tracepoint_open(prog_fd: RawFd) -> io::Result<OwnedFd> {
    let mut attr = RawTpOpen { prog_fd: prog_fd as u32, ..RawTpOpen::default() };
    sys_bpf(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr).map(owned)
}

#[repr(C)]
#[derive(Default)]
struct GetId {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoByFd {
    fd: u32,
    info_len: u32,
    info: u64,
}

#[repr(C)]
#[derive(Default)]
struct BtfInfo {
    btf: u64,
    btf_size: u32,
    id: u32,
    name: u64,
    name_len: u32,
    kernel_btf: u32,
}

fn info<T>(fd: RawFd, info: &mut T) -> io::Result<()> {
    let mut attr = InfoByFd { fd: fd as u32, info_len: std::mem::size_of::<T>() as u32, info: info as *mut T as u64 };
    sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(|_| ())
}

/// The kernel's id of a loaded program (the first two fields of
/// bpf_prog_info: type, id).
fn prog_id(fd: RawFd) -> io::Result<u32> {
    let mut type_and_id = [0u32; 2];
    info(fd, &mut type_and_id)?;
    Ok(type_and_id[1])
}

/// An fd on the kernel's BTF object of module `module`, found by walking
/// the kernel's BTF objects and reading each one's name.
fn module_btf(module: &str) -> Result<OwnedFd, LoadError> {
    let unavailable = |e: io::Error| LoadError::Unavailable(format!("finding module {module}'s BTF object: {e}"));
    let mut id = 0;
    loop {
        let mut next = GetId { id, ..GetId::default() };
        match sys_bpf(bpf_cmd::BPF_BTF_GET_NEXT_ID, &mut next) {
            Ok(_) => id = next.next_id,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(LoadError::Unavailable(format!(
                    "module {module} has no BTF object in the kernel (CONFIG_DEBUG_INFO_BTF_MODULES)"
                )))
            }
            Err(e) => return Err(unavailable(e)),
        }
        let mut by_id = GetId { id, ..GetId::default() };
        let fd = match sys_bpf(bpf_cmd::BPF_BTF_GET_FD_BY_ID, &mut by_id) {
            Ok(fd) => owned(fd),
            // Freed between the two calls.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(unavailable(e)),
        };
        let mut name = [0u8; 64];
        let mut bi = BtfInfo { name: name.as_mut_ptr() as u64, name_len: name.len() as u32, ..BtfInfo::default() };
        info(fd.as_raw_fd(), &mut bi).map_err(unavailable)?;
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        if bi.kernel_btf != 0 && &name[..end] == module.as_bytes() {
            return Ok(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's layout of bpf_attr for BPF_PROG_LOAD: the fields this
    /// loader sets sit where the kernel reads them.
    #[test]
    fn prog_load_attr_has_the_kernels_layout() {
        assert_eq!(std::mem::offset_of!(ProgLoad, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoad, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(ProgLoad, attach_btf_id), 108);
        assert_eq!(std::mem::offset_of!(ProgLoad, attach_btf_obj_fd), 112);
        assert_eq!(std::mem::offset_of!(ProgLoad, log_true_size), 140);
        assert_eq!(std::mem::size_of::<ProgLoad>(), 144);
        assert_eq!(std::mem::size_of::<BtfInfo>(), 32);
    }

    /// vmlinux's own BTF object is found by walking the kernel's: it is
    /// the one kernel BTF that is not a module's, named "vmlinux".
    #[test]
    fn walks_the_kernels_btf_objects_by_name() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() || unsafe { libc::geteuid() } != 0 {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI runs as root on a kernel with BTF");
            eprintln!("SKIPPED: needs root and kernel BTF");
            return;
        }
        assert!(module_btf("vmlinux").is_ok());
        let e = module_btf("netprobe_no_such_module").err().unwrap().brief();
        assert!(e.contains("netprobe_no_such_module has no BTF object"), "{e}");
    }
}
