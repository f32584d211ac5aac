//! Certificates for tests, made at test time: a certificate authority and certificates it signed,
//! as PEM files in a directory.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use weir_core::{Error, Result};

/// PEM files made by [`Certificates::generate`].
#[derive(Clone, Debug)]
pub struct Certificates {
    /// The authority's certificate (a truststore).
    pub ca: PathBuf,
    /// A certificate signed by the authority with its key, naming `localhost` and `127.0.0.1`
    /// (a keystore).
    pub signed: PathBuf,
    /// A certificate and key signed by another authority (a keystore nobody trusts).
    pub stranger: PathBuf,
    /// A self-signed certificate (marked as an authority, as `openssl req -x509` makes them) with
    /// its key: Flink's setup, one file as keystore and truststore of the whole cluster.
    pub self_signed: PathBuf,
}

fn failed(e: rcgen::Error) -> Error {
    Error::internal(format!("cannot make a test certificate: {e}"))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io("cannot write", path, e))
}

fn authority(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(failed)?).map_err(failed)
}

fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>) -> Result<String> {
    let key = KeyPair::generate().map_err(failed)?;
    let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).map_err(failed)?;
    let cert = params.signed_by(&key, issuer).map_err(failed)?;
    Ok(format!("{}{}", cert.pem(), key.serialize_pem()))
}

impl Certificates {
    /// Makes the files in `dir`.
    pub fn generate(dir: &Path) -> Result<Certificates> {
        let ca = authority("weir test authority")?;
        let other = authority("someone else")?;
        let files = Certificates {
            ca: dir.join("ca.pem"),
            signed: dir.join("signed.pem"),
            stranger: dir.join("stranger.pem"),
            self_signed: dir.join("self-signed.pem"),
        };
        let own = authority("weir cluster")?;
        write(&files.self_signed, &format!("{}{}", own.pem(), own.key().serialize_pem()))?;
        write(&files.ca, &ca.pem())?;
        write(&files.signed, &leaf(&ca)?)?;
        write(&files.stranger, &leaf(&other)?)?;
        Ok(files)
    }
}
