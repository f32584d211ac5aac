//! The snapshot format: what a state file and a snapshot's metadata hold, their versions, and
//! the encodings of keyed and operator state in them. It depends on nothing else of the runtime,
//! so that the coordinator, the tasks, the state backends and the file reader all build on it.

use std::collections::BTreeMap;
use std::hash::Hash;

use serde::{Deserialize, Serialize};
use weir_core::{Error, JobId, Result};

/// How operator list state is divided when an operator restarts with another parallelism.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Redistribution {
    /// The entries of all instances are concatenated and split evenly (Flink's `getListState`):
    /// each entry goes to exactly one new instance.
    #[default]
    EvenSplit,
    /// Every new instance gets every entry (Flink's `getUnionListState`).
    Union,
}

/// A checkpoint's number within its job: 1, 2, ... in the order they were triggered.
pub type CheckpointId = u64;

/// Version of the state file and metadata formats; a checkpoint or savepoint of a version this weir
/// does not read is refused with an error that says so.
///
/// - 2: a state file is one encoded [`TaskState`].
/// - 3: a state file is a head (the [`TaskState`] without the streamed state) followed by frames of
///   raw keyed state, written as they are made, so that a large snapshot of the disk backend is
///   never held in memory whole ([`TaskState::encode_head`]).
/// - 4: the disk backend's raw state holds timers and indexes beside the values: a process
///   function's timers under reserved state names, and trigger timers, the cleanup schedule of
///   panes and the session windows' index of ends kept aside (`weir_runtime::disk::ASIDE`); a reader
///   of version 3 would take them for values. Versions 2
///   and 3 are read as before (their timers are in the typed chunks).
pub const STATE_FORMAT_VERSION: u32 = 4;

/// The oldest format version this weir reads.
pub const OLDEST_READABLE_VERSION: u32 = 2;

/// A frame's header: operator index, key group, CRC-32 of its bytes, and their length.
pub(crate) const FRAME_HEADER: usize = 20;

/// The operator index of the frame that ends a state file; its key group field holds the number
/// of frames before it.
pub(crate) const END_FRAME: u32 = u32::MAX;

/// The first bytes of every state file.
pub(crate) const STATE_MAGIC: &[u8; 8] = b"WEIRSTAT";

/// One operator list state in a snapshot: its entries, each encoded on its own so that they can be
/// redistributed without knowing their type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSnapshot {
    /// How entries are divided on restore.
    pub mode: Redistribution,
    /// The element type's name (checked on restore).
    pub type_name: String,
    /// The entries.
    pub entries: Vec<Vec<u8>>,
}

/// The state of one operator instance at one checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorSnapshot {
    /// The operator's uid.
    pub uid: String,
    /// Keyed state, one encoded chunk per key group.
    pub keyed: Vec<(u32, Vec<u8>)>,
    /// Operator list states by name.
    pub lists: BTreeMap<String, ListSnapshot>,
    /// Keyed state of the on-disk backend, one chunk per key group of encoded entries ([`RawEntry`]):
    /// all of it, or (with `chain`) what changed since the previous link.
    pub raw: Vec<(u32, Vec<u8>)>,
    /// Incremental state: the earlier checkpoints whose snapshot of this operator instance, applied
    /// in order (oldest first), and then `raw`, give the state; empty for a full snapshot.
    pub chain: Vec<CheckpointId>,
}

impl OperatorSnapshot {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.keyed.is_empty() && self.lists.is_empty() && self.raw.is_empty() && self.chain.is_empty()
    }
}

/// One entry of raw keyed state: the encoded key, and the encoded value or `None` for a removed
/// key (a delta's tombstone).
pub type RawEntry = (Vec<u8>, Option<Vec<u8>>);

/// Encodes raw entries, already ordered by key group, into one chunk per key group.
pub fn raw_chunks(entries: impl Iterator<Item = (u32, RawEntry)>) -> Result<Vec<(u32, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut current: Option<(u32, Vec<RawEntry>)> = None;
    let encode = |kg: u32, chunk: &Vec<RawEntry>| {
        bitcode::serialize(chunk)
            .map(|b| (kg, b))
            .map_err(|e| Error::internal(format!("cannot encode keyed state: {e}")))
    };
    for (kg, entry) in entries {
        match &mut current {
            Some((g, chunk)) if *g == kg => chunk.push(entry),
            _ => {
                if let Some((g, chunk)) = current.take() {
                    out.push(encode(g, &chunk)?);
                }
                current = Some((kg, vec![entry]));
            }
        }
    }
    if let Some((g, chunk)) = current {
        out.push(encode(g, &chunk)?);
    }
    Ok(out)
}

