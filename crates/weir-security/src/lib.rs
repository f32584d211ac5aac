//! Connection security for weir (docs/security.md).
//!
//! - [`Internal`]: the JobManager's, TaskManagers' and workers' connections among themselves,
//!   with mutual TLS (`security.ssl.internal.*`, PEM files) and/or a cluster secret that both ends
//!   prove they hold ([`Secret`]); blocking ([`Stream`]) and async ([`AsyncStream`]) flavours.
//! - [`rest`]: HTTPS for the REST endpoint (`security.ssl.rest.*`), optionally with client
//!   certificates, and the certificates its clients trust.

mod internal;
mod pem;
mod pipe;
pub mod rest;
mod secret;

pub use internal::{
    AsyncStream, HANDSHAKE_TIMEOUT, Internal, SECRET_VARIABLE, Stream, fresh_secret, read_secret_file,
    write_secret_file,
};
pub use pipe::TlsPipe;
pub use secret::{Secret, Side};

/// 32 random bytes from the operating system, for keys.
pub fn random_key() -> weir_core::Result<[u8; 32]> {
    secret::random::<32>()
}

#[cfg(feature = "testing")]
pub mod testing;
