//! The cluster secret, proven (never sent) when an internal connection opens.
//!
//! Each side sends a short hello (`WSEC`, a version, whether it holds a secret) and, with a secret,
//! a fresh 32-byte nonce; then each sends HMAC-SHA-256 over both nonces and its role (so a proof
//! cannot be reflected back) and checks the other's in constant time. A peer without the secret
//! learns nothing it could replay: every proof covers a nonce of the side that checks it.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use weir_core::{Error, Result};

const MAGIC: [u8; 4] = *b"WSEC";
const VERSION: u8 = 1;
const NONCE: usize = 32;
const PROOF: usize = 32;

/// The shared secret of a cluster's processes.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret from its text; at least 16 characters.
    pub fn new(text: &str, from: &str) -> Result<Secret> {
        let text = text.trim();
        if text.len() < 16 {
            return Err(Error::Config(format!(
                "the cluster secret from {from} has {} characters; use at least 16 (for example `head -c 32 \
                 /dev/urandom | base64`)",
                text.len()
            )));
        }
        Ok(Secret(text.as_bytes().to_vec()))
    }

    /// A fresh random secret (64 hexadecimal characters).
    pub fn generate() -> Result<Secret> {
        let bytes = random::<32>()?;
        Ok(Secret(hex(&bytes).into_bytes()))
    }

    /// Its text, for a child process's environment.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    fn proof(&self, role: &[u8], client_nonce: &[u8; NONCE], server_nonce: &[u8; NONCE]) -> Hmac<Sha256> {
        // HMAC takes keys of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(role);
        mac.update(client_nonce);
        mac.update(server_nonce);
        mac
    }
}

/// Which end of a connection this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The end that connected.
    Client,
    /// The end that accepted.
    Server,
}

impl Side {
    fn role(self) -> &'static [u8] {
        match self {
            Side::Client => b"weir client",
            Side::Server => b"weir server",
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// `N` random bytes from the operating system.
pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    crate::pem::provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::internal("the operating system gave no random bytes"))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hello(secret: Option<&Secret>) -> [u8; 8] {
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], VERSION, u8::from(secret.is_some()), 0, 0]
}

fn check_hello(peer: &[u8; 8], secret: Option<&Secret>, who: &str) -> Result<()> {
    if peer[0] == 0x16 && peer[1] == 0x03 {
        return Err(Error::Config(format!(
            "the {who} opened TLS, and this process does not use TLS on internal connections: set \
             security.ssl.internal.enabled (with its keystore and truststore) on every process of the cluster, \
             or on none"
        )));
    }
    if peer[..4] != MAGIC {
        return Err(Error::external(
            who,
            "it did not start weir's connection handshake: it is not a weir process of this version, or it uses \
             TLS where this process does not (security.ssl.internal.enabled must be the same everywhere)",
            false,
        ));
    }
    if peer[4] != VERSION {
        return Err(Error::external(
            who,
            format!(
                "it speaks security handshake version {}, this process {VERSION}; run the same weir version everywhere",
                peer[4]
            ),
            false,
        ));
    }
    match (peer[5] == 1, secret.is_some()) {
        (true, false) => Err(Error::Config(format!(
            "the {who} requires a cluster secret and this process has none: give every process of the cluster the \
             same weir.security.cluster-secret-file (or $WEIR_CLUSTER_SECRET)"
        ))),
        (false, true) => Err(Error::Config(format!(
            "the {who} has no cluster secret and this process requires one: give every process of the cluster the \
             same weir.security.cluster-secret-file (or $WEIR_CLUSTER_SECRET)"
        ))),
        _ => Ok(()),
    }
}

fn wrong_secret(who: &str) -> Error {
    Error::Config(format!(
        "the {who} does not know this cluster's secret (its proof did not match): give every process of the cluster \
         the same weir.security.cluster-secret-file (or $WEIR_CLUSTER_SECRET)"
    ))
}

fn lost(who: &str, e: std::io::Error) -> Error {
    Error::Network { context: "the connection handshake failed with".into(), peer: who.to_string(), source: e }
}

/// One side's part of the handshake, apart from the I/O (which comes blocking and async).
struct Exchange<'a> {
    secret: Option<&'a Secret>,
    side: Side,
    nonce: [u8; NONCE],
}

impl<'a> Exchange<'a> {
    fn new(secret: Option<&'a Secret>, side: Side) -> Result<Self> {
        Ok(Exchange { secret, side, nonce: random::<NONCE>()? })
    }

    /// The hello, with the nonce when there is a secret.
    fn first(&self) -> Vec<u8> {
        let mut first = hello(self.secret).to_vec();
        if self.secret.is_some() {
            first.extend_from_slice(&self.nonce);
        }
        first
    }

    /// This side's proof, given the peer's nonce.
    fn proof(&self, secret: &Secret, peer_nonce: &[u8; NONCE]) -> Vec<u8> {
        let (client, server) = ordered(self.side, &self.nonce, peer_nonce);
        secret.proof(self.side.role(), client, server).finalize().into_bytes().to_vec()
    }

