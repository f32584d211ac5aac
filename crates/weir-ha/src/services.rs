//! The contract of a coordination service ([`HaServices`]) and what it deals in: leaders, their
//! epochs and leaderships, keys and values; and [`follow_leader`], which watches it. The
//! implementations (`etcd`, `zookeeper`, `memory`) depend on this module and nothing above it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weir_core::Result;

/// A boxed future, so that [`HaServices`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Keys (their last part) with their values.
pub type Entries = Vec<(String, Vec<u8>)>;

/// What a leading JobManager publishes about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// The JobManager's id (unique per process).
    pub id: String,
    /// Where TaskManagers reach it (`host:port`).
    pub rpc: String,
    /// Where clients reach its REST endpoint (`host:port`).
    pub rest: String,
}

/// The current leader as the service knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// What it published.
    pub info: LeaderInfo,
    /// Its epoch: larger for every later election.
    pub epoch: u64,
}

/// Leadership held by this process.
#[derive(Clone, Debug)]
pub struct Leadership {
    /// The epoch: every write in its name is refused once another contender leads.
    pub epoch: u64,
    /// Turns `true`, once, when the leadership is lost (or may be: a lease or session that could
    /// not be renewed in time). It never turns back: campaign again.
    lost: watch::Receiver<bool>,
}

impl Leadership {
    /// Leadership with `epoch`, lost when `lost` turns true.
    pub fn new(epoch: u64, lost: watch::Receiver<bool>) -> Leadership {
        Leadership { epoch, lost }
    }

    /// Whether it is lost.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Returns once it is lost.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        // An error means the keeper is gone: the leadership is gone with it.
        let _ = lost.wait_for(|l| *l).await;
    }
}

/// The coordination service, as a leader, a standby, a TaskManager and a client use it. Keys are
/// relative to the cluster's root (`a/b/c`); a key's "directory" is everything before its last `/`.
pub trait HaServices: Send + Sync + 'static {
    /// The service for messages, e.g. `etcd at 127.0.0.1:2379`.
    fn describe(&self) -> String;

    /// Waits until `me` leads. At most one contender leads at a time: a new leader is elected only
    /// once the previous one resigned or its lease or session expired, and the previous one's
    /// [`Leadership`] reports the loss before that.
    fn campaign(&self, me: LeaderInfo) -> BoxFuture<'_, Result<Leadership>>;

    /// Gives up leadership at once, so that a standby takes over without waiting for an expiry.
    fn resign(&self, leadership: &Leadership) -> BoxFuture<'_, Result<()>>;

    /// The current leader, if any.
    fn leader(&self) -> BoxFuture<'_, Result<Option<Leader>>>;

    /// Registers for the next change of the leader and returns a future that resolves when the
    /// leader may have changed (a watch in the service) or after at most [`WATCH_BOUND`]. Called
    /// before the leader is read, so no change between the read and the wait is missed. Services
    /// that cannot watch resolve after [`RETRIEVAL_INTERVAL`] (polling).
    fn watch_leader(&self) -> BoxFuture<'_, Result<BoxFuture<'static, ()>>> {
        Box::pin(async { Ok(Box::pin(tokio::time::sleep(RETRIEVAL_INTERVAL)) as BoxFuture<'static, ()>) })
    }

    /// The value under `key`.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>>;

    /// The keys directly in `dir` (their last part only), with their values, sorted by key.
    fn list<'a>(&'a self, dir: &'a str) -> BoxFuture<'a, Result<Entries>>;

    /// Writes `value` under `key`, if `epoch` still leads ([`Error::NotLeader`] otherwise).
    fn put<'a>(&'a self, epoch: u64, key: &'a str, value: Vec<u8>) -> BoxFuture<'a, Result<()>>;

    /// Removes `key` and every key in it as a directory, if `epoch` still leads.
    fn delete<'a>(&'a self, epoch: u64, key: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// How often [`follow_leader`] asks the service who leads.
pub const RETRIEVAL_INTERVAL: Duration = Duration::from_millis(200);

/// The longest a leader watch waits before the leader is read again anyway (a safety net: a
/// watch lost with its connection costs at most this long).
pub const WATCH_BOUND: Duration = Duration::from_secs(2);

/// The leader, watched (with the service's watch where it has one, else by polling every
/// [`RETRIEVAL_INTERVAL`]): the receiver holds the current leader (`None` while there is none or the
/// service cannot be reached) and changes when it does. The watch ends when every receiver is
/// dropped.
pub fn follow_leader(ha: Arc<dyn HaServices>) -> watch::Receiver<Option<Leader>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            // The watch first, then the read: a change in between still wakes the wait.
            let next_change: BoxFuture<'static, ()> = match ha.watch_leader().await {
                Ok(w) => w,
                Err(_) => Box::pin(tokio::time::sleep(RETRIEVAL_INTERVAL)),
            };
            let now = match ha.leader().await {
                Ok(l) => {
                    failing = false;
                    l
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(service = %ha.describe(), error = %e, "cannot retrieve the leader");
                    }
                    failing = true;
                    None
                }
            };
            let changed = tx.send_if_modified(|current| {
                if *current != now {
                    *current = now;
                    true
                } else {
                    false
                }
            });
            if changed {
                tracing::debug!(leader = ?tx.borrow().as_ref().map(|l| (&l.info.id, l.epoch)), "leader changed");
            }
            if tx.is_closed() {
                return;
            }
            let bound = if failing { RETRIEVAL_INTERVAL } else { WATCH_BOUND };
            tokio::select! {
                _ = next_change => {}
                _ = tokio::time::sleep(bound) => {}
            }
        }
    });
    rx
}
