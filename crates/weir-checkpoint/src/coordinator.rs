//! The checkpoint coordinator of one job: when checkpoints start, which acknowledgements they wait
//! for, completion, failures, which checkpoints are retained, and the figures REST shows.
//!
//! It is a pure core: events in (`poll` at least every few milliseconds, `ack` and `decline` as
//! tasks report, `abort`, `confirm`, and [`Coordinator::stored`] with the outcome of storage work),
//! outputs out ([`Output`]: commands for the job's tasks, and [`StorageWork`] for checkpoint
//! storage: metadata to write, a savepoint to copy, files to delete). It never touches storage
//! itself, so its decisions are tested without any, and whoever drives it decides where the I/O
//! runs: [`crate::io::Coordinating`] carries the work out on the driving thread (the embedded
//! cluster's job master thread, or the JobManager's per-job checkpointing thread), never on a thread
//! that REST or heartbeats wait on.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use weir_core::checkpointing::CheckpointConfig;
use weir_core::{JobId, Result};

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

/// What the coordinator asks of its driver.
#[derive(Debug)]
pub enum Output {
    /// A command for the job's tasks.
    Tasks(Command),
    /// Work in checkpoint storage.
    Storage(StorageWork),
}

/// Work in checkpoint storage the coordinator asks for; the outcome of what says so goes back
/// through [`Coordinator::stored`].
#[derive(Debug)]
pub enum StorageWork {
    /// Write checkpoint `id`'s metadata into `dir` (then report [`Stored::Metadata`]): the
    /// checkpoint completes once it is written.
    WriteMetadata {
        /// The checkpoint.
        id: CheckpointId,
        /// Its directory, relative to the storage root.
        dir: String,
        /// What to write.
        metadata: SnapshotMetadata,
    },
    /// Copy completed checkpoint `id` (in `dir`, described by `metadata`) to the savepoint location
    /// `target` (then report [`Stored::Savepoint`]).
    CopySavepoint {
        /// The checkpoint.
        id: CheckpointId,
        /// Its directory.
        dir: String,
        /// Its metadata.
        metadata: SnapshotMetadata,
        /// The savepoint's location (a directory or URL of its own).
        target: String,
    },
    /// Delete these objects (metadata of checkpoints no longer retained, files none builds on);
    /// failures are only logged.
    Delete(Vec<String>),
    /// Remove a failed checkpoint's directory; failures are only logged.
    RemoveDir(String),
}

