//! High availability in one process's memory: the same contract as etcd and ZooKeeper (one
//! leader at a time, epochs that grow, fenced writes, a key-value space with directories), for
//! tests and for clusters of one process, where a coordination service would only be a cost.
//!
//! [`InMemory::new`] is the service; every clone is one more client of it (a contender, a
//! follower). [`InMemory::expire`] takes leadership away as an expired lease or session would.
//! Nothing survives the process: it proves the JobManager's use of the contract, not durability.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use weir_core::{Error, Result};

use crate::{BoxFuture, Entries, HaServices, Leader, LeaderInfo, Leadership};

/// One in-memory coordination service; clones share it.
#[derive(Clone, Debug)]
pub struct InMemory {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Bumped whenever the leader changes, so that contenders wake up.
    changes: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    /// The last epoch handed out.
    epoch: u64,
    leader: Option<Held>,
    values: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug)]
struct Held {
    info: LeaderInfo,
    epoch: u64,
    lost: watch::Sender<bool>,
}

impl Default for InMemory {
    fn default() -> Self {
        InMemory::new()
    }
}

/// `a/b/c`, whatever slashes surround it.
fn normalize(key: &str) -> String {
    key.trim_matches('/').to_string()
}

impl InMemory {
    /// A new service with no leader and no keys.
    pub fn new() -> InMemory {
        let (changes, _) = watch::channel(0);
        InMemory { shared: Arc::new(Shared { state: Mutex::new(State::default()), changes }) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind, still consistent per call.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the current leadership as an expired lease or session would: the leader's
    /// [`Leadership`] reports the loss, then a waiting contender is elected.
    pub fn expire(&self) {
        let held = self.state().leader.take();
        if let Some(h) = held {
            let _ = h.lost.send(true);
            self.shared.changes.send_modify(|n| *n += 1);
        }
    }

    /// Fails unless `epoch` leads now.
    fn fenced(state: &State, epoch: u64) -> Result<()> {
        match &state.leader {
            Some(h) if h.epoch == epoch => Ok(()),
            _ => Err(Error::NotLeader(format!(
                "epoch {epoch} no longer leads the in-memory service (it leads with {})",
                state.leader.as_ref().map(|h| h.epoch.to_string()).unwrap_or_else(|| "nobody".into())
            ))),
        }
    }
}

impl HaServices for InMemory {
    fn describe(&self) -> String {
        "the in-memory service".into()
    }

    fn campaign(&self, me: LeaderInfo) -> BoxFuture<'_, Result<Leadership>> {
        Box::pin(async move {
            let mut changes = self.shared.changes.subscribe();
            loop {
                {
                    let mut state = self.state();
                    if state.leader.is_none() {
                        state.epoch += 1;
                        let epoch = state.epoch;
                        let (lost, rx) = watch::channel(false);
                        state.leader = Some(Held { info: me, epoch, lost });
                        drop(state);
                        self.shared.changes.send_modify(|n| *n += 1);
                        return Ok(Leadership::new(epoch, rx));
                    }
                }
                // The sender lives as long as the service, which `self` holds.
                if changes.changed().await.is_err() {
                    return Err(Error::internal("the in-memory HA service went away during a campaign"));
                }
            }
        })
    }

    fn resign(&self, leadership: &Leadership) -> BoxFuture<'_, Result<()>> {
        let epoch = leadership.epoch;
        Box::pin(async move {
            let mut state = self.state();
            if state.leader.as_ref().is_some_and(|h| h.epoch == epoch) {
                if let Some(h) = state.leader.take() {
                    let _ = h.lost.send(true);
                }
                drop(state);
                self.shared.changes.send_modify(|n| *n += 1);
            }
            Ok(())
        })
    }

    fn leader(&self) -> BoxFuture<'_, Result<Option<Leader>>> {
        Box::pin(
            async move { Ok(self.state().leader.as_ref().map(|h| Leader { info: h.info.clone(), epoch: h.epoch })) },
        )
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move { Ok(self.state().values.get(&normalize(key)).cloned()) })
    }

    fn list<'a>(&'a self, dir: &'a str) -> BoxFuture<'a, Result<Entries>> {
        Box::pin(async move {
            let dir = normalize(dir);
            let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
            let state = self.state();
            Ok(state
                .values
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter(|(k, _)| !k[prefix.len()..].contains('/'))
                .map(|(k, v)| (k[prefix.len()..].to_string(), v.clone()))
                .collect())
        })
    }

    fn put<'a>(&'a self, epoch: u64, key: &'a str, value: Vec<u8>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut state = self.state();
            Self::fenced(&state, epoch)?;
            state.values.insert(normalize(key), value);
            Ok(())
        })
    }

    fn delete<'a>(&'a self, epoch: u64, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut state = self.state();
            Self::fenced(&state, epoch)?;
            let key = normalize(key);
            let below = format!("{key}/");
            state.values.retain(|k, _| *k != key && !k.starts_with(&below));
            Ok(())
        })
    }
}
