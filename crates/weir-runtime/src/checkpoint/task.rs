//! The task side of checkpoints: what the tasks of one job part share (the latest trigger, the
//! latest completed checkpoint, the writer thread, what to restore from), and each task's handle
//! on it, through which its operators hand in their snapshots and read their restored state.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tracing::{debug, warn};
use weir_core::{Error, JobId, Result};

use super::storage::CheckpointStorage;
use super::{
    CheckpointId, ListSnapshot, METADATA_FILE, OperatorSnapshot, SnapshotMetadata, StateFile, TaskAck, TaskState,
    checkpoint_dir_name,
};
use crate::context::CancelToken;
use crate::state::redistribute;

/// What a job part tells its coordinator.
pub type PartEvent = super::CheckpointEvent;

/// A snapshot to restore from: where it is and what it holds.
#[derive(Clone, Debug)]
pub struct Restore {
    /// Its storage.
    pub storage: CheckpointStorage,
    /// Its directory in the storage ("" when the storage is rooted at it, as for savepoints).
    pub dir: String,
    /// Its metadata.
    pub metadata: SnapshotMetadata,
}

/// The restored state of one operator instance.
#[derive(Clone, Debug, Default)]
pub struct RestoredOperator {
    /// Keyed state chunks of this instance's key groups.
    pub keyed: Vec<(u32, Vec<u8>)>,
    /// Raw keyed state (the on-disk backend's) of this instance's key groups, in the order it
    /// applies: each old subtask's full snapshot, then its increments. Frames in state files are
    /// read when the operator loads them, not before.
    pub raw: super::file::RawState,
    /// Operator list states, redistributed to this instance.
    pub lists: BTreeMap<String, ListSnapshot>,
}

pub use super::layout::{join, locate, restore_from};

impl Restore {
    /// Opens the snapshot `from` names.
    pub fn open_from(from: &super::RestoreFrom) -> Result<Restore> {
        Restore::open(CheckpointStorage::open(&from.location)?, &from.dir)
    }

    /// Opens the snapshot at `dir` of `storage`, checking its metadata and files.
    pub fn open(storage: CheckpointStorage, dir: &str) -> Result<Restore> {
        let metadata = super::layout::read_completed(&storage, dir)?;
        Ok(Restore { storage, dir: dir.to_string(), metadata })
    }

    /// Opens the snapshot at `path` (a savepoint's or a retained checkpoint's directory or URL),
    /// through its parent, so that the files of earlier checkpoints that incremental state builds
    /// on (siblings of a checkpoint's directory) are reachable.
    pub fn open_path(path: &str) -> Result<Restore> {
        Restore::open_from(&restore_from(path))
    }

