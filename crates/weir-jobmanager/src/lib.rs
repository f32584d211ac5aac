//! weir-jobmanager: the JobManager process, as Flink's: loops that each own their state and are
//! fed by one event enum, with no lock shared between them.
//!
//! - the **Dispatcher** ([`dispatcher`]) owns the set of jobs: it starts a JobMaster for each
//!   submission, suspends them all when the leadership is lost, and ends a per-job cluster;
//! - the **ResourceManager** ([`resources`]) owns the TaskManagers and their slots: it registers
//!   them, tracks their heartbeats, answers the JobMasters' slot requests (slot sharing: a job
//!   needs as many slots as its highest parallelism), and starts and stops TaskManagers through
//!   a resource provider;
//! - a **JobMaster** per job ([`jobmaster`]) owns the job: it deploys its runs, follows its parts'
//!   reports, restarts it by its restart strategy, and drives its checkpointing (a thread per job,
//!   [`checkpoints`], since that writes to storage);
//! - the **RPC endpoint** ([`rpc`]) accepts TaskManagers (protocol version checked in a handshake)
//!   and routes what they report to the ResourceManager and the JobMasters;
//! - the **REST endpoint** ([`rest`]) serves Flink's REST v1 paths and JSON field names from what
//!   the loops published, with each task's state ([`tasks`]) as its TaskManager reported it;
//! - with high availability, the **leader** ([`leader`]) campaigns, recovers jobs and records
//!   their ends and checkpoints in the coordination service.

pub mod blob;
pub mod checkpoints;
pub mod cluster;
pub mod dispatcher;
pub mod events;
pub mod ha;
pub mod jobmaster;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod resources;
pub mod rest;
pub mod results;
pub mod rpc;
pub mod state;
pub mod tasks;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;
use weir_core::config::ClusterConfig;
use weir_core::{Error, Result};

pub use cluster::Cluster;
pub use state::{JobView, Options};

/// A running JobManager.
pub struct JobManager {
    /// Where the REST endpoint listens.
    pub rest_address: SocketAddr,
    /// Where TaskManagers connect.
    pub rpc_address: SocketAddr,
    cluster: Arc<Cluster>,
    /// Its metrics' registration and reporters: they stop when the JobManager is dropped.
    _metrics: metrics::JobManagerMetrics,
}

impl JobManager {
    /// Binds both endpoints and starts serving; returns once both listen.
    pub async fn start(config: ClusterConfig, mut options: Options) -> Result<JobManager> {
        if options.per_job && config.ha.enabled() {
            return Err(Error::Config(
                "high-availability.type applies to session clusters: a per-job cluster lives and dies with its one \
                 job's client; submit to an HA session cluster (run -t remote) instead"
                    .into(),
            ));
        }
        let security = match options.security.take() {
            Some(s) => s,
            None => weir_security::Internal::from_config(&config)?,
        };
        security.warn_if_open("jobmanager");
        options.security = Some(security);
        let rest_tls = weir_security::rest::server_config(&config)?;
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
        let (cluster, loops) = Cluster::new(config, blobs, options, reachable, ha);
        let cluster = Arc::new(cluster);
        let metrics = metrics::JobManagerMetrics::start(&cluster)?;
        let _ = cluster.metrics.set(metrics.group.clone());
        tokio::spawn(dispatcher::run(cluster.clone(), loops.dispatcher, loops.jobs));
        tokio::spawn(resources::run(cluster.clone(), loops.resources, loops.taskmanagers));
        if leading {
            tokio::spawn(leader::lead(cluster.clone()));
        }
        tokio::spawn(rpc::serve(rpc, cluster.clone()));
        let app = rest::router(cluster.clone());
        let shutdown = cluster.clone();
        match rest_tls {
            None => {
                tokio::spawn(async move {
                    let stop = async move { shutdown.shutdown_requested().await };
                    let _ = axum::serve(rest, app).with_graceful_shutdown(stop).await;
                });
            }
            Some(tls) => {
                let listener = rest::tls::TlsListener::new(rest, tls);
                tokio::spawn(async move {
                    let stop = async move { shutdown.shutdown_requested().await };
                    let _ = axum::serve(listener, app).with_graceful_shutdown(stop).await;
                });
            }
        }
        info!(%rest_address, %rpc_address, "JobManager started");
        Ok(JobManager { rest_address, rpc_address, cluster, _metrics: metrics })
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
