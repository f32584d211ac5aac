//! The JobManager as its parts and clients see it ([`Cluster`]): its settings and stores, the
//! inboxes of its loops (the Dispatcher, the ResourceManager, a JobMaster per job) and what they
//! published last. What the loops do is in their own modules; a few of [`Cluster`]'s methods are
//! there too (`Cluster::submit` in `dispatcher.rs`, `Cluster::checkpoint_recorded` in
//! `jobmaster.rs`, the HA ones in `leader.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Notify, mpsc, watch};
use weir_core::config::{ClusterConfig, JobConfig, RestartStrategy};
use weir_core::{Error, JobId, Result};

use crate::events::{DispatcherEvent, JobEvent, JobMasterHandle, ResourceEvent};
use crate::state::{JobView, Options, TaskManager, now_ms};

/// The JobManager as its parts and clients see it: settings, stores, and the inboxes and
/// published views of its loops (the Dispatcher, the ResourceManager, a JobMaster per job).
pub struct Cluster {
    /// Settings.
    pub config: ClusterConfig,
    /// What happens when a job fails.
    pub restart: RestartStrategy,
    shutdown: Notify,
    shutting_down: std::sync::atomic::AtomicBool,
    /// Start time (ms).
    pub started_ms: i64,
    pub(crate) started: Instant,
    /// Artifacts by digest.
    pub blobs: crate::blob::BlobStore,
    /// Who starts TaskManagers when jobs need slots (none: standalone).
    pub provider: Option<Arc<dyn weir_deploy::ResourceProvider>>,
    /// Where TaskManagers reach this JobManager (`host:port`), for the ones the provider starts.
    pub rpc_address: String,
    /// A per-job cluster: one job, then it shuts down.
    pub per_job: bool,
    /// The job keys of the JobManager's configuration: every job's defaults.
    pub job_defaults: JobConfig,
    /// Where application outcomes are kept (`job-result-store.storage-path`).
    pub results: crate::results::JobResultStore,
    /// High availability (`high-availability.type`), if on.
    pub ha: Option<Arc<crate::ha::Ha>>,
    /// How TaskManagers' connections are secured (TLS, the cluster secret).
    pub security: Arc<weir_security::Internal>,
    /// The JobManager's own metric group (`jobmanager`), once registered.
    pub metrics: std::sync::OnceLock<weir_metrics::MetricGroup>,
    /// The Dispatcher's inbox.
    pub(crate) dispatcher: mpsc::UnboundedSender<DispatcherEvent>,
    /// The ResourceManager's inbox.
    pub(crate) resources: mpsc::UnboundedSender<ResourceEvent>,
    /// The jobs, as the Dispatcher last published them.
    jobs: watch::Receiver<Arc<BTreeMap<JobId, JobMasterHandle>>>,
    /// The TaskManagers, as the ResourceManager last published them.
    taskmanagers: watch::Receiver<Arc<BTreeMap<String, TaskManager>>>,
    /// REST requests waiting for a TaskManager to describe its process, by request number.
    descriptions: std::sync::Mutex<Descriptions>,
}

/// The answer a TaskManager gives about its process.
pub(crate) type Description = std::result::Result<weir_core::process::Reply, String>;

/// Requests to TaskManagers for descriptions of their processes, waiting for the answers.
#[derive(Default)]
pub(crate) struct Descriptions {
    next: u64,
    waiting: std::collections::HashMap<u64, tokio::sync::oneshot::Sender<Description>>,
}

/// The receiving ends of the loops' inboxes and the sending ends of their views, until
/// [`crate::JobManager::start`] hands them to the loops.
pub(crate) struct Loops {
    pub(crate) dispatcher: mpsc::UnboundedReceiver<DispatcherEvent>,
    pub(crate) jobs: watch::Sender<Arc<BTreeMap<JobId, JobMasterHandle>>>,
    pub(crate) resources: mpsc::UnboundedReceiver<ResourceEvent>,
    pub(crate) taskmanagers: watch::Sender<Arc<BTreeMap<String, TaskManager>>>,
}

