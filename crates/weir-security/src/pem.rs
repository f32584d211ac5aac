//! Certificates and keys from PEM files, with errors that say how to get PEM from what Flink users
//! have (Java keystores).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use weir_core::{Error, Result};

/// The crypto provider every weir TLS configuration uses (aws-lc-rs, rustls's default).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

const CONVERT: &str = "weir reads PEM files; convert a Java keystore with `keytool -importkeystore -srckeystore \
                       KS.jks -destkeystore KS.p12 -deststoretype PKCS12`, then `openssl pkcs12 -in KS.p12 -nodes \
                       -out KS.pem` (docs/security.md)";

fn unreadable(key: &str, path: &str, why: impl std::fmt::Display) -> Error {
    Error::Config(format!("{key} ({path}): {why}; {CONVERT}"))
}

/// The certificates of the PEM file `path` (named by the setting `key`), at least one.
pub(crate) fn certificates(key: &str, path: &str) -> Result<Vec<CertificateDer<'static>>> {
    std::fs::metadata(path).map_err(|e| Error::io(format!("cannot read {key}"), path, e))?;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| unreadable(key, path, format!("not a PEM file of certificates ({e})")))?;
    if certs.is_empty() {
        return Err(unreadable(key, path, "it holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)"));
    }
    Ok(certs)
}

/// The private key of the PEM file `path` (named by the setting `key`).
pub(crate) fn private_key(key: &str, path: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        unreadable(
            key,
            path,
            format!("it holds no unencrypted PEM private key (`-----BEGIN PRIVATE KEY-----`) ({e}); decrypt one with `openssl pkey`"),
        )
    })
}

/// A certificate chain and its key, from one PEM file.
pub(crate) fn identity(key: &str, path: &str) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    Ok((certificates(key, path)?, private_key(key, path)?))
}

/// The trusted certificates of the PEM file `path`.
pub(crate) fn roots(key: &str, path: &str) -> Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    for cert in certificates(key, path)? {
        store
            .add(cert)
            .map_err(|e| unreadable(key, path, format!("a certificate in it is not usable as a trust anchor ({e})")))?;
    }
    Ok(Arc::new(store))
}