    /// The path of metadata, for messages.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.storage.location().trim_end_matches('/'), join(&self.dir, METADATA_FILE))
    }

    /// The head of a state file, and where its frames are (none in a file of format 2).
    fn read_head(&self, f: &StateFile) -> Result<(TaskState, Option<super::file::FramesAt>)> {
        let rel = locate(&self.dir, self.metadata.kind, f);
        let what = format!("{}/{rel}", self.storage.location().trim_end_matches('/'));
        let (state, at) = super::file::read_head(&mut self.storage.reader(&rel)?, &what)?;
        let frames = at.map(|at| super::file::FramesAt {
            storage: self.storage.clone(),
            rel,
            at,
            operators: state.operators.len(),
        });
        Ok((state, frames))
    }

    /// The file of checkpoint `id` that `own` (a file of this snapshot) builds on.
    fn link(&self, own: &StateFile, id: CheckpointId) -> Result<&StateFile> {
        self.metadata
            .files
            .iter()
            .find(|f| f.checkpoint == Some(id) && f.head == own.head && f.subtask == own.subtask)
            .ok_or_else(|| {
                Error::damaged(
                    self.describe(),
                    format!("it builds on checkpoint {id} for {}, but does not list that file", own.path),
                )
            })
    }

    /// The state of subtask `subtask` of `parallelism` of operator `uid` with `max_parallelism` key
    /// groups: at the same parallelism, the old subtask's own; at another, every old subtask's
    /// keyed state in this subtask's key groups and the redistributed list states.
    pub fn operator(
        &self,
        uid: &str,
        subtask: u32,
        parallelism: u32,
        max_parallelism: u32,
    ) -> Result<Option<RestoredOperator>> {
        let Some(meta) = self.metadata.operators.iter().find(|o| o.uid == uid) else { return Ok(None) };
        if meta.max_parallelism != max_parallelism {
            return Err(Error::InvalidJob(format!(
                "operator '{uid}' had {} key groups (pipeline.max-parallelism) in {}, but has {max_parallelism} now; \
                 the number of key groups cannot change across a restore",
                meta.max_parallelism,
                self.describe()
            )));
        }
        let same = meta.parallelism == parallelism;
        let files: Vec<&StateFile> = self
            .metadata
            .files
            .iter()
            .filter(|f| f.is_own() && f.uids.iter().any(|u| u == uid) && (!same || f.subtask == subtask))
            .collect();
        let range = weir_core::keygroup::key_group_range(max_parallelism, parallelism, subtask);
        let mut out = RestoredOperator::default();
        let in_range = |raw: Vec<(u32, Vec<u8>)>| raw.into_iter().filter(|(kg, _)| range.contains(kg)).collect();
        let mut old: Vec<OldSubtask> = Vec::new();
        for f in files {
            let (state, frames) = self.read_head(f)?;
            for (i, o) in state.operators.into_iter().enumerate().filter(|(_, o)| o.uid == uid) {
                // Incremental state: the links it builds on first, oldest first, then its own.
                for id in &o.chain {
                    let (linked, linked_frames) = self.read_head(self.link(f, *id)?)?;
                    for (j, l) in linked.operators.into_iter().enumerate().filter(|(_, l)| l.uid == uid) {
                        out.raw.push_chunks(in_range(l.raw));
                        if let Some(file) = &linked_frames {
                            out.raw.push_frames(file.clone(), j, range.clone())?;
                        }
                    }
                }
                old.push((f.subtask, i, frames.clone(), o));
            }
        }
        old.sort_by_key(|(s, ..)| *s);
        // Per list state: its description, and the entries of each old subtask.
        type Parts = Vec<Vec<Vec<u8>>>;
        let mut lists: BTreeMap<String, (ListSnapshot, Parts)> = BTreeMap::new();
        for (_, i, frames, snap) in old {
            out.keyed.extend(snap.keyed.into_iter().filter(|(kg, _)| range.contains(kg)));
            out.raw.push_chunks(in_range(snap.raw));
            if let Some(file) = frames {
                out.raw.push_frames(file, i, range.clone())?;
            }
            for (name, l) in snap.lists {
                let e =
                    lists.entry(name).or_insert_with(|| (ListSnapshot { entries: Vec::new(), ..l.clone() }, vec![]));
                e.1.push(l.entries);
            }
        }
        for (name, (mut l, parts)) in lists {
            l.entries = if same {
                parts.concat()
            } else {
                redistribute(&parts, parallelism, l.mode).into_iter().nth(subtask as usize).unwrap_or_default()
            };
            out.lists.insert(name, l);
        }
        Ok(Some(out))
    }
}

/// An old subtask's snapshot of an operator: the subtask, the operator's index in its state file,
/// the file's frames, and the snapshot's head.
type OldSubtask = (u32, usize, Option<super::file::FramesAt>, OperatorSnapshot);

pub use weir_checkpoint::{ChunkSink, DeferredSnapshot};

struct Upload {
    checkpoint_id: CheckpointId,
    head: u32,
    subtask: u32,
    uids: Vec<String>,
    references: Vec<CheckpointId>,
    state: TaskState,
    deferred: Vec<(OperatorSnapshot, DeferredSnapshot)>,
}

