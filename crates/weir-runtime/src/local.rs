//! The embedded local cluster: a job's tasks on threads of the current process.
//!
//! One thread per task (a chain of operators) and subtask, bounded channels between them, and a
//! job master thread that tracks the job's status (Flink's names: CREATED, RUNNING, FAILING,
//! FAILED, CANCELLING, CANCELED, FINISHED), cancels every task when one fails or the client cancels,
//! and joins every thread before it reports a terminal status, so nothing is left behind.
//!
//! Each task *initializes* before it runs: it builds its operators, which restore their state and
//! open their readers. [`JobHandle::initializing`] counts the tasks still doing so (Flink's task
//! state INITIALIZING); a part of a job reports RUNNING to its JobManager only once it is 0, and
//! checkpoints are triggered only then.

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use weir_core::{Blame, Error, JobId, JobStatus, Result, VertexId};

use crate::checkpoint::coordinator::{Command, Coordinator};
use crate::checkpoint::io::Coordinating;
use crate::checkpoint::storage::CheckpointStorage;
use crate::checkpoint::task::{PartCheckpoints, PartEvent, Restore, TaskCheckpoint};
use crate::context::{Accumulators, CancelToken, OperatorContext, TaskEnv};
use crate::graph::{AnyChannelEnd, AnyOutput, ExchangeShape, NodeKind, SideOutputs, StreamGraph};
use crate::metrics::{PartIdentity, PartMetrics, VertexCounts};
use crate::net::{PartNetwork, PartWiring, Placement, RemoteChannel};
use crate::output::CurrentOperator;
use crate::source::TaskBody;
use crate::state::OperatorStateStore;

pub use weir_core::result::JobResult;

mod handle;
pub use handle::JobHandle;

struct JobState {
    status: JobStatus,
    error: Option<Error>,
    result: Option<JobResult>,
}

struct JobShared {
    job_id: JobId,
    job_name: String,
    /// The name of each task's chain (`Source -> Map`), by head vertex.
    chains: Vec<String>,
    metrics: PartMetrics,
    accumulators: Arc<Accumulators>,
    cancel: CancelToken,
    state: Mutex<JobState>,
    changed: Condvar,
    started: Instant,
    /// Task threads that have not yet ended.
    live_tasks: AtomicUsize,
    /// Tasks that have not yet built their operators (restored their state, opened their readers).
    initializing: AtomicUsize,
    /// Which run of the job this is.
    attempt: u32,
    /// For a part of a job spanning processes: its connections.
    network: Option<PartNetwork>,
    /// Checkpointing, when the job takes checkpoints.
    checkpoints: Option<Arc<PartCheckpoints>>,
    /// Where the part's checkpoint events arrive, until the part's owner takes them (a
    /// TaskManager forwards them to its JobManager); the embedded cluster's job master coordinates.
    events: Mutex<Option<crossbeam_channel::Receiver<PartEvent>>>,
    /// The embedded cluster's coordinator.
    coordinator: Mutex<Option<Coordinating>>,
    /// Source subtasks of the whole job.
    sources: usize,
}

impl JobShared {
    fn set_status(&self, status: JobStatus) {
        if let Ok(mut s) = self.state.lock()
            && !s.status.is_terminal()
        {
            debug!(job_id = %self.job_id, from = %s.status, to = %status, "job status");
            s.status = status;
        }
        self.changed.notify_all();
    }

    /// One task has built its operators, or given up trying; wakes whoever waits for the last one.
    fn task_initialized(&self) {
        if self.initializing.fetch_sub(1, Ordering::SeqCst) == 1 {
            // Under the lock, so that a waiter that just saw a count above 0 is already waiting.
            let _guard = self.state.lock();
            self.changed.notify_all();
        }
    }

    fn counts(&self) -> Vec<VertexCounts> {
        self.metrics.counts()
    }

    /// The metrics of operator `v` in subtask `subtask` of the task `head` leads.
    fn operator_metrics(&self, head: VertexId, v: VertexId, subtask: u32) -> Arc<crate::metrics::OperatorMetrics> {
        self.metrics.operator(head, self.chain(head), v, subtask)
    }

    /// The figures of the task `head` leads in `subtask`.
    fn task_io(&self, head: VertexId, subtask: u32) -> Arc<crate::metrics::TaskIo> {
        self.metrics.task(head, self.chain(head), subtask)
    }

