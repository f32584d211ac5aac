//! What REST refuses before a handler runs, and the switches handlers consult: requests that name
//! a host this cluster does not answer to (a web page that reached a loopback endpoint through DNS
//! rebinding names its own domain), and the endpoints `web.submit.enable` and `web.cancel.enable`
//! turn off.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use weir_core::config::ClusterConfig;

use super::common::{ApiError, Shared, error};

/// The host name of a `Host` header value (`name`, `name:port`, `[v6]:port`), lowercased.
fn host_name(value: &str) -> String {
    let value = value.trim();
    let name = match value.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => value.rsplit_once(':').filter(|(_, port)| port.parse::<u16>().is_ok()).map_or(value, |(h, _)| h),
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a request naming `name` is for this cluster: an IP address (which DNS rebinding cannot
/// produce), localhost, the configured REST addresses, this machine's name, or a name of
/// `weir.rest.allowed-hosts`.
fn allowed(config: &ClusterConfig, name: &str) -> bool {
    name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || name == config.rest_address.to_ascii_lowercase()
        || name == config.rest_bind_address.to_ascii_lowercase()
        || config.rest_allowed_hosts.iter().any(|h| h == name)
        || this_machine().is_some_and(|h| h == name)
}

/// This machine's host name.
fn this_machine() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_ascii_lowercase()).filter(|n| !n.is_empty())
}

/// Refuses a request whose `Host` header names a host this cluster does not answer to (403,
/// saying how to allow it). A request without one (an HTTP/1.0 client) is let through: browsers
/// always send it.
pub(super) async fn known_host(
    State(c): Shared,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let named = request.headers().get(header::HOST).map(|v| v.to_str().map(host_name));
    match named {
        None => next.run(request).await,
        Some(Ok(name)) if allowed(&c.config, &name) => next.run(request).await,
        Some(Ok(name)) => error(
            StatusCode::FORBIDDEN,
            format!(
                "this cluster does not answer to the host '{name}' (the request's Host header): reach it by its \
                 rest.address ({}) or an IP address, or add the name to weir.rest.allowed-hosts",
                c.config.rest_address
            ),
        ),
        Some(Err(_)) => error(StatusCode::BAD_REQUEST, "the Host header is not text"),
    }
}

/// 403 unless `web.submit.enable` is on.
pub(super) fn submit_enabled(config: &ClusterConfig) -> Result<(), ApiError> {
    if config.web_submit {
        return Ok(());
    }
    Err(ApiError(
        StatusCode::FORBIDDEN,
        "uploading, running and deleting programs through REST is turned off on this cluster (web.submit.enable: \
         false); submit jobs of the programs it holds, or ask its operator"
            .into(),
    ))
}

/// 403 unless `web.cancel.enable` is on.
pub(super) fn cancel_enabled(config: &ClusterConfig) -> Result<(), ApiError> {
    if config.web_cancel {
        return Ok(());
    }
    Err(ApiError(
        StatusCode::FORBIDDEN,
        "cancelling jobs through REST is turned off on this cluster (web.cancel.enable: false); ask its operator"
            .into(),
    ))
}

/// 415 unless the body is declared `application/octet-stream`: a web page can send a cross-site
/// POST without asking first only with a form's or plain text's content type.
pub(super) fn binary_body(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let essence = declared.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if essence == "application/octet-stream" {
        return Ok(());
    }
    Err(ApiError(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "an upload's body must be declared Content-Type: application/octet-stream (it was '{declared}'); \
             `weir run -t remote` does so"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_read_from_every_form_of_the_header() {
        assert_eq!(host_name("Example.COM:8081"), "example.com");
        assert_eq!(host_name("example.com."), "example.com");
        assert_eq!(host_name("[::1]:8081"), "::1");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn only_addresses_the_cluster_answers_to_are_allowed() {
        let config = ClusterConfig {
            rest_address: "jm.internal".into(),
            rest_allowed_hosts: vec!["flink.example.com".into()],
            ..ClusterConfig::default()
        };
        for ok in ["127.0.0.1", "::1", "10.1.2.3", "localhost", "app.localhost", "jm.internal", "flink.example.com"] {
            assert!(allowed(&config, ok), "{ok}");
        }
        for refused in ["evil.example", "127.0.0.1.nip.io", "jm.internal.evil.example", "flink.example.com.evil"] {
            assert!(!allowed(&config, refused), "{refused}");
        }
    }
}
