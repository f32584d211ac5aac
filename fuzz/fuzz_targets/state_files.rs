//! Checkpoint state files and metadata as a restore reads them from storage: a damaged file is an
//! error naming it, never a panic or an allocation the file's bytes ask for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_checkpoint::{SnapshotMetadata, TaskState, decode_raw_chunk};

fuzz_target!(|data: &[u8]| {
    let _ = TaskState::decode(data, "fuzz");
    let _ = SnapshotMetadata::decode(data, "fuzz");
    let _ = decode_raw_chunk(0, data);
});