    fn chain(&self, head: VertexId) -> &str {
        self.chains.get(head.0 as usize).map(String::as_str).unwrap_or_default()
    }
}

/// One task: a chain of operators, one subtask of it.
struct TaskSpec {
    head: VertexId,
    subtask: u32,
    senders: HashMap<usize, Vec<AnyChannelEnd>>,
    receivers: Vec<AnyChannelEnd>,
}

/// Batches to another process collect this many input batches' worth of records before they are
/// sent: a frame and a credit per 4096 records instead of per few hundred cost measurably less
/// (docs/benchmarks.md).
const NETWORK_FILL_BATCHES: usize = 4;

/// One channel of an edge: from subtask `from` of its source to subtask `to` of its target.
struct ChannelSpec {
    edge: usize,
    from: u32,
    to: u32,
}

/// Starts `graph` in this process and returns at once. With `execution.savepoint.path` set, it
/// starts from that savepoint or checkpoint.
pub fn submit(graph: StreamGraph, job_id: JobId) -> Result<JobHandle> {
    let restore = match &graph.config.checkpointing.restore_path {
        Some(path) => {
            let restore = Restore::open_path(path)?;
            crate::checkpoint::check_claims(&restore, &graph.plan(), graph.config.checkpointing.allow_non_restored)?;
            Some(restore)
        }
        None => None,
    };
    submit_restored(graph, job_id, None, restore)
}

/// Starts the part of `graph` that `placement` puts in this process (all of it without one), and
/// returns at once. Channels to and from the other parts go over the network (see [`crate::net`]).
pub fn submit_part(graph: StreamGraph, job_id: JobId, placement: Option<Placement>) -> Result<JobHandle> {
    submit_restored(graph, job_id, placement, None)
}

/// Like [`submit_part`], restoring the tasks' state from `restore`.
pub fn submit_restored(
    graph: StreamGraph,
    job_id: JobId,
    placement: Option<Placement>,
    restore: Option<Restore>,
) -> Result<JobHandle> {
    graph.validate()?;
    let cached_files = crate::cache::check(&graph.cached_files)?;
    let graph = Arc::new(graph);
    let plan = graph.plan();
    let cancel = CancelToken::new();
    if let Some(p) = &placement {
        let slots = plan.vertices.iter().map(|v| v.parallelism).max().unwrap_or(1);
        if p.assignment.slot_parts.len() != slots as usize {
            return Err(Error::internal(format!(
                "the job needs {slots} slots but was placed on {}",
                p.assignment.slot_parts.len()
            )));
        }
    }
    let mut wiring =
        placement.clone().map(|p| PartWiring::new(p, job_id, graph.config.channel_capacity, cancel.clone()));
    let tasks = wire_tasks(&graph, &plan, placement.as_ref(), wiring.as_mut())?;
    let attempt = wiring.as_ref().map(|w| w.placement().assignment.attempt).unwrap_or(0);
    let (checkpoints, events, coordinator) = start_checkpoints(&graph, &plan, job_id, wiring.is_none(), restore)?;
    let who = PartIdentity {
        taskmanager: wiring
            .as_ref()
            .map(|w| w.placement().assignment.taskmanager.clone())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "local".to_string()),
        attempt,
    };
    let names: Vec<String> = plan.vertices.iter().map(|v| v.name.clone()).collect();
    let heads = plan.chain_heads();
    let chains = plan
        .vertices
        .iter()
        .map(|v| {
            let members: Vec<&str> =
                plan.vertices.iter().filter(|m| heads[m.id.0 as usize] == v.id).map(|m| m.name.as_str()).collect();
            members.join(" -> ")
        })
        .collect();
    let shared = Arc::new(JobShared {
        job_id,
        job_name: graph.job_name.clone(),
        metrics: PartMetrics::new(job_id, &graph.job_name, names, &who),
        chains,
        accumulators: Arc::new(Accumulators::default()),
        cancel,
        state: Mutex::new(JobState { status: JobStatus::Created, error: None, result: None }),
        changed: Condvar::new(),
        started: Instant::now(),
        live_tasks: AtomicUsize::new(0),
        initializing: AtomicUsize::new(tasks.len()),
        attempt,
        network: wiring.map(PartWiring::open),
        checkpoints,
        events: Mutex::new(events),
        coordinator: Mutex::new(coordinator),
        sources: plan.source_subtasks(),
    });
    info!(job_id = %job_id, job = %graph.job_name, tasks = tasks.len(), "submitting job to the local cluster");
    let (threads, done_rx) = spawn_tasks(&graph, &shared, tasks, &cached_files)?;
    shared.set_status(JobStatus::Running);
    let master = shared.clone();
    let task_count = threads.len();
    std::thread::Builder::new()
        .name(format!("job-master {job_id}"))
        .spawn(move || job_master(master, done_rx, threads, task_count))
        .map_err(|e| Error::internal(format!("cannot start the job master thread: {e}")))?;
    Ok(JobHandle { shared })
}

