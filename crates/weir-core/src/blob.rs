//! Content-addressed artifact files, shared by the JobManager's blob store and the TaskManagers'
//! artifact caches.
//!
//! An artifact is written to a temporary file in the store's directory while it is hashed, and
//! becomes visible under its digest (`<dir>/<hex>`) by one rename, and only when it is complete,
//! within the size limit and, where a digest was declared, matching it. A reader therefore never
//! sees a half-written or wrong artifact, and a crash leaves at most a temporary file, which the
//! next [`sweep_temporaries`] removes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{ArtifactDigest, Error, Result};

/// The prefix of temporary files in a store directory.
const TEMPORARY: &str = ".incoming-";

/// Reads a digest as `sha256:<64 hex digits>` or just the 64 hex digits.
pub fn parse_digest(text: &str) -> Result<ArtifactDigest> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(Error::Config(format!(
            "'{text}' is not an artifact id: expected 64 lowercase hex digits (a SHA-256), optionally after 'sha256:'"
        )));
    }
    Ok(ArtifactDigest(format!("sha256:{hex}")))
}

impl ArtifactDigest {
    /// The 64 hex digits, as used in file names and REST paths.
    pub fn hex(&self) -> &str {
        self.0.strip_prefix("sha256:").unwrap_or(&self.0)
    }
}

/// Where the artifact with `digest` lives in the store at `dir`.
pub fn path_in(dir: &Path, digest: &ArtifactDigest) -> PathBuf {
    dir.join(digest.hex())
}

/// Removes temporary files that a crashed writer left in `dir`. A directory may be shared by the
/// processes of one user (TaskManagers share `~/.cache/weir/artifacts`): a temporary is named
/// with its writer's process id and left alone while that process runs, unless it is a day old
/// (the id was given to another process since).
pub fn sweep_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(TEMPORARY) else { continue };
        let writer = rest.split_once('-').and_then(|(pid, _)| pid.parse::<u32>().ok());
        let alive = writer.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(86_400));
        if !alive || old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Why an artifact was not stored.
#[derive(Debug)]
pub enum BlobError {
    /// More bytes than the limit allows.
    TooLarge {
        /// The limit in bytes.
        max: u64,
    },
    /// Fewer bytes arrived than were announced.
    Truncated {
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        announced: u64,
    },
    /// The bytes hash to another digest than the declared one.
    Mismatch {
        /// The digest the bytes have.
        actual: ArtifactDigest,
        /// The digest that was declared.
        declared: ArtifactDigest,
    },
    /// The store's directory could not be written.
    Io(Error),
}

impl std::fmt::Display for BlobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobError::TooLarge { max } => write!(
                f,
                "the artifact is larger than blob.artifact.max-size ({max} bytes); strip or build it in release \
                 mode, or raise the limit"
            ),
            BlobError::Truncated { got, announced } => write!(
                f,
                "truncated upload: {got} of {announced} announced bytes arrived; nothing was stored, upload it again"
            ),
            BlobError::Mismatch { actual, declared } => write!(
                f,
                "the bytes received hash to {} but the artifact was declared as {}: it was damaged on the way or \
                 changed while being sent; nothing was stored, upload it again",
                actual.0, declared.0
            ),
            BlobError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<BlobError> for Error {
    fn from(e: BlobError) -> Error {
        match e {
            BlobError::Io(e) => e,
            // The limit is a setting (blob.artifact.max-size), which the message names.
            too_large @ BlobError::TooLarge { .. } => Error::Config(too_large.to_string()),
            // Bytes lost or changed on the way: the other side or the network, and a new
            // transfer may succeed.
            damaged @ (BlobError::Truncated { .. } | BlobError::Mismatch { .. }) => {
                Error::external("an artifact transfer", damaged.to_string(), true)
            }
        }
    }
}

/// An artifact being written into a store directory.
pub struct BlobWriter {
    dir: PathBuf,
    temporary: PathBuf,
    file: Option<std::io::BufWriter<File>>,
    hasher: Sha256,
    written: u64,
    max: u64,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter").field("temporary", &self.temporary).field("written", &self.written).finish()
    }
}

/// Creates `dir` (and what is missing above it) readable by this user only (0700), and makes it so
/// if it exists: artifacts are programs and their inputs, not for the other users of the machine.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

