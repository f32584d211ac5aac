//! The metric keys: which reporters a process starts and how (Flink's `metrics.*` keys). A key
//! with `<name>` takes any reporter name in its place, as in Flink
//! (`metrics.reporter.prom.port`).

use super::super::def::{Flink, Kind, OptionDef};
use super::declare::cluster;

pub(in crate::config) const METRICS: &[OptionDef] = &[
    cluster(
        "metrics.reporters",
        Kind::Text,
        "(every configured reporter)",
        Flink::Same,
        "prom",
        "The names of the reporters to start, comma-separated; unset, every reporter configured \
         under `metrics.reporter.<name>` starts.",
    ),
    cluster(
        "metrics.reporter.<name>.factory.class",
        Kind::Text,
        "(none)",
        Flink::Same,
        "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
        "Which reporter `<name>` is: Flink's Prometheus factory class (or `prometheus`) starts the \
         Prometheus reporter, an HTTP endpoint every process of the cluster serves its metrics on. \
         weir has no other reporter; naming another is an error.",
    ),
    cluster(
        "metrics.reporter.<name>.port",
        Kind::Text,
        "9249",
        Flink::Same,
        "9249-9259",
        "The Prometheus reporter's port: a port, a range (`9249-9259`) or a comma-separated list of \
         both; each process takes the first one free, so one range serves a JobManager and its \
         TaskManagers on one machine.",
    ),
    cluster(
        "metrics.reporter.<name>.bind-address",
        Kind::Text,
        "127.0.0.1",
        Flink::None,
        "0.0.0.0",
        "The address the Prometheus reporter listens on (loopback unless you open it; Flink \
         listens on every address).",
    ),
    cluster(
        "metrics.reporter.<name>.filterLabelValueCharacters",
        Kind::Bool,
        "true",
        Flink::Same,
        "false",
        "Whether label values lose the characters Prometheus names may not have (each becomes `_`).",
    ),
    cluster(
        "metrics.reporter.<name>.scope.variables.excludes",
        Kind::Text,
        "(none)",
        Flink::Same,
        "task_attempt_id;tm_id",
        "Variables the reporter leaves out of the labels, separated by `;` (with or without Flink's \
         angle brackets).",
    ),
    cluster(
        "metrics.reporter.<name>.scope.variables.additional",
        Kind::Text,
        "(none)",
        Flink::Same,
        "region:eu,env:prod",
        "Labels the reporter adds to every metric, as `key:value` pairs separated by `,`.",
    ),
];