/// The tasks of this part (every chain head's subtasks placed here), each with the ends of its
/// channels: local channels between tasks here, remote ones through `wiring` to other parts.
fn wire_tasks(
    graph: &StreamGraph,
    plan: &weir_core::Plan,
    placement: Option<&Placement>,
    mut wiring: Option<&mut PartWiring>,
) -> Result<BTreeMap<(VertexId, u32), TaskSpec>> {
    let heads = plan.chain_heads();
    let capacity = graph.config.channel_capacity;
    let is_local = |slot: u32| placement.is_none_or(|p| p.is_local(slot));
    let part_of = |slot: u32| placement.and_then(|p| p.part_of(slot)).unwrap_or(0);
    let mut tasks: BTreeMap<(VertexId, u32), TaskSpec> = BTreeMap::new();
    for (head, v) in heads.iter().zip(&plan.vertices) {
        if *head == v.id {
            for s in (0..v.parallelism).filter(|&s| is_local(s)) {
                tasks.insert(
                    (v.id, s),
                    TaskSpec { head: v.id, subtask: s, senders: HashMap::new(), receivers: Vec::new() },
                );
            }
        }
    }
    let channels = channels_of(plan)?;
    let remote = |id: usize, c: &ChannelSpec| RemoteChannel { id: id as u32, from: part_of(c.from), to: part_of(c.to) };
    if let Some(w) = wiring.as_deref_mut() {
        for (id, c) in channels.iter().enumerate() {
            if is_local(c.from) && !is_local(c.to) {
                w.note_outbound(remote(id, c));
            }
        }
    }
    for (id, c) in channels.iter().enumerate() {
        let e = &plan.edges[c.edge];
        let ops = graph.edge_ops(&graph.edges[c.edge])?;
        let (tx, rx) = match (is_local(c.from), is_local(c.to), wiring.as_deref_mut()) {
            (true, true, _) => {
                let (tx, rx) = ops.channel(capacity);
                (Some(tx), Some(rx))
            }
            (true, false, Some(w)) => (Some(ops.remote_sender(&w.link(part_of(c.to))?, id as u32)?), None),
            (false, true, Some(w)) => (None, Some(ops.remote_receiver(capacity, w, remote(id, c)))),
            _ => (None, None),
        };
        if let Some(tx) = tx {
            let src_head = heads[e.source.0 as usize];
            tasks
                .get_mut(&(src_head, c.from))
                .ok_or_else(|| Error::internal(format!("no task for vertex {src_head} subtask {}", c.from)))?
                .senders
                .entry(c.edge)
                .or_default()
                .push(tx);
        }
        if let Some(rx) = rx {
            tasks
                .get_mut(&(e.target, c.to))
                .ok_or_else(|| Error::internal(format!("no task for vertex {} subtask {}", e.target, c.to)))?
                .receivers
                .push(rx);
        }
    }
    Ok(tasks)
}

/// Every channel of every edge that is not chained, in an order all parts agree on: a channel's
/// position is its id on the network.
fn channels_of(plan: &weir_core::Plan) -> Result<Vec<ChannelSpec>> {
    let mut channels = Vec::new();
    for (ei, e) in plan.edges.iter().enumerate() {
        if plan.is_chained(e) {
            continue;
        }
        let (src, dst) = (plan.vertex(e.source)?, plan.vertex(e.target)?);
        for from in 0..src.parallelism {
            if e.ship_strategy == weir_core::ShipStrategy::Forward {
                channels.push(ChannelSpec { edge: ei, from, to: from });
            } else {
                channels.extend((0..dst.parallelism).map(|to| ChannelSpec { edge: ei, from, to }));
            }
        }
    }
    Ok(channels)
}

/// What a part that takes checkpoints runs them with: its side of checkpointing, the events it
/// sends, and (on the embedded cluster, which is its own JobManager) the coordinator.
type PartCheckpointing =
    (Option<Arc<PartCheckpoints>>, Option<crossbeam_channel::Receiver<PartEvent>>, Option<Coordinating>);