impl BlobWriter {
    /// Starts an artifact of at most `max` bytes in `dir` (created if missing, private to this user).
    pub fn create(dir: &Path, max: u64) -> Result<BlobWriter> {
        private_dir(dir).map_err(|e| Error::io("cannot create the artifact directory", dir, e))?;
        let temporary = dir.join(format!("{TEMPORARY}{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
        let file =
            File::create(&temporary).map_err(|e| Error::io("cannot write into the artifact directory", dir, e))?;
        Ok(BlobWriter {
            dir: dir.to_path_buf(),
            temporary,
            file: Some(std::io::BufWriter::with_capacity(1 << 16, file)),
            hasher: Sha256::new(),
            written: 0,
            max,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), BlobError> {
        self.written += bytes.len() as u64;
        if self.written > self.max {
            return Err(BlobError::TooLarge { max: self.max });
        }
        self.hasher.update(bytes);
        let file = self.file.as_mut().ok_or_else(|| BlobError::Io(Error::internal("artifact written after finish")))?;
        file.write_all(bytes).map_err(|e| BlobError::Io(Error::io("cannot write", &self.temporary, e)))
    }

    /// Completes the artifact: checks the announced length and the declared digest, makes it
    /// executable and moves it under its digest. Returns the digest and the final path. On any
    /// error nothing is stored.
    pub fn finish(
        mut self,
        announced: Option<u64>,
        declared: Option<&ArtifactDigest>,
    ) -> std::result::Result<(ArtifactDigest, PathBuf), BlobError> {
        if let Some(announced) = announced.filter(|&n| n != self.written) {
            return Err(BlobError::Truncated { got: self.written, announced });
        }
        let actual = ArtifactDigest(format!("sha256:{}", crate::plan::hex(&self.hasher.clone().finalize())));
        if let Some(declared) = declared.filter(|d| **d != actual) {
            return Err(BlobError::Mismatch { actual, declared: declared.clone() });
        }
        let file = self.file.take().ok_or_else(|| BlobError::Io(Error::internal("artifact finished twice")))?;
        let io = |e: std::io::Error| BlobError::Io(Error::io("cannot store the artifact", &self.temporary, e));
        let file = file.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        drop(file);
        let path = path_in(&self.dir, &actual);
        std::fs::rename(&self.temporary, &path).map_err(io)?;
        Ok((actual, path))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Still here unless finish() moved it: an abandoned or refused artifact leaves nothing.
        let _ = std::fs::remove_file(&self.temporary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn only_complete_matching_artifacts_are_stored() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let want = ArtifactDigest(format!("sha256:{}", crate::plan::hex(&Sha256::digest(b"hello weir"))));
        // Complete, matching, in two pieces: stored under its digest, executable.
        let mut w = BlobWriter::create(dir.path(), 100)?;
        w.write(b"hello ").map_err(Error::from)?;
        w.write(b"weir").map_err(Error::from)?;
        let (digest, path) = w.finish(Some(10), Some(&want)).map_err(Error::from)?;
        assert_eq!(digest, want);
        assert_eq!(std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?, b"hello weir");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).map_err(|e| Error::io("stat", &path, e))?.permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "artifacts are executable");
        assert_eq!(names(dir.path()), vec![want.hex().to_string()]);
        // Truncated, mismatching, too large, abandoned: nothing stays.
        let mut w = BlobWriter::create(dir.path(), 100)?;
        w.write(b"hello").map_err(Error::from)?;
        let e = w.finish(Some(10), None).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("truncated upload: 5 of 10"), "{e}");
        let mut w = BlobWriter::create(dir.path(), 100)?;
        w.write(b"hello world").map_err(Error::from)?;
        let e = w.finish(None, Some(&want)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(&format!("declared as {}", want.0)) && e.contains("upload it again"), "{e}");
        let mut w = BlobWriter::create(dir.path(), 8)?;
        let e = w.write(b"123456789").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("blob.artifact.max-size (8 bytes)"), "{e}");
        drop(w);
        let mut w = BlobWriter::create(dir.path(), 8)?;
        w.write(b"abc").map_err(Error::from)?;
        drop(w);
        assert_eq!(names(dir.path()), vec![want.hex().to_string()]);
        // A crashed writer's leftovers are swept.
        std::fs::write(dir.path().join(format!("{TEMPORARY}x")), b"junk").map_err(|e| Error::io("w", "x", e))?;
        sweep_temporaries(dir.path());
        assert_eq!(names(dir.path()), vec![want.hex().to_string()]);
        Ok(())
    }

    #[test]
    fn a_sweep_spares_the_downloads_of_running_processes() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        // In flight here (this process runs), left by a dead process, and of the older naming.
        let mine = BlobWriter::create(dir.path(), 100)?;
        let dead = format!("{TEMPORARY}{}-0123", u32::MAX - 1);
        let unnamed = format!("{TEMPORARY}0123456789abcdef");
        for n in [&dead, &unnamed] {
            std::fs::write(dir.path().join(n), b"partial").map_err(|e| Error::io("write", dir.path(), e))?;
        }
        sweep_temporaries(dir.path());
        let left = names(dir.path());
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].starts_with(&format!("{TEMPORARY}{}-", std::process::id())), "{left:?}");
        drop(mine);
        Ok(())
    }

    #[test]
    fn digests_are_parsed_strictly() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(parse_digest(&hex).map(|d| d.0).unwrap_or_default(), format!("sha256:{hex}"));
        assert!(parse_digest(&format!("sha256:{hex}")).is_ok());
        for bad in ["", "sha256:", "../../etc/passwd", &hex.to_uppercase(), &hex[1..]] {
            let e = parse_digest(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("is not an artifact id"), "{bad}: {e}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn artifact_directories_are_private_to_their_user() -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let store = dir.path().join("a/b");
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        BlobWriter::create(&store, 8)?;
        assert_eq!(mode(&store), 0o700);
        // One that exists, readable by all, is made private too.
        let open = dir.path().join("open");
        std::fs::create_dir(&open).map_err(|e| Error::io("mkdir", &open, e))?;
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("chmod", &open, e))?;
        BlobWriter::create(&open, 8)?;
        assert_eq!(mode(&open), 0o700);
        Ok(())
    }
}
