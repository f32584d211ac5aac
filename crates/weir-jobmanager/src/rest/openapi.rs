//! The REST endpoint's table of endpoints, and what is made from it: the router, and the OpenAPI
//! document (`GET /openapi.json`). An endpoint is declared once, with its handler and what a
//! client needs to know of it, so the document cannot list a path the router does not serve, or
//! miss one it does.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::MethodRouter;
use serde_json::{Value, json};

use crate::cluster::Cluster;

/// An HTTP method the endpoint answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Patch => "patch",
            Method::Delete => "delete",
        }
    }
}

/// One method on one path.
pub(super) struct Endpoint {
    pub method: Method,
    /// Flink's path (with `{name}` parameters); also served under `/v1`.
    pub path: &'static str,
    /// What it does, for the document.
    pub summary: &'static str,
    /// The statuses it answers with, and what each means.
    pub responses: &'static [(u16, &'static str)],
    /// Query parameters: name, whether required, a pattern (empty: any string).
    pub query: &'static [(&'static str, bool, &'static str)],
    /// The request body's media type, if it takes one.
    pub body: Option<&'static str>,
    /// The handler, for the router.
    pub route: fn() -> MethodRouter<Arc<Cluster>>,
}

/// The pattern of a path parameter, by its name.
fn path_parameter(name: &str) -> Value {
    match name {
        "jobid" | "appid" => json!({ "type": "string", "pattern": "^[0-9a-f]{32}$" }),
        "id" => json!({ "type": "string", "pattern": "^(sha256:)?[0-9a-f]{64}$" }),
        _ => json!({ "type": "string" }),
    }
}

/// Every endpoint's route, under its path.
pub(super) fn routes(endpoints: &[Endpoint]) -> Router<Arc<Cluster>> {
    let mut by_path: BTreeMap<&str, MethodRouter<Arc<Cluster>>> = BTreeMap::new();
    for e in endpoints {
        let route = (e.route)();
        let merged = match by_path.remove(e.path) {
            Some(earlier) => earlier.merge(route),
            None => route,
        };
        by_path.insert(e.path, merged);
    }
    by_path.into_iter().fold(Router::new(), |router, (path, route)| router.route(path, route))
}

/// The OpenAPI 3 document of `endpoints`.
pub(super) fn document(endpoints: &[Endpoint], version: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for e in endpoints {
        let params: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": path_parameter(name) }))
            .chain(e.query.iter().map(|(name, required, pattern)| {
                let schema = if pattern.is_empty() {
                    json!({ "type": "string" })
                } else {
                    json!({ "type": "string", "pattern": pattern })
                };
                json!({ "name": name, "in": "query", "required": required, "schema": schema })
            }))
            .collect();
        let responses: serde_json::Map<String, Value> =
            e.responses.iter().map(|(status, what)| (status.to_string(), json!({ "description": what }))).collect();
        let mut operation = json!({ "summary": e.summary, "responses": responses });
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        if let Some(kind) = e.body {
            let schema = if kind == "application/json" {
                json!({ "type": "object" })
            } else {
                json!({ "type": "string", "format": "binary" })
            };
            operation["requestBody"] = json!({ "content": { kind: { "schema": schema } } });
        }
        let entry = paths.entry(e.path.to_string()).or_insert_with(|| json!({}));
        entry[e.method.name()] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "weir REST API",
            "version": version,
            "description": "Flink's REST v1 paths and field names for what weir supports; also served under /v1.",
        },
        "paths": paths,
    })
}
