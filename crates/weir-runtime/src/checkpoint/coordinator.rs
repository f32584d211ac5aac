//! The checkpoint coordinator of one job: when checkpoints start, which acknowledgements they wait
//! for, completion (metadata written, older checkpoints removed), failures, and the figures REST
//! shows. It is driven by the job's master (the embedded cluster's job master thread, or the
//! JobManager): `poll` at least every few milliseconds, `ack` and `decline` as tasks report.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use weir_core::checkpointing::CheckpointConfig;
use weir_core::{JobId, Result};

use super::layout::read_completed;
use super::storage::CheckpointStorage;
use super::{
    CheckpointId, METADATA_FILE, OperatorMeta, SnapshotKind, SnapshotMetadata, StateFile, TaskAck, checkpoint_dir_name,
};

/// What the coordinator asks of the job's tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Sources: put barrier `id` into your output. `last`: this is the final checkpoint (every
    /// source has ended, or the job stops with a savepoint); end your output once it completes.
    Trigger {
        /// The checkpoint.
        id: CheckpointId,
        /// Whether it is the final one.
        last: bool,
        /// Sources first emit the largest watermark, so that event-time timers and windows fire
        /// (stop with `--drain`).
        drain: bool,
    },
    /// Checkpoint `id` is complete: commit what it covers.
    Complete {
        /// The checkpoint.
        id: CheckpointId,
    },
}

