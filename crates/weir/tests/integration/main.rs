//! Integration tests against the embedded local cluster and the `weir` executable.

mod application;
mod artifacts;
mod bad_input;
mod chaos;
mod checkpoint_faults;
mod checkpoints;
mod cli;
mod cluster;
mod cluster_failures;
mod config;
mod dashboard;
mod docker;
mod elasticsearch;
mod flink_cli;
mod ha;
mod ha_application;
mod joins;
mod kafka;
mod lifecycle;
mod logs;
mod metrics;
mod minicluster;
mod modes;
mod partition;
mod process;
mod providers;
mod rest_fuzz;
mod rest_guard;
mod results;
mod s3;
mod security;
mod triggers;
mod window_checkpoints;
mod windows;

use weir::{Driver, Registry};

/// A local driver for `registry` at parallelism `p`.
pub fn driver(registry: Registry, p: u32) -> Driver {
    match Driver::local(registry).with_parallelism(p) {
        Ok(d) => d,
        Err(e) => panic!("cannot configure driver: {e}"),
    }
}

/// The path of example `name`, which `cargo test` builds next to the test binaries.
pub fn example(name: &str) -> std::path::PathBuf {
    // target/<profile>/deps/<test binary> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe.parent().and_then(|d| d.parent()).map(std::path::PathBuf::from).unwrap_or_default();
    profile_dir.join("examples").join(name)
}
