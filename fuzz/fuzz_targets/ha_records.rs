//! Records in the coordination service and the HA storage directory: the leader's address, a job
//! graph as it is stored for recovery, a job's result values.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<weir_ha::LeaderInfo>(data);
    let _ = serde_json::from_slice::<weir_core::result::JobResult>(data);
    let _ = serde_json::from_slice::<weir_core::JobGraph>(data);
});