impl Upload {
    /// Writes the state file to `rel`: the head (the snapshots made at the barrier, and the rest
    /// of each operator whose raw state is deferred), then the deferred snapshots' chunks as they are made, each
    /// as a frame of its operator. Returns the file's size. Memory holds one chunk at a time, and
    /// the parts of the file in flight, never the whole snapshot.
    fn write(&mut self, storage: &CheckpointStorage, rel: &str) -> Result<u64> {
        let first = self.state.operators.len();
        let deferred = std::mem::take(&mut self.deferred);
        let (shells, makes): (Vec<OperatorSnapshot>, Vec<DeferredSnapshot>) = deferred.into_iter().unzip();
        self.state.operators.extend(shells);
        let mut file = storage.writer(rel)?;
        file.write(self.state.encode_head()?)?;
        let mut frames = 0u32;
        for (i, make) in makes.into_iter().enumerate() {
            let op = u32::try_from(first + i).map_err(|_| Error::internal("too many operators in a chain"))?;
            make(&mut |kg, bytes| {
                file.write(super::frame_header(op, kg, &bytes))?;
                file.write(bytes)?;
                frames = frames.checked_add(1).ok_or_else(|| Error::internal("too many frames in a state file"))?;
                Ok(())
            })?;
        }
        file.write(super::end_frame(frames))?;
        file.finish()
    }
}

/// What the tasks of one job part share about checkpoints.
pub struct PartCheckpoints {
    job_id: JobId,
    exactly_once: bool,
    timeout: Duration,
    triggered: AtomicU64,
    last: AtomicU64,
    drain: AtomicU64,
    completed: AtomicU64,
    sources_ended: AtomicUsize,
    events: Sender<PartEvent>,
    writer: Mutex<Option<Sender<Upload>>>,
    restore: Option<Restore>,
}

impl std::fmt::Debug for PartCheckpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartCheckpoints").field("job_id", &self.job_id).finish()
    }
}

impl PartCheckpoints {
    /// Checkpointing for a part of job `job_id` writing to `storage`; events go to `events`. A
    /// writer thread starts, and ends when the part is closed ([`PartCheckpoints::close`]).
    pub fn start(
        job_id: JobId,
        config: &weir_core::checkpointing::CheckpointConfig,
        storage: CheckpointStorage,
        events: Sender<PartEvent>,
        restore: Option<Restore>,
    ) -> Result<Arc<PartCheckpoints>> {
        let (tx, rx) = crossbeam_channel::unbounded::<Upload>();
        let restored_id = restore.as_ref().map(|r| r.metadata.checkpoint_id).unwrap_or(0);
        let part = Arc::new(PartCheckpoints {
            job_id,
            exactly_once: config.mode == weir_core::checkpointing::CheckpointingMode::ExactlyOnce,
            timeout: Duration::from_millis(config.timeout_ms),
            triggered: AtomicU64::new(restored_id),
            last: AtomicU64::new(0),
            drain: AtomicU64::new(0),
            completed: AtomicU64::new(restored_id),
            sources_ended: AtomicUsize::new(0),
            events: events.clone(),
            writer: Mutex::new(Some(tx)),
            restore,
        });
        let dir = super::coordinator::job_dir(job_id);
        std::thread::Builder::new()
            .name(format!("checkpoint-writer {job_id}"))
            .spawn(move || {
                for mut u in rx {
                    let chk = format!("{dir}/{}", checkpoint_dir_name(u.checkpoint_id));
                    let name = format!("{}-{}.state", u.head, u.subtask);
                    let written = u.write(&storage, &format!("{chk}/{name}"));
                    let event = match written {
                        Ok(bytes) => PartEvent::Ack(TaskAck {
                            checkpoint_id: u.checkpoint_id,
                            file: StateFile {
                                head: u.head,
                                subtask: u.subtask,
                                path: name,
                                bytes,
                                uids: u.uids,
                                checkpoint: None,
                            },
                            references: u.references,
                        }),
                        Err(e) => {
                            warn!(job_id = %job_id, checkpoint = u.checkpoint_id, error = %e, "cannot write task state");
                            PartEvent::Decline { id: u.checkpoint_id, reason: e.to_string() }
                        }
                    };
                    let _ = events.send(event);
                }
            })
            .map_err(|e| Error::internal(format!("cannot start the checkpoint writer thread: {e}")))?;
        Ok(part)
    }

