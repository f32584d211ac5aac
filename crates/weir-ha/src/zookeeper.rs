//! The ZooKeeper implementation of [`HaServices`], on a pure-Rust asynchronous client of
//! ZooKeeper's native protocol (`zookeeper-client`).
//!
//! Layout under `{high-availability.zookeeper.path.root}/{cluster-id}/` (persistent znodes,
//! created as needed):
//!
//! - `leader/latch-{token}-{sequence}`: one *ephemeral sequential* znode per contender, holding its
//!   [`LeaderInfo`] as JSON (the token identifies the [`ZooKeeper`] object that created it). The
//!   contender with the lowest sequence leads; the others each watch the latch just before theirs
//!   and look again when it goes. A leader's epoch is the creation zxid (`czxid`) of its latch:
//!   zxids grow with every transaction of the ensemble, so a later election has a larger epoch.
//! - `kv/...`: the stores' keys, one znode per key (`jobgraphs/JOB` is `kv/jobgraphs/JOB`).
//!
//! **Fencing.** Every write a leader makes ([`HaServices::put`], [`HaServices::delete`]) is a
//! ZooKeeper multi-op transaction whose first operation checks the version of the leader's own
//! latch znode: the transaction is applied atomically only while that znode exists, that is while
//! the session that created it lives and the leader has not resigned, and since no znode with a
//! lower sequence can appear later, while it still leads. A deposed leader's write is refused as
//! a whole ([`Error::NotLeader`]).
//!
//! **Loss.** ZooKeeper deletes the latch of a session it expires, which it does no earlier than a
//! session timeout after it last heard from the client. The leader reports its loss well before:
//!
//! - at once when the client reports the session disconnected, expired or closed. The client
//!   declares the connection dead when nothing (not even an answer to its pings, sent every
//!   3/20 of the timeout) arrived for 2/5 of the negotiated session timeout, so a server that is
//!   stopped, or that does not answer because the network drops packets, is noticed within about
//!   0.45 of the timeout;
//! - independently of the client's own detection, a keeper task asks the server for the latch
//!   every sixth of the timeout and reports the loss if no answer arrived within half the timeout
//!   after the moment it *sent* the last request that was answered (checked every twentieth of
//!   the timeout): the server heard from the session after that moment, so it cannot have expired
//!   it yet. The loss is thus reported at most ~0.55 of the session timeout after the last contact;
//! - at once when the latch znode is deleted (a resignation, or an operator).
//!
//! After a loss the keeper deletes the latch as soon as the session is reachable again (the
//! leadership is over even if the session survived a short disconnection), and the same
//! [`ZooKeeper`] can campaign again: it opens a new session on demand when the old one expired.
//! One [`ZooKeeper`] object runs one campaign at a time; a new campaign ends the leadership the
//! object held before.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, info, warn};
use weir_core::config::HaSettings;
use weir_core::{Error, Result};
use zookeeper_client as zk;

use crate::{BoxFuture, HaServices, Leader, LeaderInfo, Leadership};

/// The name of every latch znode starts with this.
const LATCH: &str = "latch-";
/// At most this many deletions go in one fenced transaction (ZooKeeper caps a request at 1 MiB).
const DELETE_BATCH: usize = 200;
/// At most this many znodes are read in one multi-read by [`HaServices::list`].
const READ_BATCH: usize = 100;
/// A standby looks at the latches again at least this often, in case a watch event is missed.
const RECHECK: Duration = Duration::from_secs(2);
/// The longest pause between two attempts of a campaign that fails.
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// Attempts of an operation that races with concurrent changes of the same znodes.
const RACE_ATTEMPTS: usize = 5;

/// ZooKeeper as the coordination service.
pub struct ZooKeeper {
    inner: Arc<Inner>,
}

struct Inner {
    /// `host:port,...` as given to the client.
    quorum: String,
    cluster_id: String,
    /// `{root}/{cluster}`, without a trailing `/`.
    base: String,
    /// The session timeout asked for.
    session_timeout: Duration,
    /// Identifies this object's latch znodes.
    token: String,
    /// The current session; replaced on demand once it expired or was closed.
    client: Mutex<Option<zk::Client>>,
    /// Held while a new session is being opened, so that only one is.
    connecting: tokio::sync::Mutex<()>,
    /// The leadership this object holds, if any.
    held: Mutex<Option<Held>>,
}