    /// Checks the peer's proof.
    fn verify(&self, secret: &Secret, peer_nonce: &[u8; NONCE], peer_proof: &[u8], who: &str) -> Result<()> {
        let (client, server) = ordered(self.side, &self.nonce, peer_nonce);
        secret.proof(self.side.other().role(), client, server).verify_slice(peer_proof).map_err(|_| wrong_secret(who))
    }
}

/// The handshake on a blocking stream.
pub(crate) fn exchange<S: std::io::Read + std::io::Write>(
    s: &mut S,
    secret: Option<&Secret>,
    side: Side,
    who: &str,
) -> Result<()> {
    let x = Exchange::new(secret, side)?;
    s.write_all(&x.first()).and_then(|()| s.flush()).map_err(|e| lost(who, e))?;
    let mut theirs = [0u8; 8];
    s.read_exact(&mut theirs).map_err(|e| lost(who, e))?;
    check_hello(&theirs, secret, who)?;
    let Some(secret) = secret else { return Ok(()) };
    let mut peer_nonce = [0u8; NONCE];
    s.read_exact(&mut peer_nonce).map_err(|e| lost(who, e))?;
    s.write_all(&x.proof(secret, &peer_nonce)).and_then(|()| s.flush()).map_err(|e| lost(who, e))?;
    let mut peer_proof = [0u8; PROOF];
    s.read_exact(&mut peer_proof).map_err(|e| lost(who, e))?;
    x.verify(secret, &peer_nonce, &peer_proof, who)
}

/// The handshake on an async stream.
pub(crate) async fn exchange_async<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secret: Option<&Secret>,
    side: Side,
    who: &str,
) -> Result<()> {
    let x = Exchange::new(secret, side)?;
    s.write_all(&x.first()).await.map_err(|e| lost(who, e))?;
    s.flush().await.map_err(|e| lost(who, e))?;
    let mut theirs = [0u8; 8];
    s.read_exact(&mut theirs).await.map_err(|e| lost(who, e))?;
    check_hello(&theirs, secret, who)?;
    let Some(secret) = secret else { return Ok(()) };
    let mut peer_nonce = [0u8; NONCE];
    s.read_exact(&mut peer_nonce).await.map_err(|e| lost(who, e))?;
    s.write_all(&x.proof(secret, &peer_nonce)).await.map_err(|e| lost(who, e))?;
    s.flush().await.map_err(|e| lost(who, e))?;
    let mut peer_proof = [0u8; PROOF];
    s.read_exact(&mut peer_proof).await.map_err(|e| lost(who, e))?;
    x.verify(secret, &peer_nonce, &peer_proof, who)
}

fn ordered<'a>(side: Side, ours: &'a [u8; NONCE], theirs: &'a [u8; NONCE]) -> (&'a [u8; NONCE], &'a [u8; NONCE]) {
    match side {
        Side::Client => (ours, theirs),
        Side::Server => (theirs, ours),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    fn pair(a: Option<Secret>, b: Option<Secret>) -> (Result<()>, Result<()>) {
        let (mut x, mut y) = UnixStream::pair().expect("a socket pair");
        let t = std::thread::spawn(move || exchange(&mut y, b.as_ref(), Side::Server, "client"));
        let left = exchange(&mut x, a.as_ref(), Side::Client, "server");
        drop(x);
        (left, t.join().expect("no panic"))
    }

    #[test]
    fn the_same_secret_passes_and_any_other_fails_on_both_sides() -> Result<()> {
        let s = Secret::new("correct horse battery staple", "a test")?;
        let (a, b) = pair(Some(s.clone()), Some(s.clone()));
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        let other = Secret::new("another secret of enough length", "a test")?;
        let (a, b) = pair(Some(s.clone()), Some(other));
        let (a, b) = (a.expect_err("client refuses"), b.expect_err("server refuses"));
        assert!(a.to_string().contains("does not know this cluster's secret"), "{a}");
        assert!(b.to_string().contains("does not know this cluster's secret"), "{b}");
        let (a, b) = pair(None, Some(s));
        assert!(a.expect_err("no secret").to_string().contains("requires a cluster secret"));
        assert!(b.expect_err("no secret").to_string().contains("has no cluster secret"));
        let (a, b) = pair(None, None);
        assert!(a.is_ok() && b.is_ok());
        Ok(())
    }

    #[test]
    fn short_secrets_are_refused_and_generated_ones_differ() -> Result<()> {
        assert!(Secret::new("short", "a test").is_err());
        let (a, b) = (Secret::generate()?, Secret::generate()?);
        assert_eq!(a.text().len(), 64);
        assert_ne!(a.text(), b.text());
        Ok(())
    }

    #[test]
    fn a_tls_client_or_a_stranger_gets_a_clear_refusal() {
        let e = check_hello(&[0x16, 0x03, 0x01, 0, 0, 0, 0, 0], None, "peer").expect_err("tls refused");
        assert!(e.to_string().contains("security.ssl.internal.enabled"), "{e}");
        let e = check_hello(b"GET / HT", None, "peer").expect_err("http refused");
        assert!(e.to_string().contains("not a weir process"), "{e}");
    }
}
