//! weir-checkpoint: what checkpoints are, apart from the tasks that take them. Checkpoints are
//! consistent snapshots of a running job, taken with aligned barriers (asynchronous barrier
//! snapshotting), and what a job restores from after a failure. The task side (barriers, the
//! writer thread, restores into operators) is `weir_runtime::checkpoint::task`; this crate is
//! what the JobManager and the tasks share: the format of snapshots and state files, their layout
//! in storage, and the coordinator.
//!
//! - The coordinator ([`coordinator`]) decides when a checkpoint starts, collects every task's
//!   acknowledgement and completes it once its metadata, which lists every file, is written; it is
//!   a pure core whose storage work [`io::Coordinating`] carries out.
//! - Sources put a barrier into their output between two batches; tasks with several input
//!   channels align barriers (`weir_runtime::exchange::InputGate`); every operator writes its state
//!   when the barrier passes it, and the task hands its snapshot to a writer thread, so processing
//!   goes on while state is written (`weir_runtime::checkpoint::task`).
//! - State lives in checkpoint storage ([`storage`]): a directory, or any store `object_store`
//!   reaches.
//!
//! Keyed state is written by key group, so a job may restore with another parallelism; operator
//! list state is redistributed (`weir_runtime::state::redistribute`). Operators are matched to their
//! state by `uid`.

pub mod coordinator;
pub mod file;
pub mod format;
pub mod io;
pub mod layout;
/// Checkpoint storage, in a crate of its own (`weir-storage`) so that the HA services use it
/// without the runtime.
pub use weir_storage as storage;

pub use format::*;
use weir_core::Result;

impl TaskState {
    /// Reads a state file whole; a file of another format version, or one that is truncated or
    /// corrupted, is an error that names `what`. (A restore reads heads with `file::read_head`
    /// and frames as operators load them, [`file::RawState`].)
    pub fn decode(bytes: &[u8], what: &str) -> Result<TaskState> {
        let mut src = file::Slice(bytes);
        let (mut state, frames) = file::read_head(&mut src, what)?;
        if frames.is_some() {
            let operators = state.operators.len();
            file::read_frames(
                &mut src,
                what,
                operators,
                |_, _| true,
                |op, kg, chunk| {
                    if let Some(o) = state.operators.get_mut(op as usize) {
                        o.raw.push((kg, chunk));
                    }
                    Ok(())
                },
            )?;
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::Error;
    use weir_core::JobId;

    #[test]
    fn state_files_round_trip_and_damage_is_detected() -> Result<()> {
        let state = TaskState {
            job_id: JobId(9),
            checkpoint_id: 3,
            head: 1,
            subtask: 0,
            operators: vec![OperatorSnapshot {
                uid: "1:Keyed".into(),
                keyed: snapshot_keyed([(&"a".to_string(), &1u64), (&"b".to_string(), &2u64)].into_iter(), 128)?,
                ..Default::default()
            }],
        };
        let bytes = state.encode()?;
        assert_eq!(TaskState::decode(&bytes, "f")?, state);
        let e = TaskState::decode(&bytes[..bytes.len() - 1], "f").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("truncated"), "{e}");
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let e = TaskState::decode(&flipped, "f").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("corrupted"), "{e}");
        let mut other = bytes.clone();
        other[11] = 99;
        let e = TaskState::decode(&other, "f").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("format version 99"), "{e}");
        let mut back: Vec<(String, u64)> = restore_keyed(&state.operators[0].keyed)?;
        back.sort();
        assert_eq!(back, vec![("a".to_string(), 1), ("b".to_string(), 2)]);
        Ok(())
    }

    #[test]
    fn streamed_frames_join_their_operator_and_damage_to_them_is_detected() -> Result<()> {
        let shell = |uid: &str| OperatorSnapshot { uid: uid.into(), ..Default::default() };
        let head = TaskState {
            job_id: JobId(9),
            checkpoint_id: 4,
            head: 0,
            subtask: 1,
            operators: vec![shell("a"), shell("b")],
        };
        let frames: [(u32, u32, &[u8]); 3] = [(1, 7, b"seven"), (0, 2, b"two"), (1, 7, b"more")];
        let mut file = head.encode_head()?;
        for (op, kg, bytes) in frames {
            file.extend_from_slice(&frame_header(op, kg, bytes));
            file.extend_from_slice(bytes);
        }
        let body_end = file.len();
        file.extend_from_slice(&end_frame(3));
        let back = TaskState::decode(&file, "f")?;
        assert_eq!(back.operators[0].raw, vec![(2, b"two".to_vec())]);
        assert_eq!(back.operators[1].raw, vec![(7, b"seven".to_vec()), (7, b"more".to_vec())], "in the order written");
        let err = |bytes: &[u8]| TaskState::decode(bytes, "f").err().map(|e| e.to_string()).unwrap_or_default();
        // Cut anywhere in the frames, or the end frame lost: truncated.
        for cut in [body_end, body_end - 2, file.len() - 1] {
            assert!(err(&file[..cut]).contains("truncated"), "cut at {cut}: {}", err(&file[..cut]));
        }
        let mut flipped = file.clone();
        flipped[body_end - 1] ^= 1;
        assert!(err(&flipped).contains("checksum mismatch in a frame"), "{}", err(&flipped));
        let mut miscounted = file[..body_end].to_vec();
        miscounted.extend_from_slice(&end_frame(2));
        assert!(err(&miscounted).contains("do not add up"), "{}", err(&miscounted));
        let mut stray = head.encode_head()?;
        stray.extend_from_slice(&frame_header(5, 0, b"x"));
        stray.extend_from_slice(b"x");
        stray.extend_from_slice(&end_frame(1));
        assert!(err(&stray).contains("names no operator"), "{}", err(&stray));
        // A file of the previous version (one body, no frames) is still read.
        let mut v2 = file[..24].to_vec();
        v2[8..12].copy_from_slice(&2u32.to_be_bytes());
        let len = u64::from_be_bytes(file[16..24].try_into().map_err(|_| Error::internal("short file"))?) as usize;
        v2.extend_from_slice(&file[24..24 + len]);
        assert_eq!(TaskState::decode(&v2, "f")?, head);
        Ok(())
    }
}