/// Decodes one chunk [`raw_chunks`] wrote.
pub fn decode_raw_chunk(kg: u32, bytes: &[u8]) -> Result<Vec<RawEntry>> {
    bitcode::deserialize(bytes).map_err(|e| {
        Error::damaged(format!("the raw keyed state of key group {kg}"), format!("it cannot be decoded: {e}"))
    })
}

/// What one task (a chain, one subtask) wrote for one checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    /// The job.
    pub job_id: JobId,
    /// The checkpoint.
    pub checkpoint_id: CheckpointId,
    /// The chain's head vertex.
    pub head: u32,
    /// The subtask.
    pub subtask: u32,
    /// Every operator of the chain that has state.
    pub operators: Vec<OperatorSnapshot>,
}

impl TaskState {
    /// The file form, whole: [`TaskState::encode_head`] and an [`end_frame`] (no frames).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = self.encode_head()?;
        out.extend_from_slice(&end_frame(0));
        Ok(out)
    }

    /// The start of the file form: magic, format version, CRC-32 and length of the head, and the
    /// head (this state encoded). Frames of raw keyed state ([`frame_header`]) may follow, each
    /// added to the `raw` state of the operator it names when the file is read; an
    /// [`end_frame`] ends the file.
    pub fn encode_head(&self) -> Result<Vec<u8>> {
        let body = bitcode::serialize(self).map_err(|e| Error::internal(format!("cannot encode task state: {e}")))?;
        let mut out = Vec::with_capacity(body.len() + 24);
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&STATE_FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        out.extend_from_slice(&(body.len() as u64).to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }
}

/// The header of a frame of raw keyed state of key group `kg` for the operator at index `op` of
/// the head's operators; the frame's bytes follow it.
pub fn frame_header(op: u32, kg: u32, bytes: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(FRAME_HEADER);
    h.extend_from_slice(&op.to_be_bytes());
    h.extend_from_slice(&kg.to_be_bytes());
    h.extend_from_slice(&crc32fast::hash(bytes).to_be_bytes());
    h.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    h
}

/// The frame that ends a state file of `frames` frames (a file without it is truncated).
pub fn end_frame(frames: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(FRAME_HEADER);
    h.extend_from_slice(&END_FRAME.to_be_bytes());
    h.extend_from_slice(&frames.to_be_bytes());
    h.extend_from_slice(&[0; 12]);
    h
}

/// Whether a snapshot is a checkpoint (owned and removed by weir) or a savepoint (owned by the user).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// A periodic checkpoint.
    Checkpoint,
    /// A savepoint.
    Savepoint,
}

pub use weir_core::checkpointing::{CheckpointEvent, RestoreFrom, StateFile, TaskAck};

/// One operator as it was when the snapshot was taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorMeta {
    /// Its uid.
    pub uid: String,
    /// Its name.
    pub name: String,
    /// Its parallelism.
    pub parallelism: u32,
    /// Its number of key groups.
    pub max_parallelism: u32,
}

/// The `_metadata` file of a completed checkpoint or savepoint: it lists every file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMetadata {
    /// [`STATE_FORMAT_VERSION`] of the weir that wrote it.
    pub format_version: u32,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// The job.
    pub job_id: JobId,
    /// The job's name.
    pub job_name: String,
    /// The checkpoint's number.
    pub checkpoint_id: CheckpointId,
    /// When it was triggered (ms since the epoch).
    pub timestamp_ms: i64,
    /// The operators.
    pub operators: Vec<OperatorMeta>,
    /// Every state file.
    pub files: Vec<StateFile>,
}

