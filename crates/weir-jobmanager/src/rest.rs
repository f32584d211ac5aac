//! The REST endpoint: Flink's REST v1 paths and JSON field names for what weir supports, so that
//! tools written for Flink's REST API work against weir. Errors are `{"errors": [...]}` with a 4xx
//! or 5xx status, as Flink's are.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use weir_core::config::{ClusterConfig, JobConfig};
use weir_core::{JobGraph, JobId, JobStatus};

use crate::cluster::Cluster;
use crate::state::now_ms;

mod artifacts;
mod checkpoints;
mod common;
mod dashboard;
mod flink_apps;
mod guard;
mod metrics;
mod openapi;
mod process;
pub mod tls;
mod vertex;

use common::{Shared, error, job_summary, job_summary_of, parse_job, refused, with_job};
use openapi::Endpoint;
use openapi::Method::{Delete, Get, Patch, Post};

/// The version reported as `flink-version`.
pub const VERSION: &str = concat!("weir-", env!("CARGO_PKG_VERSION"));

const OK: &[(u16, &str)] = &[(200, "OK")];
const JOB_OK: &[(u16, &str)] = &[(200, "OK"), (400, "Not a job id"), (404, "Unknown job")];
const LOG_OK: &[(u16, &str)] =
    &[(200, "OK"), (404, "No log file (the process logs to a terminal or pipe), or no such file")];
const TM_LOG_OK: &[(u16, &str)] = &[
    (200, "OK"),
    (404, "Unknown TaskManager, no log file or no such file"),
    (503, "The TaskManager went away"),
    (504, "The TaskManager did not answer within 10 s"),
];
const SAVEPOINT: &[(u16, &str)] = &[
    (202, "Triggered: {request-id}"),
    (400, "No target directory, no checkpoints, or a bad body"),
    (404, "Unknown job"),
    (409, "The job is not running"),
];
const DIGEST: &str = "^(sha256:)?[0-9a-f]{64}$";
const VERTEX_OK: &[(u16, &str)] =
    &[(200, "OK"), (400, "Not a job id, or an unknown aggregation"), (404, "Unknown job, vertex or subtask")];
const METRIC_GET: &[(&str, bool, &str)] = &[("get", false, "^[^\\s]*$")];
const AGG: &str = "^[a-z,]*$";
const METRIC_AGG_JOBS: &[(&str, bool, &str)] =
    &[("get", false, "^[^\\s]*$"), ("agg", false, AGG), ("jobs", false, "^[0-9a-f,]*$")];
const METRIC_AGG_TMS: &[(&str, bool, &str)] =
    &[("get", false, "^[^\\s]*$"), ("agg", false, AGG), ("taskmanagers", false, "^[^\\s]*$")];
const METRIC_AGG_SUBTASKS: &[(&str, bool, &str)] =
    &[("get", false, "^[^\\s]*$"), ("agg", false, AGG), ("subtasks", false, "^[0-9,]*$")];

