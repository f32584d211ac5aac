//! The JobManager's blob store: artifacts by digest.
//!
//! Clients upload artifacts over REST (`POST /artifacts/upload`); TaskManagers fetch the artifact
//! of a job they are to run over the RPC port and cache it. Entries are files named by their
//! SHA-256 in `blob.storage.directory`, written through [`weir_core::blob::BlobWriter`], so only
//! complete artifacts that match their declared digest and the size limit are ever visible. The
//! JobManager's own executable is always in the store (without a copy): a cluster started from one
//! program runs that program's jobs without any upload.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use serde::Serialize;
use tracing::{info, warn};
use weir_core::blob::{BlobWriter, path_in, sweep_temporaries};
use weir_core::config::ClusterConfig;
use weir_core::{ArtifactDigest, Error, Result};

/// One stored artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArtifactInfo {
    /// Its digest's hex digits (the id in REST paths).
    pub id: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was stored (ms since the epoch).
    pub uploaded: i64,
    /// Whether it is the JobManager's own executable.
    #[serde(rename = "weir-own")]
    pub own: bool,
}

/// Artifacts by digest, in a directory.
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    /// Whether the directory was made for this JobManager (and is removed when it stops).
    made_here: bool,
    max_bytes: u64,
    /// `weir.blob.storage.max-total-size`.
    quota: u64,
    own: Option<(ArtifactDigest, PathBuf)>,
    /// Uploads in progress (`weir.rest.upload.max-concurrent`).
    uploads: Arc<Semaphore>,
    /// Fetches being served (`blob.fetch.num-concurrent`).
    fetches: Arc<Semaphore>,
}

impl BlobStore {
    /// Opens the store `blob.storage.directory` names, or a fresh directory under the system's
    /// temporary directory; `own` is the JobManager's executable and its digest.
    pub fn open(config: &ClusterConfig, own: Option<(ArtifactDigest, PathBuf)>) -> Result<BlobStore> {
        let (dir, made_here) = match &config.blob_dir {
            Some(d) => (PathBuf::from(d), false),
            None => (std::env::temp_dir().join(format!("weir-blobs-{}", uuid::Uuid::new_v4().simple())), true),
        };
        weir_core::blob::private_dir(&dir).map_err(|e| {
            Error::io("cannot create the blob store directory (blob.storage.directory); pick a writable one:", &dir, e)
        })?;
        // Prove it is writable now rather than at the first upload (the error names the directory,
        // and a full disk stays an external failure).
        BlobWriter::create(&dir, 0)?;
        sweep_temporaries(&dir);
        info!(dir = %dir.display(), max_bytes = config.blob_max_bytes, "blob store ready");
        Ok(BlobStore {
            dir,
            made_here,
            max_bytes: config.blob_max_bytes,
            quota: config.blob_store_quota,
            own,
            uploads: Arc::new(Semaphore::new(config.uploads as usize)),
            fetches: Arc::new(Semaphore::new(config.blob_fetches as usize)),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The size limit (`blob.artifact.max-size`).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes the stored artifacts take (the JobManager's own executable not counted).
    pub fn used(&self) -> u64 {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return 0 };
        entries
            .flatten()
            .filter(|e| weir_core::blob::parse_digest(&e.file_name().to_string_lossy()).is_ok())
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .fold(0u64, u64::saturating_add)
    }

    /// Bytes a new artifact may take: what `weir.blob.storage.max-total-size` leaves.
    pub fn room(&self) -> u64 {
        self.quota.saturating_sub(self.used())
    }

    /// The refusal of an artifact of `size` bytes (unknown: `None`) that does not fit.
    pub fn full(&self, size: Option<u64>) -> Error {
        let size = size.map(|s| format!("{s} more bytes; ")).unwrap_or_default();
        Error::external(
            "the blob store",
            format!(
                "it holds {} of its {} bytes (weir.blob.storage.max-total-size) and has no room for {size}delete                  artifacts no job needs (`DELETE /artifacts/{{id}}`), or raise the limit",
                self.used(),
                self.quota
            ),
            true,
        )
    }

    /// Starts storing an artifact, within the room the quota leaves.
    pub fn writer(&self) -> Result<BlobWriter> {
        let room = self.room();
        if room == 0 {
            return Err(self.full(None));
        }
        BlobWriter::create(&self.dir, self.max_bytes.min(room))
    }

    /// A place among the uploads in progress, if one is free (`weir.rest.upload.max-concurrent`).
    pub fn upload_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.uploads.clone().try_acquire_owned().ok()
    }

    /// A place among the fetches being served, waiting for one (`blob.fetch.num-concurrent`).
    pub async fn fetch_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.fetches.clone().acquire_owned().await.ok()
    }

    /// The file of the artifact with `digest`, if the store has it.
    pub fn locate(&self, digest: &ArtifactDigest) -> Option<PathBuf> {
        if let Some((own, path)) = &self.own
            && own == digest
        {
            return Some(path.clone());
        }
        let path = path_in(&self.dir, digest);
        path.is_file().then_some(path)
    }

    /// Whether `digest` is the JobManager's own executable.
    pub fn is_own(&self, digest: &ArtifactDigest) -> bool {
        self.own.as_ref().is_some_and(|(d, _)| d == digest)
    }

    /// What the store holds about one artifact.
    pub fn info(&self, digest: &ArtifactDigest) -> Option<ArtifactInfo> {
        let path = self.locate(digest)?;
        let meta = std::fs::metadata(&path).ok()?;
        let uploaded = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Some(ArtifactInfo { id: digest.hex().to_string(), size: meta.len(), uploaded, own: self.is_own(digest) })
    }

    /// Every artifact, the JobManager's own first.
    pub fn list(&self) -> Vec<ArtifactInfo> {
        let mut out: Vec<ArtifactInfo> = self.own.iter().filter_map(|(d, _)| self.info(d)).collect();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            let mut stored: Vec<ArtifactInfo> = entries
                .flatten()
                .filter_map(|e| weir_core::blob::parse_digest(&e.file_name().to_string_lossy()).ok())
                .filter(|d| !self.is_own(d))
                .filter_map(|d| self.info(&d))
                .collect();
            stored.sort_by(|a, b| (a.uploaded, &a.id).cmp(&(b.uploaded, &b.id)));
            out.extend(stored);
        }
        out
    }