/// The outcome of storage work, fed back into the coordinator.
#[derive(Debug)]
pub enum Stored {
    /// [`StorageWork::WriteMetadata`] of checkpoint `id`.
    Metadata {
        /// The checkpoint.
        id: CheckpointId,
        /// Whether it was written.
        result: Result<()>,
    },
    /// [`StorageWork::CopySavepoint`] of checkpoint `id`.
    Savepoint {
        /// The checkpoint.
        id: CheckpointId,
        /// Where the savepoint is, or why it could not be written.
        result: Result<String>,
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
    /// The storage root's location, for the paths REST shows.
    location: String,
    next_id: CheckpointId,
    /// Ids below this may be used (with high availability, ids are reserved in blocks in the
    /// coordination service, so that no two leaders ever use the same one); `None`: any.
    id_limit: Option<CheckpointId>,
    /// Checkpoints beyond `num-retained` are removed only once [`Coordinator::confirm`] says the
    /// newer one is recorded (with high availability: in the coordination service).
    confirm_first: bool,
    pending: Option<Pending>,
    /// A checkpoint every task acknowledged, whose metadata is being written, and that metadata.
    completing: Option<(Pending, SnapshotMetadata)>,
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
    /// A coordinator for a job of `tasks` tasks whose checkpoints go to the storage at `location`,
    /// numbering checkpoints after `last_id` (the one it restored from, or 0).
    pub fn new(
        config: CheckpointConfig,
        job_id: JobId,
        job_name: String,
        operators: Vec<OperatorMeta>,
        tasks: u32,
        location: String,
        last_id: CheckpointId,
    ) -> Self {
        Coordinator {
            config,
            job_id,
            job_name,
            operators,
            tasks,
            location,
            next_id: last_id + 1,
            id_limit: None,
            confirm_first: false,
            pending: None,
            completing: None,
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
    pub fn confirm(&mut self, id: CheckpointId) -> Vec<Output> {
        if self.retained.back().is_some_and(|c| c.id == id) {
            return self.remove_unretained();
        }
        Vec::new()
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

    /// Forgets the latest retained checkpoint (found damaged: a recovery falls back to the one
    /// before).
    pub fn drop_latest(&mut self) {
        self.retained.pop_back();
    }

    /// Forgets the retained checkpoint in directory `dir` (a run could not read it: a recovery
    /// falls back to the one before); whether it did. Never the only one left: a job with nothing
    /// to restore would start again from empty state, after its output was committed. Its files
    /// stay for inspection.
    pub fn forget(&mut self, dir: &str) -> bool {
        let before = self.retained.len();
        if before < 2 {
            return false;
        }
        self.retained.retain(|c| c.dir != dir);
        self.retained.len() != before
    }

    /// The storage root's location.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The job.
    pub fn job_id(&self) -> JobId {
        self.job_id
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
    pub fn poll(&mut self, now: Instant, now_ms: i64) -> Vec<Output> {
        let mut out = Vec::new();
        if let Some(p) = &self.pending {
            if now.duration_since(p.started) < Duration::from_millis(self.config.timeout_ms) {
                return out;
            }
            let id = p.id;
            out = self.fail(
                id,
                format!("not complete within {} ms (execution.checkpointing.timeout)", self.config.timeout_ms),
            );
        }
        out.extend(self.trigger(now, now_ms).map(Output::Tasks));
        out
    }

    /// Starts a checkpoint if one is due and none is running or completing.
    fn trigger(&mut self, now: Instant, now_ms: i64) -> Option<Command> {
        if self.final_done || self.pending.is_some() || self.completing.is_some() {
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

    /// A task's state is written. When it is the last one expected, the checkpoint's metadata is to
    /// be written ([`StorageWork::WriteMetadata`]); it completes once [`Coordinator::stored`] hears
    /// that it was.
    pub fn ack(&mut self, ack: TaskAck, now_ms: i64) -> Vec<Output> {
        let Some(p) = self.pending.as_mut().filter(|p| p.id == ack.checkpoint_id) else {
            return Vec::new();
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
            return Vec::new();
        }
        // The earlier files incremental state builds on, found among the retained checkpoints.
        let mut linked = Vec::new();
        for ((head, subtask), ids) in self.pending.iter().flat_map(|p| p.references.iter()) {
            for m in ids {
                match self.retained_file(*m, *head, *subtask) {
                    Some(f) => linked.push(f),
                    None => {
                        let reason = format!("task {head}-{subtask} builds on checkpoint {m}, which is not retained");
                        return self.fail(id, reason);
                    }
                }
            }
        }
        let Some(p) = self.pending.take() else { return Vec::new() };
        let dir = self.dir_of(p.id);
        let mut files: Vec<StateFile> = p.acks.values().cloned().collect();
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
        let id = p.id;
        self.completing = Some((p, metadata.clone()));
        vec![Output::Storage(StorageWork::WriteMetadata { id, dir, metadata })]
    }

    /// The directory of checkpoint `id`, relative to the storage root.
    fn dir_of(&self, id: CheckpointId) -> String {
        format!("{}/{}", job_dir(self.job_id), checkpoint_dir_name(id))
    }

    /// The outcome of storage work it asked for.
    pub fn stored(&mut self, outcome: Stored) -> Vec<Output> {
        match outcome {
            Stored::Metadata { id, result } => self.metadata_stored(id, result),
            Stored::Savepoint { id, result } => {
                self.savepoints_done.push_back((id, result));
                Vec::new()
            }
        }
    }

    /// Checkpoint `id`'s metadata was written (or not): it completes (or fails).
    fn metadata_stored(&mut self, id: CheckpointId, result: Result<()>) -> Vec<Output> {
        let Some((p, metadata)) = self.completing.take_if(|(p, _)| p.id == id) else { return Vec::new() };
        self.last_end = Some(Instant::now());
        if let Err(e) = result {
            let reason = format!("cannot write its metadata: {e}");
            self.ended_unsaved(&p, &reason);
            self.fail_recorded(p.id, reason);
            // Its tasks' files are of no use without the metadata.
            return vec![Output::Storage(StorageWork::RemoveDir(self.dir_of(p.id)))];
        }
        let dir = self.dir_of(p.id);
        let duration = Instant::now().duration_since(p.started).as_millis() as u64;
        self.final_done |= p.last;
        self.stats.completed += 1;
        let path = format!("{}/{dir}", self.location.trim_end_matches('/'));
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
        let mut out = Vec::new();
        if let Some(request) = &p.savepoint {
            out.push(Output::Storage(StorageWork::CopySavepoint {
                id: p.id,
                dir: dir.clone(),
                metadata: metadata.clone(),
                target: request.target.clone(),
            }));
        }
        out.push(Output::Tasks(Command::Complete { id: p.id }));
        self.retained.push_back(Completed { id: p.id, dir, metadata });
        if !self.confirm_first {
            out.extend(self.remove_unretained());
        }
        out
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
    fn remove_unretained(&mut self) -> Vec<Output> {
        let mut gone = Vec::new();
        while self.retained.len() > self.config.retained.max(1) as usize {
            let Some(old) = self.retained.pop_front() else { break };
            for f in old.metadata.files.iter().filter(|f| f.is_own()) {
                self.lingering.push((old.dir.clone(), f.path.clone()));
            }
            gone.push(format!("{}/{METADATA_FILE}", old.dir));
        }
        let parent = job_dir(self.job_id);
        let needed: std::collections::BTreeSet<String> = self
            .retained
            .iter()
            .flat_map(|c| c.metadata.files.iter().filter_map(|f| f.checkpoint.map(|m| (m, &f.path))))
            .map(|(m, path)| format!("{parent}/{}/{path}", checkpoint_dir_name(m)))
            .collect();
        self.lingering.retain(|(dir, path)| {
            let full = format!("{dir}/{path}");
            if needed.contains(&full) {
                return true;
            }
            gone.push(full);
            false
        });
        if gone.is_empty() { Vec::new() } else { vec![Output::Storage(StorageWork::Delete(gone))] }
    }

    /// A task could not write its state: the checkpoint fails (the job goes on; the next one
    /// starts after the interval).
    pub fn decline(&mut self, id: CheckpointId, reason: String) -> Vec<Output> {
        if self.pending.as_ref().is_some_and(|p| p.id == id) {
            return self.fail(id, reason);
        }
        Vec::new()
    }

    /// The running checkpoint, if any, is abandoned because the job's run ended (failure or
    /// restart).
    pub fn abort(&mut self, reason: &str) -> Vec<Output> {
        // A new run's sources end again and need a final checkpoint again.
        self.final_wanted = false;
        self.final_requested = false;
        self.final_done = false;
        // (A checkpoint whose metadata is being written completes or fails when its outcome comes
        // back, as its driver always feeds it back before the next event: its tasks' files are
        // written whatever happens to the run.)
        match self.pending.as_ref().map(|p| p.id) {
            Some(id) => self.fail(id, reason.to_string()),
            None => Vec::new(),
        }
    }

    /// What a checkpoint that ended without being saved leaves behind: its savepoint failed, and a
    /// final checkpoint is asked for again.
    fn ended_unsaved(&mut self, p: &Pending, reason: &str) {
        if p.savepoint.is_some() {
            self.savepoints_done.push_back((
                p.id,
                Err(weir_core::Error::external("the savepoint", format!("it failed: {reason}"), true)),
            ));
        }
        if p.last && !p.savepoint.as_ref().is_some_and(|s| s.stop) {
            // The final checkpoint must happen: ask again. (A failed stop leaves the job running.)
            self.final_wanted = true;
        }
    }

    fn fail(&mut self, id: CheckpointId, reason: String) -> Vec<Output> {
        let Some(p) = self.pending.take() else { return Vec::new() };
        self.last_end = Some(Instant::now());
        self.ended_unsaved(&p, &reason);
        self.fail_recorded(id, reason);
        vec![Output::Storage(StorageWork::RemoveDir(self.dir_of(id)))]
    }

    fn fail_recorded(&mut self, id: CheckpointId, reason: String) {
        warn!(job_id = %self.job_id, checkpoint = id, reason = %reason, "checkpoint failed");
        self.stats.failed += 1;
        let started = self.stats.history.iter().find(|h| h.id == id).map(|h| h.trigger_timestamp).unwrap_or(0);
        let now = weir_core::clock::now_millis();
        self.update(id, |h| {
            h.status = "FAILED".into();
            h.end_to_end_duration = (now - started).max(0) as u64;
            h.failure_message = Some(reason);
        });
    }
}

#[cfg(test)]
mod tests;
