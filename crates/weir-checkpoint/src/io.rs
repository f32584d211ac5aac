//! Where the coordinator's storage work is carried out: [`Coordinating`] drives a [`Coordinator`]
//! (the pure core) together with the checkpoint storage, on the thread that drives it, feeding
//! each outcome back until only commands for the job's tasks are left. Also what reads, copies
//! and deletes whole snapshots: the latest intact checkpoint, savepoint copies, `dispose`.

use std::collections::VecDeque;
use std::time::Instant;

use tracing::warn;
use weir_core::{JobId, Result};

use super::coordinator::{Command, Completed, Coordinator, Output, StorageWork, Stored, job_dir};
use super::layout::read_completed;
use super::storage::CheckpointStorage;
use super::{CheckpointId, METADATA_FILE, SnapshotKind, SnapshotMetadata, TaskAck, checkpoint_dir_name};

/// A coordinator and the checkpoint storage its work is carried out in.
pub struct Coordinating {
    /// The decisions: when checkpoints start, complete and fail, and the figures REST shows.
    pub core: Coordinator,
    storage: CheckpointStorage,
}

impl Coordinating {
    /// Drives `core` with `storage`.
    pub fn new(core: Coordinator, storage: CheckpointStorage) -> Self {
        Coordinating { core, storage }
    }

    /// The storage.
    pub fn storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// Carries out `outputs` (and what their outcomes lead to); the commands for the tasks, in order.
    fn drive(&mut self, outputs: Vec<Output>) -> Vec<Command> {
        let mut queue: VecDeque<Output> = outputs.into();
        let mut commands = Vec::new();
        while let Some(output) = queue.pop_front() {
            match output {
                Output::Tasks(command) => commands.push(command),
                Output::Storage(work) => {
                    if let Some(outcome) = carry_out(&self.storage, self.core.job_id(), work) {
                        // What an outcome leads to comes before what was queued after the work.
                        for next in self.core.stored(outcome).into_iter().rev() {
                            queue.push_front(next);
                        }
                    }
                }
            }
        }
        commands
    }

    /// What is due now ([`Coordinator::poll`]), carried out.
    pub fn poll(&mut self, now: Instant, now_ms: i64) -> Vec<Command> {
        let outputs = self.core.poll(now, now_ms);
        self.drive(outputs)
    }

    /// A task's acknowledgement ([`Coordinator::ack`]), carried out.
    pub fn ack(&mut self, ack: TaskAck, now_ms: i64) -> Vec<Command> {
        let outputs = self.core.ack(ack, now_ms);
        self.drive(outputs)
    }

    /// A task declined checkpoint `id` ([`Coordinator::decline`]), carried out.
    pub fn decline(&mut self, id: CheckpointId, reason: String) {
        let outputs = self.core.decline(id, reason);
        self.drive(outputs);
    }

    /// The run ended ([`Coordinator::abort`]), carried out.
    pub fn abort(&mut self, reason: &str) {
        let outputs = self.core.abort(reason);
        self.drive(outputs);
    }

    /// Checkpoint `id` is recorded ([`Coordinator::confirm`]), carried out.
    pub fn confirm(&mut self, id: CheckpointId) {
        let outputs = self.core.confirm(id);
        self.drive(outputs);
    }

    /// The latest retained checkpoint that is intact in storage (its metadata reads and every file
    /// is there at its size); damaged ones are dropped with a warning, so that a recovery falls back
    /// to the one before.
    pub fn latest_intact(&mut self) -> Option<&Completed> {
        while let Some(c) = self.core.latest() {
            match read_completed(&self.storage, &c.dir) {
                Ok(_) => break,
                Err(e) => {
                    warn!(job_id = %self.core.job_id(), checkpoint = c.id, error = %e, "a retained checkpoint is damaged; using the one before");
                    self.core.drop_latest();
                }
            }
        }
        self.core.latest()
    }
}