/// Every endpoint: the router and the OpenAPI document are both made from this table (one line
/// per endpoint, so it reads as one).
#[rustfmt::skip]
const ENDPOINTS: &[Endpoint] = &[
    Endpoint { method: Get, path: "/overview", summary: "Cluster overview: TaskManagers, slots, jobs by state", responses: OK, query: &[], body: None, route: || get(overview) },
    Endpoint { method: Get, path: "/config", summary: "Web UI configuration and the cluster's settings (weir-job-defaults: the job keys it gives its jobs)", responses: OK, query: &[], body: None, route: || get(config) },
    Endpoint { method: Get, path: "/jobs", summary: "Jobs and their status", responses: OK, query: &[], body: None, route: || get(jobs) },
    Endpoint { method: Post, path: "/jobs", summary: "Submit a job graph (weir extension): {graph, config}", responses: &[(202, "Accepted: {jobid}"), (400, "Not a valid job graph, or bad settings"), (503, "Not now (no leader, storage unreachable)")], query: &[], body: Some("application/json"), route: || post(submit) },
    Endpoint { method: Get, path: "/jobs/overview", summary: "Job summaries", responses: OK, query: &[], body: None, route: || get(jobs_overview) },
    Endpoint { method: Get, path: "/jobs/{jobid}", summary: "Job details: status, tasks by state (DEPLOYING, INITIALIZING, RUNNING, ...), vertices with their tasks, status and counters", responses: JOB_OK, query: &[], body: None, route: || get(job) },
    Endpoint { method: Patch, path: "/jobs/{jobid}", summary: "Cancel the job (mode=cancel)", responses: &[(202, "Cancellation requested"), (400, "Not a job id, or another mode"), (403, "Cancellation through REST is off (web.cancel.enable)"), (404, "Unknown job")], query: &[("mode", false, "^cancel$")], body: None, route: || patch(patch_job) },
    Endpoint { method: Get, path: "/jobs/{jobid}/exceptions", summary: "Job failures", responses: JOB_OK, query: &[], body: None, route: || get(exceptions) },
    Endpoint { method: Get, path: "/jobs/{jobid}/plan", summary: "The job's plan", responses: JOB_OK, query: &[], body: None, route: || get(plan) },
    Endpoint { method: Get, path: "/jobs/{jobid}/config", summary: "The job's configuration (Flink's shape; weir-settings: the job keys it runs with)", responses: JOB_OK, query: &[], body: None, route: || get(job_config) },
    Endpoint { method: Get, path: "/jobs/{jobid}/execution-result", summary: "The job's result once terminal", responses: JOB_OK, query: &[], body: None, route: || get(execution_result) },
    Endpoint { method: Get, path: "/jobs/{jobid}/checkpoints", summary: "Checkpoint counts, latest and history", responses: &[(200, "OK"), (400, "Not a job id"), (404, "Unknown job, or one without checkpoints")], query: &[], body: None, route: || get(checkpoints::checkpoints) },
    Endpoint { method: Get, path: "/jobs/{jobid}/checkpoints/config", summary: "The job's checkpointing settings (Flink's shape)", responses: &[(200, "OK"), (400, "Not a job id"), (404, "Unknown job, or one without checkpoints")], query: &[], body: None, route: || get(checkpoints::config) },
    Endpoint { method: Get, path: "/jobs/{jobid}/checkpoints/details/{checkpointid}", summary: "One checkpoint of the history", responses: &[(200, "OK"), (400, "Not a job id"), (404, "Unknown job or checkpoint")], query: &[], body: None, route: || get(checkpoints::details) },
    Endpoint { method: Post, path: "/jobs/{jobid}/savepoints", summary: "Trigger a savepoint: {target-directory}", responses: SAVEPOINT, query: &[], body: Some("application/json"), route: || post(checkpoints::trigger_savepoint) },
    Endpoint { method: Get, path: "/jobs/{jobid}/savepoints/{triggerid}", summary: "A savepoint's status: IN_PROGRESS, or COMPLETED with its location or failure-cause", responses: &[(200, "OK"), (404, "Unknown job or trigger id")], query: &[], body: None, route: || get(checkpoints::savepoint_status) },
    Endpoint { method: Post, path: "/jobs/{jobid}/stop", summary: "Stop the job with a savepoint: {targetDirectory, drain}", responses: SAVEPOINT, query: &[], body: Some("application/json"), route: || post(checkpoints::stop) },
    Endpoint { method: Get, path: "/jobmanager/metrics", summary: "The JobManager's metrics: their ids, or the values get=a,b names", responses: OK, query: METRIC_GET, body: None, route: || get(metrics::jobmanager) },
    Endpoint { method: Get, path: "/jobs/metrics", summary: "Job metrics aggregated over jobs (get, agg=min,max,avg,sum,skew, jobs)", responses: &[(200, "OK"), (400, "An unknown aggregation")], query: METRIC_AGG_JOBS, body: None, route: || get(metrics::jobs) },
    Endpoint { method: Get, path: "/jobs/{jobid}/metrics", summary: "A job's metrics (uptime, restarts, checkpoints)", responses: JOB_OK, query: METRIC_GET, body: None, route: || get(metrics::job) },
    Endpoint { method: Get, path: "/jobs/{jobid}/vertices/{vertexid}/metrics", summary: "A vertex's metrics per subtask: <subtask>.<name> and <subtask>.<operator>.<name>", responses: VERTEX_OK, query: METRIC_GET, body: None, route: || get(metrics::vertex) },
    Endpoint { method: Get, path: "/jobs/{jobid}/vertices/{vertexid}/subtasks/metrics", summary: "A vertex's metrics aggregated over its subtasks (get, agg, subtasks)", responses: VERTEX_OK, query: METRIC_AGG_SUBTASKS, body: None, route: || get(metrics::subtasks) },
    Endpoint { method: Get, path: "/jobs/{jobid}/vertices/{vertexid}/subtasks/{subtaskindex}/metrics", summary: "One subtask's metrics", responses: VERTEX_OK, query: METRIC_GET, body: None, route: || get(metrics::subtask) },
    Endpoint { method: Get, path: "/jobs/{jobid}/vertices/{vertexid}/watermarks", summary: "Each subtask's current input watermark", responses: VERTEX_OK, query: &[], body: None, route: || get(metrics::watermarks) },
    Endpoint { method: Get, path: "/taskmanagers/metrics", summary: "TaskManager metrics aggregated over TaskManagers (get, agg, taskmanagers)", responses: &[(200, "OK"), (400, "An unknown aggregation")], query: METRIC_AGG_TMS, body: None, route: || get(metrics::taskmanagers) },
    Endpoint { method: Get, path: "/taskmanagers/{tmid}/metrics", summary: "A TaskManager's own metrics (the process's figures), as its last heartbeat brought them", responses: &[(200, "OK"), (404, "Unknown TaskManager")], query: METRIC_GET, body: None, route: || get(metrics::taskmanager) },
    Endpoint { method: Get, path: "/jobs/{jobid}/yarn-cancel", summary: "Cancel the job (the GET Flink's dashboard sends; obeys web.cancel.enable)", responses: &[(202, "Cancellation requested"), (400, "Not a job id"), (403, "Cancellation through REST is off (web.cancel.enable)"), (404, "Unknown job")], query: &[], body: None, route: || get(yarn_cancel) },
    Endpoint { method: Get, path: "/jobs/{jobid}/vertices/{vertexid}", summary: "A vertex's subtasks: where they run, their records and bytes (Flink's JobVertexDetailsInfo)", responses: VERTEX_OK, query: &[], body: None, route: || get(vertex::details) },
    Endpoint { method: Get, path: "/jobs/{jobid}/vertices/{vertexid}/taskmanagers", summary: "A vertex's subtasks by TaskManager", responses: VERTEX_OK, query: &[], body: None, route: || get(vertex::taskmanagers) },
    Endpoint { method: Get, path: "/jobs/{jobid}/vertices/{vertexid}/backpressure", summary: "A vertex's back pressure per subtask, from its tasks' time metrics", responses: VERTEX_OK, query: &[], body: None, route: || get(vertex::backpressure) },
    Endpoint { method: Get, path: "/jobs/{jobid}/vertices/{vertexid}/accumulators", summary: "A vertex's accumulators (weir's belong to the job: none here)", responses: VERTEX_OK, query: &[], body: None, route: || get(vertex::accumulators) },
    Endpoint { method: Get, path: "/jobs/{jobid}/vertices/{vertexid}/subtasks/accumulators", summary: "A vertex's accumulators per subtask (none: see accumulators)", responses: VERTEX_OK, query: &[], body: None, route: || get(vertex::subtask_accumulators) },
    Endpoint { method: Get, path: "/jobs/{jobid}/vertices/{vertexid}/subtasktimes", summary: "When a vertex's subtasks reached their states", responses: VERTEX_OK, query: &[], body: None, route: || get(vertex::subtask_times) },
    Endpoint { method: Get, path: "/jobs/{jobid}/vertices/{vertexid}/flamegraph", summary: "Flame graph: not sampled yet, answered as Flink does with rest.flamegraph.enabled false (endTimestamp -2)", responses: VERTEX_OK, query: &[("type", false, "^(on_cpu|off_cpu|full)$"), ("subtaskindex", false, "^[0-9]+$")], body: None, route: || get(vertex::flamegraph) },
    Endpoint { method: Get, path: "/jars", summary: "Uploaded jars: none (weir runs executables: see /artifacts)", responses: OK, query: &[], body: None, route: || get(jars) },
    Endpoint { method: Get, path: "/jobmanager/profiler", summary: "Profiling runs: none (weir has no profiler: use perf on the process)", responses: OK, query: &[], body: None, route: || get(profiler_list).post(profiler_refused) },
    Endpoint { method: Get, path: "/taskmanagers/{tmid}/profiler", summary: "Profiling runs: none (weir has no profiler: use perf on the process)", responses: OK, query: &[], body: None, route: || get(profiler_list).post(profiler_refused) },
    Endpoint { method: Get, path: "/applications/overview", summary: "Applications as Flink 2.x lists them: each job of this cluster as SingleJobApplication(<name>), with the job's id", responses: OK, query: &[], body: None, route: || get(flink_apps::overview) },
    Endpoint { method: Get, path: "/applications/{appid}/exceptions", summary: "An application's (its job's) failures", responses: JOB_OK, query: &[], body: None, route: || get(flink_apps::exceptions) },
    Endpoint { method: Post, path: "/applications/{appid}/cancel", summary: "Cancel an application (its job; obeys web.cancel.enable)", responses: &[(202, "Cancellation requested"), (400, "Not an id"), (403, "Cancellation through REST is off (web.cancel.enable)"), (404, "Unknown or ended")], query: &[], body: None, route: || post(flink_apps::cancel) },
    Endpoint { method: Get, path: "/jobmanager/config", summary: "The JobManager's settings: [{key, value}] (secrets hidden)", responses: OK, query: &[], body: None, route: || get(process::config) },
    Endpoint { method: Get, path: "/jobmanager/environment", summary: "The JobManager's process: version, architecture, command line (Flink's EnvironmentInfo; no JVM)", responses: OK, query: &[], body: None, route: || get(process::environment) },
    Endpoint { method: Get, path: "/jobmanager/logs", summary: "The files of the JobManager's log directory", responses: LOG_OK, query: &[], body: None, route: || get(process::jm_logs) },
    Endpoint { method: Get, path: "/jobmanager/log", summary: "The JobManager's log (its last 8 MiB)", responses: LOG_OK, query: &[], body: None, route: || get(process::jm_log) },
    Endpoint { method: Get, path: "/jobmanager/stdout", summary: "The JobManager's standard output (its last 8 MiB)", responses: LOG_OK, query: &[], body: None, route: || get(process::jm_stdout) },
    Endpoint { method: Get, path: "/jobmanager/logs/{filename}", summary: "A file of the JobManager's log directory", responses: LOG_OK, query: &[], body: None, route: || get(process::jm_file) },
    Endpoint { method: Get, path: "/jobmanager/thread-dump", summary: "The JobManager's threads: name, state, CPU time", responses: OK, query: &[], body: None, route: || get(process::jm_threads) },
    Endpoint { method: Get, path: "/taskmanagers/{tmid}/logs", summary: "The files of a TaskManager's log directory", responses: TM_LOG_OK, query: &[], body: None, route: || get(process::tm_logs) },
    Endpoint { method: Get, path: "/taskmanagers/{tmid}/log", summary: "A TaskManager's log (its last 8 MiB)", responses: TM_LOG_OK, query: &[], body: None, route: || get(process::tm_log) },
    Endpoint { method: Get, path: "/taskmanagers/{tmid}/stdout", summary: "A TaskManager's standard output (its last 8 MiB)", responses: TM_LOG_OK, query: &[], body: None, route: || get(process::tm_stdout) },
    Endpoint { method: Get, path: "/taskmanagers/{tmid}/logs/{filename}", summary: "A file of a TaskManager's log directory", responses: TM_LOG_OK, query: &[], body: None, route: || get(process::tm_file) },
    Endpoint { method: Get, path: "/taskmanagers/{tmid}/thread-dump", summary: "A TaskManager's threads: name, state, CPU time", responses: TM_LOG_OK, query: &[], body: None, route: || get(process::tm_threads) },
    Endpoint { method: Get, path: "/taskmanagers", summary: "Registered TaskManagers", responses: OK, query: &[], body: None, route: || get(taskmanagers) },
    Endpoint { method: Get, path: "/taskmanagers/{tmid}", summary: "One TaskManager", responses: &[(200, "OK"), (404, "Unknown TaskManager")], query: &[], body: None, route: || get(taskmanager) },
    Endpoint { method: Delete, path: "/cluster", summary: "Shut the cluster down", responses: &[(202, "Shutting down")], query: &[], body: None, route: || delete(shutdown) },
    Endpoint { method: Get, path: "/artifacts", summary: "Artifacts in the blob store (weir's counterpart of /jars)", responses: OK, query: &[], body: None, route: || get(artifacts::list) },
    Endpoint { method: Post, path: "/artifacts/upload", summary: "Upload an executable; stored only if complete, within blob.artifact.max-size and matching ?digest", responses: &[(200, "Stored: {id, size, status}"), (400, "Truncated, digest mismatch or bad parameter"), (403, "Uploads are off (web.submit.enable)"), (413, "Over blob.artifact.max-size"), (503, "Too many uploads at once (weir.rest.upload.max-concurrent)"), (507, "No room left under weir.blob.storage.max-total-size"), (415, "Not declared application/octet-stream")], query: &[("digest", false, DIGEST)], body: Some("application/octet-stream"), route: || post(artifacts::upload) },
    Endpoint { method: Get, path: "/artifacts/{id}", summary: "One artifact", responses: &[(200, "OK"), (400, "Not a digest"), (404, "Not stored")], query: &[], body: None, route: || get(artifacts::show) },
    Endpoint { method: Delete, path: "/artifacts/{id}", summary: "Delete an uploaded artifact", responses: &[(200, "Deleted"), (403, "Deleting is off (web.submit.enable)"), (404, "Not stored"), (409, "In use by an unfinished job, or the JobManager's own")], query: &[], body: None, route: || delete(artifacts::remove) },
    Endpoint { method: Post, path: "/artifacts/{id}/run", summary: "Build a registered job's graph with the artifact and submit it: {job, args, parallelism, config}", responses: &[(200, "Submitted: {jobid}"), (400, "Not a weir program, unknown job, bad arguments or settings"), (403, "Running uploaded programs is off (web.submit.enable)"), (404, "Not stored")], query: &[], body: Some("application/json"), route: || post(artifacts::run) },
    Endpoint { method: Get, path: "/applications", summary: "Applications in the job result store, running or ended (weir extension)", responses: OK, query: &[], body: None, route: || get(applications) },
    Endpoint { method: Get, path: "/applications/{appid}", summary: "One application: status, error, jobs", responses: &[(200, "OK"), (400, "Not an id"), (404, "Not in the store")], query: &[], body: None, route: || get(application) },
    Endpoint { method: Get, path: "/openapi.json", summary: "This document", responses: OK, query: &[], body: None, route: || get(|| async { openapi() }) },
];

