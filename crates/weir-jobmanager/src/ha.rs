//! The JobManager with high availability: it campaigns for leadership through the coordination
//! service; while it stands by, TaskManagers are refused and REST requests sent on to the leader;
//! once elected, it recovers every job of the job graph store from its latest completed
//! checkpoint; when its leadership is lost it suspends its jobs (they stay in the store for the
//! next leader) and campaigns again.
//!
//! Writes to the stores are fenced by the leader's epoch, so a deposed leader's writes are refused.
//! Checkpoint ids are reserved in blocks through the store's counter, so that two leaders never
//! write the same checkpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use weir_core::config::JobConfig;
use weir_core::result::JobResult;
use weir_core::{Error, JobGraph, JobId, JobStatus, Result};
use weir_ha::stores::Stores;
use weir_ha::{HaServices, Leader, LeaderInfo};

use crate::state::now_ms;

/// Checkpoint ids reserved at a time.
pub const ID_BLOCK: u64 = 1000;

/// What the leader records in the stores, in the order it happens.
#[derive(Debug)]
pub enum Event {
    /// A job reached a terminal status.
    Ended {
        /// The job.
        job: JobId,
        /// FINISHED, FAILED or CANCELED.
        status: JobStatus,
        /// Why it failed.
        error: Option<String>,
        /// What a finished job handed back.
        result: Option<Box<JobResult>>,
    },
    /// A checkpoint completed.
    Checkpoint {
        /// The job.
        job: JobId,
        /// The run that took it.
        attempt: u32,
        /// Its id.
        id: u64,
        /// Where it is (a path or URL of its directory).
        location: String,
        /// How many to keep pointers to.
        retain: usize,
        /// The next id, and the ids left in the reserved block.
        ids: (u64, Option<u64>),
    },
}

/// A job as the job graph store keeps it.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredJob {
    pub(crate) format: u32,
    pub(crate) graph: JobGraph,
    pub(crate) config: JobConfig,
    pub(crate) submitted_ms: i64,
    /// Submitted through REST: recovered under the same checks (its cached files only from
    /// `weir.cached-files.allowed-dirs`).
    #[serde(default)]
    pub(crate) through_rest: bool,
}

/// A job's outcome as the job result store keeps it.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct StoredResult {
    /// FINISHED, FAILED or CANCELED.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// When it ended (ms since the epoch).
    pub end_time: i64,
    /// Where a finished job's values are kept in the storage directory (what `wait` hands back to
    /// an application's `main` when it runs again under a new leader).
    #[serde(default)]
    pub values: Option<String>,
}

pub(crate) const STORED_JOB_FORMAT: u32 = 1;

/// A JobManager's part in high availability.
pub struct Ha {
    /// The stores, on the coordination service.
    pub stores: Stores,
    /// What this JobManager publishes when it leads.
    pub me: LeaderInfo,
    /// Its leadership, while it leads (or until the loss is handled).
    pub(crate) held: std::sync::Mutex<Option<weir_ha::Leadership>>,
    /// When it last became leader, and when it last stopped leading (ms since the epoch, 0: never).
    pub(crate) elected_ms: AtomicI64,
    pub(crate) stopped_ms: AtomicI64,
    /// The leader, as last retrieved.
    pub(crate) leader: watch::Receiver<Option<Leader>>,
    pub(crate) events: mpsc::UnboundedSender<Event>,
    pub(crate) events_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
    /// Artifacts known to be in the storage directory, so that each is looked for there once.
    pub(crate) kept_blobs: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// The epoch whose jobs are recovered, while it leads (0: none).
    pub(crate) recovered: watch::Sender<u64>,
}

impl Ha {
    /// High availability on `services` for a JobManager that publishes `me`.
    pub fn new(services: Arc<dyn HaServices>, settings: &weir_core::config::HaSettings, me: LeaderInfo) -> Result<Ha> {
        let stores = Stores::open(services.clone(), settings)?;
        let (events, rx) = mpsc::unbounded_channel();
        Ok(Ha {
            stores,
            me,
            held: std::sync::Mutex::new(None),
            elected_ms: AtomicI64::new(0),
            stopped_ms: AtomicI64::new(0),
            leader: weir_ha::follow_leader(services),
            events,
            events_rx: std::sync::Mutex::new(Some(rx)),
            kept_blobs: Default::default(),
            recovered: watch::Sender::new(0),
        })
    }

