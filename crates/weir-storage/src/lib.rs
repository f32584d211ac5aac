//! Durable storage: where checkpoints' state files and metadata, savepoints and the bulky data of
//! high availability go, through `object_store`, so that a local directory and an S3-compatible
//! store are used the same way. A crate of its own so that the HA services reach storage without
//! the runtime.
//!
//! The calls are blocking: they run on one small runtime of their own and the caller waits, so
//! that task threads (which have no async runtime) and async code alike may use them.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use weir_core::{Blame, Error, Result};

/// A place for checkpoints: a root in some object store.
#[derive(Clone)]
pub struct CheckpointStorage {
    store: Arc<dyn ObjectStore>,
    /// The location as the user wrote it, for messages.
    location: String,
    /// The directory, for a local one (whose writes are made durable with fsync; an object
    /// store's write is durable once it answers).
    local: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for CheckpointStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStorage").field("location", &self.location).finish()
    }
}

fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weir-storage-io")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::internal(format!("cannot start the storage I/O runtime: {e}")))
}

/// The answer of a call started with [`spawn`], to be waited for later.
pub struct Spawned<T>(std::sync::mpsc::Receiver<T>);

impl<T> Spawned<T> {
    /// Waits for the answer.
    pub fn wait(self) -> Result<T> {
        self.0.recv().map_err(|_| Error::internal("the storage I/O runtime dropped a request"))
    }

    /// The answer if it is there, without waiting; `Err(self)` while the call is still running.
    pub fn try_take(self) -> std::result::Result<Result<T>, Self> {
        match self.0.try_recv() {
            Ok(v) => Ok(Ok(v)),
            Err(std::sync::mpsc::TryRecvError::Empty) => Err(self),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                Ok(Err(Error::internal("the storage I/O runtime dropped a request")))
            }
        }
    }
}

/// Starts `fut` on the storage I/O runtime (one small runtime per process, shared by checkpoint
/// storage and the file sink) without waiting for it, so that task threads, which have no async
/// runtime, can overlap uploads with their work.
pub fn spawn<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> Result<Spawned<T>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime()?.spawn(async move {
        let _ = tx.send(fut.await);
    });
    Ok(Spawned(rx))
}

/// Runs `fut` on the storage I/O runtime and waits for it (safe from inside another runtime too).
pub fn block<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> Result<T> {
    spawn(fut)?.wait()
}

/// An object store's error as weir's: a missing object or refused credentials need a person
/// (user's blame, not retryable); anything else (an unreachable or failing store, a full disk)
/// may pass. `context` says what weir was doing ("checkpoint storage cannot write"), `location`
/// names the object.
pub fn store_error(context: impl Into<String>, location: impl Into<String>, e: object_store::Error) -> Error {
    use object_store::Error as E;
    let (blame, retryable) = match &e {
        E::NotFound { .. } | E::PermissionDenied { .. } | E::Unauthenticated { .. } => (Blame::User, false),
        _ => (Blame::External, true),
    };
    Error::Storage { context: context.into(), location: location.into(), message: e.to_string(), blame, retryable }
}

