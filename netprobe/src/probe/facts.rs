//! What the running kernel offers netprobe, gathered once: which catalog
//! functions exist (kallsyms, with their modules), which have BTF records
//! and where their skb argument is, which tracepoints exist, and whether
//! BTF and kprobes are there at all. The same facts load from a directory
//! of recorded files (`test_data/kernels/<name>/`), so the planning can be
//! tested against kernels other than this one.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use anyhow::{Context, Result};
use btf_rs::{Btf, Type};

use super::catalog::{self, Site, SkbArg};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelFacts {
    pub release: String,
    pub arch: String,
    /// vmlinux BTF present.
    pub btf: bool,
    pub module_btf: bool,
    /// The kernel has kprobes.
    pub kprobes: bool,
    /// The kernel allows fentry; None: only a trial load can tell.
    pub fentry: Option<bool>,
    /// Catalog functions in kallsyms: name -> module (None = vmlinux).
    pub symbols: BTreeMap<String, Option<String>>,
    /// Modules with at least one symbol in kallsyms.
    pub modules: BTreeSet<String>,
    /// Catalog functions with a BTF FUNC record: name -> skb position.
    pub btf_funcs: BTreeMap<String, SkbArg>,
    /// Tracepoints present, as `category:name`.
    pub tracepoints: BTreeSet<String>,
    /// Catalog functions of modules: name -> the id of its FUNC record in
    /// the module's BTF (split on vmlinux's, so above vmlinux's ids), which
    /// an fentry load names. Read from the running kernel only.
    pub module_btf_ids: BTreeMap<String, u32>,
}

impl KernelFacts {
    /// Reads the facts of the running kernel.
    pub fn live() -> Result<KernelFacts> {
        let mut f = KernelFacts {
            release: read_trim("/proc/sys/kernel/osrelease"),
            arch: std::env::consts::ARCH.to_owned(),
            btf: Path::new(super::kernel::VMLINUX_BTF).exists(),
            ..KernelFacts::default()
        };
        f.kprobes = Path::new("/sys/bus/event_source/devices/kprobe").exists()
            || Path::new("/sys/kernel/tracing/kprobe_events").exists()
            || Path::new("/sys/kernel/debug/tracing/kprobe_events").exists();
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").context("cannot read /proc/kallsyms")?;
        f.add_kallsyms(&kallsyms);
        // Built-in modules have no [module] tag in kallsyms.
        let builtin = format!("/lib/modules/{}/modules.builtin", f.release);
        for line in std::fs::read_to_string(builtin).unwrap_or_default().lines() {
            if let Some(base) = line.rsplit('/').next().and_then(|b| b.strip_suffix(".ko")) {
                f.modules.insert(base.replace('-', "_"));
            }
        }
        if let Ok(fs) = super::kernel::tracefs() {
            for h in catalog::HOPS {
                if let Site::Tracepoint(t) = h.site {
                    if fs.join("events").join(t.category).join(t.name).is_dir() {
                        f.tracepoints.insert(format!("{}:{}", t.category, t.name));
                    }
                }
            }
        }
        if f.btf {
            if let Ok(Some(vmlinux)) = super::kernel::load_btf(None) {
                f.module_btf = Path::new("/sys/kernel/btf").read_dir().is_ok_and(|d| d.count() > 1);
                let mut per_module: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
                for (name, module) in &f.symbols {
                    per_module.entry(module.clone()).or_default().push(name.clone());
                }
                for (module, names) in per_module {
                    let split;
                    let btf = match &module {
                        None => &vmlinux,
                        Some(m) => match Btf::from_split_file(format!("/sys/kernel/btf/{m}"), &vmlinux) {
                            Ok(b) => {
                                split = b;
                                &split
                            }
                            Err(_) => continue,
                        },
                    };
                    for n in names {
                        if let Some(id) = btf.split().and_then(|s| module_func_id(btf, s, &n)) {
                            f.module_btf_ids.insert(n.clone(), id);
                        }
                        if let Some(skb) = btf_skb_arg(btf, &n) {
                            f.btf_funcs.insert(n, skb);
                        }
                    }
                }
            }
        }
        Ok(f)
    }

    /// Keeps the catalog's functions (and the modules seen) from a
    /// /proc/kallsyms text. A name defined in several modules counts only
    /// in the module the catalog names.
    pub fn add_kallsyms(&mut self, text: &str) {
        let wanted: BTreeMap<&str, Option<&str>> = catalog::functions().map(|(_, n, m)| (n, m)).collect();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(_addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let module = it.next().map(|m| m.trim_matches(|c| c == '[' || c == ']').to_owned());
            if let Some(m) = &module {
                self.modules.insert(m.clone());
            }
            if !matches!(kind, "t" | "T") {
                continue;
            }
            if let Some(want_mod) = wanted.get(name) {
                let ok = match (want_mod, &module) {
                    // Functions the catalog knows as built in, or as a
                    // module a given kernel may have built in.
                    (None, None) | (Some(_), None) => true,
                    (Some(w), Some(m)) => w == m,
                    (None, Some(_)) => false,
                };
                if ok {
                    self.symbols.insert(name.to_owned(), module);
                }
            }
        }
    }

