//! The job graph: what a client submits and every worker checks before it runs anything.

use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Plan, Result};

/// Version of the [`JobGraph`] format; bumped on any incompatible change.
pub const JOB_GRAPH_FORMAT_VERSION: u32 = 1;

/// The SHA-256 digest of an artifact (an executable that links weir), as `sha256:<hex>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ArtifactDigest(pub String);

impl ArtifactDigest {
    /// The digest of the file at `path`.
    pub fn of_file(path: &Path) -> Result<Self> {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io("cannot read artifact", path, e))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io("cannot read artifact", path, e))?;
        Ok(ArtifactDigest(format!("sha256:{}", crate::plan::hex(&hasher.finalize()))))
    }

    /// The digest of the file at `path`, remembered in `cache` (a directory) under the file's
    /// device, inode, size and modification time, so that an unchanged executable is hashed once,
    /// not by every process started from it. A cache that cannot be read or written is skipped.
    pub fn of_file_cached(path: &Path, cache: Option<&Path>) -> Result<Self> {
        let key = Self::identity(path)?;
        let entry = cache.map(|dir| dir.join(key));
        if let Some(text) = entry.as_ref().and_then(|e| std::fs::read_to_string(e).ok())
            && text.len() == 71
            && text.starts_with("sha256:")
        {
            return Ok(ArtifactDigest(text));
        }
        let digest = ArtifactDigest::of_file(path)?;
        if let Some(dir) = cache {
            digest.remember(path, dir);
        }
        Ok(digest)
    }

    /// Records in `cache` that the file at `path`, as it is now, has this digest (for a file just
    /// written and verified, so that it need not be hashed again). Best effort.
    pub fn remember(&self, path: &Path, cache: &Path) {
        let Ok(key) = Self::identity(path) else { return };
        let tmp = cache.join(format!(".{}.{}.tmp", std::process::id(), uuid::Uuid::new_v4().simple()));
        let _ = std::fs::create_dir_all(cache)
            .and_then(|_| std::fs::write(&tmp, &self.0))
            .and_then(|_| std::fs::rename(&tmp, cache.join(key)));
    }

    /// A file's identity: device, inode, size and modification time.
    fn identity(path: &Path) -> Result<String> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|e| Error::io("cannot read artifact", path, e))?;
        Ok(format!("{}-{}-{}-{}.{}", meta.dev(), meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec()))
    }

    /// The digest of the file at `path`, remembered across processes in
    /// `$XDG_CACHE_HOME/weir/digests` (or `~/.cache/weir/digests`).
    pub fn of_file_remembered(path: &Path) -> Result<Self> {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
            .map(|d| d.join("weir").join("digests"));
        ArtifactDigest::of_file_cached(path, cache.as_deref())
    }

    /// The digest of the running executable, computed once per process and remembered across
    /// processes ([`ArtifactDigest::of_file_remembered`]).
    pub fn current() -> Result<Self> {
        static CURRENT: OnceLock<std::result::Result<ArtifactDigest, String>> = OnceLock::new();
        CURRENT
            .get_or_init(|| {
                let exe = std::env::current_exe().map_err(|e| format!("cannot locate the running executable: {e}"))?;
                ArtifactDigest::of_file_remembered(&exe).map_err(|e| e.to_string())
            })
            .clone()
            .map_err(Error::Internal)
    }
}

/// A job as it travels from a client to a cluster.
///
/// No user function is in it: a worker rebuilds the typed operators by running the job's registered
/// builder, from the same artifact, with the same arguments, and refuses to run if the plan it gets
/// has another fingerprint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobGraph {
    /// [`JOB_GRAPH_FORMAT_VERSION`] of the build that wrote it.
    pub format_version: u32,
    /// The artifact that can rebuild this job.
    pub artifact: ArtifactDigest,
    /// The job's registered name.
    pub job_name: String,
    /// The job's arguments, as JSON.
    pub args: serde_json::Value,
    /// The logical plan.
    pub plan: Plan,
    /// [`Plan::fingerprint`] of `plan`.
    pub fingerprint: String,
}

