//! The TaskManager's artifact cache: artifacts fetched from the JobManager's blob store, verified
//! against their digest, kept by digest in `blob.storage.directory` (default
//! `~/.cache/weir/artifacts`) and reused by every later job of the same artifact.

use std::collections::HashMap;
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::info;
use weir_core::blob::{BlobWriter, path_in, sweep_temporaries};
use weir_core::protocol::blocking::{exchange_handshake, read_frame, write_frame};
use weir_core::protocol::{ToJobManager, ToTaskManager};
use weir_core::{ArtifactDigest, Error, Result};
use weir_security::Internal;

/// Fetched artifacts by digest.
#[derive(Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
    max_bytes: u64,
    /// `weir.blob.cache.max-total-size`.
    quota: u64,
    security: Arc<Internal>,
    /// One fetch at a time per artifact; others wait for it and reuse the result.
    fetching: Mutex<HashMap<ArtifactDigest, Arc<Mutex<()>>>>,
}

impl ArtifactCache {
    /// The cache in `dir` (or the default directory), for artifacts of at most `max_bytes`,
    /// keeping at most `quota` bytes, fetched over connections secured by `security`.
    pub fn new(dir: Option<&str>, (max_bytes, quota): (u64, u64), security: Arc<Internal>) -> ArtifactCache {
        let dir = dir.map(PathBuf::from).unwrap_or_else(default_dir);
        sweep_temporaries(&dir);
        ArtifactCache { dir, max_bytes, quota, security, fetching: Mutex::new(HashMap::new()) }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the artifact `digest`: from the cache, or fetched from the JobManager at
    /// `jobmanager` (its RPC address) first. Blocking.
    pub fn get(&self, jobmanager: &str, digest: &ArtifactDigest) -> Result<PathBuf> {
        let path = path_in(&self.dir, digest);
        let gate = {
            let mut f = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
            f.entry(digest.clone()).or_default().clone()
        };
        let _one_at_a_time = gate.lock().unwrap_or_else(|p| p.into_inner());
        // Entries appear only after verification, by rename; one changed since is fetched again.
        let digests = self.dir.join(".digests");
        if path.is_file() {
            if ArtifactDigest::of_file_cached(&path, Some(&digests)).ok().as_ref() == Some(digest) {
                touch(&path);
                return Ok(path);
            }
            let _ = std::fs::remove_file(&path);
        }
        let started = std::time::Instant::now();
        let (stored, size) = self.fetch(jobmanager, digest)?;
        digest.remember(&stored, &digests);
        info!(artifact = %digest.0, bytes = size, ms = started.elapsed().as_millis() as u64, "artifact fetched");
        evict(&self.dir, self.quota, &stored);
        Ok(stored)
    }

    fn fetch(&self, jobmanager: &str, digest: &ArtifactDigest) -> Result<(PathBuf, u64)> {
        let net = |context: &str, e: std::io::Error| Error::Network {
            context: context.into(),
            peer: format!("the JobManager at {jobmanager}"),
            source: e,
        };
        let tcp = TcpStream::connect(jobmanager).map_err(|e| net("cannot fetch an artifact from", e))?;
        let mut stream = self.security.connect(tcp, &format!("JobManager at {jobmanager}"))?;
        // A stalled JobManager must not hang a deployment forever.
        stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| net("cannot configure", e))?;
        exchange_handshake(&mut stream, &format!("JobManager at {jobmanager}"))?;
        write_frame(&mut stream, &ToJobManager::FetchArtifact { digest: digest.clone() })?;
        let size = match read_frame::<_, ToTaskManager>(&mut stream)? {
            Some(ToTaskManager::Artifact { size }) => size,
            // The JobManager does not have it (deleted since), or refuses to send it.
            Some(ToTaskManager::Rejected { reason }) => {
                return Err(Error::external(
                    format!("the JobManager at {jobmanager} did not send artifact {}", digest.0),
                    reason,
                    false,
                ));
            }
            other => {
                return Err(Error::internal(format!("expected an artifact from the JobManager, got {other:?}")));
            }
        };
        if size > self.max_bytes {
            return Err(Error::Config(format!(
                "artifact {} has {size} bytes, more than this TaskManager's blob.artifact.max-size ({} bytes); raise \
                 the limit on the TaskManagers, or make the artifact smaller (strip it, or build it in release mode)",
                digest.0, self.max_bytes
            )));
        }
        let mut writer = BlobWriter::create(&self.dir, self.max_bytes)?;
        let mut buf = vec![0u8; 1 << 16];
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = stream
                .read(&mut buf[..want])
                .map_err(|e| net("lost the connection while fetching an artifact from", e))?;
            if n == 0 {
                break;
            }
            writer.write(&buf[..n])?;
            left -= n as u64;
        }
        // A short read is a truncated transfer, a changed byte a digest mismatch: both refused.
        // Retryable: the next attempt fetches it again.
        let (_, path) = writer.finish(Some(size), Some(digest)).map_err(|e| Error::Network {
            context: format!("artifact {} arrived damaged; fetching it again may help. From", digest.0),
            peer: jobmanager.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, e.to_string()),
        })?;
        Ok((path, size))
    }
}

fn default_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("weir").join("artifacts"))
        .unwrap_or_else(|| std::env::temp_dir().join("weir-artifacts"))
}

/// Marks a cached artifact as used now (eviction goes by the time of last use).
fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().write(true).open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Artifacts used within this long are never evicted: a worker may be about to start from one.
const RECENT: Duration = Duration::from_secs(600);

/// Removes the artifacts of the cache in `dir` used longest ago until the rest take at most
/// `quota` bytes, sparing `keep` and any used within [`RECENT`].
pub(crate) fn evict(dir: &Path, quota: u64, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut cached: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter(|e| weir_core::blob::parse_digest(&e.file_name().to_string_lossy()).is_ok())
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    let mut total = cached.iter().map(|c| c.1).fold(0u64, u64::saturating_add);
    cached.sort();
    for (used, size, path) in cached {
        if total <= quota {
            break;
        }
        if path == keep || used.elapsed().is_ok_and(|age| age < RECENT) {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            info!(artifact = %path.display(), bytes = size, "evicted from the artifact cache (weir.blob.cache.max-total-size)");
            total = total.saturating_sub(size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_removes_the_least_recently_used_until_the_rest_fit() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        let mut paths = Vec::new();
        for (i, age) in [3u64, 1, 2].iter().enumerate() {
            let path = dir.path().join(format!("{:064x}", i + 1));
            std::fs::write(&path, vec![0u8; 100]).expect("write");
            let f = std::fs::File::options().write(true).open(&path).expect("open");
            f.set_modified(old - Duration::from_secs(age * 60)).expect("mtime");
            paths.push(path);
        }
        // A fresh one (just fetched) and a temporary download are never evicted.
        let fresh = dir.path().join(format!("{:064x}", 9));
        std::fs::write(&fresh, vec![0u8; 100]).expect("write");
        std::fs::write(dir.path().join(".incoming-1-x"), vec![0u8; 1000]).expect("write");
        evict(dir.path(), 250, &fresh);
        // 400 bytes of artifacts, 250 allowed: the two used longest ago go (3 h 3 min, 3 h 2 min).
        assert!(!paths[0].exists() && !paths[2].exists());
        assert!(paths[1].exists() && fresh.exists());
        assert!(dir.path().join(".incoming-1-x").exists());
    }
}
