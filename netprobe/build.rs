//! Embeds the BPF object built by `cargo xtask build` (named by
//! NETPROBE_BPF_OBJECT). Without it the binary still builds, for `cargo
//! check` and unit tests, and says at run time how to get a real one.

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=NETPROBE_BPF_OBJECT");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("netprobe.bpf.o");
    match env::var_os("NETPROBE_BPF_OBJECT") {
        Some(obj) => {
            println!("cargo:rerun-if-changed={}", obj.to_string_lossy());
            fs::copy(&obj, &out).unwrap_or_else(|e| panic!("cannot copy BPF object {obj:?}: {e}"));
        }
        None => fs::write(&out, b"").unwrap(),
    }
}