/// Starts the part's checkpointing if the job takes checkpoints (`embedded`: with a coordinator
/// of its own), restoring from `restore`.
fn start_checkpoints(
    graph: &StreamGraph,
    plan: &weir_core::Plan,
    job_id: JobId,
    embedded: bool,
    restore: Option<Restore>,
) -> Result<PartCheckpointing> {
    let cp = &graph.config.checkpointing;
    if !cp.enabled() {
        if restore.is_some() {
            return Err(Error::Config(
                "the job restores from a snapshot but takes no checkpoints; set execution.checkpointing.interval"
                    .into(),
            ));
        }
        return Ok((None, None, None));
    }
    let storage = CheckpointStorage::open(&cp.dir())?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let restored = restore.as_ref().map(|r| r.metadata.checkpoint_id).unwrap_or(0);
    let restored_from = restore.as_ref().map(|r| (r.metadata.checkpoint_id, r.describe()));
    let part = PartCheckpoints::start(job_id, cp, storage.clone(), tx, restore)?;
    let coordinator = embedded.then(|| {
        let mut c = Coordinator::new(
            cp.clone(),
            job_id,
            graph.job_name.clone(),
            crate::checkpoint::operators_of(plan),
            task_count(plan),
            storage.location().to_string(),
            restored,
        );
        c.stats.restored = restored_from;
        Coordinating::new(c, storage)
    });
    Ok((Some(part), Some(rx), coordinator))
}

/// The threads of a part's tasks, and where each reports its end.
type StartedTasks = (Vec<std::thread::JoinHandle<()>>, crossbeam_channel::Receiver<Result<()>>);

/// Starts a thread per task; their handles, and where each reports its end. A thread that
/// cannot be started cancels the tasks started before it and fails the part.
fn spawn_tasks(
    graph: &Arc<StreamGraph>,
    shared: &Arc<JobShared>,
    tasks: BTreeMap<(VertexId, u32), TaskSpec>,
    cached_files: &crate::cache::CachedFiles,
) -> Result<StartedTasks> {
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Result<()>>();
    let mut threads = Vec::with_capacity(tasks.len());
    let mut pending = tasks.into_values();
    while let Some(spec) = pending.next() {
        let graph = graph.clone();
        let shared2 = shared.clone();
        let done = done_tx.clone();
        let files = cached_files.clone();
        let vertex = graph.nodes[spec.head.0 as usize].vertex.clone();
        let subtask = spec.subtask;
        let name = format!("{} ({}/{})", vertex.name, subtask + 1, vertex.parallelism);
        shared.live_tasks.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new().name(truncate(&name, 60)).spawn(move || {
            crate::cache::enter(files);
            let r = run_task(&graph, &shared2, spec);
            shared2.live_tasks.fetch_sub(1, Ordering::SeqCst);
            let _ = done.send(r);
        });
        match spawned {
            Ok(h) => threads.push(h),
            Err(e) => {
                shared.live_tasks.fetch_sub(1, Ordering::SeqCst);
                // This task and those not started will never initialize.
                shared.initializing.fetch_sub(pending.len() + 1, Ordering::SeqCst);
                // The tasks not started hold channel ends that started tasks may be blocked on:
                // drop them first, so that cancellation reaches every started task.
                drop(pending);
                shared.cancel.cancel();
                for h in threads {
                    let _ = h.join();
                }
                if let Some(n) = &shared.network {
                    n.close();
                }
                return Err(Error::Task {
                    operator: vertex.name,
                    subtask,
                    parallelism: vertex.parallelism,
                    message: format!(
                        "cannot start a thread for this task: {e}; the job needs one thread per task and subtask \
                         (see `weir info`): lower its parallelism, or raise the process's thread and memory limits"
                    ),
                    blame: Blame::External,
                    retryable: true,
                    damaged: false,
                });
            }
        }
    }
    Ok((threads, done_rx))
}

