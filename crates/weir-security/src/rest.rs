//! HTTPS for the REST endpoint (`security.ssl.rest.*`) and what its clients trust.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use weir_core::config::ClusterConfig;
use weir_core::{Error, Result};

use crate::pem;

/// The crypto provider REST clients should use too.
pub fn provider() -> Arc<CryptoProvider> {
    pem::provider()
}

/// The URL scheme of the REST endpoint: `https` with `security.ssl.rest.enabled`, else `http`.
pub fn scheme(cluster: &ClusterConfig) -> &'static str {
    if cluster.security.rest_tls { "https" } else { "http" }
}

/// The REST endpoint's TLS configuration, if `security.ssl.rest.enabled`: its certificate from
/// `security.ssl.rest.keystore`, and with `security.ssl.rest.authentication-enabled`, client
/// certificates required and checked against `security.ssl.rest.truststore`.
pub fn server_config(cluster: &ClusterConfig) -> Result<Option<Arc<ServerConfig>>> {
    let s = &cluster.security;
    if !s.rest_tls {
        return Ok(None);
    }
    let keystore = s.rest_keystore.as_deref().ok_or_else(|| {
        Error::Config(
            "security.ssl.rest.enabled needs security.ssl.rest.keystore: the endpoint's certificate chain and private \
             key (PEM)"
                .into(),
        )
    })?;
    let provider = pem::provider();
    let (certs, key) = pem::identity("security.ssl.rest.keystore", keystore)?;
    let bad = |e: rustls::Error| Error::Config(format!("security.ssl.rest.keystore ({keystore}) cannot be used: {e}"));
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().map_err(bad)?;
    let builder = if s.rest_authentication {
        let truststore = s.rest_truststore.as_deref().ok_or_else(|| {
            Error::Config(
                "security.ssl.rest.authentication-enabled needs security.ssl.rest.truststore: the certificates client \
                 certificates must be signed by (PEM)"
                    .into(),
            )
        })?;
        let roots = pem::roots("security.ssl.rest.truststore", truststore)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| Error::Config(format!("security.ssl.rest.truststore ({truststore}): {e}")))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(certs, key).map_err(bad)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// What a REST client needs for HTTPS.
pub struct ClientTls {
    /// The certificates the endpoint's certificate must be signed by.
    pub roots: Vec<CertificateDer<'static>>,
    /// The client's certificate chain and key, with `security.ssl.rest.authentication-enabled`.
    pub identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

/// A REST client's TLS settings, if `security.ssl.rest.enabled`.
pub fn client(cluster: &ClusterConfig) -> Result<Option<ClientTls>> {
    let s = &cluster.security;
    if !s.rest_tls {
        return Ok(None);
    }
    if s.skip_hostname_check {
        return Err(Error::Config(
            "security.ssl.verify-hostname: false is not supported by weir's REST client, which always checks that \
             the endpoint's certificate names the host it connects to; give the certificate the name or IP address \
             of rest.address as a subject alternative name instead"
                .into(),
        ));
    }
    let truststore = s.rest_truststore.as_deref().ok_or_else(|| {
        Error::Config(
            "security.ssl.rest.enabled needs security.ssl.rest.truststore on clients: the certificates the endpoint's \
             certificate is signed by (PEM)"
                .into(),
        )
    })?;
    let roots = pem::certificates("security.ssl.rest.truststore", truststore)?;
    let identity = match (&s.rest_keystore, s.rest_authentication) {
        (Some(k), true) => Some(pem::identity("security.ssl.rest.keystore", k)?),
        (None, true) => {
            return Err(Error::Config(
                "security.ssl.rest.authentication-enabled needs security.ssl.rest.keystore on clients too: the \
                 certificate and key they present (PEM)"
                    .into(),
            ));
        }
        _ => None,
    };
    Ok(Some(ClientTls { roots, identity }))
}
