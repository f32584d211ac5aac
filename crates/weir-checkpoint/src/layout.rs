//! Where a snapshot's files are: a checkpoint's directory and the earlier ones its incremental
//! state links to, a savepoint's copies of them, the location a restore opens, and the check that
//! a completed snapshot is whole before anything restores from it.

use std::collections::BTreeMap;

use super::format::{METADATA_FILE, SnapshotKind, SnapshotMetadata, checkpoint_dir_name};
use super::storage::CheckpointStorage;
use weir_core::Result;
use weir_core::checkpointing::{RestoreFrom, StateFile};

/// `dir/name`, or `name` at the root.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
}

/// Where `f`, listed by the snapshot of kind `kind` in directory `dir`, is: its own files in `dir`;
/// the files of an earlier checkpoint `M` it builds on in that checkpoint's directory (`chk-M`, a
/// sibling of `dir`), or, in a savepoint (which holds copies of them), in `dir/chk-M`.
pub fn locate(dir: &str, kind: SnapshotKind, f: &StateFile) -> String {
    match f.checkpoint {
        None => join(dir, &f.path),
        Some(m) => {
            let linked = format!("{}/{}", checkpoint_dir_name(m), f.path);
            match kind {
                SnapshotKind::Savepoint => join(dir, &linked),
                SnapshotKind::Checkpoint => join(dir.rsplit_once('/').map(|(p, _)| p).unwrap_or(""), &linked),
            }
        }
    }
}

/// What restoring from the snapshot at `path` opens: its parent, and its name there.
pub fn restore_from(path: &str) -> RestoreFrom {
    let (parent, name) = split_location(path);
    RestoreFrom { location: parent.to_string(), dir: name.to_string() }
}

/// A snapshot's location split into the location of its parent and its name there, so that its
/// siblings are reachable too; a location without a parent (a bucket) is its own root.
pub fn split_location(path: &str) -> (&str, &str) {
    // Trailing slashes go, but not those of a bare scheme (`s3://`).
    let path = if path.ends_with("://") { path } else { path.trim_end_matches('/') };
    let scheme_end = path.find("://").map(|i| i + 3);
    match (path.rfind('/'), scheme_end) {
        (None, _) => (".", path),
        (Some(0), None) => ("/", &path[1..]),
        // Within the scheme or the bucket's name: no parent to go to.
        (Some(i), Some(end)) if i < end + 1 || !path[end..].contains('/') => (path, ""),
        (Some(i), _) => (&path[..i], &path[i + 1..]),
    }
}

/// Reads and checks the snapshot in directory `dir`: its metadata, and every file it lists at its
/// recorded size.
pub fn read_completed(storage: &CheckpointStorage, dir: &str) -> Result<SnapshotMetadata> {
    let what = format!("{}/{}", storage.location().trim_end_matches('/'), join(dir, METADATA_FILE));
    let sizes = storage.sizes(dir)?;
    let metadata_path = join(dir, METADATA_FILE);
    if !sizes.contains_key(METADATA_FILE) {
        return Err(weir_core::Error::Config(format!(
            "{what} does not exist: the snapshot is incomplete or the path is not a snapshot"
        )));
    }
    let metadata = SnapshotMetadata::decode(&storage.get(&metadata_path)?, &what)?;
    // The sizes of the files in each directory the snapshot uses (its own, and those of the
    // earlier checkpoints its incremental state builds on).
    let mut listed: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    listed.insert(dir.to_string(), sizes);
    for f in &metadata.files {
        let path = locate(dir, metadata.kind, f);
        let (in_dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        if !listed.contains_key(in_dir) {
            listed.insert(in_dir.to_string(), storage.sizes(in_dir)?);
        }
        match listed.get(in_dir).and_then(|s| s.get(name)) {
            Some(&n) if n == f.bytes => {}
            Some(&n) => {
                return Err(weir_core::Error::damaged(
                    path.clone(),
                    format!("it is {n} bytes but {what} says {}: the file was truncated or replaced", f.bytes),
                ));
            }
            None => {
                return Err(weir_core::Error::damaged(path.clone(), format!("it is missing, though {what} lists it")));
            }
        }
    }
    Ok(metadata)
}
