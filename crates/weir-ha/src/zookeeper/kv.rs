//! The stores' key-value space on ZooKeeper: one znode per key under `kv/`, every write a
//! transaction fenced by the writer's latch.

use weir_core::{Error, Result};
use zookeeper_client as zk;

use super::{DELETE_BATCH, Held, Inner, RACE_ATTEMPTS, READ_BATCH, lock};

impl Inner {
    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.key_path(key, false)?;
        let client = self.client().await?;
        match self.bounded(client.get_data(&path)).await {
            Ok((data, _)) => Ok(Some(data)),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(self.failure(format!("cannot read {key}"), &e)),
        }
    }

    pub(super) async fn list(&self, dir: &str) -> Result<Vec<(String, Vec<u8>)>> {
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
    pub(super) fn fence(&self, epoch: u64) -> Result<(Held, zk::Client)> {
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
    pub(super) fn fenced_failure(&self, epoch: u64, context: String, e: zk::MultiWriteError) -> Error {
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

    pub(super) async fn put(&self, epoch: u64, key: &str, value: Vec<u8>) -> Result<()> {
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

    pub(super) async fn delete(&self, epoch: u64, key: &str) -> Result<()> {
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
