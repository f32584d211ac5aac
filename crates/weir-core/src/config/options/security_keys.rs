//! The security keys: TLS on internal connections and REST (Flink's), the cluster secret (weir's).

use super::super::def::{Flink, Kind, OptionDef};
use super::declare::cluster;

pub(in crate::config) const SECURITY: &[OptionDef] = &[
    // ---- cluster: security
    cluster(
        "security.ssl.internal.enabled",
        Kind::Bool,
        "false",
        Flink::Same,
        "true",
        "Mutual TLS on every internal connection (JobManager and TaskManager RPC, artifact fetches, \
         data connections between TaskManagers and workers). Both ends present a certificate from \
         `security.ssl.internal.keystore` and accept only certificates signed by \
         `security.ssl.internal.truststore`; host names are not checked (as Flink does internally).",
    )
    .aka(&["security.ssl.enabled"]),
    cluster(
        "security.ssl.internal.keystore",
        Kind::Text,
        "",
        Flink::Same,
        "/etc/weir/internal.pem",
        "This process's certificate chain and private key for internal connections: one PEM file \
         (weir reads PEM, not Java keystores; docs/security.md shows the conversion).",
    ),
    cluster(
        "security.ssl.internal.truststore",
        Kind::Text,
        "",
        Flink::Same,
        "/etc/weir/internal-ca.pem",
        "The certificates (PEM) whose signature an internal peer's certificate must carry; often the \
         same file as the keystore's certificate (one self-signed certificate for the whole cluster).",
    ),
    cluster(
        "security.ssl.rest.enabled",
        Kind::Bool,
        "false",
        Flink::Same,
        "true",
        "HTTPS on the REST endpoint, with the certificate chain and key of `security.ssl.rest.keystore`; \
         clients (`weir` commands, `execution.target: remote`) verify it against \
         `security.ssl.rest.truststore`.",
    ),
    cluster(
        "security.ssl.rest.keystore",
        Kind::Text,
        "",
        Flink::Same,
        "/etc/weir/rest.pem",
        "The REST endpoint's certificate chain and private key (one PEM file); with \
         `security.ssl.rest.authentication-enabled`, also the certificate clients present.",
    ),
    cluster(
        "security.ssl.rest.truststore",
        Kind::Text,
        "",
        Flink::Same,
        "/etc/weir/rest-ca.pem",
        "The certificates (PEM) clients trust the REST endpoint's certificate by, and, with \
         `security.ssl.rest.authentication-enabled`, the endpoint trusts clients' certificates by.",
    ),
    cluster(
        "security.ssl.rest.authentication-enabled",
        Kind::Bool,
        "false",
        Flink::Same,
        "true",
        "Whether the REST endpoint requires a client certificate signed by \
         `security.ssl.rest.truststore` (mutual TLS); requests without one are refused in the handshake.",
    ),
    cluster(
        "security.ssl.verify-hostname",
        Kind::Bool,
        "true",
        Flink::Same,
        "false",
        "Whether REST clients check that the endpoint's certificate names the host they connect to.",
    ),
    cluster(
        "weir.security.cluster-secret-file",
        Kind::Text,
        "",
        Flink::None,
        "/etc/weir/cluster.secret",
        "A file (readable by its owner only) holding the secret every process of the cluster proves \
         it knows when an internal connection opens (an HMAC challenge in both directions, the secret \
         never sent). Without it, the secret in `$WEIR_CLUSTER_SECRET`, if set; clusters that weir \
         starts itself (`cluster start`, per-job and application clusters, the process and docker \
         providers' TaskManagers, the mini cluster) make one of their own. With neither, internal \
         connections are not authenticated (as in Flink without SSL): anyone who reaches the ports may \
         join.",
    ),
    cluster(
        "security.ssl.internal.keystore-password",
        Kind::Text,
        "",
        Flink::Like("security.ssl.internal.keystore-password"),
        "changeit",
        "Accepted so that a Flink configuration loads; unused, since weir reads unencrypted PEM files \
         (keep them readable by the cluster's user only).",
    ),
    cluster(
        "security.ssl.rest.keystore-password",
        Kind::Text,
        "",
        Flink::Like("security.ssl.rest.keystore-password"),
        "changeit",
        "Accepted so that a Flink configuration loads; unused, since weir reads unencrypted PEM files \
         (keep them readable by the cluster's user only).",
    ),
    cluster(
        "security.ssl.internal.key-password",
        Kind::Text,
        "",
        Flink::Like("security.ssl.internal.key-password"),
        "changeit",
        "Accepted so that a Flink configuration loads; unused, since weir reads unencrypted PEM files \
         (keep them readable by the cluster's user only).",
    ),
    cluster(
        "security.ssl.rest.key-password",
        Kind::Text,
        "",
        Flink::Like("security.ssl.rest.key-password"),
        "changeit",
        "Accepted so that a Flink configuration loads; unused, since weir reads unencrypted PEM files \
         (keep them readable by the cluster's user only).",
    ),
    cluster(
        "security.ssl.internal.truststore-password",
        Kind::Text,
        "",
        Flink::Like("security.ssl.internal.truststore-password"),
        "changeit",
        "Accepted so that a Flink configuration loads; unused, since weir reads unencrypted PEM files \
         (keep them readable by the cluster's user only).",
    ),
    cluster(
        "security.ssl.rest.truststore-password",
        Kind::Text,
        "",
        Flink::Like("security.ssl.rest.truststore-password"),
        "changeit",
        "Accepted so that a Flink configuration loads; unused, since weir reads unencrypted PEM files \
         (keep them readable by the cluster's user only).",
    ),
];
