//! The ResourceManager: the JobManager's loop that owns the TaskManagers and their slots, fed by
//! one inbox of [`ResourceEvent`]s. It registers TaskManagers (and notes their heartbeats), loses
//! the ones whose connection drops or whose heartbeats stop (telling the JobMasters of the jobs
//! on them), answers the JobMasters' slot requests oldest first (see `choose_slots`), fails a
//! request that waited longer than `slot.request.timeout`, and, with a resource provider, starts
//! the TaskManagers that waiting requests lack and stops the ones that sat idle for
//! `resourcemanager.taskmanager-timeout`. After every event and tick it publishes the TaskManagers
//! for REST to read.
//!
//! Starting and stopping TaskManagers (a process, a container) happens on tasks of their own,
//! which report back a failure as an event: the loop never waits for a provider.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};
use weir_core::JobId;
use weir_core::protocol::ToTaskManager;

use crate::cluster::Cluster;
use crate::events::{Grant, JobEvent, ResourceEvent};
use crate::state::TaskManager;

/// A slot request not answered yet.
struct Request {
    job: JobId,
    holder: u64,
    slots: u32,
    since: Instant,
    master: mpsc::UnboundedSender<JobEvent>,
}

/// Slots a job holds, and its JobMaster.
struct Held {
    holder: u64,
    on: Vec<(String, u32)>,
    master: mpsc::UnboundedSender<JobEvent>,
}

/// What the ResourceManager owns.
struct ResourceManager {
    cluster: Arc<Cluster>,
    taskmanagers: BTreeMap<String, TaskManager>,
    /// TaskManagers the resource provider is starting, with their slots and start time.
    pending: BTreeMap<String, (u32, Instant)>,
    /// TaskManagers the provider started so far (for their ids).
    provided_count: u64,
    requests: VecDeque<Request>,
    held: BTreeMap<JobId, Held>,
}

/// The ResourceManager's loop: runs until shutdown.
pub(crate) async fn run(
    cluster: Arc<Cluster>,
    mut inbox: mpsc::UnboundedReceiver<ResourceEvent>,
    published: watch::Sender<Arc<BTreeMap<String, TaskManager>>>,
) {
    let every = Duration::from_millis((cluster.config.heartbeat_interval_ms / 2).clamp(10, 1000));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rm = ResourceManager::new(cluster);
    loop {
        tokio::select! {
            event = inbox.recv() => match event {
                Some(ResourceEvent::Shutdown) | None => {
                    for tm in rm.taskmanagers.values() {
                        let _ = tm.tx.send(ToTaskManager::Shutdown);
                    }
                    return;
                }
                Some(event) => rm.on_event(event),
            },
            _ = ticker.tick() => rm.tick(),
        }
        rm.place();
        rm.provide();
        published.send_replace(Arc::new(rm.taskmanagers.clone()));
    }
}

impl ResourceManager {
    /// One that knows no TaskManager yet.
    fn new(cluster: Arc<Cluster>) -> ResourceManager {
        ResourceManager {
            cluster,
            taskmanagers: BTreeMap::new(),
            pending: BTreeMap::new(),
            provided_count: 0,
            requests: VecDeque::new(),
            held: BTreeMap::new(),
        }
    }