    /// Asks the part's sources for barrier `id` (`last`: the final checkpoint; `drain`: after the
    /// largest watermark).
    pub fn trigger(&self, id: CheckpointId, last: bool, drain: bool) {
        if last {
            self.last.store(id, Ordering::SeqCst);
        }
        if drain {
            self.drain.store(id, Ordering::SeqCst);
        }
        self.triggered.fetch_max(id, Ordering::SeqCst);
    }

    /// Checkpoint `id` is complete.
    pub fn complete(&self, id: CheckpointId) {
        self.completed.fetch_max(id, Ordering::SeqCst);
    }

    /// The latest completed checkpoint.
    pub fn completed(&self) -> CheckpointId {
        self.completed.load(Ordering::SeqCst)
    }

    /// Stops the writer thread once it has written what it holds.
    pub fn close(&self) {
        if let Ok(mut w) = self.writer.lock() {
            w.take();
        }
    }

    /// What the part restores from.
    pub fn restore(&self) -> Option<&Restore> {
        self.restore.as_ref()
    }
}

struct TaskInner {
    part: Arc<PartCheckpoints>,
    head: u32,
    subtask: u32,
    snapshots: RefCell<Vec<OperatorSnapshot>>,
    deferred: RefCell<Vec<(OperatorSnapshot, DeferredSnapshot)>>,
    seen: std::cell::Cell<CheckpointId>,
}

/// A task's handle on checkpointing (disabled when the job takes no checkpoints). Operators get it
/// through their [`crate::context::TaskEnv`].
#[derive(Clone, Default)]
pub struct TaskCheckpoint(Option<Rc<TaskInner>>);

impl std::fmt::Debug for TaskCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCheckpoint").field("enabled", &self.enabled()).finish()
    }
}

impl TaskCheckpoint {
    /// The handle of task (`head`, `subtask`) of a part.
    pub fn new(part: Arc<PartCheckpoints>, head: u32, subtask: u32) -> Self {
        let seen = part.triggered.load(Ordering::SeqCst);
        TaskCheckpoint(Some(Rc::new(TaskInner {
            part,
            head,
            subtask,
            snapshots: RefCell::new(Vec::new()),
            deferred: RefCell::new(Vec::new()),
            seen: std::cell::Cell::new(seen),
        })))
    }

    /// Whether the job takes checkpoints.
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Whether barriers are aligned (exactly-once).
    pub fn exactly_once(&self) -> bool {
        self.0.as_ref().is_some_and(|t| t.part.exactly_once)
    }

    /// The latest completed checkpoint (0: none).
    pub fn completed(&self) -> CheckpointId {
        self.0.as_ref().map(|t| t.part.completed()).unwrap_or(0)
    }

    /// Waits until checkpoint `id` is complete; `false` when cancelled or after the checkpoint
    /// timeout.
    pub fn wait_completed(&self, id: CheckpointId, cancel: &CancelToken) -> bool {
        let Some(t) = &self.0 else { return true };
        let deadline = Instant::now() + t.part.timeout;
        while t.part.completed() < id {
            if Instant::now() >= deadline || cancel.wait_timeout(Duration::from_millis(2)) {
                return false;
            }
        }
        true
    }

