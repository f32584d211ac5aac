//! The embedded store under the disk state backend: `fjall`, a log-structured merge tree in pure
//! Rust, chosen by measurement (`bench/state-engines`, figures in `docs/benchmarks.md`).
//!
//! One store per operator instance, in a working directory of its own that is removed when the
//! store is dropped. Writes go to the store's journal without fsync: a crash loses the working
//! copy, and recovery rebuilds it from the latest checkpoint, so durability here would only cost.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, Readable};
use weir_core::{Blame, Error, Result};

/// Block cache of one store (the cache of decoded values in front of it is the main one).
const BLOCK_CACHE_BYTES: u64 = 16 << 20;

/// An embedded ordered key-value store in a directory of its own.
pub struct Engine {
    keyspace: Keyspace,
    db: Database,
    /// Removes the directory once the store is closed and no snapshot reads it (declared last:
    /// dropped last).
    dir: Arc<RemoveOnDrop>,
}

/// A consistent view of a store at one moment, readable from another thread while the store
/// goes on changing (for asynchronous full checkpoints).
pub struct EngineSnapshot {
    snapshot: fjall::Snapshot,
    keyspace: Keyspace,
    _db: Database,
    dir: Arc<RemoveOnDrop>,
}

impl EngineSnapshot {
    /// The value stored under `key` in the view.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snapshot
            .get(&self.keyspace, key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| failed("read", &self.dir.0, e))
    }

    /// Calls `f` with every entry of the view, in key order.
    pub fn scan(&self, mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        for guard in self.snapshot.iter(&self.keyspace) {
            let (k, v) = guard.into_inner().map_err(|e| failed("read", &self.dir.0, e))?;
            f(&k, &v)?;
        }
        Ok(())
    }
}

/// A directory removed when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        // The working copy is worthless once its task ends: checkpoints hold the state.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn failed(what: &str, dir: &Path, e: impl std::fmt::Display) -> Error {
    Error::Storage {
        context: format!("the disk state backend cannot {what}"),
        location: dir.display().to_string(),
        message: e.to_string(),
        blame: Blame::External,
        retryable: true,
    }
}

impl Engine {
    /// A new, empty store in `dir` (created; it must not exist yet).
    pub fn open(dir: &Path) -> Result<Engine> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::io("the disk state backend cannot create its directory (state.backend.disk.dir)", dir, e)
        })?;
        let db = Database::builder(dir).cache_size(BLOCK_CACHE_BYTES).open().map_err(|e| failed("open", dir, e))?;
        let keyspace = db.keyspace("state", KeyspaceCreateOptions::default).map_err(|e| failed("open", dir, e))?;
        Ok(Engine { keyspace, db, dir: Arc::new(RemoveOnDrop(dir.to_path_buf())) })
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.keyspace.get(key).map(|v| v.map(|v| v.to_vec())).map_err(|e| failed("read", &self.dir.0, e))
    }

    /// Stores the values of `batch` (`None`: removes the key), at once.
    pub fn write(&self, batch: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut b = self.db.batch();
        for (k, v) in batch {
            match v {
                Some(v) => b.insert(&self.keyspace, k, v),
                None => b.remove(&self.keyspace, k),
            }
        }
        b.commit().map_err(|e| failed("write", &self.dir.0, e))
    }

    /// A consistent view of the store as it is now.
    pub fn snapshot(&self) -> EngineSnapshot {
        EngineSnapshot {
            snapshot: self.db.snapshot(),
            keyspace: self.keyspace.clone(),
            _db: self.db.clone(),
            dir: self.dir.clone(),
        }
    }

    /// Calls `f` with every entry, in key order.
    pub fn scan(&self, mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        for guard in self.keyspace.iter() {
            let (k, v) = guard.into_inner().map_err(|e| failed("read", &self.dir.0, e))?;
            f(&k, &v)?;
        }
        Ok(())
    }

    /// Calls `f` with every entry whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        for guard in self.keyspace.prefix(prefix) {
            let (k, v) = guard.into_inner().map_err(|e| failed("read", &self.dir.0, e))?;
            f(&k, &v)?;
        }
        Ok(())
    }

    /// Calls `f` with every entry whose key is before `end`, in key order.
    pub fn scan_to(&self, end: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        for guard in self.keyspace.range(..end.to_vec()) {
            let (k, v) = guard.into_inner().map_err(|e| failed("read", &self.dir.0, e))?;
            f(&k, &v)?;
        }
        Ok(())
    }

    /// Calls `f` with every entry whose key is at or after `from`, in key order.
    pub fn scan_from(&self, from: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        for guard in self.keyspace.range(from.to_vec()..) {
            let (k, v) = guard.into_inner().map_err(|e| failed("read", &self.dir.0, e))?;
            f(&k, &v)?;
        }
        Ok(())
    }

    /// The first key at or after `from`, if any.
    pub fn next_key(&self, from: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.keyspace.range(from..).next() {
            Some(guard) => guard.key().map(|k| Some(k.to_vec())).map_err(|e| failed("read", &self.dir.0, e)),
            None => Ok(None),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The working copy is worthless once its task ends: checkpoints hold the state.
        let _ = std::fs::remove_dir_all(&self.dir.0);
    }
}