/// All routes, with and without the `/v1` prefix.
pub fn router(cluster: Arc<Cluster>) -> Router {
    let api = openapi::routes(ENDPOINTS);
    Router::new()
        .nest("/v1", api.clone())
        .merge(api)
        // The web dashboard: pages, not REST, so neither under /v1 nor in the OpenAPI document.
        .route("/", get(dashboard::index))
        .route("/web/app.js", get(dashboard::script))
        .route("/web/style.css", get(dashboard::style))
        .fallback(|uri: Uri| async move {
            error(StatusCode::NOT_FOUND, format!("no such REST path: {uri}; see /openapi.json"))
        })
        .layer(axum::middleware::from_fn_with_state(cluster.clone(), leader_only))
        .layer(axum::middleware::from_fn_with_state(cluster.clone(), guard::known_host))
        .with_state(cluster)
}

/// With high availability, only the leader answers: a standby sends a client on to the leader's
/// REST endpoint (307, which keeps the method and body), or answers 503 while none is elected.
async fn leader_only(State(c): Shared, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let Some(ha) = &c.ha else { return next.run(request).await };
    if request.uri().path() == "/weir/ha" {
        return Json(ha.status()).into_response();
    }
    if ha.leading().is_some() {
        return next.run(request).await;
    }
    match ha.leader().filter(|l| l.info.id != ha.me.id) {
        Some(leader) => {
            let path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let scheme = weir_security::rest::scheme(&c.config);
            let location = format!("{scheme}://{}{path}", leader.info.rest);
            (StatusCode::TEMPORARY_REDIRECT, [(axum::http::header::LOCATION, location)]).into_response()
        }
        None => error(StatusCode::SERVICE_UNAVAILABLE, ha.not_leading().to_string()),
    }
}