impl CheckpointStorage {
    /// Storage at `location`: a directory path (created if missing), a `file://` URL, or an
    /// `s3://BUCKET/PREFIX` URL.
    ///
    /// S3 is configured by the standard AWS environment variables of each process (read by
    /// `object_store`): `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, and for an
    /// S3-compatible server `AWS_ENDPOINT_URL` (with `AWS_ALLOW_HTTP=true` for plain HTTP).
    pub fn open(location: &str) -> Result<CheckpointStorage> {
        let trimmed = location.trim();
        if trimmed.is_empty() {
            return Err(Error::Config("execution.checkpointing.dir is empty; give a directory or a URL".into()));
        }
        let dir = match trimmed.split_once("://") {
            None => std::path::PathBuf::from(trimmed),
            Some(("file", rest)) => std::path::PathBuf::from(rest),
            Some(("s3", rest)) => return Self::open_s3(trimmed, rest),
            Some((scheme, _)) => {
                return Err(Error::Config(format!(
                    "checkpoint storage '{location}': the scheme '{scheme}' is not supported; use a directory path, \
                     a file:// URL or an s3:// URL"
                )));
            }
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io("cannot create the checkpoint directory (execution.checkpointing.dir)", &dir, e))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| Error::Config(format!("cannot use {} for checkpoints: {e}", dir.display())))?
            .with_automatic_cleanup(true);
        Ok(CheckpointStorage { store: Arc::new(store), location: trimmed.to_string(), local: Some(dir) })
    }

    /// Storage under `s3://BUCKET/PREFIX` (`rest` is `BUCKET/PREFIX`).
    fn open_s3(location: &str, rest: &str) -> Result<CheckpointStorage> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Config(format!(
                "checkpoint storage '{location}' names no bucket; write s3://BUCKET/PATH"
            )));
        }
        let s3 = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket).build().map_err(|e| {
            Error::Config(format!(
                "cannot use {location} for checkpoints: {e}; set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and \
                 AWS_REGION (and AWS_ENDPOINT_URL for an S3-compatible server) in the environment of every weir process"
            ))
        })?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> =
            if prefix.is_empty() { Arc::new(s3) } else { Arc::new(object_store::prefix::PrefixStore::new(s3, prefix)) };
        Ok(CheckpointStorage { store, location: location.to_string(), local: None })
    }

    /// Whether this storage is a directory of the local file system.
    pub fn is_local(&self) -> bool {
        !self.location.contains("://") || self.location.starts_with("file://")
    }

    /// The location, as given.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, rel: &str) -> Result<StorePath> {
        StorePath::parse(rel).map_err(|e| Error::internal(format!("bad checkpoint path '{rel}': {e}")))
    }

    fn failed(&self, what: &str, rel: &str, e: object_store::Error) -> Error {
        store_error(
            format!("checkpoint storage cannot {what}"),
            format!("{}/{rel}", self.location.trim_end_matches('/')),
            e,
        )
    }

    /// Writes `bytes` to `rel` (atomically: a reader sees all of it or nothing).
    pub fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        let (store, path) = (self.store.clone(), self.path(rel)?);
        block(async move { store.put(&path, PutPayload::from(bytes)).await })?
            .map(|_| ())
            .map_err(|e| self.failed("write", rel, e))?;
        self.settle(rel)
    }

    /// Makes the file `rel`, just written, durable in a local directory: its data, and the names
    /// of every directory from its own up to the storage's root (a checkpoint's directory, and a
    /// job's, are made with their first file). Until then a crash of the machine could lose a checkpoint that was
    /// reported complete, and the older ones it replaces are already gone.
    fn settle(&self, rel: &str) -> Result<()> {
        let Some(root) = &self.local else { return Ok(()) };
        let file = root.join(rel);
        let sync = |p: &std::path::Path| std::fs::File::open(p).and_then(|f| f.sync_all());
        sync(&file).map_err(|e| Error::io("cannot make a checkpoint file durable (fsync)", &file, e))?;
        for dir in file.ancestors().skip(1).take_while(|d| d.starts_with(root)) {
            sync(dir).map_err(|e| Error::io("cannot make a checkpoint directory durable (fsync)", dir, e))?;
        }
        Ok(())
    }

    /// A writer of the file `rel` that takes its bytes a piece at a time, so that a large file
    /// never needs to be held in memory whole. The file appears, whole, when the writer finishes.
    pub fn writer(&self, rel: &str) -> Result<ObjectWriter> {
        Ok(ObjectWriter {
            storage: self.clone(),
            rel: rel.to_string(),
            path: self.path(rel)?,
            upload: None,
            pending: Vec::new(),
            pending_bytes: 0,
            written: 0,
        })
    }

    /// A reader of the file `rel` that fetches it a range at a time, so that a large file never
    /// needs to be held in memory whole.
    pub fn reader(&self, rel: &str) -> Result<ObjectReader> {
        let (store, path) = (self.store.clone(), self.path(rel)?);
        let head = block(async move { store.head(&path).await })?.map_err(|e| self.failed("read", rel, e))?;
        Ok(ObjectReader {
            storage: self.clone(),
            rel: rel.to_string(),
            path: self.path(rel)?,
            size: head.size,
            pos: 0,
            buf: Bytes::new(),
            buf_at: 0,
        })
    }

    /// Reads `rel`.
    pub fn get(&self, rel: &str) -> Result<Vec<u8>> {
        let (store, path) = (self.store.clone(), self.path(rel)?);
        let r = block(async move {
            match store.get(&path).await {
                Ok(g) => g.bytes().await.map(|b| b.to_vec()),
                Err(e) => Err(e),
            }
        })?;
        r.map_err(|e| self.failed("read", rel, e))
    }

    /// The names directly under directory `rel` (files and directories).
    pub fn list(&self, rel: &str) -> Result<Vec<String>> {
        let (store, path) = (self.store.clone(), self.path(rel)?);
        let r = block(async move { store.list_with_delimiter(Some(&path)).await })?;
        let listing = match r {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(self.failed("list", rel, e)),
        };
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .chain(listing.objects.iter().map(|o| &o.location))
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The files directly under directory `rel` with their sizes.
    pub fn sizes(&self, rel: &str) -> Result<std::collections::BTreeMap<String, u64>> {
        let (store, path) = (self.store.clone(), self.path(rel)?);
        match block(async move { store.list_with_delimiter(Some(&path)).await })? {
            Ok(l) => Ok(l.objects.iter().filter_map(|o| Some((o.location.filename()?.to_string(), o.size))).collect()),
            Err(object_store::Error::NotFound { .. }) => Ok(Default::default()),
            Err(e) => Err(self.failed("list", rel, e)),
        }
    }

    /// Removes the file `rel` (gone already is fine).
    pub fn delete(&self, rel: &str) -> Result<()> {
        let (store, path) = (self.store.clone(), self.path(rel)?);
        match block(async move { store.delete(&path).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("remove", rel, e)),
        }
    }

    /// Removes every file directly under directory `rel` (a snapshot's directory is flat).
    pub fn remove_dir(&self, rel: &str) -> Result<()> {
        for name in self.list(rel)? {
            let full = format!("{rel}/{name}");
            let (store, path) = (self.store.clone(), self.path(&full)?);
            match block(async move { store.delete(&path).await })? {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.failed("remove", &full, e)),
            }
        }
        Ok(())
    }
}

