//! Artifact upload and run: weir's counterpart of Flink's `/jars` endpoints, for executables.
//!
//! - `POST /artifacts/upload[?digest=HEX]`: the body is the executable (`application/octet-stream`).
//!   It is stored only if complete (as long as `Content-Length` says), within
//!   `blob.artifact.max-size`, and matching the declared digest.
//! - `GET /artifacts`, `GET /artifacts/{id}`, `DELETE /artifacts/{id}`.
//! - `POST /artifacts/{id}/run` with `{"job", "args", "parallelism", "config"}`: the JobManager runs
//!   the artifact to build the job's graph (`ARTIFACT --weir graph ...`) and submits it.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tracing::{info, warn};
use weir_core::blob::{BlobError, parse_digest};
use weir_core::config::JobConfig;
use weir_core::{ArtifactDigest, JobGraph};

use super::common::{ApiError, Shared, error};

/// How long building a job graph from an uploaded artifact may take.
const GRAPH_TIMEOUT: Duration = Duration::from_secs(60);

fn digest_of(id: &str) -> Result<ArtifactDigest, ApiError> {
    parse_digest(id).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

fn refused(e: BlobError) -> Response {
    let status = match &e {
        BlobError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        BlobError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    warn!(error = %e, "artifact upload refused");
    error(status, e.to_string())
}

/// `POST /artifacts/upload`.
pub(super) async fn upload(
    State(c): Shared,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(e) = super::guard::submit_enabled(&c.config).and_then(|()| super::guard::binary_body(&headers)) {
        return e.into_response();
    }
    if let Some(k) = q.keys().find(|k| *k != "digest") {
        return error(StatusCode::BAD_REQUEST, format!("unknown query parameter '{k}'; only 'digest' is accepted"));
    }
    let declared = match q.get("digest").map(|d| digest_of(d)).transpose() {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    let announced = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(n) => Some(n),
            None => return error(StatusCode::BAD_REQUEST, "Content-Length is not a number"),
        },
    };
    let max = c.blobs.max_bytes();
    if announced.is_some_and(|n| n > max) {
        return refused(BlobError::TooLarge { max });
    }
    if let Some(info) = declared.as_ref().and_then(|d| c.blobs.info(d)) {
        return Json(json!({ "id": info.id, "size": info.size, "status": "success" })).into_response();
    }
    // Bounded: a flood of uploads cannot take every thread and file descriptor.
    let Some(_permit) = c.blobs.upload_permit() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} uploads are in progress (weir.rest.upload.max-concurrent); upload again once one finished",
                c.config.uploads
            ),
        );
    };
    if announced.is_some_and(|n| n > c.blobs.room()) {
        return error(StatusCode::INSUFFICIENT_STORAGE, c.blobs.full(announced).to_string());
    }
    let writer = match c.blobs.writer() {
        Ok(w) => w,
        Err(e) if c.blobs.room() == 0 => return error(StatusCode::INSUFFICIENT_STORAGE, e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    // Hashing and writing are blocking work: a thread of their own, fed chunk by chunk.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let store = tokio::task::spawn_blocking(move || {
        let mut writer = writer;
        while let Some(chunk) = rx.blocking_recv() {
            writer.write(&chunk)?;
        }
        Ok::<_, BlobError>(writer)
    });
    let mut body = body;
    let mut received: u64 = 0;
    let mut broken = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else { continue };
                received += data.len() as u64;
                if received > max {
                    broken = Some(BlobError::TooLarge { max });
                    break;
                }
                if tx.send(data).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                broken = Some(match announced {
                    Some(announced) => BlobError::Truncated { got: received, announced },
                    None => BlobError::Io(weir_core::Error::external(
                        "the artifact upload",
                        format!("it broke off after {received} bytes ({e}); nothing was stored, upload it again"),
                        true,
                    )),
                });
                break;
            }
        }
    }
    drop(tx);
    let writer = match store.await {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => return refused(e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("the upload stopped: {e}")),
    };
    if let Some(e) = broken {
        // Dropping the writer removes what arrived.
        drop(writer);
        return refused(e);
    }
    let finished = tokio::task::spawn_blocking(move || writer.finish(announced, declared.as_ref())).await;
    match finished {
        Ok(Ok((digest, _))) => {
            info!(artifact = %digest.0, bytes = received, "artifact stored");
            Json(json!({ "id": digest.hex(), "size": received, "status": "success" })).into_response()
        }
        Ok(Err(e)) => refused(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("the upload stopped: {e}")),
    }
}

