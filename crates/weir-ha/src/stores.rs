//! What a new leader recovers from, on any [`HaServices`]: pointers in the coordination service,
//! bulky data in `high-availability.storageDir/{cluster-id}/`.
//!
//! | store | in the service | in the storage directory |
//! |---|---|---|
//! | job graphs | `jobgraphs/{job}`: the file's name | `jobgraphs/{job}-{unique}`: the submitted job |
//! | checkpoint ids | `checkpoints/{job}/counter`: the next id | |
//! | completed checkpoints | `checkpoints/{job}/completed/{id:020}`: the location | (the checkpoint's own storage) |
//! | job results | `results/{job}`: the outcome | `results/{job}`: a finished job's values |
//! | artifacts | | `blobs/{digest}` |
//!
//! Every write is fenced by the writer's epoch. A job graph is written to storage before its
//! pointer, and the pointer removed before the file, so a pointer never names a missing file; a
//! file without a pointer (a leader that died between the two) is swept by the next leader.

use std::sync::Arc;

use weir_core::config::HaSettings;
use weir_core::{Error, Result};
use weir_storage::CheckpointStorage;

use crate::HaServices;

/// The stores of one cluster.
#[derive(Clone)]
pub struct Stores {
    ha: Arc<dyn HaServices>,
    storage: Arc<CheckpointStorage>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stores({}, {})", self.ha.describe(), self.storage.location())
    }
}

/// Runs a blocking storage call off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::internal(format!("HA storage task failed: {e}")))?
}

impl Stores {
    /// The stores of the cluster the settings name, on `ha`.
    pub fn open(ha: Arc<dyn HaServices>, settings: &HaSettings) -> Result<Stores> {
        let dir = settings.storage_dir.as_deref().ok_or_else(|| {
            Error::Config("high availability needs high-availability.storageDir (a directory or s3://...)".into())
        })?;
        let location = format!("{}/{}", dir.trim_end_matches('/'), settings.cluster_id);
        let storage = CheckpointStorage::open(&location).map_err(|e| match e {
            Error::Io { path, source, .. } => {
                Error::io("cannot create the HA storage directory (high-availability.storageDir)", path, source)
            }
            other => other,
        })?;
        Ok(Stores { ha, storage: Arc::new(storage) })
    }

    /// The coordination service.
    pub fn services(&self) -> &Arc<dyn HaServices> {
        &self.ha
    }

    /// Keeps a submitted job (`bytes`: its encoding, the caller's format) under `job`.
    pub async fn put_job(&self, epoch: u64, job: &str, bytes: Vec<u8>) -> Result<()> {
        let name = format!("{job}-{}", uuid::Uuid::new_v4().simple());
        let storage = self.storage.clone();
        let rel = format!("jobgraphs/{name}");
        blocking(move || storage.put(&rel, bytes)).await?;
        let previous = self.ha.get(&format!("jobgraphs/{job}")).await?;
        if let Err(e) = self.ha.put(epoch, &format!("jobgraphs/{job}"), name.clone().into_bytes()).await {
            let (storage, rel) = (self.storage.clone(), format!("jobgraphs/{name}"));
            let _ = blocking(move || storage.delete(&rel)).await;
            return Err(e);
        }
        if let Some(old) = previous.and_then(|p| String::from_utf8(p).ok()) {
            let storage = self.storage.clone();
            let _ = blocking(move || storage.delete(&format!("jobgraphs/{old}"))).await;
        }
        Ok(())
    }

    /// The jobs kept, by id.
    pub async fn jobs(&self) -> Result<Vec<String>> {
        Ok(self.ha.list("jobgraphs").await?.into_iter().map(|(k, _)| k).collect())
    }

    /// A kept job's encoding.
    pub async fn job(&self, job: &str) -> Result<Option<Vec<u8>>> {
        let Some(name) = self.ha.get(&format!("jobgraphs/{job}")).await? else { return Ok(None) };
        let name = String::from_utf8(name)
            .map_err(|_| Error::internal(format!("the job graph pointer of {job} is not a file name")))?;
        let storage = self.storage.clone();
        blocking(move || storage.get(&format!("jobgraphs/{name}"))).await.map(Some)
    }

    /// Forgets a job: its graph, its checkpoint pointers and counter (not its result).
    pub async fn remove_job(&self, epoch: u64, job: &str) -> Result<()> {
        let name = self.ha.get(&format!("jobgraphs/{job}")).await?;
        self.ha.delete(epoch, &format!("jobgraphs/{job}")).await?;
        self.ha.delete(epoch, &format!("checkpoints/{job}")).await?;
        if let Some(name) = name.and_then(|n| String::from_utf8(n).ok()) {
            let storage = self.storage.clone();
            blocking(move || storage.delete(&format!("jobgraphs/{name}"))).await?;
        }
        Ok(())
    }