    /// The end of a two-phase-commit sink: waits until the checkpoint of its last pre-commit
    /// (`last`, if any) completes, so that it can commit everything. `Ok(false)` when cancelled
    /// (nothing more to do); an error naming the `sink` and what is `left` behind when the
    /// checkpoint does not complete within the checkpoint timeout.
    pub fn wait_final(&self, last: Option<CheckpointId>, cancel: &CancelToken, sink: &str, left: &str) -> Result<bool> {
        let Some(last) = last else { return Ok(true) };
        if self.wait_completed(last, cancel) {
            return Ok(true);
        }
        if cancel.is_cancelled() {
            return Ok(false);
        }
        Err(Error::external(
            format!("the final checkpoint ({last}) of {sink}"),
            format!("it did not complete within execution.checkpointing.timeout; {left}"),
            true,
        ))
    }

    /// An operator of the task hands in its snapshot for the barrier passing now.
    pub fn add(&self, snapshot: OperatorSnapshot) {
        if let Some(t) = &self.0
            && !snapshot.is_empty()
        {
            t.snapshots.borrow_mut().push(snapshot);
        }
    }

    /// An operator of the task hands in its state's snapshot with `now`, the rest of its snapshot
    /// (its uid and any state but its keyed state): keyed chunks go in with it, a deferred snapshot
    /// is made on the writer thread while the task goes on with its records.
    pub fn add_state(&self, state: crate::state::StateSnapshot, now: OperatorSnapshot) {
        use crate::disk::DiskSnapshot;
        let now = OperatorSnapshot { keyed: state.keyed, ..now };
        match state.deferred {
            None => self.add(now),
            Some(DiskSnapshot::Increment(make, chain)) => self.add_deferred(OperatorSnapshot { chain, ..now }, make),
            Some(DiskSnapshot::Full(make)) => self.add_deferred(now, make),
        }
    }

    /// An operator of the task hands in its snapshot: `now`, what it made at the barrier (its uid
    /// and any state but the raw keyed state), and `make`, its raw keyed state to be made on the
    /// writer thread while the task goes on with its records.
    pub fn add_deferred(&self, now: OperatorSnapshot, make: DeferredSnapshot) {
        if let Some(t) = &self.0 {
            t.deferred.borrow_mut().push((now, make));
        }
    }

    /// The restored state of operator `uid` for this subtask, if the job restored from a snapshot
    /// that has it.
    pub fn restored(&self, uid: &str, parallelism: u32, max_parallelism: u32) -> Result<Option<RestoredOperator>> {
        match self.0.as_ref().and_then(|t| t.part.restore.as_ref().map(|r| (t, r))) {
            Some((t, r)) => r.operator(uid, t.subtask, parallelism, max_parallelism),
            None => Ok(None),
        }
    }

    /// For sources: a checkpoint triggered since the last call, with whether it is the final one
    /// and whether to drain event time first.
    pub fn due(&self) -> Option<(CheckpointId, bool, bool)> {
        let t = self.0.as_ref()?;
        let id = t.part.triggered.load(Ordering::SeqCst);
        if id <= t.seen.get() {
            return None;
        }
        t.seen.set(id);
        Some((id, t.part.last.load(Ordering::SeqCst) == id, t.part.drain.load(Ordering::SeqCst) == id))
    }

    /// For sources: this source read all its input.
    pub fn source_ended(&self) {
        if let Some(t) = &self.0 {
            t.part.sources_ended.fetch_add(1, Ordering::SeqCst);
            let _ = t.part.events.send(PartEvent::SourceEnded);
        }
    }

