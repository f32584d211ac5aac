//! weir's own web dashboard, served at `/` of the REST port: one HTML page, a script and a style
//! sheet compiled into the binary (no build step, no npm). The script reads the same REST API any
//! client reads. A content security policy keeps the page to its own origin.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/style.css");

/// Only this origin's scripts, styles and REST; nothing inline, nothing framed.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

fn serve(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the dashboard.
pub async fn index() -> Response {
    serve("text/html; charset=utf-8", INDEX)
}

/// `GET /web/app.js`.
pub async fn script() -> Response {
    serve("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /web/style.css`.
pub async fn style() -> Response {
    serve("text/css; charset=utf-8", STYLE)
}