/// The outcome of one checkpoint, for REST and the logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// Its number.
    pub id: CheckpointId,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED`, as Flink names them.
    pub status: String,
    /// Checkpoint or savepoint.
    pub is_savepoint: bool,
    /// When it was triggered (ms since the epoch).
    pub trigger_timestamp: i64,
    /// When the last acknowledgement arrived (ms since the epoch).
    pub latest_ack_timestamp: i64,
    /// Bytes of the whole snapshot (with the earlier files incremental state builds on).
    pub state_size: u64,
    /// Bytes this checkpoint wrote.
    #[serde(default)]
    pub checkpointed_size: u64,
    /// Milliseconds from trigger to completion or failure.
    pub end_to_end_duration: u64,
    /// Acknowledgements received.
    pub num_acknowledged_subtasks: u32,
    /// Acknowledgements expected.
    pub num_subtasks: u32,
    /// Where it is (once complete).
    pub external_path: Option<String>,
    /// Why it failed.
    pub failure_message: Option<String>,
}

/// Counts and history, in the shape of Flink's `/jobs/{id}/checkpoints`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointStats {
    /// Triggered so far.
    pub triggered: u64,
    /// Completed so far.
    pub completed: u64,
    /// Failed so far.
    pub failed: u64,
    /// Restored from, when the job (re)started from a checkpoint: its id and path.
    pub restored: Option<(CheckpointId, String)>,
    /// The latest checkpoints, newest first (at most [`HISTORY`]).
    pub history: VecDeque<CheckpointRecord>,
}

/// How many checkpoints the history keeps.
pub const HISTORY: usize = 20;

struct Pending {
    id: CheckpointId,
    started: Instant,
    timestamp_ms: i64,
    acks: BTreeMap<(u32, u32), StateFile>,
    /// Per task: the earlier checkpoints its file builds on.
    references: BTreeMap<(u32, u32), Vec<CheckpointId>>,
    last: bool,
    savepoint: Option<SavepointRequest>,
}

/// A savepoint asked for: where it goes, and whether the job stops with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavepointRequest {
    /// Its location (a directory or URL of its own).
    pub target: String,
    /// Stop the job with it.
    pub stop: bool,
    /// Drain event time first (with `stop`).
    pub drain: bool,
}

/// A completed checkpoint: its number, directory (relative to the storage root) and metadata.
#[derive(Clone, Debug)]
pub struct Completed {
    /// Its number.
    pub id: CheckpointId,
    /// Its directory.
    pub dir: String,
    /// Its metadata.
    pub metadata: SnapshotMetadata,
}

/// One job's coordinator.
pub struct Coordinator {
    config: CheckpointConfig,
    job_id: JobId,
    job_name: String,
    operators: Vec<OperatorMeta>,
    tasks: u32,
    storage: CheckpointStorage,
    next_id: CheckpointId,
    /// Ids below this may be used (with high availability, ids are reserved in blocks in the
    /// coordination service, so that no two leaders ever use the same one); `None`: any.
    id_limit: Option<CheckpointId>,
    /// Checkpoints beyond `num-retained` are removed only once [`Coordinator::confirm`] says the
    /// newer one is recorded (with high availability: in the coordination service).
    confirm_first: bool,
    pending: Option<Pending>,
    last_end: Option<Instant>,
    last_start: Option<Instant>,
    retained: VecDeque<Completed>,
    /// Files of checkpoints no longer retained that retained ones still build on: (directory, file).
    lingering: Vec<(String, String)>,
    final_wanted: bool,
    final_requested: bool,
    /// The final checkpoint completed: the job's tasks are ending, no checkpoint follows.
    final_done: bool,
    savepoints_wanted: VecDeque<SavepointRequest>,
    savepoints_done: VecDeque<(CheckpointId, Result<String>)>,
    /// Counts and history.
    pub stats: CheckpointStats,
}

/// The directory of a job's checkpoints, relative to the storage root.
pub fn job_dir(job_id: JobId) -> String {
    job_id.to_string()
}

impl Coordinator {
    /// A coordinator for a job of `tasks` tasks, numbering checkpoints after `last_id` (the one it
    /// restored from, or 0).
    pub fn new(
        config: CheckpointConfig,
        job_id: JobId,
        job_name: String,
        operators: Vec<OperatorMeta>,
        tasks: u32,
        storage: CheckpointStorage,
        last_id: CheckpointId,
    ) -> Self {
        Coordinator {
            config,
            job_id,
            job_name,
            operators,
            tasks,
            storage,
            next_id: last_id + 1,
            id_limit: None,
            confirm_first: false,
            pending: None,
            last_end: None,
            // The first checkpoint comes one interval after the start, as in Flink.
            last_start: Some(Instant::now()),
            retained: VecDeque::new(),
            lingering: Vec::new(),
            final_wanted: false,
            final_requested: false,
            final_done: false,
            savepoints_wanted: VecDeque::new(),
            savepoints_done: VecDeque::new(),
            stats: CheckpointStats::default(),
        }
    }

    /// Keeps `c` (the checkpoint a run restored from) among the retained ones.
    pub fn adopt(&mut self, c: Completed) {
        self.next_id = self.next_id.max(c.id + 1);
        self.retained.push_back(c);
    }

    /// Allows the ids `ids` (reserved for this coordinator) and no others: the next checkpoint
    /// takes the larger of its next id and the range's start.
    pub fn allow_ids(&mut self, ids: std::ops::Range<CheckpointId>) {
        self.next_id = self.next_id.max(ids.start);
        self.id_limit = Some(ids.end);
    }

    /// Removes checkpoints beyond `num-retained` only after [`Coordinator::confirm`], not as soon
    /// as a newer one completes: a checkpoint counts once it is recorded elsewhere too.
    pub fn confirm_first(&mut self) {
        self.confirm_first = true;
    }

    /// The checkpoint `id` is recorded: older ones beyond `num-retained` may go.
    pub fn confirm(&mut self, id: CheckpointId) {
        if self.retained.back().is_some_and(|c| c.id == id) {
            self.remove_unretained();
        }
    }

    /// The next id, and how many ids are left before the limit (`None`: no limit).
    pub fn ids_left(&self) -> (CheckpointId, Option<u64>) {
        (self.next_id, self.id_limit.map(|l| l.saturating_sub(self.next_id)))
    }

    /// How many completed checkpoints it keeps (`execution.checkpointing.num-retained`).
    pub fn retained_count(&self) -> usize {
        self.config.retained.max(1) as usize
    }

    /// The latest completed checkpoint.
    pub fn latest(&self) -> Option<&Completed> {
        self.retained.back()
    }

    /// The latest retained checkpoint that is intact in storage (its metadata reads and every file
    /// is there at its size); damaged ones are dropped with a warning, so that a recovery falls back
    /// to the one before.
    pub fn latest_intact(&mut self) -> Option<&Completed> {
        while let Some(c) = self.retained.back() {
            match read_completed(&self.storage, &c.dir) {
                Ok(_) => break,
                Err(e) => {
                    warn!(job_id = %self.job_id, checkpoint = c.id, error = %e, "a retained checkpoint is damaged; using the one before");
                    self.retained.pop_back();
                }
            }
        }
        self.retained.back()
    }

    /// The storage.
    pub fn storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// Every source has ended: the next checkpoint, as soon as none is running, is the final one.
    pub fn request_final(&mut self) {
        if !self.final_requested {
            self.final_requested = true;
            self.final_wanted = true;
        }
    }

    /// Asks for a savepoint at the next opportunity (right after the checkpoint in progress, if
    /// any). Its outcome comes from [`Coordinator::take_savepoints`], in the order asked.
    pub fn request_savepoint(&mut self, request: SavepointRequest) {
        self.savepoints_wanted.push_back(request);
    }

    /// Forgets savepoints asked for and not started (the run they were asked of ended).
    pub fn clear_savepoint_requests(&mut self) {
        self.savepoints_wanted.clear();
    }

    /// Savepoints taken since the last call: the checkpoint they were taken with, and where they
    /// are or why they could not be written.
    pub fn take_savepoints(&mut self) -> Vec<(CheckpointId, Result<String>)> {
        self.savepoints_done.drain(..).collect()
    }

    /// What is due now: a timed-out checkpoint is failed, and a new one may start.
    pub fn poll(&mut self, now: Instant, now_ms: i64) -> Option<Command> {
        if let Some(p) = &self.pending {
            if now.duration_since(p.started) < Duration::from_millis(self.config.timeout_ms) {
                return None;
            }
            let id = p.id;
            self.fail(
                id,
                format!("not complete within {} ms (execution.checkpointing.timeout)", self.config.timeout_ms),
            );
        }
        if self.final_done {
            return None;
        }
        let interval = Duration::from_millis(self.config.interval_ms?);
        let pause_over =
            self.last_end.is_none_or(|e| now.duration_since(e) >= Duration::from_millis(self.config.min_pause_ms));
        let interval_over = self.last_start.is_none_or(|s| now.duration_since(s) >= interval);
        let urgent = self.final_wanted || !self.savepoints_wanted.is_empty();
        if !(urgent || (pause_over && interval_over)) {
            return None;
        }
        if self.id_limit.is_some_and(|l| self.next_id >= l) {
            // Waiting for more ids to be reserved.
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        let savepoint = self.savepoints_wanted.pop_front();
        let stop = savepoint.as_ref().is_some_and(|s| s.stop);
        let drain = savepoint.as_ref().is_some_and(|s| s.stop && s.drain);
        let last = std::mem::take(&mut self.final_wanted) || stop;
        self.pending = Some(Pending {
            id,
            started: now,
            timestamp_ms: now_ms,
            acks: BTreeMap::new(),
            references: BTreeMap::new(),
            last,
            savepoint,
        });
        self.last_start = Some(now);
        self.stats.triggered += 1;
        self.record(CheckpointRecord {
            id,
            status: "IN_PROGRESS".into(),
            is_savepoint: self.pending.as_ref().is_some_and(|p| p.savepoint.is_some()),
            trigger_timestamp: now_ms,
            latest_ack_timestamp: now_ms,
            state_size: 0,
            checkpointed_size: 0,
            end_to_end_duration: 0,
            num_acknowledged_subtasks: 0,
            num_subtasks: self.tasks,
            external_path: None,
            failure_message: None,
        });
        Some(Command::Trigger { id, last, drain })
    }

    fn record(&mut self, r: CheckpointRecord) {
        match self.stats.history.iter_mut().find(|h| h.id == r.id) {
            Some(h) => *h = r,
            None => {
                self.stats.history.push_front(r);
                self.stats.history.truncate(HISTORY);
            }
        }
    }

    fn update(&mut self, id: CheckpointId, f: impl FnOnce(&mut CheckpointRecord)) {
        if let Some(h) = self.stats.history.iter_mut().find(|h| h.id == id) {
            f(h);
        }
    }

    /// A task's state is written. When it is the last one expected, the checkpoint completes: its
    /// metadata is written, and the command to commit it returned.
    pub fn ack(&mut self, ack: TaskAck, now_ms: i64) -> Result<Option<Command>> {
        let Some(p) = self.pending.as_mut().filter(|p| p.id == ack.checkpoint_id) else {
            return Ok(None);
        };
        let task = (ack.file.head, ack.file.subtask);
        p.acks.insert(task, ack.file);
        if !ack.references.is_empty() {
            p.references.insert(task, ack.references);
        }
        let (n, id) = (p.acks.len() as u32, p.id);
        let size: u64 = p.acks.values().map(|f| f.bytes).sum();
        self.update(id, |h| {
            h.num_acknowledged_subtasks = n;
            h.latest_ack_timestamp = now_ms;
            h.checkpointed_size = size;
        });
        if n < self.tasks {
            return Ok(None);
        }
        // The earlier files incremental state builds on, found among the retained checkpoints.
        let mut linked = Vec::new();
        for ((head, subtask), ids) in self.pending.iter().flat_map(|p| p.references.iter()) {
            for m in ids {
                match self.retained_file(*m, *head, *subtask) {
                    Some(f) => linked.push(f),
                    None => {
                        let reason = format!("task {head}-{subtask} builds on checkpoint {m}, which is not retained");
                        self.fail(id, reason);
                        return Ok(None);
                    }
                }
            }
        }
        let Some(p) = self.pending.take() else { return Ok(None) };
        let dir = format!("{}/{}", job_dir(self.job_id), checkpoint_dir_name(p.id));
        let mut files: Vec<StateFile> = p.acks.into_values().collect();
        files.append(&mut linked);
        let metadata = SnapshotMetadata {
            format_version: super::STATE_FORMAT_VERSION,
            kind: SnapshotKind::Checkpoint,
            job_id: self.job_id,
            job_name: self.job_name.clone(),
            checkpoint_id: p.id,
            timestamp_ms: p.timestamp_ms,
            operators: self.operators.clone(),
            files,
        };
        let written = metadata.encode().and_then(|bytes| self.storage.put(&format!("{dir}/{METADATA_FILE}"), bytes));
        if let Err(e) = written {
            self.last_end = Some(Instant::now());
            self.fail_recorded(p.id, format!("cannot write its metadata: {e}"));
            return Ok(None);
        }
        let duration = Instant::now().duration_since(p.started).as_millis() as u64;
        self.last_end = Some(Instant::now());
        self.final_done |= p.last;
        self.stats.completed += 1;
        let path = format!("{}/{dir}", self.storage.location().trim_end_matches('/'));
        let written = metadata.files.iter().filter(|f| f.is_own()).map(|f| f.bytes).sum::<u64>();
        info!(
            job_id = %self.job_id,
            checkpoint = p.id,
            bytes = metadata.bytes(),
            written,
            duration_ms = duration,
            "checkpoint complete"
        );
        let full = metadata.bytes();
        self.update(p.id, |h| {
            h.state_size = full;
            h.checkpointed_size = written;
            h.status = "COMPLETED".into();
            h.end_to_end_duration = duration;
            h.external_path = Some(path);
        });
        if let Some(request) = &p.savepoint {
            let saved = copy_snapshot(&self.storage, &dir, &metadata, &request.target);
            self.savepoints_done.push_back((p.id, saved.map(|()| request.target.clone())));
        }
        self.retained.push_back(Completed { id: p.id, dir, metadata });
        if !self.confirm_first {
            self.remove_unretained();
        }
        Ok(Some(Command::Complete { id: p.id }))
    }

    /// The file of task (`head`, `subtask`) in checkpoint `m`, as a retained checkpoint lists it
    /// (its own, or one it builds on), marked as checkpoint `m`'s.
    fn retained_file(&self, m: CheckpointId, head: u32, subtask: u32) -> Option<StateFile> {
        self.retained.iter().find_map(|c| {
            c.metadata.files.iter().find_map(|f| {
                let of = f.checkpoint.unwrap_or(c.id);
                (of == m && f.head == head && f.subtask == subtask)
                    .then(|| StateFile { checkpoint: Some(m), ..f.clone() })
            })
        })
    }

    /// Removes the checkpoints beyond `num-retained`: their metadata, and the files no retained
    /// checkpoint builds on; those it does build on stay until none does.
    fn remove_unretained(&mut self) {
        while self.retained.len() > self.config.retained.max(1) as usize {
            let Some(old) = self.retained.pop_front() else { break };
            for f in old.metadata.files.iter().filter(|f| f.is_own()) {
                self.lingering.push((old.dir.clone(), f.path.clone()));
            }
            if let Err(e) = self.storage.delete(&format!("{}/{METADATA_FILE}", old.dir)) {
                warn!(job_id = %self.job_id, checkpoint = old.id, error = %e, "cannot remove an old checkpoint");
            }
        }
        let parent = job_dir(self.job_id);
        let needed: std::collections::BTreeSet<String> = self
            .retained
            .iter()
            .flat_map(|c| c.metadata.files.iter().filter_map(|f| f.checkpoint.map(|m| (m, &f.path))))
            .map(|(m, path)| format!("{parent}/{}/{path}", checkpoint_dir_name(m)))
            .collect();
        let storage = self.storage.clone();
        self.lingering.retain(|(dir, path)| {
            let full = format!("{dir}/{path}");
            if needed.contains(&full) {
                return true;
            }
            if let Err(e) = storage.delete(&full) {
                warn!(error = %e, file = %full, "cannot remove a file of an old checkpoint");
            }
            false
        });
    }

    /// A task could not write its state: the checkpoint fails (the job goes on; the next one
    /// starts after the interval).
    pub fn decline(&mut self, id: CheckpointId, reason: String) {
        if self.pending.as_ref().is_some_and(|p| p.id == id) {
            self.fail(id, reason);
        }
    }

    /// The running checkpoint, if any, is abandoned because the job's run ended (failure or
    /// restart).
    pub fn abort(&mut self, reason: &str) {
        // A new run's sources end again and need a final checkpoint again.
        self.final_wanted = false;
        self.final_requested = false;
        self.final_done = false;
        if let Some(id) = self.pending.as_ref().map(|p| p.id) {
            self.fail(id, reason.to_string());
        }
    }

    fn fail(&mut self, id: CheckpointId, reason: String) {
        let Some(p) = self.pending.take() else { return };
        self.last_end = Some(Instant::now());
        if p.savepoint.is_some() {
            self.savepoints_done.push_back((
                id,
                Err(weir_core::Error::external("the savepoint", format!("it failed: {reason}"), true)),
            ));
        }
        if p.last && !p.savepoint.as_ref().is_some_and(|s| s.stop) {
            // The final checkpoint must happen: ask again. (A failed stop leaves the job running.)
            self.final_wanted = true;
        }
        let dir = format!("{}/{}", job_dir(self.job_id), checkpoint_dir_name(id));
        if let Err(e) = self.storage.remove_dir(&dir) {
            warn!(job_id = %self.job_id, checkpoint = id, error = %e, "cannot remove a failed checkpoint's files");
        }
        self.fail_recorded(id, reason);
    }

    fn fail_recorded(&mut self, id: CheckpointId, reason: String) {
        warn!(job_id = %self.job_id, checkpoint = id, reason = %reason, "checkpoint failed");
        self.stats.failed += 1;
        let started = self.stats.history.iter().find(|h| h.id == id).map(|h| h.trigger_timestamp).unwrap_or(0);
        let now = crate::exchange::now_millis();
        self.update(id, |h| {
            h.status = "FAILED".into();
            h.end_to_end_duration = (now - started).max(0) as u64;
            h.failure_message = Some(reason);
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(id: CheckpointId, head: u32, bytes: u64) -> TaskAck {
        TaskAck {
            checkpoint_id: id,
            file: StateFile {
                head,
                subtask: 0,
                path: format!("{head}-0.state"),
                bytes,
                uids: vec![],
                checkpoint: None,
            },
            references: vec![],
        }
    }

    #[test]
    fn checkpoints_complete_on_the_last_ack_and_a_damaged_one_is_passed_over() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| weir_core::Error::io("tempdir", "/tmp", e))?;
        let storage = CheckpointStorage::open(&dir.path().display().to_string())?;
        let config = CheckpointConfig { interval_ms: Some(10), retained: 2, ..Default::default() };
        let job = JobId(5);
        let mut c = Coordinator::new(config, job, "j".into(), vec![], 2, storage.clone(), 0);
        let t0 = Instant::now();
        assert_eq!(c.poll(t0, 0), None, "the first checkpoint waits one interval");
        for id in 1..=3u64 {
            let now = t0 + Duration::from_millis(20 * id);
            assert_eq!(c.poll(now, 0), Some(Command::Trigger { id, last: false, drain: false }));
            assert_eq!(c.poll(now, 0), None, "one at a time");
            for head in 0..2 {
                storage.put(&format!("{}/chk-{id}/{head}-0.state", job_dir(job)), vec![7; 10])?;
            }
            assert_eq!(c.ack(ack(id, 0, 10), 0)?, None);
            assert_eq!(c.ack(ack(id, 1, 10), 0)?, Some(Command::Complete { id }));
        }
        assert_eq!(c.stats.completed, 3);
        assert_eq!(storage.list(&job_dir(job))?, vec!["chk-2", "chk-3"], "two retained");
        // chk-3 loses a file's tail: recovery uses chk-2, from the coordinator and from storage alike.
        storage.put(&format!("{}/chk-3/1-0.state", job_dir(job)), vec![7; 4])?;
        assert_eq!(latest_completed(&storage, job)?.map(|c| c.id), Some(2));
        assert_eq!(c.latest_intact().map(|c| c.id), Some(2));
        // A declined checkpoint fails and is counted; the next one starts after the interval.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(c.poll(later, 0), Some(Command::Trigger { id: 4, last: false, drain: false }));
        c.decline(4, "disk full".into());
        assert_eq!(c.stats.failed, 1);
        assert_eq!(c.stats.history.front().and_then(|h| h.failure_message.clone()).as_deref(), Some("disk full"));
        Ok(())
    }

    #[test]
    fn incremental_checkpoints_list_and_keep_the_files_they_build_on() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| weir_core::Error::io("tempdir", "/tmp", e))?;
        let storage = CheckpointStorage::open(&dir.path().display().to_string())?;
        let config = CheckpointConfig { interval_ms: Some(10), retained: 1, ..Default::default() };
        let job = JobId(6);
        let mut c = Coordinator::new(config, job, "j".into(), vec![], 1, storage.clone(), 0);
        let t0 = Instant::now();
        let jd = job_dir(job);
        // Checkpoint 1 is full; 2 and 3 build on it (and on each other); 4 is full again.
        let links: [&[u64]; 4] = [&[], &[1], &[1, 2], &[]];
        for (i, refs) in links.iter().enumerate() {
            let id = i as u64 + 1;
            assert_eq!(
                c.poll(t0 + Duration::from_millis(20 * id), 0),
                Some(Command::Trigger { id, last: false, drain: false })
            );
            storage.put(&format!("{jd}/chk-{id}/0-0.state"), vec![1; 10 + id as usize])?;
            let mut a = ack(id, 0, 10 + id);
            a.references = refs.to_vec();
            assert_eq!(c.ack(a, 0)?, Some(Command::Complete { id }));
            if id == 3 {
                // Only chk-3 is retained, but it lists and keeps the files of 1 and 2.
                let m = read_completed(&storage, &format!("{jd}/chk-3"))?;
                let linked: Vec<Option<u64>> = m.files.iter().map(|f| f.checkpoint).collect();
                assert_eq!(linked, vec![None, Some(1), Some(2)]);
                assert_eq!(m.bytes(), 13 + 11 + 12);
                assert_eq!(c.stats.history.front().map(|h| (h.state_size, h.checkpointed_size)), Some((36, 13)));
                assert_eq!(storage.list(&jd)?, vec!["chk-1", "chk-2", "chk-3"]);
                assert!(storage.list(&format!("{jd}/chk-1"))?.iter().all(|f| f != METADATA_FILE));
                // A savepoint of it holds copies of everything, and reads back on its own.
                let sp = dir.path().join("sp").display().to_string();
                copy_snapshot(&storage, &format!("{jd}/chk-3"), &m, &sp)?;
                let restore = super::super::task::Restore::open_path(&sp)?;
                assert_eq!(restore.metadata.files.len(), 3);
                dispose(&sp)?;
                assert!(!std::path::Path::new(&sp).exists());
            }
        }
        // Once a full checkpoint is the only one retained, the old chain's files are gone.
        assert_eq!(storage.list(&jd)?, vec!["chk-4"]);
        // A chain that refers to a checkpoint no longer retained fails, with the reason.
        assert_eq!(c.poll(t0 + Duration::from_secs(1), 0), Some(Command::Trigger { id: 5, last: false, drain: false }));
        let mut a = ack(5, 0, 3);
        a.references = vec![2];
        assert_eq!(c.ack(a, 0)?, None);
        assert!(
            c.stats
                .history
                .front()
                .and_then(|h| h.failure_message.clone())
                .unwrap_or_default()
                .contains("checkpoint 2")
        );
        Ok(())
    }
}
