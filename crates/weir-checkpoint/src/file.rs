//! Reading state files a piece at a time: the head first, then the frames of raw keyed state one
//! by one, so that restoring a large snapshot of the disk backend never holds it in memory whole.
//! [`RawState`] is an operator instance's restored raw keyed state: chunks already in memory (the
//! increments, which live in heads) and frames still in their files, read when the operator
//! loads them.

use std::ops::Range;

use weir_core::{Error, Result};

use super::format::{END_FRAME, FRAME_HEADER, OLDEST_READABLE_VERSION, STATE_FORMAT_VERSION, STATE_MAGIC, TaskState};
use super::storage::{CheckpointStorage, ObjectReader};

/// Bytes of a state file before its head: magic, version, CRC-32 and length of the head.
const PREAMBLE: usize = 24;

/// Where a state file is read from: in memory, or from storage a range at a time.
pub trait Source {
    /// Bytes left.
    fn remaining(&self) -> u64;
    /// The next `n` bytes (fewer only at the end).
    fn read(&mut self, n: usize) -> Result<Vec<u8>>;
    /// Moves past `n` bytes without reading them.
    fn skip(&mut self, n: u64);
}

/// A state file in memory.
pub struct Slice<'a>(pub &'a [u8]);

impl Source for Slice<'_> {
    fn remaining(&self) -> u64 {
        self.0.len() as u64
    }
    fn read(&mut self, n: usize) -> Result<Vec<u8>> {
        let (now, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        Ok(now.to_vec())
    }
    fn skip(&mut self, n: u64) {
        self.0 = &self.0[usize::try_from(n).unwrap_or(usize::MAX).min(self.0.len())..];
    }
}

impl Source for ObjectReader {
    fn remaining(&self) -> u64 {
        ObjectReader::remaining(self)
    }
    fn read(&mut self, n: usize) -> Result<Vec<u8>> {
        ObjectReader::read(self, n)
    }
    fn skip(&mut self, n: u64) {
        ObjectReader::skip(self, n)
    }
}