    /// Loads recorded facts: `kernel.txt`, `kallsyms.txt`, `btf_funcs.txt`,
    /// `tracepoints.txt`.
    pub fn from_dir(dir: &Path) -> Result<KernelFacts> {
        let read = |n: &str| std::fs::read_to_string(dir.join(n)).with_context(|| format!("{}/{n}", dir.display()));
        let mut f = KernelFacts::default();
        for line in read("kernel.txt")?.lines() {
            let Some((k, v)) = line.split_once(' ') else {
                continue;
            };
            let yes = v.trim() == "yes";
            match k {
                "release" => f.release = v.trim().to_owned(),
                "arch" => f.arch = v.trim().to_owned(),
                "btf" => f.btf = yes,
                "module_btf" => f.module_btf = yes,
                "kprobes" => f.kprobes = yes,
                "fentry" => f.fentry = Some(yes),
                _ => {}
            }
        }
        f.add_kallsyms(&read("kallsyms.txt")?);
        for line in read("btf_funcs.txt")?.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() >= 3 {
                let skb = match parts[2] {
                    "-" => SkbArg::None,
                    s if s.starts_with('*') => SkbArg::Indirect(s[1..].parse()?),
                    s => SkbArg::Arg(s.parse()?),
                };
                f.btf_funcs.insert(parts[0].to_owned(), skb);
            }
        }
        for line in read("tracepoints.txt")?.lines() {
            if let Some(tp) = line.split_whitespace().next() {
                f.tracepoints.insert(tp.to_owned());
            }
        }
        Ok(f)
    }

    /// Writes the facts in the format [`KernelFacts::from_dir`] reads.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let yn = |b: bool| if b { "yes" } else { "no" };
        let mut k = format!(
            "release {}\narch {}\nbtf {}\nmodule_btf {}\nkprobes {}\n",
            self.release,
            self.arch,
            yn(self.btf),
            yn(self.module_btf),
            yn(self.kprobes)
        );
        if let Some(fe) = self.fentry {
            k += &format!("fentry {}\n", yn(fe));
        }
        std::fs::write(dir.join("kernel.txt"), k)?;
        let mut ks = String::new();
        for (n, m) in &self.symbols {
            ks += &format!("0000000000000000 t {n}{}\n", m.as_ref().map_or(String::new(), |m| format!(" [{m}]")));
        }
        std::fs::write(dir.join("kallsyms.txt"), ks)?;
        let mut bf = String::new();
        for (n, s) in &self.btf_funcs {
            let pos = match s {
                SkbArg::None => "-".to_owned(),
                SkbArg::Arg(i) => i.to_string(),
                SkbArg::Indirect(i) => format!("*{i}"),
            };
            let module = self.symbols.get(n).cloned().flatten().unwrap_or_else(|| "vmlinux".to_owned());
            bf += &format!("{n} {module} {pos} -\n");
        }
        std::fs::write(dir.join("btf_funcs.txt"), bf)?;
        let tps: String = self.tracepoints.iter().map(|t| format!("{t} -\n")).collect();
        std::fs::write(dir.join("tracepoints.txt"), tps)?;
        Ok(())
    }
}

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p).map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// The id of function `name`'s FUNC record in a module's own part of its
/// split BTF.
fn module_func_id(btf: &Btf, module: &btf_rs::BtfSection, name: &str) -> Option<u32> {
    module
        .resolve_ids_by_name(name)
        .ok()?
        .into_iter()
        .find(|&id| matches!(btf.resolve_type_by_id(id), Ok(Type::Func(_))))
}

/// Position of the first `struct sk_buff *` (or `**`) parameter of BTF
/// function `name`, or `SkbArg::None` if it has none; None if no record.
pub fn btf_skb_arg(btf: &Btf, name: &str) -> Option<SkbArg> {
    let types = btf.resolve_types_by_name(name).ok()?;
    for t in types {
        let Type::Func(func) = t else { continue };
        let Ok(Type::FuncProto(proto)) = btf.resolve_chained_type(&func) else {
            continue;
        };
        for (i, p) in proto.parameters.iter().enumerate() {
            let mut depth = 0;
            let mut ty = btf.resolve_chained_type(p).ok();
            while let Some(t) = ty {
                match &t {
                    Type::Ptr(_) => {
                        depth += 1;
                        ty = btf.resolve_chained_type(t.as_btf_type().unwrap()).ok();
                    }
                    Type::Const(_) | Type::Volatile(_) | Type::Typedef(_) | Type::TypeTag(_) | Type::Restrict(_) => {
                        ty = btf.resolve_chained_type(t.as_btf_type().unwrap()).ok();
                    }
                    Type::Struct(s) => {
                        if btf.resolve_name(s).ok().as_deref() == Some("sk_buff") {
                            return Some(match depth {
                                1 => SkbArg::Arg(i as u8),
                                2 => SkbArg::Indirect(i as u8),
                                _ => break,
                            });
                        }
                        break;
                    }
                    _ => break,
                }
            }
        }
        return Some(SkbArg::None);
    }
    None
}
