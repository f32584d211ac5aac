//! Leader election on ZooKeeper: latches, the lowest sequence leads, a keeper task that reports
//! the loss of a leadership in time (see the parent module's documentation).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, info, warn};
use weir_core::{Error, Result};
use zookeeper_client as zk;

use super::{Held, Inner, LATCH, MAX_PAUSE, RACE_ATTEMPTS, RECHECK, describe_state, lock};
use crate::{BoxFuture, Leader, LeaderInfo, Leadership};

impl Inner {
    pub(super) async fn campaign(self: &Arc<Self>, me: LeaderInfo) -> Result<Leadership> {
        let data =
            serde_json::to_vec(&me).map_err(|e| Error::internal(format!("cannot encode the leader info: {e}")))?;
        let mut pause = Duration::from_millis(100);
        let mut failures = 0u32;
        loop {
            match self.try_campaign(&me, &data).await {
                Ok(leadership) => {
                    info!(cluster = %self.cluster_id, epoch = leadership.epoch, id = %me.id, service = %self.describe(), "elected leader");
                    return Ok(leadership);
                }
                Err(e) if e.is_retryable() => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        warn!(cluster = %self.cluster_id, id = %me.id, error = %e, failures, "cannot campaign for leadership; trying again");
                    } else {
                        debug!(cluster = %self.cluster_id, id = %me.id, error = %e, "campaign attempt failed");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One attempt: create a latch and wait until it is the lowest.
    pub(super) async fn try_campaign(self: &Arc<Self>, me: &LeaderInfo, data: &[u8]) -> Result<Leadership> {
        let client = self.client().await?;
        if let Some(previous) = lock(&self.held).take() {
            previous.lost.send_replace(true);
            info!(cluster = %self.cluster_id, epoch = previous.epoch, "a new campaign ends the previous leadership");
        }
        let dir = self.leader_dir();
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        self.bounded(client.mkdir(&dir, &persistent))
            .await
            .map_err(|e| self.failure(format!("cannot create the znode {dir}"), &e))?;
        // Latches of this object left over from an earlier campaign whose session lives on (a
        // leadership lost to a disconnection, or a creation whose answer was lost).
        let mine = format!("{LATCH}{}-", self.token);
        let children =
            self.bounded(client.list_children(&dir)).await.map_err(|e| self.failure("cannot list the latches", &e))?;
        for stale in children.iter().filter(|c| c.starts_with(&mine)) {
            match self.bounded(client.delete(&format!("{dir}/{stale}"), None)).await {
                Ok(()) | Err(zk::Error::NoNode) => {
                    debug!(cluster = %self.cluster_id, latch = %stale, "deleted a stale latch")
                }
                Err(e) => return Err(self.failure("cannot delete a stale latch", &e)),
            }
        }
        let prefix = format!("{dir}/{mine}");
        let ephemeral = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let (_, sequence) = self
            .bounded(client.create(&prefix, data, &ephemeral))
            .await
            .map_err(|e| self.failure("cannot create the leader latch", &e))?;
        let name = format!("{mine}{sequence}");
        let path = format!("{dir}/{name}");
        // Deletes the latch if this attempt ends without leading (an error, or the caller dropped
        // the campaign), so that it cannot block the other contenders.
        let mut pending =
            PendingLatch { inner: Arc::downgrade(self), path: path.clone(), session: client.session_id(), armed: true };
        debug!(cluster = %self.cluster_id, id = %me.id, latch = %name, "created the leader latch");
        let mut announced = false;
        loop {
            let children = self
                .bounded(client.list_children(&dir))
                .await
                .map_err(|e| self.failure("cannot list the latches", &e))?;
            let mut latches: Vec<(i64, &String)> =
                children.iter().filter_map(|c| latch_sequence(c).map(|s| (s, c))).collect();
            latches.sort();
            let Some(position) = latches.iter().position(|(_, c)| **c == name) else {
                return Err(Error::Coordination {
                    context: "the leader latch vanished while campaigning".into(),
                    service: self.describe(),
                    message: "its session expired or somebody deleted it; weir creates a new one".into(),
                    retryable: true,
                });
            };
            if position == 0 {
                let leadership = self.lead(&client, &path).await?;
                pending.armed = false;
                return Ok(leadership);
            }
            let before = format!("{dir}/{}", latches[position - 1].1);
            let (stat, watcher) = self
                .bounded(client.check_and_watch_stat(&before))
                .await
                .map_err(|e| self.failure("cannot watch the latch before this contender's", &e))?;
            if stat.is_none() {
                continue;
            }
            if !announced {
                info!(cluster = %self.cluster_id, id = %me.id, waiting_for = %before, "standing by for leadership");
                announced = true;
            }
            tokio::select! {
                _ = watcher.changed() => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
            if client.state().is_terminated() {
                return Err(self.failure("the session ended while standing by", &zk::Error::SessionExpired));
            }
        }
    }

    /// Takes the leadership of the latch at `path`, the lowest: reads its epoch and starts the
    /// keeper that reports its loss.
    pub(super) async fn lead(self: &Arc<Self>, client: &zk::Client, path: &str) -> Result<Leadership> {
        // Before the request, so that every later change of the session is seen.
        let state = client.state_watcher();
        if client.state() != zk::SessionState::SyncConnected {
            return Err(self.failure("the session is interrupted", &zk::Error::ConnectionLoss));
        }
        let sent = Instant::now();
        let (stat, watcher) = self
            .bounded(client.check_and_watch_stat(path))
            .await
            .map_err(|e| self.failure("cannot read the leader latch", &e))?;
        let Some(stat) = stat else {
            return Err(Error::Coordination {
                context: "the leader latch vanished while taking the leadership".into(),
                service: self.describe(),
                message: "its session expired or somebody deleted it; weir creates a new one".into(),
                retryable: true,
            });
        };
        if client.state() != zk::SessionState::SyncConnected {
            return Err(
                self.failure("the session was interrupted while taking the leadership", &zk::Error::ConnectionLoss)
            );
        }
        let epoch = stat.czxid as u64;
        let (tx, rx) = watch::channel(false);
        let held = Held {
            epoch,
            path: path.to_string(),
            version: stat.version,
            session: client.session_id(),
            lost: Arc::new(tx),
        };
        *lock(&self.held) = Some(held.clone());
        let timeout = self.effective_timeout(client);
        tokio::spawn(keep(Arc::downgrade(self), held, state, watcher, sent, timeout));
        Ok(Leadership::new(epoch, rx))
    }

    pub(super) async fn resign(&self, epoch: u64) -> Result<()> {
        let held = {
            let mut held = lock(&self.held);
            if held.as_ref().is_some_and(|h| h.epoch == epoch) { held.take() } else { None }
        };
        let Some(held) = held else { return Ok(()) };
        // The loss first, so that this process stops acting as the leader before a standby does.
        held.lost.send_replace(true);
        info!(cluster = %self.cluster_id, epoch, "resigning the leadership");
        let Some(client) = self.live_client().filter(|c| c.session_id() == held.session) else {
            // The session ended, and its latch with it.
            return Ok(());
        };
        match self.bounded(client.delete(&held.path, None)).await {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            // The keeper goes on trying while the session lives.
            Err(e) => Err(self.failure("cannot delete the leader latch to resign", &e)),
        }
    }

    /// Deletes a latch of `session` (after a loss), trying again while the session lives.
    pub(super) async fn release(weak: &Weak<Inner>, path: &str, session: zk::SessionId) {
        let mut pause = Duration::from_millis(100);
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let Some(client) = inner.live_client().filter(|c| c.session_id() == session) else { return };
            match inner.bounded(client.delete(path, None)).await {
                Ok(()) | Err(zk::Error::NoNode) => {
                    debug!(cluster = %inner.cluster_id, latch = %path, "deleted the latch of a lost leadership");
                    return;
                }
                Err(zk::Error::SessionExpired | zk::Error::ClientClosed) => return,
                Err(e) => debug!(cluster = %inner.cluster_id, latch = %path, error = %e, "cannot delete a latch yet"),
            }
            drop((client, inner));
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    pub(super) async fn leader(&self) -> Result<Option<Leader>> {
        let client = self.client().await?;
        let dir = self.leader_dir();
        for _ in 0..RACE_ATTEMPTS {
            let children = match self.bounded(client.list_children(&dir)).await {
                Ok(children) => children,
                Err(zk::Error::NoNode) => return Ok(None),
                Err(e) => return Err(self.failure("cannot list the latches", &e)),
            };
            let Some((_, lowest)) = children.iter().filter_map(|c| latch_sequence(c).map(|s| (s, c))).min() else {
                return Ok(None);
            };
            let path = format!("{dir}/{lowest}");
            match self.bounded(client.get_data(&path)).await {
                Ok((data, stat)) => {
                    let info: LeaderInfo = serde_json::from_slice(&data).map_err(|e| Error::Coordination {
                        context: "cannot read the leader's address".into(),
                        service: self.describe(),
                        message: format!("{e}; another program writes {path}"),
                        retryable: false,
                    })?;
                    return Ok(Some(Leader { info, epoch: stat.czxid as u64 }));
                }
                // It resigned or expired between the listing and the read: look again.
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(self.failure("cannot read the leader latch", &e)),
            }
        }
        Err(Error::Coordination {
            context: "cannot read the leader".into(),
            service: self.describe(),
            message: "the leadership kept changing while it was read; try again".into(),
            retryable: true,
        })
    }
}

/// Reports the loss of a leadership: see the module's documentation.
async fn keep(
    weak: Weak<Inner>,
    held: Held,
    mut state: zk::StateWatcher,
    watcher: zk::OneshotWatcher,
    sent: Instant,
    timeout: Duration,
) {
    let epoch = held.epoch;
    let deadline_after = timeout / 2;
    let probe_every = timeout / 6;
    let mut tick = tokio::time::interval((timeout / 20).max(Duration::from_millis(5)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resigned = held.lost.subscribe();
    let mut node: BoxFuture<'static, zk::WatchedEvent> = Box::pin(watcher.changed());
    type Probe = BoxFuture<'static, (Instant, Result<Option<zk::Stat>, zk::Error>)>;
    let mut probe: Option<Probe> = None;
    let mut last_ok = sent;
    let mut last_probe = sent;
    let reason: Option<String> = loop {
        if *resigned.borrow_and_update() {
            break None;
        }
        tokio::select! {
            // The session was connected when the leadership was taken: any change since is an
            // interruption, even one already over (a reconnection to the same session).
            s = state.changed() => break Some(describe_state(s)),
            event = &mut node => {
                match event.event_type {
                    zk::EventType::NodeDeleted => break Some("its latch znode was deleted".into()),
                    zk::EventType::Session if event.session_state != zk::SessionState::SyncConnected => {
                        break Some(describe_state(event.session_state));
                    }
                    // Anything else (data changed): the probes go on watching the latch.
                    _ => node = Box::pin(std::future::pending()),
                }
            }
            changed = resigned.changed() => {
                if changed.is_err() || *resigned.borrow() {
                    break None;
                }
            }
            (started, answer) = async { match probe.as_mut() { Some(p) => p.await, None => std::future::pending().await } } => {
                probe = None;
                match answer {
                    Ok(Some(_)) => last_ok = last_ok.max(started),
                    Ok(None) => break Some("its latch znode is gone".into()),
                    Err(e) => break Some(format!("ZooKeeper did not answer: {e}")),
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if now.duration_since(last_ok) >= deadline_after {
                    break Some(format!(
                        "ZooKeeper did not answer for {} ms (session timeout {} ms)",
                        now.duration_since(last_ok).as_millis(),
                        timeout.as_millis()
                    ));
                }
                if probe.is_none() && now.duration_since(last_probe) >= probe_every {
                    let Some(inner) = weak.upgrade() else { break Some("the ZooKeeper client was dropped".into()) };
                    let Some(client) = inner.live_client().filter(|c| c.session_id() == held.session) else {
                        break Some("its session ended".into());
                    };
                    last_probe = now;
                    let request = client.check_stat(&held.path);
                    probe = Some(Box::pin(async move { (now, request.await) }));
                }
            }
        }
    };
    drop(probe);
    let was_lost = held.lost.send_replace(true);
    let Some(inner) = weak.upgrade() else { return };
    if let Some(reason) = reason.as_deref()
        && !was_lost
    {
        warn!(cluster = %inner.cluster_id, epoch, reason, "lost the leadership");
    }
    {
        let mut current = lock(&inner.held);
        if current.as_ref().is_some_and(|h| h.epoch == epoch) {
            *current = None;
        }
    }
    drop(inner);
    Inner::release(&weak, &held.path, held.session).await;
}

/// A latch created by a campaign attempt that does not lead yet; deleted on drop while armed.
struct PendingLatch {
    inner: Weak<Inner>,
    path: String,
    session: zk::SessionId,
    armed: bool,
}

impl Drop for PendingLatch {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (inner, path, session) = (self.inner.clone(), std::mem::take(&mut self.path), self.session);
        runtime.spawn(async move { Inner::release(&inner, &path, session).await });
    }
}

/// The sequence of a latch znode's name (`latch-TOKEN-0000000042`), if it is one.
pub(super) fn latch_sequence(name: &str) -> Option<i64> {
    name.strip_prefix(LATCH)?.rsplit('-').next()?.parse().ok()
}