fn word(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn long(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(b)
}

/// The error for state file `what` that `why`.
fn bad(what: &str, why: impl std::fmt::Display) -> Error {
    Error::damaged(
        format!("checkpoint state file {what}"),
        format!("it {why}; restore from another checkpoint or savepoint"),
    )
}

/// Reads a state file's head: the state without the frames that follow, and where the frames
/// start (`None`: a file of format 2, which has none).
pub fn read_head(src: &mut impl Source, what: &str) -> Result<(TaskState, Option<u64>)> {
    let pre = src.read(PREAMBLE)?;
    if pre.len() < PREAMBLE || &pre[..8] != STATE_MAGIC {
        return Err(bad(what, "is not a weir state file (it is truncated or was overwritten)"));
    }
    let version = word(&pre, 8);
    if !(OLDEST_READABLE_VERSION..=STATE_FORMAT_VERSION).contains(&version) {
        return Err(bad(
            what,
            format!(
                "has state format version {version}; this weir reads versions {OLDEST_READABLE_VERSION} to \
                 {STATE_FORMAT_VERSION}"
            ),
        ));
    }
    let crc = word(&pre, 12);
    let len = long(&pre, 16);
    let rest = src.remaining();
    if rest < len || (version == 2 && rest != len) {
        return Err(bad(what, format!("is truncated: {rest} of {len} bytes")));
    }
    let body = src.read(usize::try_from(len).unwrap_or(usize::MAX))?;
    if crc32fast::hash(&body) != crc {
        return Err(bad(what, "is corrupted (checksum mismatch)"));
    }
    let state: TaskState = bitcode::deserialize(&body).map_err(|e| bad(what, format!("cannot be decoded: {e}")))?;
    Ok((state, (version > 2).then_some(PREAMBLE as u64 + len)))
}

/// Reads the frames that follow a head of `operators` operators: `f(op, kg, chunk)` for each
/// frame `want(op, kg)` accepts, in file order; the others are skipped unread. Every frame read is
/// checked against its checksum, and the end frame against the number of frames.
pub fn read_frames(
    src: &mut impl Source,
    what: &str,
    operators: usize,
    want: impl Fn(u32, u32) -> bool,
    mut f: impl FnMut(u32, u32, Vec<u8>) -> Result<()>,
) -> Result<()> {
    let mut count = 0u32;
    loop {
        let header = src.read(FRAME_HEADER)?;
        if header.len() < FRAME_HEADER {
            return Err(bad(what, "is truncated: its last frame is missing"));
        }
        let (op, kg, crc, len) = (word(&header, 0), word(&header, 4), word(&header, 8), long(&header, 12));
        if op == END_FRAME {
            if kg != count || len != 0 || src.remaining() != 0 {
                return Err(bad(what, "is corrupted (its frames do not add up)"));
            }
            return Ok(());
        }
        if src.remaining() < len {
            return Err(bad(what, format!("is truncated: a frame of {len} bytes has {}", src.remaining())));
        }
        if op as usize >= operators {
            return Err(bad(what, "is corrupted (a frame names no operator)"));
        }
        if want(op, kg) {
            let chunk = src.read(usize::try_from(len).unwrap_or(usize::MAX))?;
            if crc32fast::hash(&chunk) != crc {
                return Err(bad(what, "is corrupted (checksum mismatch in a frame)"));
            }
            f(op, kg, chunk)?;
        } else {
            src.skip(len);
        }
        count = count.checked_add(1).ok_or_else(|| bad(what, "is corrupted (too many frames)"))?;
    }
}

/// The frames of a state file in storage.
#[derive(Clone, Debug)]
pub struct FramesAt {
    /// The file's storage.
    pub storage: CheckpointStorage,
    /// The file, relative to the storage.
    pub rel: String,
    /// Where its frames start.
    pub at: u64,
    /// The number of operators its head holds.
    pub operators: usize,
}

impl FramesAt {
    /// The file's full location, for messages.
    fn describe(&self) -> String {
        format!("{}/{}", self.storage.location().trim_end_matches('/'), self.rel)
    }
}

/// A part of an operator instance's restored raw keyed state.
#[derive(Clone, Debug)]
enum RawPart {
    /// Chunks in memory.
    Chunks(Vec<(u32, Vec<u8>)>),
    /// The frames of operator `op` in key groups `key_groups` of a file.
    Frames { file: FramesAt, op: u32, key_groups: Range<u32> },
}

/// An operator instance's restored raw keyed state (the disk backend's), in the order it applies.
#[derive(Clone, Debug, Default)]
pub struct RawState {
    parts: Vec<RawPart>,
}

impl From<Vec<(u32, Vec<u8>)>> for RawState {
    fn from(chunks: Vec<(u32, Vec<u8>)>) -> Self {
        let mut raw = RawState::default();
        raw.push_chunks(chunks);
        raw
    }
}

impl RawState {
    /// Whether nothing was restored.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Adds chunks in memory.
    pub fn push_chunks(&mut self, chunks: Vec<(u32, Vec<u8>)>) {
        if !chunks.is_empty() {
            self.parts.push(RawPart::Chunks(chunks));
        }
    }

    /// Adds the frames of operator `op` in `key_groups` of `file`, read when they are loaded.
    pub fn push_frames(&mut self, file: FramesAt, op: usize, key_groups: Range<u32>) -> Result<()> {
        let op = u32::try_from(op).map_err(|_| Error::internal("too many operators in a state file"))?;
        self.parts.push(RawPart::Frames { file, op, key_groups });
        Ok(())
    }

    /// Calls `f` with every chunk, key group first, in the order they apply; chunks in files are
    /// read one at a time.
    pub fn for_each(&self, mut f: impl FnMut(u32, &[u8]) -> Result<()>) -> Result<()> {
        for part in &self.parts {
            match part {
                RawPart::Chunks(chunks) => {
                    for (kg, bytes) in chunks {
                        f(*kg, bytes)?;
                    }
                }
                RawPart::Frames { file, op, key_groups } => {
                    let mut reader = file.storage.reader(&file.rel)?;
                    reader.skip(file.at);
                    let want = |o: u32, kg: u32| o == *op && key_groups.contains(&kg);
                    read_frames(&mut reader, &file.describe(), file.operators, want, |_, kg, chunk| f(kg, &chunk))?;
                }
            }
        }
        Ok(())
    }

    /// Every chunk, read into memory.
    pub fn chunks(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        let mut out = Vec::new();
        self.for_each(|kg, bytes| {
            out.push((kg, bytes.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OperatorSnapshot, end_frame, frame_header};
    use weir_core::JobId;

    /// A state file of two operators whose frames are `frames` (operator, key group, bytes), put
    /// in a new local storage as `f`.
    fn stored(frames: &[(u32, u32, Vec<u8>)]) -> Result<(tempfile::TempDir, CheckpointStorage, Vec<u8>)> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let storage = CheckpointStorage::open(&dir.path().display().to_string())?;
        let shell = |uid: &str| OperatorSnapshot { uid: uid.into(), ..Default::default() };
        let head = TaskState {
            job_id: JobId(1),
            checkpoint_id: 2,
            head: 0,
            subtask: 0,
            operators: vec![shell("a"), shell("b")],
        };
        let mut file = head.encode_head()?;
        for (op, kg, bytes) in frames {
            file.extend_from_slice(&frame_header(*op, *kg, bytes));
            file.extend_from_slice(bytes);
        }
        file.extend_from_slice(&end_frame(frames.len() as u32));
        storage.put("f", file.clone())?;
        Ok((dir, storage, file))
    }

    fn frames_of(storage: &CheckpointStorage, op: usize, key_groups: Range<u32>) -> Result<RawState> {
        let (state, at) = read_head(&mut storage.reader("f")?, "f")?;
        let at = at.ok_or_else(|| Error::internal("a file of format 3 has frames"))?;
        let file = FramesAt { storage: storage.clone(), rel: "f".into(), at, operators: state.operators.len() };
        let mut raw = RawState::from(vec![(0, b"in memory".to_vec())]);
        raw.push_frames(file, op, key_groups)?;
        Ok(raw)
    }

    #[test]
    fn frames_are_read_from_storage_one_at_a_time_for_their_operator_and_key_groups() -> Result<()> {
        // Frames larger than a read-ahead, and small ones between them.
        let big = |seed: u8| (0..200_000u32).map(|i| (i as u8) ^ seed).collect::<Vec<u8>>();
        let frames =
            vec![(1, 3, big(1)), (0, 3, b"a3".to_vec()), (1, 9, b"b9".to_vec()), (1, 4, big(2)), (1, 3, big(3))];
        let (_dir, storage, file) = stored(&frames)?;
        let raw = frames_of(&storage, 1, 3..5)?;
        assert_eq!(raw.chunks()?, vec![(0, b"in memory".to_vec()), (3, big(1)), (4, big(2)), (3, big(3))]);
        // What a whole-file read gives the operator, in the same order.
        let whole = TaskState::decode(&file, "f")?;
        assert_eq!(whole.operators[1].raw.len(), 4);
        assert!(frames_of(&storage, 0, 0..128)?.chunks()?.contains(&(3, b"a3".to_vec())));
        // Damage in a frame that is read is reported when the operator loads its state; the file
        // cut short, too.
        let mut flipped = file.clone();
        let at = file.len() - 100;
        flipped[at] ^= 1;
        storage.put("f", flipped)?;
        let e = frames_of(&storage, 1, 3..5)?.chunks().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("checksum mismatch in a frame") && e.contains("/f"), "{e}");
        storage.put("f", file[..file.len() - 30].to_vec())?;
        let e = frames_of(&storage, 1, 3..5)?.chunks().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("truncated"), "{e}");
        Ok(())
    }

    #[test]
    fn a_reader_reads_across_its_read_ahead_skips_and_stops_at_the_end() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let storage = CheckpointStorage::open(&dir.path().display().to_string())?;
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        storage.put("x", bytes.clone())?;
        let mut r = storage.reader("x")?;
        assert_eq!(r.read(10)?, bytes[..10]);
        r.skip(100_000);
        assert_eq!(r.read(150_000)?, bytes[100_010..250_010]);
        assert_eq!(r.remaining(), 49_990);
        assert_eq!(r.read(60_000)?, bytes[250_010..], "fewer only at the end");
        assert!(r.read(1)?.is_empty());
        let e = storage.reader("missing").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("missing"), "{e}");
        Ok(())
    }
}