impl SnapshotMetadata {
    /// The total size of its files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// Reads a `_metadata` file; another format version is an error that says what to do.
    pub fn decode(bytes: &[u8], what: &str) -> Result<SnapshotMetadata> {
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let v: Version = serde_json::from_slice(bytes)
            .map_err(|e| Error::damaged(what, format!("it is not a weir snapshot's metadata: {e}")))?;
        if !(OLDEST_READABLE_VERSION..=STATE_FORMAT_VERSION).contains(&v.format_version) {
            return Err(Error::Config(format!(
                "{what} has state format version {}; this weir reads versions {OLDEST_READABLE_VERSION} to \
                 {STATE_FORMAT_VERSION}: restore it with the weir version that wrote it",
                v.format_version
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| Error::damaged(what, format!("it cannot be read: {e}")))
    }

    /// The JSON form.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| Error::internal(format!("cannot encode metadata: {e}")))
    }
}

/// Encodes keyed entries by key group: one chunk per key group that has entries. The key group of
/// a key is the one the hash exchange sends it to.
pub fn snapshot_keyed<'a, K, V>(
    entries: impl Iterator<Item = (&'a K, &'a V)>,
    max_parallelism: u32,
) -> Result<Vec<(u32, Vec<u8>)>>
where
    K: Hash + Serialize + 'a,
    V: Serialize + 'a,
{
    snapshot_keyed_entries(entries, max_parallelism)
}

/// Encodes keyed entries by the key group of their record key `K`: one chunk per key group that
/// has entries. A key may have several entries (one per window, pane or timer); the chunks are
/// read back with [`crate::restore_keyed`]`::<K, E>` (owned `E`).
pub fn snapshot_keyed_entries<'a, K, E>(
    entries: impl Iterator<Item = (&'a K, E)>,
    max_parallelism: u32,
) -> Result<Vec<(u32, Vec<u8>)>>
where
    K: Hash + serde::Serialize + 'a,
    E: serde::Serialize,
{
    let mut groups: BTreeMap<u32, Vec<(&K, E)>> = BTreeMap::new();
    for (k, e) in entries {
        groups.entry(weir_core::keygroup::key_group(k, max_parallelism)).or_default().push((k, e));
    }
    groups
        .into_iter()
        .map(|(kg, entries)| {
            bitcode::serialize(&entries)
                .map(|b| (kg, b))
                .map_err(|e| weir_core::Error::internal(format!("cannot encode keyed state: {e}")))
        })
        .collect()
}

/// Decodes the chunks [`snapshot_keyed`] wrote.
pub fn restore_keyed<K: serde::de::DeserializeOwned, V: serde::de::DeserializeOwned>(
    chunks: &[(u32, Vec<u8>)],
) -> Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    for (kg, bytes) in chunks {
        let mut entries: Vec<(K, V)> = bitcode::deserialize(bytes).map_err(|e| {
            Error::InvalidJob(format!(
                "the keyed state of key group {kg} cannot be read as {} -> {}: {e}; restore with the program that \
                 wrote it, or give the changed operator a new uid",
                std::any::type_name::<K>(),
                std::any::type_name::<V>()
            ))
        })?;
        out.append(&mut entries);
    }
    Ok(out)
}

/// The operators of `plan`, as snapshot metadata records them.
pub fn operators_of(plan: &weir_core::Plan) -> Vec<OperatorMeta> {
    plan.vertices
        .iter()
        .map(|v| OperatorMeta {
            uid: v.state_uid(),
            name: v.name.clone(),
            parallelism: v.parallelism,
            max_parallelism: v.max_parallelism,
        })
        .collect()
}

/// The directory name of checkpoint `id`.
pub fn checkpoint_dir_name(id: CheckpointId) -> String {
    format!("chk-{id}")
}

/// The name of the metadata file in a snapshot's directory.
pub const METADATA_FILE: &str = "_metadata";

/// Where a deferred snapshot puts its raw keyed state: chunks of encoded entries with their key
/// group, in the order they apply.
pub type ChunkSink<'a> = &'a mut dyn FnMut(u32, Vec<u8>) -> Result<()>;

/// An operator's raw keyed state made later, on the part's writer thread, from a consistent view
/// the operator took at the barrier (an asynchronous snapshot); it hands its chunks to the sink as
/// it makes them, and they are written to the state file as they come.
pub type DeferredSnapshot = Box<dyn FnOnce(ChunkSink<'_>) -> Result<()> + Send>;
