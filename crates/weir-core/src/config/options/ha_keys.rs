//! The high-availability keys: the coordination service and where recovery data lives.

use super::super::def::{Flink, Kind, OptionDef};
use super::declare::{DAY_MS, choice, cluster};

pub(in crate::config) const HA: &[OptionDef] = &[
    // ---- cluster: high availability
    cluster(
        "high-availability.type",
        Kind::Choice(&[choice("none", &[]), choice("etcd", &[]), choice("zookeeper", &[])]),
        "none",
        Flink::Same,
        "zookeeper",
        "Standby JobManagers through a coordination service: none, etcd or zookeeper.",
    ),
    cluster(
        "high-availability.cluster-id",
        Kind::Text,
        "default",
        Flink::Same,
        "orders",
        "JobManagers with the same id are one cluster: one leads, the others stand by.",
    ),
    cluster(
        "high-availability.storageDir",
        Kind::Text,
        "(none)",
        Flink::Same,
        "s3://ha/weir",
        "Where job graphs and artifacts go (a directory or s3://BUCKET/PREFIX); the coordination \
         service keeps only pointers to them.",
    ),
    cluster(
        "high-availability.zookeeper.quorum",
        Kind::Text,
        "(none)",
        Flink::Same,
        "127.0.0.1:2181",
        "`host:port` of the ZooKeeper servers, comma-separated.",
    ),
    cluster(
        "high-availability.zookeeper.path.root",
        Kind::Root,
        "/weir",
        Flink::Same,
        "/flink",
        "The znode every weir cluster lives under.",
    ),
    cluster(
        "high-availability.zookeeper.client.session-timeout",
        Kind::Duration { min_ms: 1_000, max_ms: DAY_MS },
        "10s",
        Flink::Same,
        "20s",
        "A JobManager silent this long loses its leadership (Flink's default is 60 s).",
    ),
    cluster(
        "high-availability.etcd.endpoints",
        Kind::Text,
        "(none)",
        Flink::None,
        "127.0.0.1:2379",
        "`host:port` of the etcd members' client URLs, comma-separated.",
    ),
    cluster(
        "high-availability.etcd.path.root",
        Kind::Root,
        "/weir",
        Flink::None,
        "/flink",
        "The key prefix every weir cluster lives under.",
    ),
    cluster(
        "high-availability.etcd.lease-ttl",
        Kind::Duration { min_ms: 2_000, max_ms: DAY_MS },
        "10s",
        Flink::None,
        "20s",
        "A leader that cannot renew its lease this long is replaced (etcd's shortest lease is 2 s).",
    ),
];