/// Does `work` in `storage`; the outcome to feed back, for work that has one.
pub fn carry_out(storage: &CheckpointStorage, job_id: JobId, work: StorageWork) -> Option<Stored> {
    match work {
        StorageWork::WriteMetadata { id, dir, metadata } => {
            let result = metadata.encode().and_then(|bytes| storage.put(&format!("{dir}/{METADATA_FILE}"), bytes));
            Some(Stored::Metadata { id, result })
        }
        StorageWork::CopySavepoint { id, dir, metadata, target } => {
            let result = copy_snapshot(storage, &dir, &metadata, &target).map(|()| target);
            Some(Stored::Savepoint { id, result })
        }
        StorageWork::Delete(paths) => {
            for path in paths {
                if let Err(e) = storage.delete(&path) {
                    warn!(job_id = %job_id, error = %e, file = %path, "cannot remove a file of an old checkpoint");
                }
            }
            None
        }
        StorageWork::RemoveDir(dir) => {
            if let Err(e) = storage.remove_dir(&dir) {
                warn!(job_id = %job_id, dir = %dir, error = %e, "cannot remove a failed checkpoint's files");
            }
            None
        }
    }
}

/// The latest completed checkpoint of `job_id` in `storage` whose metadata reads and whose files are
/// all there at their recorded sizes; damaged ones are skipped with a warning (the one before is
/// used), so that a crash while a checkpoint was written never stops a recovery.
pub fn latest_completed(storage: &CheckpointStorage, job_id: JobId) -> Result<Option<Completed>> {
    let mut ids: Vec<CheckpointId> = storage
        .list(&job_dir(job_id))?
        .iter()
        .filter_map(|n| n.strip_prefix("chk-").and_then(|n| n.parse().ok()))
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    for id in ids {
        let dir = format!("{}/{}", job_dir(job_id), checkpoint_dir_name(id));
        match read_completed(storage, &dir) {
            Ok(metadata) => return Ok(Some(Completed { id, dir, metadata })),
            Err(e) => warn!(job_id = %job_id, checkpoint = id, error = %e, "skipping a checkpoint that cannot be used"),
        }
    }
    Ok(None)
}

/// Copies the snapshot in `dir` of `from` to the savepoint location `target` (a directory or URL of
/// its own): its files, and its metadata marked as a savepoint.
pub fn copy_snapshot(from: &CheckpointStorage, dir: &str, metadata: &SnapshotMetadata, target: &str) -> Result<()> {
    let to = CheckpointStorage::open(target)?;
    for f in &metadata.files {
        let copy = super::layout::locate("", SnapshotKind::Savepoint, f);
        to.put(&copy, from.get(&super::layout::locate(dir, metadata.kind, f))?)?;
    }
    let mut saved = metadata.clone();
    saved.kind = SnapshotKind::Savepoint;
    to.put(METADATA_FILE, saved.encode()?)
}

/// Deletes the savepoint (or retained checkpoint) at `path`: every file its metadata lists, then the
/// metadata. A path that holds no snapshot is an error that says so, and nothing is deleted.
pub fn dispose(path: &str) -> Result<()> {
    let at = super::layout::restore_from(path);
    let storage = CheckpointStorage::open(&at.location)?;
    let metadata = read_completed(&storage, &at.dir)?;
    // A savepoint holds copies of everything it needs; a retained checkpoint's files of earlier
    // checkpoints are theirs, and stay.
    for f in metadata.files.iter().filter(|f| f.is_own() || metadata.kind == SnapshotKind::Savepoint) {
        storage.delete(&super::layout::locate(&at.dir, metadata.kind, f))?;
    }
    storage.delete(&super::layout::join(&at.dir, METADATA_FILE))?;
    // A local directory left empty goes too (an object store has no directories).
    if storage.is_local() {
        let local = path.strip_prefix("file://").unwrap_or(path);
        let mut linked: Vec<_> = metadata.files.iter().filter_map(|f| f.checkpoint).collect();
        linked.dedup();
        for m in linked {
            let _ = std::fs::remove_dir(std::path::Path::new(local).join(checkpoint_dir_name(m)));
        }
        let _ = std::fs::remove_dir(local);
    }
    Ok(())
}