    fn on_event(&mut self, event: ResourceEvent) {
        match event {
            ResourceEvent::Register { taskmanager, reply } => {
                let id = taskmanager.id.clone();
                if self.taskmanagers.contains_key(&id) {
                    let _ = reply.send(Err(format!(
                        "a TaskManager with id {id} is already registered; give each one its own id"
                    )));
                    return;
                }
                let mut tm = *taskmanager;
                tm.provided = self.pending.remove(&id).is_some();
                self.taskmanagers.insert(id, tm);
                let _ = reply.send(Ok(()));
            }
            ResourceEvent::Heartbeat { taskmanager, session, metrics } => {
                // A heartbeat of a registration that was lost (or replaced) is stale.
                if let Some(t) = self.taskmanagers.get_mut(&taskmanager).filter(|t| t.session == session) {
                    t.last_heartbeat = Instant::now();
                    t.metrics = Arc::new(metrics);
                }
            }
            ResourceEvent::Disconnected { taskmanager, session, why } => self.lose(&taskmanager, Some(session), &why),
            ResourceEvent::RequestSlots { job, holder, slots, master } => {
                self.requests.push_back(Request { job, holder, slots, since: Instant::now(), master });
            }
            ResourceEvent::Release { job, holder } => {
                self.requests.retain(|r| !(r.job == job && r.holder == holder));
                if self.held.get(&job).is_some_and(|h| h.holder == holder)
                    && let Some(held) = self.held.remove(&job)
                {
                    for (tm, n) in held.on {
                        if let Some(t) = self.taskmanagers.get_mut(&tm) {
                            t.used = t.used.saturating_sub(n);
                            t.jobs.remove(&job);
                            if t.used == 0 {
                                t.idle_since = Some(Instant::now());
                            }
                        }
                    }
                }
            }
            ResourceEvent::StartFailed { taskmanager, error } => {
                // Nothing will come: the waiting jobs fail now, with why.
                self.pending.remove(&taskmanager);
                for r in std::mem::take(&mut self.requests) {
                    let message = format!("no TaskManager for this job: {error}");
                    let _ = r.master.send(JobEvent::NoSlots { message });
                }
            }
            ResourceEvent::Reset => {
                // Dropping their senders closes their connections once queued messages went out.
                self.taskmanagers.clear();
                self.pending.clear();
                self.requests.clear();
                self.held.clear();
            }
            ResourceEvent::Shutdown => {}
        }
    }

    /// A TaskManager is gone: the JobMasters of its jobs are told, and its slots disappear. With
    /// `session`, only if that registration is still the current one.
    fn lose(&mut self, id: &str, session: Option<u64>, why: &str) {
        match self.taskmanagers.get(id) {
            Some(t) if session.is_none_or(|x| x == t.session) => {}
            _ => return,
        }
        let Some(tm) = self.taskmanagers.remove(id) else { return };
        if self.cluster.is_shutting_down() {
            info!(taskmanager = id, reason = why, "TaskManager stopped with the cluster");
        } else {
            warn!(taskmanager = id, host = %tm.host, reason = why, "TaskManager lost");
        }
        // Its slots are gone with it: a release that comes later must not free the slots of a
        // TaskManager that registers again under the same id.
        for held in self.held.values_mut() {
            held.on.retain(|(t, _)| t != id);
        }
        for job in tm.jobs {
            if let Some(held) = self.held.get(&job) {
                let message = format!("TaskManager {id} ({}, pid {}) was lost: {why}", tm.host, tm.pid);
                let _ = held.master.send(JobEvent::TaskManagerLost { taskmanager: id.to_string(), message });
            }
        }
    }

    /// Tells every TaskManager this JobManager is there, loses those whose heartbeats stopped, and
    /// fails requests that waited too long.
    fn tick(&mut self) {
        for tm in self.taskmanagers.values() {
            let _ = tm.tx.send(ToTaskManager::Heartbeat);
        }
        let timeout = Duration::from_millis(self.cluster.config.heartbeat_timeout_ms);
        let silent: Vec<String> =
            self.taskmanagers.values().filter(|t| t.last_heartbeat.elapsed() > timeout).map(|t| t.id.clone()).collect();
        for id in silent {
            self.lose(&id, None, &format!("no heartbeat for {} ms (heartbeat.timeout)", timeout.as_millis()));
        }
        let slot_timeout = Duration::from_millis(self.cluster.config.slot_request_timeout_ms);
        let offered: u64 = self.taskmanagers.values().map(|t| u64::from(t.slots)).sum();
        let largest = self.taskmanagers.values().map(|t| t.slots).max().unwrap_or(0);
        let (starved, waiting) =
            std::mem::take(&mut self.requests).into_iter().partition(|r| r.since.elapsed() > slot_timeout);
        self.requests = waiting;
        for r in starved {
            let message = format!(
                "could not get {} slots within {} ms (slot.request.timeout); the largest TaskManager offers {largest} \
                 of {offered} slots in all: add TaskManagers or slots (taskmanager.numberOfTaskSlots), or lower the \
                 job's parallelism",
                r.slots,
                slot_timeout.as_millis(),
            );
            let _ = r.master.send(JobEvent::NoSlots { message });
        }
    }