/// Bytes an [`ObjectWriter`] gathers before it hands them to the store: the part size of a
/// multipart upload (S3 needs at least 5 MiB for every part but the last).
const PART_BYTES: usize = 8 << 20;

/// Upload parts in flight at once per writer.
const PARTS_IN_FLIGHT: usize = 2;

/// Bytes a [`ObjectReader`] fetches at once (fewer when asked for less than is left).
const READ_AHEAD: u64 = 64 << 10;

/// Reads one file a range at a time ([`CheckpointStorage::reader`]): at most `READ_AHEAD` bytes
/// (or one read's worth, when larger) in memory; skipped bytes are not fetched.
pub struct ObjectReader {
    storage: CheckpointStorage,
    rel: String,
    path: StorePath,
    size: u64,
    /// Offset of the next byte to read.
    pos: u64,
    /// Fetched bytes, starting at offset `buf_at`.
    buf: Bytes,
    buf_at: u64,
}

impl ObjectReader {
    /// Bytes left to read.
    pub fn remaining(&self) -> u64 {
        self.size - self.pos
    }

    /// Moves past `n` bytes without reading them (at most to the end).
    pub fn skip(&mut self, n: u64) {
        self.pos = self.pos.saturating_add(n).min(self.size);
    }

    /// The next `n` bytes; fewer only at the end of the file.
    pub fn read(&mut self, n: usize) -> Result<Vec<u8>> {
        let n = n.min(usize::try_from(self.remaining()).unwrap_or(usize::MAX));
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let end = self.buf_at + self.buf.len() as u64;
            if self.pos >= self.buf_at && self.pos < end {
                let from = (self.pos - self.buf_at) as usize;
                let take = (n - out.len()).min(self.buf.len() - from);
                out.extend_from_slice(&self.buf[from..from + take]);
                self.pos += take as u64;
                continue;
            }
            let want = READ_AHEAD.max((n - out.len()) as u64);
            let range = self.pos..self.size.min(self.pos.saturating_add(want));
            let (store, path, r) = (self.storage.store.clone(), self.path.clone(), range.clone());
            let bytes = block(async move { store.get_range(&path, r).await })?
                .map_err(|e| self.storage.failed("read", &self.rel, e))?;
            if bytes.is_empty() {
                return Err(Error::Storage {
                    context: "checkpoint storage returned nothing for a range of a file".into(),
                    location: format!("{}/{}", self.storage.location.trim_end_matches('/'), self.rel),
                    message: format!("bytes {}..{} of {}", range.start, range.end, self.size),
                    blame: Blame::External,
                    retryable: true,
                });
            }
            self.buf = bytes;
            self.buf_at = range.start;
        }
        Ok(out)
    }
}

/// Writes one file a piece at a time ([`CheckpointStorage::writer`]): a file smaller than one part
/// is written with a single request when it finishes; a larger one becomes a multipart upload
/// (a staging file for a local directory), with at most `PARTS_IN_FLIGHT` parts in memory.
/// Dropped or failed without [`ObjectWriter::finish`], the partial upload is aborted and no file
/// appears.
pub struct ObjectWriter {
    storage: CheckpointStorage,
    rel: String,
    path: StorePath,
    upload: Option<WriteMultipart>,
    pending: Vec<Bytes>,
    pending_bytes: usize,
    written: u64,
}

