//! Data frames between TaskManagers: a message (records with timestamps, a watermark, idleness,
//! the end of input) in bitcode, for record types of several shapes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_runtime::net::decode_message;

fuzz_target!(|data: &[u8]| {
    let _ = decode_message::<u64>(data);
    let _ = decode_message::<String>(data);
    let _ = decode_message::<(i64, u64)>(data);
    let _ = decode_message::<(String, Vec<u8>, Option<f64>)>(data);
});