fn counts(cluster: &Cluster) -> (usize, u32, u32) {
    let tms = cluster.taskmanagers();
    let total: u32 = tms.values().map(|t| t.slots).sum();
    let used: u32 = tms.values().map(|t| t.used).sum();
    (tms.len(), total, total - used)
}

async fn overview(State(c): Shared) -> Json<Value> {
    let (tms, total, free) = counts(&c);
    let jobs = c.jobs();
    let n = |st: JobStatus| jobs.iter().filter(|j| j.status() == st).count();
    let running = jobs.iter().filter(|j| !j.status().is_terminal()).count();
    Json(json!({
        "taskmanagers": tms,
        "slots-total": total,
        "slots-available": free,
        "jobs-running": running,
        "jobs-finished": n(JobStatus::Finished),
        "jobs-cancelled": n(JobStatus::Canceled),
        "jobs-failed": n(JobStatus::Failed),
        "flink-version": VERSION,
        "flink-commit": "",
    }))
}

async fn config(State(c): Shared) -> Json<Value> {
    Json(json!({
        "refresh-interval": 3000,
        "timezone-name": "UTC",
        "timezone-offset": 0,
        "flink-version": VERSION,
        "flink-revision": "",
        "features": { "web-submit": false, "web-cancel": c.config.web_cancel, "web-rescale": false, "web-history": false },
        "weir-cluster": ClusterConfig { explicit: process::redacted(&c.config.explicit), ..c.config.clone() },
        "weir-job-defaults": c.job_defaults.rendered().into_iter().collect::<BTreeMap<_, _>>(),
    }))
}

