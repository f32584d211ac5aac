//! Integration tests against the embedded local cluster and the `weir` executable.

mod bad_input;
mod cli;
mod cluster;
mod joins;
mod lifecycle;
mod process;
mod results;
mod triggers;
mod windows;

use weir::{Driver, Registry};

/// A local driver for `registry` at parallelism `p`.
pub fn driver(registry: Registry, p: u32) -> Driver {
    match Driver::local(registry).with_parallelism(p) {
        Ok(d) => d,
        Err(e) => panic!("cannot configure driver: {e}"),
    }
}