/// `GET /artifacts`.
pub(super) async fn list(State(c): Shared) -> Json<Value> {
    Json(json!({ "artifacts": c.blobs.list(), "weir-max-size": c.blobs.max_bytes() }))
}

/// `GET /artifacts/{id}`.
pub(super) async fn show(State(c): Shared, Path(id): Path<String>) -> Response {
    let digest = match digest_of(&id) {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    match c.blobs.info(&digest) {
        Some(info) => Json(json!(info)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("artifact {id} is not in the blob store; upload it first")),
    }
}

/// `DELETE /artifacts/{id}`.
pub(super) async fn remove(State(c): Shared, Path(id): Path<String>) -> Response {
    if let Err(e) = super::guard::submit_enabled(&c.config) {
        return e.into_response();
    }
    let digest = match digest_of(&id) {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    let in_use = c.jobs().iter().any(|j| !j.status().is_terminal() && j.graph.artifact == digest);
    if in_use || c.blobs.is_own(&digest) {
        let why = if in_use { "a job that is not finished runs it" } else { "it is the JobManager's own executable" };
        return error(StatusCode::CONFLICT, format!("artifact {id} cannot be deleted: {why}"));
    }
    match c.blobs.remove(&digest) {
        Ok(true) => Json(json!({})).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("artifact {id} is not in the blob store")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The body of `POST /artifacts/{id}/run`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RunRequest {
    /// The registered job's name.
    job: String,
    /// Its arguments.
    #[serde(default)]
    args: Value,
    /// Default parallelism.
    parallelism: Option<u32>,
    /// Execution settings.
    #[serde(default)]
    config: BTreeMap<String, String>,
}

/// `POST /artifacts/{id}/run`: builds the job's graph with the artifact itself, then submits it.
pub(super) async fn run(
    State(c): Shared,
    Path(id): Path<String>,
    body: Result<Json<RunRequest>, JsonRejection>,
) -> Response {
    if let Err(e) = super::guard::submit_enabled(&c.config) {
        return e.into_response();
    }
    let digest = match digest_of(&id) {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body is not a run request ({{\"job\", \"args\", \"parallelism\", \"config\"}}): {}",
                    e.body_text()
                ),
            );
        }
    };
    let config = match JobConfig::submitted(&req.config) {
        Ok(config) => config,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the run request's config: {e}")),
    };
    let Some(path) = c.blobs.locate(&digest) else {
        return error(StatusCode::NOT_FOUND, format!("artifact {id} is not in the blob store; upload it first"));
    };
    let mut command = tokio::process::Command::new(&path);
    command.args(["--weir", "graph", &req.job, "--args", &req.args.to_string()]);
    if let Some(p) = req.parallelism {
        command.args(["-p", &p.to_string()]);
    }
    for (k, v) in config.rendered() {
        command.args(["-D", &format!("{k}={v}")]);
    }
    command.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let output = match tokio::time::timeout(GRAPH_TIMEOUT, command.output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            return error(StatusCode::BAD_REQUEST, format!("artifact {id} cannot be started on the JobManager: {e}"));
        }
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("artifact {id} did not build job '{}' within {} s", req.job, GRAPH_TIMEOUT.as_secs()),
            );
        }
    };
    if !output.status.success() {
        // A weir program says what went wrong on a line `NAME: error: ...`; anything else is not one.
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said: Vec<&str> = stderr.lines().filter(|l| l.contains(": error: ")).collect();
        let message = if said.is_empty() {
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
            format!(
                "artifact {id} is not a weir program of this version: `--weir graph` ended with {} and no weir \
                 error{}",
                output.status,
                if tail.is_empty() { String::new() } else { format!(" ({})", tail.join(" / ")) }
            )
        } else {
            format!("artifact {id} could not build job '{}': {}", req.job, said.join("; "))
        };
        return error(StatusCode::BAD_REQUEST, message);
    }
    let graph: JobGraph = match serde_json::from_slice(&output.stdout) {
        Ok(g) => g,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("artifact {id} is not a weir program of this version: `--weir graph` gave no job graph"),
            );
        }
    };
    if graph.artifact != digest {
        return error(
            StatusCode::BAD_REQUEST,
            format!("artifact {id} says it is {}; it cannot be run from the blob store", graph.artifact.0),
        );
    }
    match c.submit_durably(graph, config).await {
        Ok(job) => Json(json!({ "jobid": job.to_string() })).into_response(),
        Err(e) => error(super::common::refused(&e), e.to_string()),
    }
}
