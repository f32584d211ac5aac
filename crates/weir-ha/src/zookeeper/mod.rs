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
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tracing::info;
use weir_core::config::HaSettings;
use weir_core::{Error, Result};
use zookeeper_client as zk;

use crate::{BoxFuture, HaServices, Leader, LeaderInfo, Leadership};

mod election;
mod kv;

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

    fn watch_leader(&self) -> BoxFuture<'_, Result<BoxFuture<'static, ()>>> {
        Box::pin(async move {
            let client = self.inner.client().await?;
            let dir = self.inner.leader_dir();
            // Latches come and go as children of the leader directory (none yet: its creation).
            let watcher = match self.inner.bounded(client.list_and_watch_children(&dir)).await {
                Ok((_, w)) => w,
                Err(zk::Error::NoNode) => match self.inner.bounded(client.check_and_watch_stat(&dir)).await {
                    Ok((_, w)) => w,
                    Err(e) => return Err(self.inner.failure("cannot watch the leader latches", &e)),
                },
                Err(e) => return Err(self.inner.failure("cannot watch the leader latches", &e)),
            };
            Ok(Box::pin(async move {
                let _ = watcher.changed().await;
            }) as BoxFuture<'static, ()>)
        })
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
    use super::election::latch_sequence;
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