    /// Answers the requests that fit, oldest first.
    fn place(&mut self) {
        let spread = self.cluster.config.spread_out_slots;
        let mut i = 0;
        while i < self.requests.len() {
            let Some(given) = choose_slots(&self.taskmanagers, self.requests[i].slots, spread) else {
                i += 1;
                continue;
            };
            let Some(r) = self.requests.remove(i) else { break };
            let mut grants = Vec::with_capacity(given.len());
            for (tm, n) in &given {
                if let Some(t) = self.taskmanagers.get_mut(tm) {
                    t.used += n;
                    t.jobs.insert(r.job);
                    t.idle_since = None;
                    grants.push(Grant {
                        taskmanager: tm.clone(),
                        slots: *n,
                        tx: t.tx.clone(),
                        data_address: t.data_address.clone(),
                    });
                }
            }
            let _ = r.master.send(JobEvent::SlotsGranted { grants });
            self.held.insert(r.job, Held { holder: r.holder, on: given, master: r.master });
        }
    }

    /// Asks the resource provider for the TaskManagers waiting requests lack, and stops the ones
    /// it started that sat idle for `resourcemanager.taskmanager-timeout`.
    fn provide(&mut self) {
        let Some(provider) = self.cluster.provider.clone() else { return };
        let per_tm = self.cluster.config.slots.max(1);
        let idle_timeout = Duration::from_millis(self.cluster.config.taskmanager_timeout_ms);
        // A TaskManager that did not register in time is not coming.
        self.pending.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(60));
        let wanted: u64 = self.requests.iter().map(|r| u64::from(r.slots)).sum();
        let free: u64 = self.taskmanagers.values().map(|t| u64::from(t.slots.saturating_sub(t.used))).sum();
        let offered: u64 = self.taskmanagers.values().map(|t| u64::from(t.slots)).sum();
        let coming: u64 = self.pending.values().map(|(n, _)| u64::from(*n)).sum();
        let starts = to_start(wanted, free + coming, offered + coming, per_tm, self.cluster.config.max_slots);
        for _ in 0..starts {
            self.provided_count += 1;
            // With high availability, TaskManagers started by an earlier leader may register here
            // too: the ids name the JobManager that started them.
            let id = match &self.cluster.ha {
                Some(ha) => format!("{}-taskmanager-{}-{}", provider.kind(), ha.me.id, self.provided_count),
                None => format!("{}-taskmanager-{}", provider.kind(), self.provided_count),
            };
            self.pending.insert(id.clone(), (per_tm, Instant::now()));
            let (provider, rpc, inbox) =
                (provider.clone(), self.cluster.rpc_address.clone(), self.cluster.resources.clone());
            tokio::spawn(async move {
                if let Err(e) = provider.start(id.clone(), per_tm, rpc).await {
                    let _ = inbox.send(ResourceEvent::StartFailed { taskmanager: id, error: e.to_string() });
                }
            });
        }
        if wanted > 0 {
            return;
        }
        let idle: Vec<String> = self
            .taskmanagers
            .values()
            .filter(|t| t.provided && t.idle_since.is_some_and(|i| i.elapsed() >= idle_timeout))
            .map(|t| t.id.clone())
            .collect();
        for id in idle {
            if let Some(t) = self.taskmanagers.remove(&id) {
                info!(taskmanager = %id, "stopping an idle TaskManager (resourcemanager.taskmanager-timeout)");
                let _ = t.tx.send(ToTaskManager::Shutdown);
                let provider = provider.clone();
                tokio::spawn(async move { provider.stop(id).await });
            }
        }
    }
}

/// How many TaskManagers of `per_tm` slots to start for `wanted` slots when `have` are free or
/// coming, and `total` are offered or coming in all: no more than `slotmanager.number-of-slots.max`
/// (`max`) allows. (A request they cannot serve times out with `slot.request.timeout`.)
fn to_start(wanted: u64, have: u64, total: u64, per_tm: u32, max: u64) -> u64 {
    let per_tm = u64::from(per_tm.max(1));
    let needed = wanted.saturating_sub(have).div_ceil(per_tm);
    needed.min(max.saturating_sub(total) / per_tm)
}