fn job_master(
    shared: Arc<JobShared>,
    done: crossbeam_channel::Receiver<Result<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    task_count: usize,
) {
    let mut root: Option<Error> = None;
    // The embedded cluster coordinates its own checkpoints.
    let events = match shared.coordinator.lock().map(|c| c.is_some()) {
        Ok(true) => shared.events.lock().ok().and_then(|mut e| e.take()),
        _ => None,
    };
    let sources = shared.sources;
    let mut ended_sources = 0;
    let mut remaining = task_count;
    while remaining > 0 {
        let r = match &events {
            None => match done.recv() {
                Ok(r) => r,
                Err(_) => break,
            },
            Some(events) => {
                crossbeam_channel::select! {
                    recv(done) -> r => match r {
                        Ok(r) => r,
                        Err(_) => break,
                    },
                    recv(events) -> ev => {
                        if let Ok(ev) = ev {
                            ended_sources += usize::from(ev == PartEvent::SourceEnded);
                            coordinate(&shared, Some(ev), ended_sources >= sources);
                        }
                        continue;
                    },
                    default(Duration::from_millis(5)) => {
                        coordinate(&shared, None, ended_sources >= sources);
                        continue;
                    },
                }
            }
        };
        remaining -= 1;
        let Err(e) = r else { continue };
        let first = root.is_none();
        let better = explains_better(root.as_ref(), &e);
        if matches!(e, Error::Cancelled(_)) && shared.cancel.is_cancelled() {
            continue;
        }
        if better {
            warn!(job_id = %shared.job_id, error = %e, "task failed");
            root = Some(e);
        }
        if first {
            let cancelling = shared.state.lock().map(|s| s.status == JobStatus::Cancelling).unwrap_or(false);
            if !cancelling {
                shared.set_status(JobStatus::Failing);
            }
            shared.cancel.cancel();
        }
    }
    conclude(&shared, threads, root);
}

/// Whether task failure `e` explains the job's failure better than `root`, the failure kept so
/// far: a closed channel or a cancellation is a consequence of another task stopping, never the
/// cause.
fn explains_better(root: Option<&Error>, e: &Error) -> bool {
    match (root, e) {
        (None, _) => true,
        (Some(Error::ChannelClosed(_) | Error::Cancelled(_)), Error::ChannelClosed(_) | Error::Cancelled(_)) => false,
        (Some(Error::ChannelClosed(_) | Error::Cancelled(_)), _) => true,
        _ => false,
    }
}

/// Once every task ended: joins their threads, closes what the job opened, and records its end
/// (with `root`, the failure that explains it, if any).
fn conclude(shared: &JobShared, threads: Vec<std::thread::JoinHandle<()>>, root: Option<Error>) {
    for h in threads {
        let _ = h.join();
    }
    if let Some(n) = &shared.network {
        n.close();
    }
    if let Some(c) = &shared.checkpoints {
        c.close();
    }
    if let Ok(mut c) = shared.coordinator.lock()
        && let Some(c) = c.as_mut()
    {
        c.abort("the job ended");
    }
    let cancelled_by_user = shared.state.lock().map(|s| s.status == JobStatus::Cancelling).unwrap_or(false);
    let final_status = match (&root, cancelled_by_user) {
        (_, true) => JobStatus::Canceled,
        (Some(_), false) => JobStatus::Failed,
        (None, false) => JobStatus::Finished,
    };
    if let Ok(mut s) = shared.state.lock() {
        s.result = Some(JobResult {
            job_id: shared.job_id,
            job_name: shared.job_name.clone(),
            status: final_status,
            net_runtime: shared.started.elapsed(),
            accumulators: shared.accumulators.snapshot(),
            counts: shared.counts(),
        });
        s.error = root;
        s.status = final_status;
    }
    // The part's metrics leave the registry; its counts stay for the result.
    shared.metrics.close();
    info!(job_id = %shared.job_id, status = %final_status, "job reached a terminal status");
    shared.changed.notify_all();
}

/// One step of the embedded cluster's checkpoint coordination: an event from the tasks, if any,
/// then whatever is due.
fn coordinate(shared: &JobShared, event: Option<PartEvent>, sources_ended: bool) {
    let (Some(part), Ok(mut guard)) = (&shared.checkpoints, shared.coordinator.lock()) else { return };
    let Some(c) = guard.as_mut() else { return };
    let now_ms = crate::exchange::now_millis();
    let mut commands = Vec::new();
    match event {
        Some(PartEvent::Ack(ack)) => commands.extend(c.ack(ack, now_ms)),
        Some(PartEvent::Decline { id, reason }) => c.decline(id, reason),
        Some(PartEvent::SourceEnded) | None => {}
    }
    if sources_ended {
        c.core.request_final();
    }
    // As a JobManager does, trigger nothing while a task still restores its state: it would be
    // counted in the checkpoint's duration, and an acknowledgement could not come before it ends.
    if shared.initializing.load(Ordering::SeqCst) == 0 {
        commands.extend(c.poll(Instant::now(), now_ms));
    }
    for cmd in commands {
        match cmd {
            Command::Trigger { id, last, drain } => part.trigger(id, last, drain),
            Command::Complete { id } => part.complete(id),
        }
    }
}

