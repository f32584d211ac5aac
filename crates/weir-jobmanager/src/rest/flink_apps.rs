//! Flink 2.x's application endpoints (`/applications/overview`, `/applications/{id}`, its
//! exceptions and cancel). Flink 2.3 wraps every job submitted to a session cluster in an
//! application of its own, with the job's id and the name `SingleJobApplication(<job name>)`;
//! weir shows its jobs the same way, so that Flink 2.3's dashboard and clients list them. (An
//! application-mode cluster's `main` is recorded in the job result store: `/applications` lists
//! those records.)

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use weir_core::JobStatus;

use super::common::{Shared, error, with_job};
use crate::state::{JobView, now_ms};

/// An application's state for a job's status.
fn state(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Initializing | JobStatus::Created => "CREATED",
        JobStatus::Failing => "FAILING",
        JobStatus::Failed => "FAILED",
        JobStatus::Cancelling => "CANCELING",
        JobStatus::Canceled => "CANCELED",
        JobStatus::Finished => "FINISHED",
        _ => "RUNNING",
    }
}

fn name(j: &JobView) -> String {
    format!("SingleJobApplication({})", j.graph.job_name)
}

/// One application's summary (Flink's `ApplicationDetails` in the overview).
fn summary(j: &JobView) -> Value {
    let now = now_ms();
    json!({
        "id": j.id.to_string(),
        "name": name(j),
        "start-time": j.submitted_ms,
        "end-time": j.end_ms().unwrap_or(-1),
        "duration": j.end_ms().unwrap_or(now) - j.submitted_ms,
        "status": state(j.status()),
        "jobs": { j.status().as_str(): 1 },
    })
}

/// `GET /applications/overview`.
pub(super) async fn overview(State(c): Shared) -> Json<Value> {
    let apps: Vec<Value> = c.jobs().iter().map(|j| summary(j)).collect();
    Json(json!({ "applications": apps }))
}

/// `GET /applications/{id}` for a job of this cluster: Flink's `ApplicationDetailsInfo`; `None`
/// when `id` names no job here.
pub(super) fn details(c: &crate::cluster::Cluster, id: &str) -> Option<Value> {
    with_job(c, id, |j| {
        let mut timestamps = serde_json::Map::new();
        for s in ["CREATED", "RUNNING", "FAILING", "FAILED", "CANCELING", "CANCELED", "FINISHED"] {
            timestamps.insert(s.into(), 0.into());
        }
        timestamps.insert("CREATED".into(), j.submitted_ms.into());
        timestamps.insert(state(j.status()).into(), j.modified_ms.into());
        let mut v = summary(j);
        v["timestamps"] = Value::Object(timestamps);
        v["jobs"] = json!([super::common::job_summary(j)]);
        v
    })
    .ok()
}

/// `GET /applications/{id}/exceptions`: the job's failures.
pub(super) async fn exceptions(State(c): Shared, Path(id): Path<String>) -> Response {
    match with_job(&c, &id, |j| {
        let entries: Vec<Value> = j
            .exceptions
            .iter()
            .rev()
            .map(|(t, e)| json!({ "exceptionName": "weir.JobFailure", "stacktrace": e, "timestamp": t, "jobId": j.id.to_string() }))
            .collect();
        json!({ "exceptionHistory": { "entries": entries, "truncated": false } })
    }) {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /applications/{id}/cancel`: cancels its job (obeys `web.cancel.enable`).
pub(super) async fn cancel(State(c): Shared, Path(id): Path<String>) -> Response {
    if let Err(e) = super::guard::cancel_enabled(&c.config) {
        return e.into_response();
    }
    let job = match super::common::parse_job(&id) {
        Ok(j) => j,
        Err(e) => return e.into_response(),
    };
    match c.job(job).map(|j| j.status()) {
        None => error(StatusCode::NOT_FOUND, format!("application {id} is not known to this cluster")),
        Some(s) if s.is_terminal() => error(StatusCode::NOT_FOUND, format!("application {id} has ended ({s:?})")),
        Some(_) => match c.cancel(job) {
            Ok(()) => (StatusCode::ACCEPTED, Json(json!({}))).into_response(),
            Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
        },
    }
}