/// Which TaskManagers give a job of `slots` slots how many: one TaskManager if one has room
/// (records then never leave the process), else the fewest that do, the emptiest first; with
/// `spread`, one slot at a time round the TaskManagers with room.
fn choose_slots(tms: &BTreeMap<String, TaskManager>, slots: u32, spread: bool) -> Option<Vec<(String, u32)>> {
    let mut free: Vec<(String, u32)> =
        tms.values().filter(|t| t.slots > t.used).map(|t| (t.id.clone(), t.slots.saturating_sub(t.used))).collect();
    if free.iter().map(|(_, f)| u64::from(*f)).sum::<u64>() < u64::from(slots) {
        return None;
    }
    // Emptiest first; ids break ties so placement is reproducible.
    free.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if spread {
        let mut given: Vec<(String, u32)> = free.iter().map(|(id, _)| (id.clone(), 0)).collect();
        let mut left = slots;
        while left > 0 {
            for (i, (_, room)) in free.iter().enumerate() {
                if left > 0 && given[i].1 < *room {
                    given[i].1 += 1;
                    left -= 1;
                }
            }
        }
        given.retain(|(_, n)| *n > 0);
        return Some(given);
    }
    if let Some((id, _)) = free.first().filter(|(_, f)| *f >= slots) {
        return Some(vec![(id.clone(), slots)]);
    }
    let mut left = slots;
    let mut given = Vec::new();
    for (id, room) in free {
        if left == 0 {
            break;
        }
        let n = room.min(left);
        given.push((id, n));
        left -= n;
    }
    Some(given)
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;
    use weir_core::config::ClusterConfig;

    use super::*;
    use crate::cluster::fixture;

    fn manager(config: ClusterConfig, dir: &std::path::Path) -> ResourceManager {
        ResourceManager::new(fixture::cluster(config, dir).0)
    }

    fn register(
        rm: &mut ResourceManager,
        id: &str,
        slots: u32,
    ) -> Result<mpsc::UnboundedReceiver<ToTaskManager>, String> {
        let (tm, rx) = fixture::taskmanager(id, slots);
        let (reply, mut answer) = oneshot::channel();
        rm.on_event(ResourceEvent::Register { taskmanager: Box::new(tm), reply });
        answer.try_recv().expect("answered at once").map(|()| rx)
    }

    fn request(rm: &mut ResourceManager, job: JobId, holder: u64, slots: u32) -> mpsc::UnboundedReceiver<JobEvent> {
        let (master, events) = mpsc::unbounded_channel();
        rm.on_event(ResourceEvent::RequestSlots { job, holder, slots, master });
        rm.place();
        events
    }

    fn granted(events: &mut mpsc::UnboundedReceiver<JobEvent>) -> Option<Vec<(String, u32)>> {
        match events.try_recv() {
            Ok(JobEvent::SlotsGranted { grants }) => {
                Some(grants.into_iter().map(|g| (g.taskmanager, g.slots)).collect())
            }
            _ => None,
        }
    }

    fn used(rm: &ResourceManager) -> Vec<u32> {
        rm.taskmanagers.values().map(|t| t.used).collect()
    }

    #[test]
    fn requests_are_granted_oldest_first_where_slots_are_free_and_freed_slots_go_to_the_next() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut rm = manager(ClusterConfig::default(), dir.path());
        let _a = register(&mut rm, "a", 2).expect("registered");
        let _b = register(&mut rm, "b", 1).expect("registered");
        let (first, second) = (JobId::random(), JobId::random());
        // Three slots: the emptiest TaskManager first, then the next.
        let mut one = request(&mut rm, first, 1, 3);
        assert_eq!(granted(&mut one), Some(vec![("a".into(), 2), ("b".into(), 1)]));
        let mut two = request(&mut rm, second, 2, 1);
        assert_eq!(granted(&mut two), None, "no slot is free");
        assert_eq!(used(&rm), vec![2, 1]);
        rm.on_event(ResourceEvent::Release { job: first, holder: 1 });
        rm.place();
        assert_eq!(granted(&mut two), Some(vec![("a".into(), 1)]));
        assert_eq!(used(&rm), vec![1, 0]);
    }

    #[test]
    fn a_release_by_an_earlier_master_of_the_job_leaves_a_later_ones_slots_alone() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut rm = manager(ClusterConfig::default(), dir.path());
        let _a = register(&mut rm, "a", 2).expect("registered");
        let job = JobId::random();
        let mut earlier = request(&mut rm, job, 1, 2);
        assert!(granted(&mut earlier).is_some());
        rm.on_event(ResourceEvent::Release { job, holder: 1 });
        let mut later = request(&mut rm, job, 2, 2);
        assert!(granted(&mut later).is_some());
        // The earlier master's release arrives again (it was suspended while the later one started).
        rm.on_event(ResourceEvent::Release { job, holder: 1 });
        assert_eq!(used(&rm), vec![2], "the later master's slots stay held");
        rm.on_event(ResourceEvent::Release { job, holder: 2 });
        assert_eq!(used(&rm), vec![0]);
    }

    #[test]
    fn a_late_release_of_a_lost_taskmanagers_slots_leaves_its_successor_alone() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut rm = manager(ClusterConfig::default(), dir.path());
        let _a = register(&mut rm, "a", 2).expect("registered");
        let (first, second) = (JobId::random(), JobId::random());
        let mut one = request(&mut rm, first, 1, 2);
        assert!(granted(&mut one).is_some());
        rm.on_event(ResourceEvent::Disconnected { taskmanager: "a".into(), session: 1, why: "closed".into() });
        // It registers again under the same id, and another job takes its slots before the first
        // job's master has released its own.
        let (mut again, _conn) = fixture::taskmanager("a", 2);
        again.session = 2;
        let (reply, _) = oneshot::channel();
        rm.on_event(ResourceEvent::Register { taskmanager: Box::new(again), reply });
        let mut two = request(&mut rm, second, 2, 2);
        assert!(granted(&mut two).is_some());
        rm.on_event(ResourceEvent::Release { job: first, holder: 1 });
        assert_eq!(used(&rm), vec![2], "the second job's slots stay taken");
    }

    #[test]
    fn the_provider_starts_what_requests_lack_up_to_the_slot_maximum() {
        // 5 slots wanted, 1 free: two TaskManagers of 2 slots.
        assert_eq!(to_start(5, 1, 3, 2, u64::MAX), 2);
        // Enough free or coming: none.
        assert_eq!(to_start(4, 4, 8, 2, u64::MAX), 0);
        // At most 6 slots in all, 3 offered: one more TaskManager of 2 fits, not two.
        assert_eq!(to_start(5, 1, 3, 2, 6), 1);
        assert_eq!(to_start(5, 1, 6, 2, 6), 0);
        assert_eq!(to_start(u64::MAX, 0, u64::MAX, 1, u64::MAX), 0, "sums saturate instead of wrapping");
    }

    #[test]
    fn a_taken_id_is_refused_and_a_lost_taskmanager_is_reported_to_the_masters_of_its_jobs() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut rm = manager(ClusterConfig::default(), dir.path());
        let _a = register(&mut rm, "a", 1).expect("registered");
        let refused = register(&mut rm, "a", 1).expect_err("a second TaskManager with id a is refused");
        assert!(refused.contains("already registered"), "{refused}");
        let job = JobId::random();
        let mut master = request(&mut rm, job, 1, 1);
        assert!(granted(&mut master).is_some());
        // A stale connection's end (an earlier registration) loses nothing.
        rm.on_event(ResourceEvent::Disconnected { taskmanager: "a".into(), session: 7, why: "closed".into() });
        assert!(master.try_recv().is_err());
        rm.on_event(ResourceEvent::Disconnected { taskmanager: "a".into(), session: 1, why: "closed".into() });
        match master.try_recv() {
            Ok(JobEvent::TaskManagerLost { taskmanager, message }) => {
                assert_eq!(taskmanager, "a");
                assert!(message.contains("closed"), "{message}");
            }
            other => panic!("expected the loss of a, got {other:?}"),
        }
        assert!(rm.taskmanagers.is_empty());
    }

    #[test]
    fn a_request_that_waits_past_the_slot_request_timeout_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = ClusterConfig { slot_request_timeout_ms: 0, ..ClusterConfig::default() };
        let mut rm = manager(config, dir.path());
        let _a = register(&mut rm, "a", 1).expect("registered");
        let mut master = request(&mut rm, JobId::random(), 1, 2);
        assert!(granted(&mut master).is_none());
        std::thread::sleep(Duration::from_millis(2));
        rm.tick();
        match master.try_recv() {
            Ok(JobEvent::NoSlots { message }) => {
                assert!(message.contains("slot.request.timeout"), "{message}");
                assert!(message.contains("taskmanager.numberOfTaskSlots"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(rm.requests.is_empty());
    }
}