/// The number of tasks (chains times parallelism) of a job.
pub fn task_count(plan: &weir_core::Plan) -> u32 {
    let heads = plan.chain_heads();
    plan.vertices.iter().zip(&heads).filter(|(v, h)| v.id == **h).map(|(v, _)| v.parallelism).sum()
}

fn run_task(graph: &StreamGraph, shared: &JobShared, mut spec: TaskSpec) -> Result<()> {
    let current = CurrentOperator::default();
    let head = spec.head;
    let subtask = spec.subtask;
    let span =
        tracing::debug_span!("task", job_id = %shared.job_id, vertex = head.0, subtask, attempt = shared.attempt);
    let _enter = span.enter();
    let checkpoint = match &shared.checkpoints {
        Some(part) => TaskCheckpoint::new(part.clone(), head.0, subtask),
        None => TaskCheckpoint::default(),
    };
    let mut initializing = Initializing { shared, since: Some(Instant::now()) };
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<()> {
        let mut body = build_task(graph, shared, &mut spec, &current, &checkpoint)?;
        initializing.done();
        body.run()
    }));
    drop(initializing);
    let blamed = current.get().unwrap_or(head);
    let vertex = &graph.nodes[blamed.0 as usize].vertex;
    let task_error = |message: String, blame: Blame, retryable: bool, damaged: bool| Error::Task {
        operator: vertex.name.clone(),
        subtask,
        parallelism: vertex.parallelism,
        message,
        blame,
        retryable,
        damaged,
    };
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e @ (Error::Task { .. } | Error::ChannelClosed(_) | Error::Cancelled(_)))) => Err(e),
        Ok(Err(e)) => Err(task_error(e.to_string(), e.blame(), e.is_retryable(), e.is_damaged())),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            Err(task_error(format!("user function panicked: {msg}"), Blame::User, false, false))
        }
    }
}

/// A task that has not yet built its operators; counted in [`JobHandle::initializing`] until it
/// has, or until it fails trying.
struct Initializing<'a> {
    shared: &'a JobShared,
    since: Option<Instant>,
}

impl Initializing<'_> {
    fn done(&mut self) {
        if let Some(since) = self.since.take() {
            debug!(took_ms = since.elapsed().as_millis() as u64, "task initialized; running");
            self.shared.task_initialized();
        }
    }
}

impl Drop for Initializing<'_> {
    fn drop(&mut self) {
        if self.since.take().is_some() {
            self.shared.task_initialized();
        }
    }
}

fn env_for(
    graph: &StreamGraph,
    shared: &JobShared,
    head: VertexId,
    v: VertexId,
    subtask: u32,
    current: &CurrentOperator,
    checkpoint: &TaskCheckpoint,
) -> Result<TaskEnv> {
    let vertex = &graph.nodes[v.0 as usize].vertex;
    let uid = vertex.state_uid();
    let metrics = shared.operator_metrics(head, v, subtask);
    let (operator_state, restored_keyed, restored_raw) =
        match checkpoint.restored(&uid, vertex.parallelism, vertex.max_parallelism)? {
            Some(r) => (OperatorStateStore::restored(r.lists), r.keyed, r.raw),
            None => (OperatorStateStore::default(), Vec::new(), Default::default()),
        };
    Ok(TaskEnv {
        op: OperatorContext {
            job_id: shared.job_id,
            job_name: shared.job_name.clone(),
            vertex: v,
            operator_name: vertex.name.clone(),
            subtask,
            parallelism: vertex.parallelism,
            max_parallelism: vertex.max_parallelism,
            attempt: shared.attempt,
            batch_size: graph.config.batch_size,
            tick: graph.config.tick(),
            operator_state,
            uid,
            cancel: shared.cancel.clone(),
            metrics: metrics.group().clone(),
        },
        metrics,
        io: shared.task_io(head, subtask),
        current: current.clone(),
        accumulators: shared.accumulators.clone(),
        checkpoint: checkpoint.clone(),
        restored_keyed,
        restored_raw,
        state_backend: graph.config.state_backend.clone(),
    })
}

