//! weir-ha: high availability for the JobManager, on an existing coordination service.
//!
//! One trait, [`HaServices`], with an etcd implementation ([`etcd`]), a ZooKeeper one
//! ([`zookeeper`]) and one in a process's memory ([`memory`], for tests and one-process clusters),
//! all held to one contract suite (`tests/support/contract.rs`), gives:
//!
//! - **leader election with fencing**: [`HaServices::campaign`] returns once this contender leads,
//!   with an *epoch* that grows with every election; every write a leader makes to the service is
//!   conditional on its epoch still leading ([`HaServices::put`], [`HaServices::delete`]), so a
//!   deposed leader's writes are refused; the [`Leadership`] reports its loss (a lease or session
//!   that could not be kept alive) before any other contender can be elected;
//! - **leader retrieval**: [`HaServices::leader`], and [`follow_leader`] for a watched value;
//! - a small **key-value space** per cluster, on which [`stores`] builds the job graph store, the
//!   checkpoint id counter, the completed-checkpoint pointers and the job result store, with bulky
//!   data in `high-availability.storageDir`.

pub mod etcd;
pub mod memory;
mod services;
pub mod stores;
pub mod zookeeper;

use std::sync::Arc;

use weir_core::config::HaSettings;
use weir_core::{Error, Result};

pub use services::{
    BoxFuture, Entries, HaServices, Leader, LeaderInfo, Leadership, RETRIEVAL_INTERVAL, WATCH_BOUND, follow_leader,
};

/// Connects to the service the settings name; `None` when high availability is off.
pub async fn connect(settings: &HaSettings) -> Result<Option<Arc<dyn HaServices>>> {
    settings.check()?;
    match settings.kind.as_str() {
        "none" => Ok(None),
        "etcd" => Ok(Some(Arc::new(etcd::Etcd::connect(settings).await?))),
        "zookeeper" => Ok(Some(Arc::new(zookeeper::ZooKeeper::connect(settings).await?))),
        other => Err(Error::Config(format!("high-availability.type: unknown service '{other}'"))),
    }
}
