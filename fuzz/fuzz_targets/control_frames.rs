//! Control frames between JobManager, TaskManagers and workers: a length header and a JSON body.
//! Whatever arrives, decoding answers an error or a message; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_core::protocol::{FromWorker, ToJobManager, ToTaskManager, decode, frame_length};

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let _ = frame_length([data[0], data[1], data[2], data[3]]);
    }
    let _ = decode::<ToJobManager>(data);
    let _ = decode::<ToTaskManager>(data);
    let _ = decode::<FromWorker>(data);
    let _ = weir_core::protocol::check_handshake(&std::array::from_fn(|i| data.get(i).copied().unwrap_or(0)), "fuzz");
});
