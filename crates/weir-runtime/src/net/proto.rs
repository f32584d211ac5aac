//! The data protocol's constants and the small helpers every side of it shares: the handshake's
//! magic and version, the frame limit, how long each side waits for the other.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use weir_core::Error;

/// Magic bytes that open a data connection (not a control connection: those start with `WEIR`).
pub(super) const MAGIC: [u8; 4] = *b"WDAT";
/// Version of the data protocol.
pub const DATA_PROTOCOL_VERSION: u32 = 2;
/// The bytes of a data connection's hello: magic, version, job, attempt, both parts, the sender's key.
pub(super) const HELLO: usize = 68;
/// The largest data frame accepted: a batch of at most 2^20 records of reasonable size.
pub(super) const MAX_DATA_FRAME: usize = 256 << 20;
/// How long a receiver waits for the part a sender names to be deployed.
pub(super) const REGISTRATION_WAIT: Duration = Duration::from_secs(30);
/// How long a sender keeps trying to open a connection.
pub(super) const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// A lock that a panicked holder does not poison for the others.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A network failure talking to `peer`.
pub(super) fn io_error(context: &str, peer: &str, source: std::io::Error) -> Error {
    Error::Network { context: context.to_string(), peer: peer.to_string(), source }
}