impl JobGraph {
    /// Checks that `rebuilt` (the plan this artifact builds for the same job and arguments) is the
    /// plan this graph was submitted with, and that the graph was written by a compatible build.
    pub fn check_rebuilt(&self, this_artifact: Option<&ArtifactDigest>, rebuilt: &Plan) -> Result<()> {
        if self.format_version != JOB_GRAPH_FORMAT_VERSION {
            return Err(Error::GraphMismatch {
                job: self.job_name.clone(),
                message: format!(
                    "the job graph has format version {} but this build reads version {}; submit it \
                     with the same weir version as the cluster",
                    self.format_version, JOB_GRAPH_FORMAT_VERSION
                ),
            });
        }
        if let Some(ours) = this_artifact
            && ours != &self.artifact
        {
            return Err(Error::GraphMismatch {
                job: self.job_name.clone(),
                message: format!(
                    "the job graph was built by artifact {} but this is artifact {}; run it with the \
                     artifact that built it",
                    self.artifact.0, ours.0
                ),
            });
        }
        let fingerprint = rebuilt.fingerprint();
        if fingerprint != self.fingerprint || rebuilt.fingerprint() != self.plan.fingerprint() {
            return Err(Error::GraphMismatch {
                job: self.job_name.clone(),
                message: format!(
                    "rebuilding the job gave plan fingerprint {fingerprint}, the submitted graph has {}. \
                     A job builder must be deterministic: the same arguments must always declare the \
                     same operators, parallelism and edges (no clocks, randomness or environment \
                     reads in the builder; pass such values as arguments)",
                    self.fingerprint
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_cached_by_file_identity_and_recomputed_when_the_file_changes() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let file = dir.path().join("artifact");
        let cache = dir.path().join("cache");
        std::fs::write(&file, b"one").map_err(|e| Error::io("write", &file, e))?;
        let first = ArtifactDigest::of_file_cached(&file, Some(&cache))?;
        assert_eq!(first, ArtifactDigest::of_file(&file)?);
        // The cache is what answers next time: plant another digest under the same identity.
        let entries: Vec<_> = std::fs::read_dir(&cache).map_err(|e| Error::io("read", &cache, e))?.flatten().collect();
        assert_eq!(entries.len(), 1);
        let planted = format!("sha256:{}", "cd".repeat(32));
        std::fs::write(entries[0].path(), &planted).map_err(|e| Error::io("write", &cache, e))?;
        assert_eq!(ArtifactDigest::of_file_cached(&file, Some(&cache))?.0, planted);
        // A changed file has another identity (size), so it is hashed again.
        std::fs::write(&file, b"two!").map_err(|e| Error::io("write", &file, e))?;
        assert_eq!(ArtifactDigest::of_file_cached(&file, Some(&cache))?, ArtifactDigest::of_file(&file)?);
        // An unusable cache is skipped, not an error.
        let blocked = dir.path().join("artifact");
        assert_eq!(ArtifactDigest::of_file_cached(&file, Some(&blocked))?, ArtifactDigest::of_file(&file)?);
        Ok(())
    }
}

/// This program, exactly as it runs (even if its file was replaced since): what TaskManagers,
/// per-job clusters and worker processes are started from.
pub fn this_program() -> Result<std::path::PathBuf> {
    let this = std::path::PathBuf::from("/proc/self/exe");
    if this.exists() {
        return Ok(this);
    }
    std::env::current_exe().map_err(|e| Error::internal(format!("cannot locate this executable: {e}")))
}

/// A marker every weir artifact carries in its file, naming the versions it speaks, so that a
/// client can tell a weir artifact (and one from an incompatible build) without running it. Kept in
/// the executable by [`keep_artifact_marker`].
pub static ARTIFACT_MARKER: &str = "\u{1}weir-artifact:protocol=13:graph=1\u{1}";

/// Makes sure [`ARTIFACT_MARKER`] is linked into the executable; every weir entry point calls it.
pub fn keep_artifact_marker() {
    std::hint::black_box(ARTIFACT_MARKER.as_ptr());
}

/// The protocol and job-graph versions the artifact at `path` speaks, read from its marker:
/// `Ok(None)` if it has none (it is not a weir artifact).
pub fn artifact_versions(path: &Path) -> Result<Option<(u32, u32)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read the artifact", path, e))?;
    const PREFIX: &[u8] = b"\x01weir-artifact:protocol=";
    let mut at = 0;
    while let Some(i) = bytes[at..].iter().position(|&b| b == 1) {
        let start = at + i;
        at = start + 1;
        let rest = &bytes[start..];
        if !rest.starts_with(PREFIX) {
            continue;
        }
        let body = &rest[PREFIX.len()..rest.len().min(PREFIX.len() + 40)];
        let Some(end) = body.iter().position(|&b| b == 1) else { continue };
        let text = String::from_utf8_lossy(&body[..end]);
        let Some((protocol, graph)) = text.split_once(":graph=") else { continue };
        if let (Ok(p), Ok(g)) = (protocol.parse(), graph.parse()) {
            return Ok(Some((p, g)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod marker_tests {
    use super::*;

    #[test]
    fn the_marker_names_the_versions_of_this_build() -> Result<()> {
        let expected = format!(
            "\u{1}weir-artifact:protocol={}:graph={JOB_GRAPH_FORMAT_VERSION}\u{1}",
            crate::protocol::PROTOCOL_VERSION
        );
        assert_eq!(ARTIFACT_MARKER, expected);
        let dir = tempfile::tempdir().map_err(|e| Error::internal(e.to_string()))?;
        let file = dir.path().join("a");
        let mut bytes = b"\x01weir-artifact:protocol=x\x01 noise \x01".to_vec();
        bytes.extend_from_slice(b"\x01weir-artifact:protocol=2:graph=9\x01tail");
        std::fs::write(&file, &bytes).map_err(|e| Error::internal(e.to_string()))?;
        assert_eq!(artifact_versions(&file)?, Some((2, 9)));
        std::fs::write(&file, b"#!/bin/sh\necho hi\n").map_err(|e| Error::internal(e.to_string()))?;
        assert_eq!(artifact_versions(&file)?, None);
        Ok(())
    }
}
