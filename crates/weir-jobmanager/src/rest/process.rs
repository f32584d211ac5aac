//! Flink's endpoints about the cluster's processes: the JobManager's configuration and
//! environment, and the logs, standard output and threads of the JobManager and of each
//! TaskManager (asked over its control connection).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use weir_core::process::{Reply, Request};

use super::common::{Shared, error};
use crate::cluster::Cluster;

/// How long a TaskManager has to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Parts of key names whose values are secrets (Flink's `GlobalConfiguration.isSensitive`).
const SENSITIVE: [&str; 11] = [
    "password",
    "secret",
    "fs.azure.account.key",
    "apikey",
    "api-key",
    "auth-params",
    "service-key",
    "token",
    "basic-auth",
    "jaas.config",
    "http-headers",
];

/// Whether `key`'s value must not be shown.
pub(super) fn sensitive(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SENSITIVE.iter().any(|s| k.contains(s)) || k == "s3.access-key" || k == "s3.access.key"
}

/// `settings` with the values of secret keys hidden.
pub(super) fn redacted(settings: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    settings.iter().map(|(k, v)| (k.clone(), if sensitive(k) { "******".into() } else { v.clone() })).collect()
}

/// `GET /jobmanager/config`: the JobManager's effective settings as Flink lists them (`[{key,
/// value}]`): every key set explicitly, the addresses it serves on, and the job defaults.
pub(super) async fn config(State(c): Shared) -> Json<Value> {
    let mut all = c.job_defaults.rendered().into_iter().collect::<BTreeMap<_, _>>();
    all.extend(redacted(&c.config.explicit));
    let (rpc_host, rpc_port) = c.rpc_address.rsplit_once(':').unwrap_or((&c.rpc_address, ""));
    all.insert("jobmanager.rpc.address".into(), rpc_host.to_string());
    all.insert("jobmanager.rpc.port".into(), rpc_port.to_string());
    all.entry("rest.address".into()).or_insert_with(|| c.config.rest_address.clone());
    all.entry("rest.port".into()).or_insert_with(|| c.config.rest_port.to_string());
    let entries: Vec<Value> = all.into_iter().map(|(key, value)| json!({ "key": key, "value": value })).collect();
    Json(Value::Array(entries))
}

/// `GET /jobmanager/environment`: Flink's `EnvironmentInfo`. weir runs no JVM: `jvm` describes the
/// native process (version, architecture, command line with secrets hidden) and `classpath` holds
/// its executable.
pub(super) async fn environment() -> Json<Value> {
    let args: Vec<String> = std::env::args()
        .map(|a| match a.split_once('=') {
            Some((k, _)) if sensitive(k) => format!("{k}=******"),
            _ => a,
        })
        .collect();
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default();
    Json(json!({
        "jvm": {
            "version": format!("weir {} (native, no JVM)", env!("CARGO_PKG_VERSION")),
            "arch": format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
            "options": args,
        },
        "classpath": [exe],
    }))
}

/// The answer about this JobManager's own process.
async fn own(request: Request) -> Result<Reply, (StatusCode, String)> {
    match tokio::task::spawn_blocking(move || weir_core::process::answer(&request)).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(missing)) => Err((StatusCode::NOT_FOUND, missing)),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, format!("reading the JobManager's files failed: {e}"))),
    }
}

/// The answer of TaskManager `id` about its process.
async fn of_taskmanager(c: &Cluster, id: &str, request: Request) -> Result<Reply, (StatusCode, String)> {
    let Some(tx) = c.taskmanagers().get(id).map(|t| t.tx.clone()) else {
        return Err((StatusCode::NOT_FOUND, format!("TaskManager {id} is not registered")));
    };
    let (number, answer) = c.expect_description();
    if tx.send(weir_core::protocol::ToTaskManager::Describe { request: number, what: request }).is_err() {
        c.forget_description(number);
        return Err((StatusCode::NOT_FOUND, format!("TaskManager {id} has just gone")));
    }
    match tokio::time::timeout(ANSWER_WITHIN, answer).await {
        Ok(Ok(Ok(reply))) => Ok(reply),
        Ok(Ok(Err(missing))) => Err((StatusCode::NOT_FOUND, format!("TaskManager {id}: {missing}"))),
        Ok(Err(_)) => Err((StatusCode::SERVICE_UNAVAILABLE, format!("TaskManager {id} went away before it answered"))),
        Err(_) => {
            c.forget_description(number);
            Err((StatusCode::GATEWAY_TIMEOUT, format!("TaskManager {id} did not answer within 10 s")))
        }
    }
}

/// A reply as Flink's JSON or text.
fn render(reply: Result<Reply, (StatusCode, String)>) -> Response {
    match reply {
        Ok(Reply::Logs(files)) => Json(json!({ "logs": files })).into_response(),
        Ok(Reply::Text(text)) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        Ok(Reply::Threads(threads)) => {
            let infos: Vec<Value> =
                threads.into_iter().map(|t| json!({ "threadName": t.name, "stringifiedThreadInfo": t.info })).collect();
            Json(json!({ "threadInfos": infos })).into_response()
        }
        Err((status, message)) => error(status, message),
    }
}

/// `GET /jobmanager/logs`.
pub(super) async fn jm_logs() -> Response {
    render(own(Request::Logs).await)
}
/// `GET /jobmanager/log`.
pub(super) async fn jm_log() -> Response {
    render(own(Request::Log).await)
}
/// `GET /jobmanager/stdout`.
pub(super) async fn jm_stdout() -> Response {
    render(own(Request::Stdout).await)
}
/// `GET /jobmanager/logs/{filename}`.
pub(super) async fn jm_file(Path(name): Path<String>) -> Response {
    render(own(Request::File(name)).await)
}
/// `GET /jobmanager/thread-dump`.
pub(super) async fn jm_threads() -> Response {
    render(own(Request::Threads).await)
}
/// `GET /taskmanagers/{tmid}/logs`.
pub(super) async fn tm_logs(State(c): Shared, Path(id): Path<String>) -> Response {
    render(of_taskmanager(&c, &id, Request::Logs).await)
}
/// `GET /taskmanagers/{tmid}/log`.
pub(super) async fn tm_log(State(c): Shared, Path(id): Path<String>) -> Response {
    render(of_taskmanager(&c, &id, Request::Log).await)
}
/// `GET /taskmanagers/{tmid}/stdout`.
pub(super) async fn tm_stdout(State(c): Shared, Path(id): Path<String>) -> Response {
    render(of_taskmanager(&c, &id, Request::Stdout).await)
}
/// `GET /taskmanagers/{tmid}/logs/{filename}`.
pub(super) async fn tm_file(State(c): Shared, Path((id, name)): Path<(String, String)>) -> Response {
    render(of_taskmanager(&c, &id, Request::File(name)).await)
}
/// `GET /taskmanagers/{tmid}/thread-dump`.
pub(super) async fn tm_threads(State(c): Shared, Path(id): Path<String>) -> Response {
    render(of_taskmanager(&c, &id, Request::Threads).await)
}