/// A leadership held by this process.
#[derive(Clone)]
struct Held {
    epoch: u64,
    /// The latch znode.
    path: String,
    /// Its version (the fence checks it).
    version: i32,
    /// The session that created it.
    session: zk::SessionId,
    lost: Arc<watch::Sender<bool>>,
}

impl ZooKeeper {
    /// Connects to the quorum the settings name, opening a session, and creates the cluster's
    /// znodes. Fails (rather than waiting forever) when no server answers within the session
    /// timeout.
    pub async fn connect(settings: &HaSettings) -> Result<ZooKeeper> {
        let quorum = settings
            .zookeeper_quorum
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(",");
        if quorum.is_empty() {
            return Err(Error::Config(
                "high-availability.zookeeper.quorum names no server: give host:port of the ZooKeeper servers, \
                 comma-separated"
                    .into(),
            ));
        }
        let root = settings.zookeeper_root.trim();
        if !root.starts_with('/') {
            return Err(Error::Config(format!(
                "high-availability.zookeeper.path.root is '{root}': it must be an absolute znode path such as /weir"
            )));
        }
        let base = format!("{}/{}", root.trim_end_matches('/'), settings.cluster_id.trim().trim_matches('/'));
        if let Err(why) = check_relative(&base[1..]) {
            return Err(Error::Config(format!(
                "high-availability.zookeeper.path.root and high-availability.cluster-id make the znode path '{base}', \
                 which ZooKeeper does not accept: {why}"
            )));
        }
        if settings.zookeeper_session_timeout_ms == 0 {
            return Err(Error::Config(
                "high-availability.zookeeper.client.session-timeout must be positive (e.g. 10000 ms)".into(),
            ));
        }
        let inner = Arc::new(Inner {
            quorum,
            cluster_id: settings.cluster_id.clone(),
            base,
            session_timeout: Duration::from_millis(settings.zookeeper_session_timeout_ms),
            token: uuid::Uuid::new_v4().simple().to_string(),
            client: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            held: Mutex::new(None),
        });
        inner.client().await?;
        Ok(ZooKeeper { inner })
    }
}

impl HaServices for ZooKeeper {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn campaign(&self, me: LeaderInfo) -> BoxFuture<'_, Result<Leadership>> {
        Box::pin(self.inner.campaign(me))
    }

    fn resign(&self, leadership: &Leadership) -> BoxFuture<'_, Result<()>> {
        let epoch = leadership.epoch;
        Box::pin(self.inner.resign(epoch))
    }

    fn leader(&self) -> BoxFuture<'_, Result<Option<Leader>>> {
        Box::pin(self.inner.leader())
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(self.inner.get(key))
    }

    fn list<'a>(&'a self, dir: &'a str) -> BoxFuture<'a, Result<Vec<(String, Vec<u8>)>>> {
        Box::pin(self.inner.list(dir))
    }

    fn put<'a>(&'a self, epoch: u64, key: &'a str, value: Vec<u8>) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.inner.put(epoch, key, value))
    }

    fn delete<'a>(&'a self, epoch: u64, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.inner.delete(epoch, key))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The session closes with the last client, and ZooKeeper deletes the latch with it: report
        // the loss first.
        if let Some(held) = lock(&self.held).take() {
            held.lost.send_replace(true);
        }
    }
}

impl Inner {
    fn describe(&self) -> String {
        format!("ZooKeeper at {}", self.quorum)
    }

    fn leader_dir(&self) -> String {
        format!("{}/leader", self.base)
    }

    fn kv_dir(&self) -> String {
        format!("{}/kv", self.base)
    }

    /// The znode of `key` (`a/b/c`); the key-value space's root for an empty key when `allow_root`.
    fn key_path(&self, key: &str, allow_root: bool) -> Result<String> {
        let key = key.trim_matches('/');
        if key.is_empty() {
            return if allow_root {
                Ok(self.kv_dir())
            } else {
                Err(Error::internal("an empty key was given to the ZooKeeper high-availability services"))
            };
        }
        check_relative(key).map_err(|why| Error::internal(format!("key '{key}' cannot be a znode path: {why}")))?;
        Ok(format!("{}/{key}", self.kv_dir()))
    }

    /// The timeout of requests: none can usefully outlive the session.
    fn request_timeout(&self) -> Duration {
        self.session_timeout
    }

    /// Runs one request, failing with [`zk::Error::Timeout`] if it takes longer than the session
    /// timeout (a request sent while the client reconnects waits for the new connection).
    async fn bounded<T>(&self, request: impl Future<Output = Result<T, zk::Error>>) -> Result<T, zk::Error> {
        tokio::time::timeout(self.request_timeout(), request).await.unwrap_or(Err(zk::Error::Timeout))
    }