impl Cluster {
    /// The cluster, and the loops' ends that [`crate::JobManager::start`] runs them with.
    pub(crate) fn new(
        config: ClusterConfig,
        blobs: crate::blob::BlobStore,
        options: Options,
        rpc_address: String,
        ha: Option<Arc<crate::ha::Ha>>,
    ) -> (Self, Loops) {
        let (dispatcher, dispatcher_rx) = mpsc::unbounded_channel();
        let (resources, resources_rx) = mpsc::unbounded_channel();
        let (jobs_tx, jobs) = watch::channel(Arc::new(BTreeMap::new()));
        let (tms_tx, taskmanagers) = watch::channel(Arc::new(BTreeMap::new()));
        let cluster = Cluster {
            ha,
            results: crate::results::JobResultStore::new(config.job_result_path()),
            restart: config.restart_strategy(),
            config,
            shutdown: Notify::new(),
            shutting_down: Default::default(),
            started_ms: now_ms(),
            started: Instant::now(),
            blobs,
            provider: options.provider,
            security: options.security.unwrap_or_else(weir_security::Internal::open),
            rpc_address,
            metrics: std::sync::OnceLock::new(),
            per_job: options.per_job,
            job_defaults: options.job_defaults,
            dispatcher,
            resources,
            jobs,
            taskmanagers,
            descriptions: Default::default(),
        };
        let loops = Loops { dispatcher: dispatcher_rx, jobs: jobs_tx, resources: resources_rx, taskmanagers: tms_tx };
        (cluster, loops)
    }

    /// A number for a request to a TaskManager about its process, and where its answer arrives.
    pub(crate) fn expect_description(&self) -> (u64, tokio::sync::oneshot::Receiver<Description>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut d = self.descriptions.lock().unwrap_or_else(|p| p.into_inner());
        d.next += 1;
        let n = d.next;
        d.waiting.insert(n, tx);
        (n, rx)
    }

    /// Gives up waiting for answer `n`.
    pub(crate) fn forget_description(&self, n: u64) {
        self.descriptions.lock().unwrap_or_else(|p| p.into_inner()).waiting.remove(&n);
    }

    /// A TaskManager's answer `n` arrived.
    pub(crate) fn described(&self, n: u64, reply: Description) {
        let waiting = self.descriptions.lock().unwrap_or_else(|p| p.into_inner()).waiting.remove(&n);
        if let Some(tx) = waiting {
            let _ = tx.send(reply);
        }
    }

    /// Every job, as its JobMaster last published it, in id order.
    pub fn jobs(&self) -> Vec<Arc<JobView>> {
        let handles = self.jobs.borrow().clone();
        handles.values().map(|h| h.view()).collect()
    }

    /// Job `id`, as its JobMaster last published it.
    pub fn job(&self, id: JobId) -> Option<Arc<JobView>> {
        self.jobs.borrow().get(&id).map(|h| h.view())
    }

    /// Sends `event` to job `id`'s JobMaster; `false` for a job this cluster does not know.
    pub(crate) fn to_job(&self, id: JobId, event: JobEvent) -> bool {
        let tx = self.jobs.borrow().get(&id).map(|h| h.tx.clone());
        tx.is_some_and(|tx| tx.send(event).is_ok())
    }

    /// Every registered TaskManager, as the ResourceManager last published them.
    pub fn taskmanagers(&self) -> Arc<BTreeMap<String, TaskManager>> {
        self.taskmanagers.borrow().clone()
    }

    /// Asks every part to stop (REST `DELETE /cluster`).
    pub fn request_shutdown(&self) {
        self.shutting_down.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.resources.send(ResourceEvent::Shutdown);
        self.shutdown.notify_waiters();
    }

    /// Resolves once shutdown was requested.
    pub async fn shutdown_requested(&self) {
        loop {
            let notified = self.shutdown.notified();
            if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// Whether shutdown was requested.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Cancels a job: waiting jobs at once, running ones through their TaskManagers.
    pub fn cancel(&self, id: JobId) -> Result<()> {
        if self.to_job(id, JobEvent::Cancel) {
            Ok(())
        } else {
            Err(Error::Config(format!("job {id} is not known to this cluster; see `weir list`")))
        }
    }

    /// A client fetched the result of a job: once it is terminal, a per-job cluster may go.
    pub fn result_served(&self, id: JobId) {
        self.to_job(id, JobEvent::ResultServed);
    }
}

/// What the loops' unit tests share: a cluster whose loops are not running, so a test drives one
/// loop's handlers itself and reads what it sent the others.
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;
    use weir_core::protocol::ToTaskManager;

    /// A cluster with `config`, its blob store in `dir`; the loops' ends are returned unstarted.
    pub(crate) fn cluster(mut config: ClusterConfig, dir: &std::path::Path) -> (Arc<Cluster>, Loops) {
        config.blob_dir = Some(dir.display().to_string());
        let blobs = crate::blob::BlobStore::open(&config, None).expect("a blob store in a fresh directory");
        let (cluster, loops) = Cluster::new(config, blobs, Options::default(), "127.0.0.1:1".into(), None);
        (Arc::new(cluster), loops)
    }

    /// A TaskManager record with `slots`, and the receiving end of its connection.
    pub(crate) fn taskmanager(id: &str, slots: u32) -> (TaskManager, mpsc::UnboundedReceiver<ToTaskManager>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let tm = TaskManager::new(id.into(), ("localhost".into(), 1), slots, tx, 1, format!("{id}:1"));
        (tm, rx)
    }
}