    /// Stores a copy of the file at `path` (a job's cached file), read once, and returns its
    /// digest (a file the store has already is replaced by the same bytes).
    pub fn store_file(&self, path: &Path) -> Result<ArtifactDigest> {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io("cannot read", path, e))?;
        let mut writer = self.writer()?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf).map_err(|e| Error::io("cannot read", path, e))?;
            if n == 0 {
                break;
            }
            writer.write(&buf[..n]).map_err(blob_error(path.display().to_string()))?;
        }
        let written = writer.written();
        let (digest, _) = writer.finish(Some(written), None).map_err(blob_error(path.display().to_string()))?;
        Ok(digest)
    }

    /// Stores an artifact's bytes (from the HA storage directory), checked against `digest`.
    pub fn store_bytes(&self, digest: &ArtifactDigest, bytes: &[u8]) -> Result<()> {
        let mut writer = self.writer()?;
        writer.write(bytes).map_err(blob_error(format!("artifact {}", digest.hex())))?;
        writer
            .finish(Some(bytes.len() as u64), Some(digest))
            .map_err(blob_error(format!("artifact {}", digest.hex())))?;
        Ok(())
    }

    /// Deletes an uploaded artifact; `Ok(false)` if there was none.
    pub fn remove(&self, digest: &ArtifactDigest) -> Result<bool> {
        if self.is_own(digest) {
            // Callers check `is_own` first (REST answers 409).
            return Err(Error::internal(
                "the JobManager's own executable cannot be deleted from its blob store, yet it was asked to be",
            ));
        }
        let path = path_in(&self.dir, digest);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("cannot delete the artifact", &path, e)),
        }
    }

    /// Removes the directory if it was made for this JobManager (again: nothing to do).
    pub fn close(&self) {
        if self.made_here
            && let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(dir = %self.dir.display(), error = %e, "cannot remove the blob store directory");
        }
    }
}

impl Drop for BlobStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// A store error about `what`: a failing directory keeps its own blame (a full disk is not the
/// user's configuration); bytes over blob.artifact.max-size are the setting's to change; bytes
/// that are cut short or do not match their digest are damaged where they came from.
fn blob_error(what: String) -> impl FnOnce(weir_core::blob::BlobError) -> Error {
    use weir_core::blob::BlobError;
    move |e| match e {
        BlobError::Io(inner) => inner,
        too_large @ BlobError::TooLarge { .. } => Error::Config(format!("{what}: {too_large}")),
        damaged @ (BlobError::Truncated { .. } | BlobError::Mismatch { .. }) => Error::Storage {
            context: "the blob store refuses".into(),
            location: what,
            message: damaged.to_string(),
            blame: weir_core::Blame::External,
            retryable: false,
        },
    }
}