    /// Barrier `id` passed the whole chain: the snapshots its operators handed in go to the writer.
    pub fn barrier_passed(&self, id: CheckpointId) {
        let Some(t) = &self.0 else { return };
        t.seen.set(t.seen.get().max(id));
        let operators = std::mem::take(&mut *t.snapshots.borrow_mut());
        let deferred = std::mem::take(&mut *t.deferred.borrow_mut());
        let uids = operators.iter().chain(deferred.iter().map(|(o, _)| o)).map(|o| o.uid.clone()).collect();
        let references: std::collections::BTreeSet<CheckpointId> =
            operators.iter().chain(deferred.iter().map(|(o, _)| o)).flat_map(|o| o.chain.iter().copied()).collect();
        let state = TaskState { job_id: t.part.job_id, checkpoint_id: id, head: t.head, subtask: t.subtask, operators };
        debug!(job_id = %t.part.job_id, vertex = t.head, subtask = t.subtask, checkpoint = id, "snapshot taken");
        let upload = Upload {
            checkpoint_id: id,
            head: t.head,
            subtask: t.subtask,
            uids,
            references: references.into_iter().collect(),
            state,
            deferred,
        };
        let sent = t.part.writer.lock().ok().and_then(|w| w.as_ref().map(|w| w.send(upload).is_ok()));
        if sent != Some(true) {
            let _ = t.part.events.send(PartEvent::Decline { id, reason: "the job part is closing".into() });
        }
    }
}

/// Checks that every operator state in `restore` has an operator of `plan` to go to (matched by
/// uid), unless `allow_non_restored`; a snapshot of another job claims nothing and is refused.
pub fn check_claims(restore: &Restore, plan: &weir_core::Plan, allow_non_restored: bool) -> Result<()> {
    let uids: std::collections::BTreeSet<String> = plan.vertices.iter().map(|v| v.state_uid()).collect();
    let stateful: std::collections::BTreeSet<&str> =
        restore.metadata.files.iter().flat_map(|f| f.uids.iter().map(String::as_str)).collect();
    let unclaimed: Vec<&str> = stateful.iter().copied().filter(|u| !uids.contains(*u)).collect();
    if unclaimed.is_empty() || allow_non_restored {
        return Ok(());
    }
    Err(Error::InvalidJob(format!(
        "{} holds state of operators this job does not have: {} (it was taken from job '{}'); give the operators \
         these uids, or pass --allowNonRestoredState to drop that state",
        restore.describe(),
        unclaimed.join(", "),
        restore.metadata.job_name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::layout::split_location;

    #[test]
    fn snapshot_locations_split_into_a_reachable_parent_and_a_name() {
        assert_eq!(split_location("/tmp/sp/savepoint-1/"), ("/tmp/sp", "savepoint-1"));
        assert_eq!(split_location("/sp"), ("/", "sp"));
        assert_eq!(split_location("sp"), (".", "sp"));
        assert_eq!(split_location("file:///tmp/cp/chk-3"), ("file:///tmp/cp", "chk-3"));
        assert_eq!(split_location("s3://bucket/a/chk-3"), ("s3://bucket/a", "chk-3"));
        assert_eq!(split_location("s3://bucket/chk-3"), ("s3://bucket", "chk-3"));
        assert_eq!(split_location("s3://bucket"), ("s3://bucket", ""));
        assert_eq!(split_location("s3://"), ("s3://", ""));
        let f = |checkpoint| StateFile {
            head: 1,
            subtask: 0,
            path: "1-0.state".into(),
            bytes: 1,
            uids: vec![],
            checkpoint,
        };
        use super::super::SnapshotKind::{Checkpoint, Savepoint};
        assert_eq!(locate("job/chk-5", Checkpoint, &f(None)), "job/chk-5/1-0.state");
        assert_eq!(locate("job/chk-5", Checkpoint, &f(Some(3))), "job/chk-3/1-0.state");
        assert_eq!(locate("chk-5", Checkpoint, &f(Some(3))), "chk-3/1-0.state");
        assert_eq!(locate("", Savepoint, &f(Some(3))), "chk-3/1-0.state");
        assert_eq!(locate("sp-1", Savepoint, &f(Some(3))), "sp-1/chk-3/1-0.state");
    }
}