    /// Removes job graph files no pointer names (a leader died between writing one and its
    /// pointer); returns how many.
    pub async fn sweep(&self) -> Result<usize> {
        let named: std::collections::BTreeSet<String> =
            self.ha.list("jobgraphs").await?.into_iter().filter_map(|(_, v)| String::from_utf8(v).ok()).collect();
        let storage = self.storage.clone();
        blocking(move || {
            let mut removed = 0;
            for file in storage.list("jobgraphs")? {
                if !named.contains(&file) {
                    storage.delete(&format!("jobgraphs/{file}"))?;
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
    }

    /// Reserves `count` checkpoint ids of `job`, from at least `at_least`: none of them was
    /// reserved before, under any leader.
    pub async fn reserve_checkpoint_ids(
        &self,
        epoch: u64,
        job: &str,
        at_least: u64,
        count: u64,
    ) -> Result<std::ops::Range<u64>> {
        let key = format!("checkpoints/{job}/counter");
        let stored = match self.ha.get(&key).await? {
            Some(v) => String::from_utf8_lossy(&v)
                .parse::<u64>()
                .map_err(|_| Error::internal(format!("the checkpoint counter of {job} is not a number")))?,
            None => 1,
        };
        let start = stored.max(at_least);
        let end = start + count.max(1);
        self.ha.put(epoch, &key, end.to_string().into_bytes()).await?;
        Ok(start..end)
    }

    /// Records a completed checkpoint of `job` at `location`, keeping the newest `retain`.
    pub async fn add_checkpoint(&self, epoch: u64, job: &str, id: u64, location: &str, retain: usize) -> Result<()> {
        let dir = format!("checkpoints/{job}/completed");
        self.ha.put(epoch, &format!("{dir}/{id:020}"), location.as_bytes().to_vec()).await?;
        let all = self.ha.list(&dir).await?;
        let excess = all.len().saturating_sub(retain.max(1));
        for (name, _) in all.into_iter().take(excess) {
            self.ha.delete(epoch, &format!("{dir}/{name}")).await?;
        }
        Ok(())
    }

    /// The newest completed checkpoint of `job`: its id and location.
    pub async fn latest_checkpoint(&self, job: &str) -> Result<Option<(u64, String)>> {
        let all = self.ha.list(&format!("checkpoints/{job}/completed")).await?;
        Ok(all
            .into_iter()
            .last()
            .and_then(|(name, location)| Some((name.parse().ok()?, String::from_utf8(location).ok()?))))
    }

    /// Records a job's outcome (`bytes`: the caller's encoding).
    pub async fn put_result(&self, epoch: u64, job: &str, bytes: Vec<u8>) -> Result<()> {
        self.ha.put(epoch, &format!("results/{job}"), bytes).await
    }

    /// A job's recorded outcome.
    pub async fn result(&self, job: &str) -> Result<Option<Vec<u8>>> {
        self.ha.get(&format!("results/{job}")).await
    }

    /// Keeps what a finished job handed back (`bytes`: the caller's encoding), before its outcome
    /// is recorded; returns the name its outcome gives for it.
    pub async fn put_result_data(&self, job: &str, bytes: Vec<u8>) -> Result<String> {
        let (storage, rel) = (self.storage.clone(), format!("results/{job}"));
        blocking(move || storage.put(&rel, bytes)).await?;
        Ok(format!("results/{job}"))
    }

    /// What [`Stores::put_result_data`] kept under `name`.
    pub async fn result_data(&self, name: &str) -> Result<Vec<u8>> {
        let (storage, rel) = (self.storage.clone(), name.to_string());
        blocking(move || storage.get(&rel)).await
    }

    /// Every recorded outcome, by job.
    pub async fn results(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.ha.list("results").await
    }

    /// Keeps the artifact file at `path` under `digest` (once: a kept one is not written again).
    pub async fn put_blob(&self, digest: &str, path: std::path::PathBuf) -> Result<()> {
        let (storage, rel) = (self.storage.clone(), format!("blobs/{digest}"));
        let name = digest.to_string();
        blocking(move || {
            if storage.list("blobs")?.contains(&name) {
                return Ok(());
            }
            let bytes = std::fs::read(&path).map_err(|e| Error::io("cannot read the artifact", &path, e))?;
            storage.put(&rel, bytes)
        })
        .await
    }

    /// A kept artifact's bytes, if kept.
    pub async fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let (storage, name) = (self.storage.clone(), digest.to_string());
        blocking(move || {
            if !storage.list("blobs")?.contains(&name) {
                return Ok(None);
            }
            storage.get(&format!("blobs/{name}")).map(Some)
        })
        .await
    }
}