    /// The epoch while this JobManager leads and has recovered the jobs of the store: the jobs it
    /// does not run then have ended (or were never submitted).
    pub fn ready(&self) -> Option<u64> {
        let recovered = *self.recovered.borrow();
        self.leading().filter(|e| *e == recovered)
    }

    /// Waits until this JobManager leads with its jobs recovered; the epoch.
    pub async fn until_ready(&self) -> u64 {
        let mut rx = self.recovered.subscribe();
        loop {
            if let Some(epoch) = self.ready() {
                return epoch;
            }
            // Leadership can also go without a change here: look again now and then.
            let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
        }
    }

    /// How job (or application) `id` ended, as the job result store records it, with what a
    /// finished job handed back; `None` while it has not ended.
    pub async fn ended(&self, id: JobId) -> Result<Option<(StoredResult, Option<JobResult>)>> {
        let Some(bytes) = self.stores.result(&id.to_string()).await? else { return Ok(None) };
        let stored: StoredResult = serde_json::from_slice(&bytes)
            .map_err(|e| Error::internal(format!("the job result store holds an unreadable result for {id}: {e}")))?;
        let values = match &stored.values {
            Some(name) => {
                let bytes = self.stores.result_data(name).await?;
                Some(
                    serde_json::from_slice(&bytes)
                        .map_err(|e| Error::internal(format!("the stored values of job {id} cannot be read: {e}")))?,
                )
            }
            None => None,
        };
        Ok(Some((stored, values)))
    }

    /// Records that application `id` ended, under `epoch` (fenced: a deposed leader cannot).
    pub async fn record_application_end(
        &self,
        epoch: u64,
        id: JobId,
        status: &str,
        error: Option<String>,
    ) -> Result<()> {
        let result = StoredResult { status: status.to_string(), error, end_time: now_ms(), values: None };
        let bytes = serde_json::to_vec(&result).map_err(|e| Error::internal(format!("cannot encode a result: {e}")))?;
        self.stores.put_result(epoch, &id.to_string(), bytes).await
    }

    /// The epoch while this JobManager leads.
    pub fn leading(&self) -> Option<u64> {
        // A lost leadership stops counting at once, before the loss is handled.
        self.held.lock().unwrap_or_else(|p| p.into_inner()).as_ref().filter(|l| !l.is_lost()).map(|l| l.epoch)
    }

    /// The leader, as last retrieved (another JobManager while this one stands by).
    pub fn leader(&self) -> Option<Leader> {
        self.leader.borrow().clone()
    }

    /// This JobManager's part, as `GET /weir/ha` shows it (on a standby too).
    pub fn status(&self) -> serde_json::Value {
        let leader =
            self.leader().map(|l| serde_json::json!({ "id": l.info.id, "rest": l.info.rest, "epoch": l.epoch }));
        serde_json::json!({
            "id": self.me.id,
            "service": self.stores.services().describe(),
            "leading": self.leading().is_some(),
            "epoch": self.leading().unwrap_or(0),
            "elected-ms": self.elected_ms.load(Ordering::SeqCst),
            "stopped-ms": self.stopped_ms.load(Ordering::SeqCst),
            "leader": leader,
        })
    }

    /// Records an event in the stores (in order, by the leader's recorder task).
    pub fn record(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Why a standby cannot do what was asked, naming the leader.
    pub fn not_leading(&self) -> Error {
        match self.leader() {
            Some(l) if l.info.id != self.me.id => Error::NotLeader(format!(
                "this JobManager ({}) stands by; the leader's REST endpoint is {} (epoch {})",
                self.me.id, l.info.rest, l.epoch
            )),
            _ => Error::NotLeader(format!(
                "this JobManager ({}) stands by and no leader is elected yet; try again shortly",
                self.me.id
            )),
        }
    }
}