    /// Runs a transaction, bounded like [`Self::bounded`].
    async fn bounded_multi(
        &self,
        commit: impl Future<Output = Result<Vec<zk::MultiWriteResult>, zk::MultiWriteError>>,
    ) -> Result<Vec<zk::MultiWriteResult>, zk::MultiWriteError> {
        tokio::time::timeout(self.request_timeout(), commit)
            .await
            .unwrap_or(Err(zk::MultiWriteError::RequestFailed { source: zk::Error::Timeout }))
    }

    /// An error of the service while doing `context`, with what the user may do about it.
    fn failure(&self, context: impl Into<String>, e: &zk::Error) -> Error {
        use zk::Error as Z;
        let (message, retryable) = match e {
            Z::ConnectionLoss | Z::Timeout | Z::NoHosts | Z::Custom(_) => (
                format!(
                    "{e}; is ZooKeeper running at {} and reachable from here? check \
                     high-availability.zookeeper.quorum",
                    self.quorum
                ),
                true,
            ),
            Z::SessionExpired | Z::SessionMoved | Z::ClientClosed => {
                (format!("{e}; weir opens a new session at the next attempt"), true)
            }
            Z::Throttled => (format!("{e}; weir tries again"), true),
            Z::NotReadOnly => (format!("{e}: the server is cut off from its quorum"), true),
            Z::NoAuth | Z::AuthFailed | Z::InvalidAcl => (
                format!(
                    "{e}; weir creates its znodes with the open ACL and needs to read and write everything under {} \
                     without authentication",
                    self.base
                ),
                false,
            ),
            Z::Unimplemented => (format!("{e}; weir needs ZooKeeper 3.5 or later"), false),
            _ => (e.to_string(), false),
        };
        Error::Coordination { context: context.into(), service: self.describe(), message, retryable }
    }

    fn not_leader(&self, epoch: u64, why: &str) -> Error {
        Error::NotLeader(format!(
            "epoch {epoch} no longer leads cluster '{}' on {} ({why}); the write was refused",
            self.cluster_id,
            self.describe()
        ))
    }

    /// The current session's client, if it has not ended.
    fn live_client(&self) -> Option<zk::Client> {
        lock(&self.client).as_ref().filter(|c| !c.state().is_terminated()).cloned()
    }

    /// The current session's client, opening a new session if there is none or it ended.
    async fn client(&self) -> Result<zk::Client> {
        if let Some(client) = self.live_client() {
            return Ok(client);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(client) = self.live_client() {
            return Ok(client);
        }
        let client = self.open_session().await?;
        *lock(&self.client) = Some(client.clone());
        Ok(client)
    }

    /// Opens a session and creates the cluster's znodes, within the session timeout.
    async fn open_session(&self) -> Result<zk::Client> {
        let connecting = zk::Client::connector().with_session_timeout(self.session_timeout).connect(&self.quorum);
        let client = match tokio::time::timeout(self.session_timeout, connecting).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(self.failure("cannot open a ZooKeeper session", &e)),
            Err(_) => {
                return Err(Error::Coordination {
                    context: "cannot open a ZooKeeper session".into(),
                    service: self.describe(),
                    message: format!(
                        "no server answered within {} ms; is ZooKeeper running at {} and reachable from here? \
                         check high-availability.zookeeper.quorum",
                        self.session_timeout.as_millis(),
                        self.quorum
                    ),
                    retryable: true,
                });
            }
        };
        info!(
            cluster = %self.cluster_id,
            service = %self.describe(),
            session = %client.session_id(),
            timeout_ms = client.session_timeout().as_millis() as u64,
            "ZooKeeper session opened"
        );
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        for dir in [self.leader_dir(), self.kv_dir()] {
            self.bounded(client.mkdir(&dir, &persistent))
                .await
                .map_err(|e| self.failure(format!("cannot create the znode {dir}"), &e))?;
        }
        Ok(client)
    }

    /// How long the session may go without contact before the server may expire it.
    fn effective_timeout(&self, client: &zk::Client) -> Duration {
        let negotiated = client.session_timeout();
        if negotiated.is_zero() { self.session_timeout } else { self.session_timeout.min(negotiated) }
    }