async fn jobs(State(c): Shared) -> Json<Value> {
    let jobs: Vec<Value> = c.jobs().iter().map(|j| json!({ "id": j.id.to_string(), "status": j.status() })).collect();
    Json(json!({ "jobs": jobs }))
}

async fn jobs_overview(State(c): Shared) -> Json<Value> {
    Json(json!({ "jobs": c.jobs().iter().map(|j| job_summary(j)).collect::<Vec<_>>() }))
}

async fn job(State(c): Shared, Path(id): Path<String>) -> Response {
    match with_job(&c, &id, |j| {
        let tasks = crate::tasks::per_vertex(j);
        let mut v = job_summary_of(j, &tasks);
        let end = j.end_ms().unwrap_or(-1);
        let all = j.counts();
        let vertices: Vec<Value> = j
            .graph
            .plan
            .vertices
            .iter()
            .zip(&tasks)
            .map(|(vx, states)| {
                let counts = all.get(vx.id.0 as usize);
                json!({
                    "id": vx.id.0.to_string(),
                    "name": vx.name,
                    "parallelism": vx.parallelism,
                    "maxParallelism": vx.max_parallelism,
                    "status": states.aggregate().as_str(),
                    "tasks": states.by_name(),
                    "start-time": j.submitted_ms,
                    "end-time": end,
                    "duration": j.end_ms().unwrap_or_else(now_ms) - j.submitted_ms,
                    "metrics": {
                        "read-records": counts.map(|c| c.records_in).unwrap_or(0),
                        "write-records": counts.map(|c| c.records_out).unwrap_or(0),
                    },
                })
            })
            .collect();
        v["isStoppable"] = json!(false);
        v["now"] = json!(now_ms());
        let mut timestamps = serde_json::Map::new();
        for s in [
            "INITIALIZING",
            "CREATED",
            "RUNNING",
            "FAILING",
            "FAILED",
            "CANCELLING",
            "CANCELED",
            "FINISHED",
            "RESTARTING",
            "SUSPENDED",
            "RECONCILING",
        ] {
            timestamps.insert(s.into(), 0.into());
        }
        timestamps.insert("CREATED".into(), j.submitted_ms.into());
        timestamps.insert(j.status().as_str().into(), j.modified_ms.into());
        v["timestamps"] = Value::Object(timestamps);
        v["status-counts"] = json!(crate::tasks::of_job(j, &tasks).by_name());
        v["job-type"] = json!("STREAMING");
        v["maxParallelism"] = json!(j.graph.plan.vertices.iter().map(|x| x.max_parallelism).max().unwrap_or(1));
        v["vertices"] = json!(vertices);
        let mut plan = j.graph.plan.to_json(&j.graph.job_name);
        plan["jid"] = json!(j.id.to_string());
        v["plan"] = plan;
        v["weir-taskmanagers"] = json!(j.taskmanagers());
        v
    }) {
        Ok(v) => Json(v).into_response(),
        Err(r) => r.into_response(),
    }
}