impl ObjectWriter {
    /// Appends `bytes` to the file.
    pub fn write(&mut self, bytes: Vec<u8>) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.written += bytes.len() as u64;
        self.pending_bytes += bytes.len();
        self.pending.push(Bytes::from(bytes));
        if self.pending_bytes >= PART_BYTES { self.flush() } else { Ok(()) }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Hands what is pending to the multipart upload (started on the first call) and waits until
    /// no more than `PARTS_IN_FLIGHT` parts are in flight.
    fn flush(&mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let (store, path, upload) = (self.storage.store.clone(), self.path.clone(), self.upload.take());
        let (upload, r) = block(async move {
            let mut upload = match upload {
                Some(u) => u,
                None => match store.put_multipart(&path).await {
                    Ok(u) => WriteMultipart::new_with_chunk_size(u, PART_BYTES),
                    Err(e) => return (None, Err(e)),
                },
            };
            for b in pending {
                upload.put(b);
            }
            let r = upload.wait_for_capacity(PARTS_IN_FLIGHT).await;
            (Some(upload), r)
        })?;
        self.upload = upload;
        r.map_err(|e| self.storage.failed("write", &self.rel, e))
    }

    /// Completes the file; its size.
    pub fn finish(mut self) -> Result<u64> {
        let pending = std::mem::take(&mut self.pending);
        let (store, path, upload) = (self.storage.store.clone(), self.path.clone(), self.upload.take());
        let r = block(async move {
            match upload {
                // Small: one request, as `put` makes it.
                None => store.put(&path, PutPayload::from_iter(pending)).await.map(|_| ()),
                Some(mut u) => {
                    for b in pending {
                        u.put(b);
                    }
                    u.finish().await.map(|_| ())
                }
            }
        })?;
        r.map_err(|e| self.storage.failed("write", &self.rel, e))?;
        self.storage.settle(&self.rel)?;
        Ok(self.written)
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        // Not finished: remove what was uploaded (a local staging file, an S3 multipart upload).
        if let Some(u) = self.upload.take() {
            let _ = block(async move { u.abort().await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_written_listed_read_and_removed() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let s = CheckpointStorage::open(&dir.path().join("cp").display().to_string())?;
        s.put("job/chk-1/0-0.state", b"abc".to_vec())?;
        s.put("job/chk-1/_metadata", b"{}".to_vec())?;
        s.put("job/chk-2/_metadata", b"{}".to_vec())?;
        assert_eq!(s.list("job")?, vec!["chk-1", "chk-2"]);
        assert_eq!(s.list("job/chk-1")?, vec!["0-0.state", "_metadata"]);
        assert_eq!(s.get("job/chk-1/0-0.state")?, b"abc");
        assert_eq!(s.sizes("job/chk-1")?.get("0-0.state"), Some(&3));
        s.remove_dir("job/chk-1")?;
        assert_eq!(s.list("job")?, vec!["chk-2"]);
        assert!(s.list("nothing")?.is_empty());
        let e = s.get("job/chk-1/0-0.state").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("cannot read") && e.contains("chk-1/0-0.state"), "{e}");
        let e = CheckpointStorage::open("ftp://x/y").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("scheme 'ftp'"), "{e}");
        let e = CheckpointStorage::open("s3:///cp").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("names no bucket"), "{e}");
        Ok(())
    }

    #[test]
    fn a_writer_streams_large_files_and_leaves_nothing_when_dropped() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let s = CheckpointStorage::open(&dir.path().display().to_string())?;
        // Small: written at the end in one request.
        let mut w = s.writer("a/small")?;
        w.write(b"ab".to_vec())?;
        w.write(b"c".to_vec())?;
        assert!(s.list("a")?.is_empty(), "nothing is visible before the writer finishes");
        assert_eq!(w.finish()?, 3);
        assert_eq!(s.get("a/small")?, b"abc");
        // Larger than several parts: a multipart upload, whole and in order.
        let piece: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        let mut w = s.writer("a/large")?;
        for _ in 0..7 {
            w.write(piece.clone())?;
        }
        assert!(w.written() > 2 * PART_BYTES as u64);
        assert_eq!(s.list("a")?, vec!["small"], "a multipart upload is not visible before it finishes");
        assert_eq!(w.finish()?, 7 * piece.len() as u64);
        assert_eq!(s.get("a/large")?, piece.repeat(7));
        // Dropped unfinished: no file, no staging file left behind.
        let mut w = s.writer("a/dropped")?;
        for _ in 0..4 {
            w.write(piece.clone())?;
        }
        drop(w);
        assert_eq!(s.list("a")?, vec!["large", "small"]);
        let on_disk: Vec<String> = std::fs::read_dir(dir.path().join("a"))
            .map_err(|e| Error::io("list", dir.path(), e))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        assert_eq!(on_disk.len(), 2, "{on_disk:?}");
        Ok(())
    }
}
