//! The test bed netprobe is shown and tested on, kept out of the
//! profiler's core: network namespace helpers (`netns`) and the demo
//! topologies (`topology`: real devices in namespaces, a guest stand-in
//! that drives /dev/tapN as QEMU does, or /dev/vhost-net in `vhost`, real
//! traffic). `netprobe demo`, the
//! benchmarks (`cargo xtask bench`) and the integration tests use it; the
//! profiler itself uses only `netns` to resolve `--iface NETNS/NAME`.

pub mod guest;
pub mod netns;
pub mod topology;
pub mod vhost;