/// `GET /jobs/{jobid}/yarn-cancel`: Flink's dashboard cancels with this GET.
async fn yarn_cancel(c: Shared, id: Path<String>) -> Response {
    patch_job(c, id, Query(BTreeMap::new())).await
}

/// `GET /jars`: Flink's jar list, empty; weir's programs are executables (`/artifacts`).
async fn jars(State(c): Shared) -> Json<Value> {
    let scheme = weir_security::rest::scheme(&c.config);
    Json(json!({ "address": format!("{scheme}://{}:{}", c.config.rest_address, c.config.rest_port), "files": [] }))
}

/// `GET .../profiler`: Flink's list of profiling runs, empty.
async fn profiler_list() -> Json<Value> {
    Json(json!({ "profilingList": [] }))
}

/// `POST .../profiler`: refused with what to use instead.
async fn profiler_refused() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "weir has no built-in profiler (Flink's rest.profiling.enabled); run `perf record -g -p PID` on the \
         JobManager's or TaskManager's process instead",
    )
}

async fn patch_job(State(c): Shared, Path(id): Path<String>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let id = match parse_job(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = guard::cancel_enabled(&c.config) {
        return e.into_response();
    }
    match q.get("mode").map(String::as_str) {
        None | Some("cancel") => match c.cancel(id) {
            Ok(()) => (StatusCode::ACCEPTED, Json(json!({}))).into_response(),
            Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
        },
        Some(other) => error(StatusCode::BAD_REQUEST, format!("mode '{other}' is not supported; use mode=cancel")),
    }
}

async fn exceptions(State(c): Shared, Path(id): Path<String>) -> Response {
    match with_job(&c, &id, |j| {
        let root = j.exceptions.last();
        let entries: Vec<Value> = j
            .exceptions
            .iter()
            .rev()
            .map(|(t, e)| json!({ "exceptionName": "weir.JobFailure", "stacktrace": e, "timestamp": t, "taskName": null, "location": j.taskmanagers().join(","), "concurrentExceptions": [] }))
            .collect();
        json!({
            "root-exception": root.map(|r| r.1.clone()),
            "timestamp": root.map(|r| r.0),
            "all-exceptions": j.exceptions.iter().map(|(t, e)| json!({ "exception": e, "task": null, "location": j.taskmanagers().join(","), "timestamp": t })).collect::<Vec<_>>(),
            "truncated": false,
            "exceptionHistory": { "entries": entries, "truncated": false },
        })
    }) {
        Ok(v) => Json(v).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn plan(State(c): Shared, Path(id): Path<String>) -> Response {
    match with_job(&c, &id, |j| {
        let mut p = j.graph.plan.to_json(&j.graph.job_name);
        p["jid"] = json!(j.id.to_string());
        json!({ "plan": p })
    }) {
        Ok(v) => Json(v).into_response(),
        Err(r) => r.into_response(),
    }
}

/// `GET /jobs/{id}/config`: Flink's job configuration shape; `weir-settings` holds the job keys
/// the job runs with (its own over the JobManager's defaults), as `config.yaml` would write them.
async fn job_config(State(c): Shared, Path(id): Path<String>) -> Response {
    let restart = format!("{:?}", c.restart);
    match with_job(&c, &id, |j| {
        let settings: serde_json::Map<String, Value> =
            j.config.rendered().into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        let parallelism = j.graph.plan.vertices.iter().map(|v| v.parallelism).max().unwrap_or(1);
        json!({
            "jid": j.id.to_string(),
            "name": j.graph.job_name,
            "execution-config": {
                "execution-mode": "PIPELINED",
                "restart-strategy": restart,
                "job-parallelism": parallelism,
                "object-reuse-mode": false,
                "user-config": {},
            },
            "weir-settings": settings,
        })
    }) {
        Ok(v) => Json(v).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn execution_result(State(c): Shared, Path(id): Path<String>) -> Response {
    match with_job(&c, &id, |j| {
        if !j.status().is_terminal() {
            return json!({ "status": { "id": "IN_PROGRESS" } });
        }
        // Served only once the client sees the end (a per-job cluster waits for that to go).
        c.result_served(j.id);
        let application = match j.status() {
            JobStatus::Finished => "SUCCEEDED",
            JobStatus::Canceled => "CANCELED",
            _ => "FAILED",
        };
        let mut r = json!({
            "id": j.id.to_string(),
            "application-status": application,
            "accumulator-results": {},
            "net-runtime": j.end_ms().unwrap_or_else(now_ms) - j.submitted_ms,
        });
        if let Some((_, e)) = j.exceptions.last() {
            r["failure-cause"] = json!({ "class": "weir.JobFailure", "stack-trace": e, "serialized-throwable": null });
        }
        if let Some(result) = &j.result {
            r["weir-result"] = json!(**result);
        }
        json!({ "status": { "id": "COMPLETED" }, "job-execution-result": r })
    }) {
        Ok(v) => Json(v).into_response(),
        Err(r) => r.into_response(),
    }
}

/// The body of `POST /jobs` (a weir extension: Flink submits jars).
#[derive(serde::Deserialize)]
struct Submission {
    graph: JobGraph,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

async fn submit(State(c): Shared, body: Result<Json<Submission>, JsonRejection>) -> Response {
    let Json(sub) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the request body is not a job submission: {}", e.body_text()),
            );
        }
    };
    let config = match JobConfig::submitted(&sub.config) {
        Ok(config) => config,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the job's config: {e}")),
    };
    match c.submit_durably(sub.graph, config).await {
        Ok(id) => (StatusCode::ACCEPTED, Json(json!({ "jobid": id.to_string() }))).into_response(),
        Err(e) => error(refused(&e), e.to_string()),
    }
}

fn tm_json(t: &crate::state::TaskManager) -> Value {
    // What its heartbeats report of the machine (0 until the first arrives).
    let figure = |name: &str| t.metrics.iter().find_map(|g| g.metric(name)).map(|s| s.number() as u64).unwrap_or(0);
    json!({
        "id": t.id,
        "path": format!("{}:{}", t.host, t.pid),
        "dataPort": -1,
        // Despite its name, Flink's field is when the last heartbeat came (ms since the epoch).
        "timeSinceLastHeartbeat": now_ms() - t.last_heartbeat.elapsed().as_millis() as i64,
        "slotsNumber": t.slots,
        "freeSlots": t.slots - t.used,
        "totalResource": {},
        "freeResource": {},
        "hardware": {
            "cpuCores": figure("Status.Hardware.CpuCores"),
            "physicalMemory": figure("Status.Hardware.PhysicalMemory"),
            "freeMemory": figure("Status.Hardware.AvailableMemory"),
            "managedMemory": 0,
        },
        "weir-registered": t.registered_ms,
        "weir-jobs": t.jobs.iter().map(|j| j.to_string()).collect::<Vec<_>>(),
    })
}

async fn taskmanagers(State(c): Shared) -> Json<Value> {
    Json(json!({ "taskmanagers": c.taskmanagers().values().map(tm_json).collect::<Vec<_>>() }))
}

/// The `metrics` object of Flink's `TaskManagerDetailsInfo`, for a native process: its resident
/// memory where Flink shows the JVM heap (used and committed), the machine's memory as the most it
/// could use; no non-heap, direct, mapped or network buffers, no garbage collectors.
fn tm_memory(t: &crate::state::TaskManager) -> Value {
    let figure = |name: &str| {
        t.metrics.iter().find_map(|g| g.metric(name)).map(|s| s.number()).filter(|v| v.is_finite()).unwrap_or(0.0)
            as u64
    };
    let resident = figure("Status.Process.Memory.Resident");
    json!({
        "heapUsed": resident, "heapCommitted": resident, "heapMax": figure("Status.Hardware.PhysicalMemory"),
        "nonHeapUsed": 0, "nonHeapCommitted": 0, "nonHeapMax": 0,
        "directCount": 0, "directUsed": 0, "directMax": 0, "mappedCount": 0, "mappedUsed": 0, "mappedMax": 0,
        "memorySegmentsAvailable": 0, "memorySegmentsTotal": 0,
        "nettyShuffleMemorySegmentsAvailable": 0, "nettyShuffleMemorySegmentsUsed": 0, "nettyShuffleMemorySegmentsTotal": 0,
        "nettyShuffleMemoryAvailable": 0, "nettyShuffleMemoryUsed": 0, "nettyShuffleMemoryTotal": 0,
        "garbageCollectors": [],
    })
}

async fn taskmanager(State(c): Shared, Path(id): Path<String>) -> Response {
    match c.taskmanagers().get(&id) {
        Some(t) => {
            let mut v = tm_json(t);
            v["metrics"] = tm_memory(t);
            // weir sets no memory budgets (Flink's taskmanager.memory.*): none are configured.
            v["memoryConfiguration"] = json!({
                "frameworkHeap": 0, "taskHeap": 0, "frameworkOffHeap": 0, "taskOffHeap": 0, "networkMemory": 0,
                "managedMemory": 0, "jvmMetaspace": 0, "jvmOverhead": 0, "totalFlinkMemory": 0, "totalProcessMemory": 0,
            });
            Json(v).into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("TaskManager {id} is not registered")),
    }
}

async fn shutdown(State(c): Shared) -> Response {
    c.request_shutdown();
    (StatusCode::ACCEPTED, Json(json!({}))).into_response()
}

/// Applications in the job result store (a weir extension): running ones, and those whose
/// cluster is gone.
async fn applications(State(c): Shared) -> Response {
    let store = c.results.clone();
    match tokio::task::spawn_blocking(move || store.list()).await {
        Ok(all) => Json(json!({ "applications": all })).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the job result store: {e}")),
    }
}

async fn application(State(c): Shared, Path(id): Path<String>) -> Response {
    if let Some(flink) = flink_apps::details(&c, &id) {
        return Json(flink).into_response();
    }
    let id = match id.parse::<JobId>() {
        Ok(id) => id,
        Err(_) => return error(StatusCode::BAD_REQUEST, format!("'{id}' is not an application id (32 hex digits)")),
    };
    let store = c.results.clone();
    match tokio::task::spawn_blocking(move || store.get(id)).await {
        Ok(Ok(Some(r))) => Json(json!(r)).into_response(),
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            format!("application {id} is not in the job result store at {}", c.results.dir().display()),
        ),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the job result store: {e}")),
    }
}

/// `GET /openapi.json`, made from the table of endpoints.
fn openapi() -> Json<Value> {
    Json(openapi::document(ENDPOINTS, VERSION))
}