    async fn campaign(self: &Arc<Self>, me: LeaderInfo) -> Result<Leadership> {
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
    async fn try_campaign(self: &Arc<Self>, me: &LeaderInfo, data: &[u8]) -> Result<Leadership> {
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
    async fn lead(self: &Arc<Self>, client: &zk::Client, path: &str) -> Result<Leadership> {
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

    async fn resign(&self, epoch: u64) -> Result<()> {
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
    async fn release(weak: &Weak<Inner>, path: &str, session: zk::SessionId) {
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

    async fn leader(&self) -> Result<Option<Leader>> {
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

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.key_path(key, false)?;
        let client = self.client().await?;
        match self.bounded(client.get_data(&path)).await {
            Ok((data, _)) => Ok(Some(data)),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(self.failure(format!("cannot read {key}"), &e)),
        }
    }

    async fn list(&self, dir: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let path = self.key_path(dir, true)?;
        let client = self.client().await?;
        let mut children = match self.bounded(client.list_children(&path)).await {
            Ok(children) => children,
            Err(zk::Error::NoNode) => return Ok(Vec::new()),
            Err(e) => return Err(self.failure(format!("cannot list {dir}"), &e)),
        };
        children.sort();
        let mut out = Vec::with_capacity(children.len());
        for chunk in children.chunks(READ_BATCH) {
            let mut reader = client.new_multi_reader();
            for child in chunk {
                reader
                    .add_get_data(&format!("{path}/{child}"))
                    .map_err(|e| self.failure(format!("cannot read {dir}/{child}"), &e))?;
            }
            let results =
                self.bounded(reader.commit()).await.map_err(|e| self.failure(format!("cannot read {dir}"), &e))?;
            for (child, result) in chunk.iter().zip(results) {
                match result {
                    zk::MultiReadResult::Data { data, .. } => out.push((child.clone(), data)),
                    // Deleted since the listing.
                    zk::MultiReadResult::Error { err: zk::Error::NoNode } => {}
                    zk::MultiReadResult::Error { err } => {
                        return Err(self.failure(format!("cannot read {dir}/{child}"), &err));
                    }
                    other => {
                        return Err(Error::internal(format!("unexpected answer {other:?} to reading {dir}/{child}")));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The leadership of `epoch` and the client of its session, if this process still holds it.
    fn fence(&self, epoch: u64) -> Result<(Held, zk::Client)> {
        let held = lock(&self.held).clone();
        let Some(held) = held.filter(|h| h.epoch == epoch) else {
            return Err(self.not_leader(epoch, "this process does not hold that leadership"));
        };
        if *held.lost.borrow() {
            return Err(self.not_leader(epoch, "the leadership was lost"));
        }
        let Some(client) = self.live_client().filter(|c| c.session_id() == held.session) else {
            return Err(self.not_leader(epoch, "the session that held the leadership ended"));
        };
        Ok((held, client))
    }

    /// Maps the failure of a fenced transaction whose check is operation 0.
    fn fenced_failure(&self, epoch: u64, context: String, e: zk::MultiWriteError) -> Error {
        match e {
            zk::MultiWriteError::OperationFailed { index: 0, .. }
            | zk::MultiWriteError::RequestFailed { source: zk::Error::SessionExpired } => {
                self.not_leader(epoch, "its latch is gone")
            }
            zk::MultiWriteError::OperationFailed { source, .. } | zk::MultiWriteError::RequestFailed { source } => {
                self.failure(context, &source)
            }
        }
    }

    async fn put(&self, epoch: u64, key: &str, value: Vec<u8>) -> Result<()> {
        let path = self.key_path(key, false)?;
        let (held, client) = self.fence(epoch)?;
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        for _ in 0..RACE_ATTEMPTS {
            // Parents outside the transaction: empty persistent znodes are harmless.
            if let Some((parent, _)) = path.rsplit_once('/') {
                self.bounded(client.mkdir(parent, &persistent))
                    .await
                    .map_err(|e| self.failure(format!("cannot create the parents of {key}"), &e))?;
            }
            let exists = self
                .bounded(client.check_stat(&path))
                .await
                .map_err(|e| self.failure(format!("cannot write {key}"), &e))?
                .is_some();
            let mut writer = client.new_multi_writer();
            let added = writer.add_check_version(&held.path, held.version).and_then(|()| {
                if exists {
                    writer.add_set_data(&path, &value, None)
                } else {
                    writer.add_create(&path, &value, &persistent)
                }
            });
            added.map_err(|e| self.failure(format!("cannot write {key}"), &e))?;
            match self.bounded_multi(writer.commit()).await {
                Ok(_) => return Ok(()),
                // Created, deleted (or its parent deleted) since the check: look again.
                Err(zk::MultiWriteError::OperationFailed {
                    index: 1,
                    source: zk::Error::NodeExists | zk::Error::NoNode,
                }) => {
                    continue;
                }
                Err(e) => return Err(self.fenced_failure(epoch, format!("cannot write {key}"), e)),
            }
        }
        Err(Error::Coordination {
            context: format!("cannot write {key}"),
            service: self.describe(),
            message: "the znode kept changing while it was written; try again".into(),
            retryable: true,
        })
    }

    async fn delete(&self, epoch: u64, key: &str) -> Result<()> {
        let path = self.key_path(key, false)?;
        let (held, client) = self.fence(epoch)?;
        'attempt: for _ in 0..RACE_ATTEMPTS {
            // The subtree, each znode before its children.
            let mut nodes = Vec::new();
            let mut stack = vec![path.clone()];
            while let Some(node) = stack.pop() {
                match self.bounded(client.list_children(&node)).await {
                    Ok(children) => {
                        stack.extend(children.iter().map(|c| format!("{node}/{c}")));
                        nodes.push(node);
                    }
                    Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(self.failure(format!("cannot list {key} to delete it"), &e)),
                }
            }
            // Children before their parents.
            nodes.reverse();
            for batch in nodes.chunks(DELETE_BATCH) {
                let mut writer = client.new_multi_writer();
                writer
                    .add_check_version(&held.path, held.version)
                    .map_err(|e| self.failure(format!("cannot delete {key}"), &e))?;
                for node in batch {
                    writer.add_delete(node, None).map_err(|e| self.failure(format!("cannot delete {key}"), &e))?;
                }
                match self.bounded_multi(writer.commit()).await {
                    Ok(_) => {}
                    // Changed since the listing: list again.
                    Err(zk::MultiWriteError::OperationFailed {
                        index: 1..,
                        source: zk::Error::NoNode | zk::Error::NotEmpty,
                    }) => continue 'attempt,
                    Err(e) => return Err(self.fenced_failure(epoch, format!("cannot delete {key}"), e)),
                }
            }
            return Ok(());
        }
        Err(Error::Coordination {
            context: format!("cannot delete {key}"),
            service: self.describe(),
            message: "the znodes kept changing while they were deleted; try again".into(),
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

fn describe_state(state: zk::SessionState) -> String {
    match state {
        zk::SessionState::Disconnected => "the connection to ZooKeeper was lost (the session may expire)".into(),
        zk::SessionState::Expired => "the ZooKeeper session expired".into(),
        zk::SessionState::Closed => "the ZooKeeper client was closed".into(),
        zk::SessionState::AuthFailed => "ZooKeeper authentication failed".into(),
        zk::SessionState::ConnectedReadOnly => "the server is read-only (cut off from its quorum)".into(),
        zk::SessionState::SyncConnected => "the connection to ZooKeeper was interrupted".into(),
    }
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
fn latch_sequence(name: &str) -> Option<i64> {
    name.strip_prefix(LATCH)?.rsplit('-').next()?.parse().ok()
}

/// Checks a relative znode path (`a/b/c`): ZooKeeper refuses empty, `.` and `..` segments.
fn check_relative(path: &str) -> std::result::Result<(), String> {
    for segment in path.split('/') {
        match segment {
            "" => return Err("it has an empty segment (`//`, or a leading or trailing `/`)".into()),
            "." | ".." => return Err(format!("it has a `{segment}` segment")),
            s if s.chars().any(|c| c == '\0' || c.is_control()) => {
                return Err("it has a control character".into());
            }
            _ => {}
        }
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latch_names_give_their_sequence() {
        assert_eq!(latch_sequence("latch-0123abcd-0000000042"), Some(42));
        assert_eq!(latch_sequence("latch-0000000007"), Some(7));
        assert_eq!(latch_sequence("other-0000000007"), None);
        assert_eq!(latch_sequence("latch-abc-x"), None);
    }

    #[test]
    fn relative_paths_are_checked() {
        assert!(check_relative("jobgraphs/0123abc").is_ok());
        assert!(check_relative("checkpoints/JOB/completed/0000000012").is_ok());
        assert!(check_relative("a//b").is_err());
        assert!(check_relative("a/../b").is_err());
        assert!(check_relative("a/./b").is_err());
        assert!(check_relative("a/b\u{1}").is_err());
    }
}