/// Builds the outputs of vertex `v`: its main output and its side outputs, each feeding the
/// chained successors and the exchanges of its edges, fanned out.
fn build_output(
    graph: &StreamGraph,
    shared: &JobShared,
    spec: &mut TaskSpec,
    v: VertexId,
    current: &CurrentOperator,
    checkpoint: &TaskCheckpoint,
) -> Result<(AnyOutput, SideOutputs)> {
    let plan = graph.plan();
    let node = &graph.nodes[v.0 as usize];
    let mut main = Vec::new();
    let mut sides: HashMap<String, Vec<AnyOutput>> = HashMap::new();
    for (ei, e) in graph.edges.iter().enumerate().filter(|(_, e)| e.plan.source == v) {
        let out = if plan.is_chained(&e.plan) {
            build_operator(graph, shared, spec, e.plan.target, current, checkpoint)?
        } else {
            let senders = spec
                .senders
                .remove(&ei)
                .ok_or_else(|| Error::internal(format!("no channels for edge {ei} in subtask {}", spec.subtask)))?;
            let target = &graph.nodes[e.plan.target.0 as usize].vertex;
            let shape = ExchangeShape {
                strategy: e.plan.ship_strategy,
                max_parallelism: target.max_parallelism,
                subtask: spec.subtask,
                network_fill: graph.config.batch_size * NETWORK_FILL_BATCHES,
                io: shared.task_io(spec.head, spec.subtask),
            };
            graph.edge_ops(e)?.exchange(shape, senders, e.key_hash.as_ref(), shared.cancel.clone())?
        };
        match &e.plan.side_output {
            None => main.push(out),
            Some(tag) => sides.entry(tag.clone()).or_default().push(out),
        }
    }
    let mut side_outputs = SideOutputs::default();
    for (tag, outs) in sides {
        let edge = graph
            .edges
            .iter()
            .find(|e| e.plan.source == v && e.plan.side_output.as_deref() == Some(tag.as_str()))
            .ok_or_else(|| Error::internal(format!("side output '{tag}' lost its edge")))?;
        let ops = graph.edge_ops(edge)?.clone();
        side_outputs.0.insert(tag, (ops.fanout(outs)?, ops));
    }
    let counted =
        node.output.counted(shared.operator_metrics(spec.head, v, spec.subtask), node.output.fanout(main)?)?;
    Ok((counted, side_outputs))
}

/// Builds an instance of operator `v` (and everything chained after it); returns its input.
fn build_operator(
    graph: &StreamGraph,
    shared: &JobShared,
    spec: &mut TaskSpec,
    v: VertexId,
    current: &CurrentOperator,
    checkpoint: &TaskCheckpoint,
) -> Result<AnyOutput> {
    let (out, mut sides) = build_output(graph, shared, spec, v, current, checkpoint)?;
    let env = env_for(graph, shared, spec.head, v, spec.subtask, current, checkpoint)?;
    match &graph.nodes[v.0 as usize].kind {
        NodeKind::Operator { factory, input } => {
            let prev = current.enter(v);
            let built = factory(&env, out, &mut sides);
            current.leave(prev);
            input.traced(&env, built?)
        }
        NodeKind::Source(_) => Err(Error::internal(format!("source {v} cannot have an input"))),
    }
}

fn build_task(
    graph: &StreamGraph,
    shared: &JobShared,
    spec: &mut TaskSpec,
    current: &CurrentOperator,
    checkpoint: &TaskCheckpoint,
) -> Result<Box<dyn TaskBody>> {
    let head = spec.head;
    match &graph.nodes[head.0 as usize].kind {
        NodeKind::Source(factory) => {
            let (out, _sides) = build_output(graph, shared, spec, head, current, checkpoint)?;
            let env = env_for(graph, shared, head, head, spec.subtask, current, checkpoint)?;
            let prev = current.enter(head);
            let body = factory(&env, out);
            current.leave(prev);
            body
        }
        NodeKind::Operator { input, .. } => {
            let input = input.clone();
            let head_input = build_operator(graph, shared, spec, head, current, checkpoint)?;
            let receivers = std::mem::take(&mut spec.receivers);
            input.input_task(
                receivers,
                head_input,
                shared.cancel.clone(),
                Some(graph.config.tick()),
                checkpoint.clone(),
                shared.task_io(head, spec.subtask),
            )
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n).collect() }
}
