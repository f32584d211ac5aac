//! weir-jobmanager: the JobManager process.
//!
//! - the **resource manager** ([`state`]) knows every TaskManager and its slots, and places each
//!   job on a TaskManager with as many free slots as the job's highest parallelism (slot sharing);
//!   a job that cannot get slots waits, and fails after `slot.request.timeout`;
//! - the **RPC endpoint** ([`rpc`]) accepts TaskManagers (protocol version checked in a handshake),
//!   deploys and cancels jobs on them, tracks their heartbeats, and fails the jobs of a TaskManager
//!   whose connection drops or whose heartbeats stop;
//! - the **REST endpoint** ([`rest`]) serves Flink's REST v1 paths and JSON field names, with each
//!   task's state ([`tasks`]) as its TaskManager reported it.

pub mod blob;
pub mod checkpoint_loop;
pub mod checkpoints;
pub mod ha;
pub mod jobmaster;
pub mod leader;
pub mod lifecycle;
pub mod rest;
pub mod results;
pub mod rpc;
pub mod schedule;
pub mod state;
pub mod supervise;
pub mod tasks;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;
use weir_core::config::ClusterConfig;
use weir_core::{Error, Result};

pub use state::{Cluster, Options};

/// A running JobManager.
pub struct JobManager {
    /// Where the REST endpoint listens.
    pub rest_address: SocketAddr,
    /// Where TaskManagers connect.
    pub rpc_address: SocketAddr,
    cluster: Arc<Cluster>,
}

impl JobManager {
    /// Binds both endpoints and starts serving; returns once both listen.
    pub async fn start(config: ClusterConfig, options: Options) -> Result<JobManager> {
        if options.per_job && config.ha.enabled() {
            return Err(Error::Config(
                "high-availability.type applies to session clusters: a per-job cluster lives and dies with its one \
                 job's client; submit to an HA session cluster (run -t remote) instead"
                    .into(),
            ));
        }
        let rpc_at = format!("{}:{}", config.rpc_address, config.rpc_port);
        let rpc = TcpListener::bind(&rpc_at).await.map_err(|e| Error::Network {
            context: "cannot listen for TaskManagers on (jobmanager.rpc.address/port; is the port in use?)".into(),
            peer: rpc_at.clone(),
            source: e,
        })?;
        let rest_at = format!("{}:{}", config.rest_bind_address, config.rest_port);
        let rest = TcpListener::bind(&rest_at).await.map_err(|e| Error::Network {
            context: "cannot listen for REST requests on (rest.bind-address/rest.port; is the port in use?)".into(),
            peer: rest_at.clone(),
            source: e,
        })?;
        let rpc_address = rpc.local_addr().map_err(|e| Error::Network {
            context: "no address for".into(),
            peer: rpc_at,
            source: e,
        })?;
        let rest_address = rest.local_addr().map_err(|e| Error::Network {
            context: "no address for".into(),
            peer: rest_at,
            source: e,
        })?;
        // The JobManager's own executable is in its blob store from the start, so a cluster started
        // from one program runs that program's jobs without an upload.
        let own = tokio::task::spawn_blocking(|| -> Result<_> {
            let exe =
                std::env::current_exe().map_err(|e| Error::internal(format!("cannot locate this executable: {e}")))?;
            Ok((weir_core::ArtifactDigest::current()?, exe))
        })
        .await
        .map_err(|e| Error::internal(format!("cannot hash this executable: {e}")))??;
        let blobs = blob::BlobStore::open(&config, Some(own))?;
        // TaskManagers the provider starts reach this JobManager where it listens (any address: here).
        let reachable = if rpc_address.ip().is_unspecified() {
            format!("127.0.0.1:{}", rpc_address.port())
        } else {
            rpc_address.to_string()
        };
        let ha = match weir_ha::connect(&config.ha).await? {
            Some(services) => {
                let rest_host = if config.rest_address.is_empty() { "127.0.0.1" } else { &config.rest_address };
                let me = weir_ha::LeaderInfo {
                    id: format!(
                        "jobmanager-{}-{}",
                        std::process::id(),
                        &uuid::Uuid::new_v4().simple().to_string()[..8]
                    ),
                    rpc: reachable.clone(),
                    rest: format!("{rest_host}:{}", rest_address.port()),
                };
                info!(service = %services.describe(), cluster = %config.ha.cluster_id, id = %me.id, "high availability on");
                Some(Arc::new(ha::Ha::new(services, &config.ha, me)?))
            }
            None => None,
        };
        let leading = ha.is_some();
        let cluster = Arc::new(Cluster::new(config, blobs, options, reachable, ha));
        if leading {
            tokio::spawn(leader::lead(cluster.clone()));
        }
        tokio::spawn(rpc::serve(rpc, cluster.clone()));
        tokio::spawn(supervise::supervise(cluster.clone()));
        if let Some(outputs) = cluster.take_checkpoint_outputs() {
            tokio::spawn(checkpoint_loop::coordinate(cluster.clone(), outputs));
        }
        let app = rest::router(cluster.clone());
        let shutdown = cluster.clone();
        tokio::spawn(async move {
            let _ =
                axum::serve(rest, app).with_graceful_shutdown(async move { shutdown.shutdown_requested().await }).await;
        });
        info!(%rest_address, %rpc_address, "JobManager started");
        Ok(JobManager { rest_address, rpc_address, cluster })
    }

    /// The cluster state.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Waits until the cluster is asked to shut down (`DELETE /cluster`).
    pub async fn wait_for_shutdown(&self) {
        self.cluster.shutdown_requested().await
    }
}
