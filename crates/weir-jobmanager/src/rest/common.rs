//! What every REST handler shares: the cluster state they are given, Flink's error shape, and
//! looking a job up by the id in its path.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use weir_core::JobId;

use crate::cluster::Cluster;
use crate::state::JobView;

/// The state every handler is given.
pub(super) type Shared = State<Arc<Cluster>>;

/// A response with Flink's error shape: `{"errors": [message]}`.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "errors": [message.into()] }))).into_response()
}

/// A REST error: a status and a message, rendered as Flink's `{"errors": [...]}`.
pub(super) struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// The status of a refused submission: the user's fault (400), or the cluster's for now (503).
pub(super) fn refused(e: &weir_core::Error) -> StatusCode {
    if e.blame() == weir_core::Blame::User { StatusCode::BAD_REQUEST } else { StatusCode::SERVICE_UNAVAILABLE }
}

/// The job id in a path; 400 when it is not one.
pub(super) fn parse_job(id: &str) -> Result<JobId, ApiError> {
    id.parse().map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("'{id}' is not a job id (32 hex digits)")))
}

/// `f` of job `id` as its JobMaster last published it; 404 for a job the cluster does not know.
pub(super) fn with_job<R>(c: &Cluster, id: &str, f: impl FnOnce(&JobView) -> R) -> Result<R, ApiError> {
    let id = parse_job(id)?;
    c.job(id)
        .map(|j| f(&j))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("job {id} is not known to this cluster")))
}

/// A job's summary (Flink's `JobDetails` of `/jobs/overview`).
pub(super) fn job_summary(j: &JobView) -> Value {
    job_summary_of(j, &crate::tasks::per_vertex(j))
}

/// A job's summary, with its tasks counted from `per_vertex`.
pub(super) fn job_summary_of(j: &JobView, per_vertex: &[crate::tasks::TaskCounts]) -> Value {
    let end = j.end_ms().unwrap_or(-1);
    let duration = j.end_ms().unwrap_or_else(crate::state::now_ms) - j.submitted_ms;
    json!({
        "jid": j.id.to_string(),
        "name": j.graph.job_name,
        "state": j.status(),
        "start-time": j.submitted_ms,
        "end-time": end,
        "duration": duration,
        "last-modification": j.modified_ms,
        "tasks": crate::tasks::of_job(j, per_vertex).by_key(),
        // Flink 2.x's JobDetails requires it: operators of an adaptive batch job not yet in its
        // graph (a streaming job's graph is whole from the start).
        "pending-operators": 0,
    })
}
