//! Every configuration key weir knows: the one place a key is declared. A new key is one entry
//! here, one arm in the typed configuration that acts on it, and `weir config reference >
//! docs/config.md`.

use super::def::{Choice, Flink, Kind, OptionDef, Scope};
use crate::keygroup::UPPER_BOUND_MAX_PARALLELISM;

const DAY_MS: u64 = 86_400_000;
const FOREVER_MS: u64 = 365 * DAY_MS;
const PORT: Kind = Kind::Int { min: 0, max: 65_535 };
const DURATION: Kind = Kind::Duration { min_ms: 0, max_ms: FOREVER_MS };
const POSITIVE_DURATION: Kind = Kind::Duration { min_ms: 1, max_ms: FOREVER_MS };
const COUNT: Kind = Kind::Int { min: 1, max: u32::MAX as u64 };

const fn def(
    scope: Scope,
    key: &'static str,
    kind: Kind,
    default: &'static str,
    flink: Flink,
    example: &'static str,
    doc: &'static str,
) -> OptionDef {
    OptionDef { key, kind, default, scope, flink, doc, aliases: &[], example, refused: &[] }
}

const fn job(
    key: &'static str,
    kind: Kind,
    default: &'static str,
    flink: Flink,
    example: &'static str,
    doc: &'static str,
) -> OptionDef {
    def(Scope::Job, key, kind, default, flink, example, doc)
}

const fn cluster(
    key: &'static str,
    kind: Kind,
    default: &'static str,
    flink: Flink,
    example: &'static str,
    doc: &'static str,
) -> OptionDef {
    def(Scope::Cluster, key, kind, default, flink, example, doc)
}

impl OptionDef {
    const fn aka(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    const fn refusing(mut self, refused: &'static [(&'static str, &'static str)]) -> Self {
        self.refused = refused;
        self
    }
}

const fn choice(value: &'static str, aliases: &'static [&'static str]) -> Choice {
    Choice { value, aliases }
}

/// Flink keys weir refuses, with what to use instead.
pub(super) const RETIRED: &[(&str, &str)] = &[
    (
        "state.backend.rocksdb.timer-service.factory",
        "weir has no RocksDB backend; its disk backend takes state.backend.disk.timer-service.factory (disk or heap)",
    ),
    ("state.backend.rocksdb.localdir", "weir has no RocksDB backend; its disk backend takes state.backend.disk.dir"),
];

/// The registry.
pub(super) const OPTIONS: &[OptionDef] = &[
    // ---- jobs: parallelism, batches, watermarks
    job(
        "parallelism.default",
        Kind::Int { min: 1, max: UPPER_BOUND_MAX_PARALLELISM as u64 },
        "the number of cores",
        Flink::Same,
        "3",
        "Parallelism of the operators that do not set their own (`-p` sets it too).",
    ),
    job(
        "pipeline.max-parallelism",
        Kind::Int { min: 1, max: UPPER_BOUND_MAX_PARALLELISM as u64 },
        "128",
        Flink::Same,
        "64",
        "Key groups of keyed operators: the most a keyed operator can be rescaled to.",
    ),
    job(
        "pipeline.auto-watermark-interval",
        Kind::Duration { min_ms: 1, max_ms: DAY_MS },
        "200ms",
        Flink::Same,
        "50ms",
        "How often tasks tick with processing time: periodic watermarks, idleness, processing-time timers.",
    ),
    job(
        "execution.batch-size",
        Kind::Int { min: 1, max: 1 << 20 },
        "1024",
        Flink::None,
        "7",
        "Most records a source emits per batch; records move between operators in batches.",
    ),
    job(
        "execution.channel-capacity",
        Kind::Int { min: 1, max: 1 << 16 },
        "8",
        Flink::Like("taskmanager.network.memory.buffers-per-channel"),
        "2",
        "Batches buffered per channel between two subtasks before the sender blocks (backpressure).",
    ),
    // ---- jobs: checkpoints and savepoints
    job(
        "execution.checkpointing.interval",
        Kind::Duration { min_ms: 10, max_ms: FOREVER_MS },
        "(none: no checkpoints)",
        Flink::Same,
        "300ms",
        "How often a checkpoint starts; unset, the job takes no checkpoints.",
    ),
    job(
        "execution.checkpointing.timeout",
        POSITIVE_DURATION,
        "10min",
        Flink::Same,
        "30s",
        "A checkpoint not complete by then fails.",
    ),
    job(
        "execution.checkpointing.min-pause",
        DURATION,
        "0ms",
        Flink::Same,
        "100ms",
        "The least time between the end of one checkpoint and the start of the next.",
    ),
    job(
        "execution.checkpointing.num-retained",
        Kind::Int { min: 1, max: 1_000_000 },
        "1",
        Flink::Same,
        "3",
        "Completed checkpoints kept; older ones are deleted.",
    )
    .aka(&["state.checkpoints.num-retained"]),
    job(
        "execution.checkpointing.mode",
        Kind::Choice(&[choice("EXACTLY_ONCE", &[]), choice("AT_LEAST_ONCE", &[])]),
        "EXACTLY_ONCE",
        Flink::Same,
        "AT_LEAST_ONCE",
        "EXACTLY_ONCE aligns barriers; AT_LEAST_ONCE does not (records after a barrier may be replayed).",
    ),
    job(
        "execution.checkpointing.dir",
        Kind::Text,
        "~/.local/share/weir/checkpoints",
        Flink::Same,
        "/var/weir/checkpoints",
        "Where checkpoints are written: a directory, `file://` or `s3://BUCKET/PREFIX` URL.",
    )
    .aka(&["state.checkpoints.dir"]),
    job(
        "execution.checkpointing.savepoint-dir",
        Kind::Text,
        "(none)",
        Flink::Same,
        "/var/weir/savepoints",
        "The default target of savepoints (`savepoint` and `stop` without a directory).",
    )
    .aka(&["state.savepoints.dir"]),
    job(
        "execution.savepoint.path",
        Kind::Text,
        "(none)",
        Flink::Same,
        "/var/weir/savepoints/savepoint-1",
        "The savepoint or retained checkpoint a job starts from (`run -s PATH`).",
    ),
    job(
        "execution.savepoint.ignore-unclaimed-state",
        Kind::Bool,
        "false",
        Flink::Same,
        "true",
        "Whether a restore may leave state that no operator of the job claims (`--allowNonRestoredState`).",
    ),
    // ---- jobs: state backends
    job(
        "state.backend.type",
        Kind::Choice(&[choice("hashmap", &["heap"]), choice("disk", &[])]),
        "hashmap",
        Flink::Same,
        "disk",
        "Where keyed state lives: `hashmap` on the heap, `disk` in an embedded on-disk store with a \
         cache in front (state larger than memory, incremental checkpoints).",
    )
    .refusing(&[(
        "rocksdb",
        "weir has no RocksDB backend; 'disk' is its embedded on-disk backend (state larger than memory, \
         incremental checkpoints)",
    )]),
    job(
        "state.backend.incremental",
        Kind::Bool,
        "false",
        Flink::Same,
        "true",
        "With the disk backend, checkpoints write only what changed since the previous one.",
    ),
    job(
        "state.backend.disk.dir",
        Kind::Text,
        "the system's temporary directory",
        Flink::Like("state.backend.rocksdb.localdir"),
        "/var/tmp/weir-state",
        "Where the disk backend keeps its working files; removed when the task ends.",
    ),
    job(
        "state.backend.disk.cache-entries",
        Kind::Int { min: 1, max: 1 << 40 },
        "100000",
        Flink::None,
        "5000",
        "Keys each operator instance of the disk backend keeps decoded in memory.",
    ),
    job(
        "state.backend.disk.timer-service.factory",
        Kind::Choice(&[choice("disk", &[]), choice("heap", &[])]),
        "disk",
        Flink::Like("state.backend.rocksdb.timer-service.factory"),
        "heap",
        "With the disk backend, where process functions' timers live: in the store, or on the heap \
         (written whole into each snapshot; much faster for timer-heavy jobs whose timers fit in memory).",
    ),
    // ---- cluster: addresses and ports
    cluster(
        "jobmanager.rpc.address",
        Kind::Text,
        "127.0.0.1",
        Flink::Same,
        "10.0.0.5",
        "Where TaskManagers reach the JobManager.",
    ),
    cluster(
        "jobmanager.rpc.port",
        PORT,
        "6123",
        Flink::Same,
        "6124",
        "The JobManager's control port (0: any free port).",
    ),
    cluster("rest.address", Kind::Text, "127.0.0.1", Flink::Same, "10.0.0.5", "Where clients reach the REST endpoint."),
    cluster(
        "rest.bind-address",
        Kind::Text,
        "127.0.0.1",
        Flink::Same,
        "0.0.0.0",
        "The address the REST endpoint listens on (loopback unless you open it).",
    ),
    cluster("rest.port", PORT, "8081", Flink::Same, "8082", "The REST port (0: any free port)."),
    cluster(
        "web.submit.enable",
        Kind::Bool,
        "true",
        Flink::Same,
        "false",
        "Whether programs may be uploaded, run and deleted through REST (`/artifacts/upload`, \
         `/artifacts/{id}/run`, `DELETE /artifacts/{id}`: weir's counterparts of Flink's jar endpoints). \
         Off, only jobs of programs the cluster already holds can be submitted.",
    ),
    cluster(
        "web.cancel.enable",
        Kind::Bool,
        "true",
        Flink::Same,
        "false",
        "Whether jobs may be cancelled through REST (`PATCH /jobs/{id}`, which `weir cancel` uses).",
    ),
    cluster(
        "jobstore.max-capacity",
        Kind::Int { min: 0, max: i32::MAX as u64 },
        "2147483647",
        Flink::Same,
        "100",
        "How many ended jobs the JobManager keeps for REST to show; beyond it, the longest ended go \
         first (an application's outcome stays in the job result store).",
    ),
    cluster(
        "jobstore.expiration-time",
        POSITIVE_DURATION,
        "1h",
        Flink::Same,
        "10min",
        "How long the JobManager keeps an ended job for REST to show.",
    ),
    cluster(
        "web.exception-history-size",
        Kind::Int { min: 1, max: 1 << 16 },
        "16",
        Flink::Same,
        "32",
        "How many failures of a job the JobManager keeps (the latest; a job restarting for ever would \
         otherwise grow without bound).",
    ),
    cluster(
        "slotmanager.number-of-slots.max",
        Kind::Int { min: 1, max: i32::MAX as u64 },
        "2147483647",
        Flink::Same,
        "64",
        "The most slots the cluster's TaskManagers may offer together: a resource provider starts no \
         TaskManager beyond it, and a job that needs more is refused at submission.",
    ),
    cluster(
        "weir.cached-files.allowed-dirs",
        Kind::Text,
        "",
        Flink::None,
        "/data/lookup,/opt/models",
        "Directories (comma-separated) whose files a job submitted through REST may name as cached \
         files, which the JobManager reads at submission. Empty: none, and such a submission is \
         refused. Programs that run in the JobManager (application mode, the mini cluster) read their \
         own files; a per-job client allows exactly its job's files.",
    ),
    cluster(
        "weir.rest.allowed-hosts",
        Kind::Text,
        "",
        Flink::None,
        "flink.example.com,jobmanager.internal",
        "Host names a REST request may name in its Host header besides rest.address, rest.bind-address, \
         localhost and IP addresses (comma-separated). Other names are refused, so that a web page \
         cannot reach the endpoint through DNS rebinding.",
    ),
    cluster(
        "taskmanager.numberOfTaskSlots",
        Kind::Int { min: 1, max: 1 << 16 },
        "1",
        Flink::Same,
        "4",
        "Slots a TaskManager offers.",
    ),
    cluster(
        "taskmanager.host",
        Kind::Text,
        "the address the TaskManager reaches the JobManager from",
        Flink::Same,
        "10.0.0.6",
        "The address other TaskManagers send records to.",
    ),
    cluster(
        "taskmanager.bind-host",
        Kind::Text,
        "as taskmanager.host",
        Flink::Same,
        "0.0.0.0",
        "The address the data port listens on.",
    ),
    cluster("taskmanager.data.port", PORT, "0", Flink::Same, "6130", "The port records arrive on (0: any free port)."),
    cluster(
        "taskmanager.job-isolation",
        Kind::Choice(&[choice("process", &[]), choice("shared", &[])]),
        "process",
        Flink::None,
        "shared",
        "`process` runs every job's part in a worker process of its own, so a job that crashes its \
         process fails alone; `shared` runs the jobs of the TaskManager's own program in its process.",
    ),
    cluster(
        "cluster.evenly-spread-out-slots",
        Kind::Bool,
        "false",
        Flink::Same,
        "true",
        "Spread a job's slots over the TaskManagers instead of filling as few as possible.",
    ),
    // ---- cluster: artifacts, results, providers
    cluster(
        "blob.storage.directory",
        Kind::Text,
        "a fresh temporary directory (JobManager); ~/.cache/weir/artifacts (TaskManagers)",
        Flink::Same,
        "/var/weir/blobs",
        "Where the JobManager keeps uploaded artifacts and TaskManagers cache the ones they fetched.",
    ),
    cluster(
        "blob.artifact.max-size",
        Kind::Size,
        "1gb",
        Flink::None,
        "10mb",
        "The largest artifact the blob store accepts.",
    ),
    cluster(
        "weir.blob.storage.max-total-size",
        Kind::Size,
        "20gb",
        Flink::None,
        "50gb",
        "The most the JobManager's blob store holds (its own executable not counted); an upload that \
         does not fit is refused (507) until artifacts are deleted (`DELETE /artifacts/{id}`).",
    ),
    cluster(
        "weir.blob.cache.max-total-size",
        Kind::Size,
        "10gb",
        Flink::None,
        "2gb",
        "The most a TaskManager's artifact cache keeps: after a fetch, the artifacts used longest ago \
         are removed until the rest fit (none used in the last ten minutes).",
    ),
    cluster(
        "blob.fetch.num-concurrent",
        COUNT,
        "50",
        Flink::Same,
        "8",
        "How many artifact fetches the JobManager serves at once; more wait their turn.",
    ),
    cluster(
        "weir.rest.upload.max-concurrent",
        COUNT,
        "4",
        Flink::None,
        "2",
        "How many artifact uploads the REST endpoint takes at once; more are answered 503 (retry later).",
    ),
    cluster(
        "resourcemanager.provider",
        Kind::Choice(&[choice("standalone", &[]), choice("process", &[]), choice("docker", &[])]),
        "standalone",
        Flink::None,
        "process",
        "Who starts TaskManagers: you (`standalone`), the JobManager as child processes (`process`) \
         or as containers through the Docker Engine API (`docker`).",
    ),
    cluster(
        "resourcemanager.taskmanager-timeout",
        DURATION,
        "30s",
        Flink::Same,
        "5s",
        "A TaskManager the provider started is stopped after this long without work.",
    ),
    cluster(
        "execution.target",
        Kind::Choice(&[choice("local", &[]), choice("remote", &[]), choice("per-job", &[])]),
        "local",
        Flink::Same,
        "remote",
        "Where a program's `execute` sends its jobs: the embedded cluster, a running session \
         cluster at rest.address:rest.port, or a cluster started for each job.",
    ),
    cluster(
        "job-result-store.storage-path",
        Kind::Text,
        "~/.local/share/weir/job-results",
        Flink::Same,
        "/var/weir/job-results",
        "Where application clusters keep the outcome of their applications and jobs after they are gone.",
    ),
    cluster(
        "docker.host",
        Kind::Text,
        "$DOCKER_HOST, else unix:///var/run/docker.sock",
        Flink::None,
        "unix:///run/docker.sock",
        "The Docker Engine API's address.",
    ),
    cluster(
        "docker.image",
        Kind::Text,
        "the JobManager's own image",
        Flink::Like("kubernetes.container.image.ref"),
        "weir-artifact:abc",
        "The image TaskManager containers run.",
    ),
    cluster(
        "docker.network",
        Kind::Text,
        "(none)",
        Flink::None,
        "weir-net",
        "The private network of a cluster's containers.",
    ),
    // ---- cluster: liveness
    cluster(
        "heartbeat.interval",
        POSITIVE_DURATION,
        "10s",
        Flink::Same,
        "2s",
        "How often TaskManagers and the JobManager exchange heartbeats.",
    ),
    cluster(
        "heartbeat.timeout",
        POSITIVE_DURATION,
        "50s",
        Flink::Same,
        "20s",
        "A TaskManager silent this long is lost (must exceed heartbeat.interval).",
    ),
    cluster(
        "slot.request.timeout",
        DURATION,
        "5min",
        Flink::Same,
        "1min",
        "How long a job waits for slots before it fails.",
    ),
    // ---- cluster: restart strategies
    cluster(
        "restart-strategy.type",
        Kind::Choice(&[
            choice("none", &["off", "disable"]),
            choice("fixed-delay", &[]),
            choice("exponential-delay", &[]),
            choice("failure-rate", &[]),
        ]),
        "none",
        Flink::Same,
        "fixed-delay",
        "What happens when a job fails: nothing (`none`), or restarts by one of the strategies below.",
    ),
    cluster(
        "restart-strategy.fixed-delay.attempts",
        Kind::Int { min: 0, max: u32::MAX as u64 },
        "1",
        Flink::Same,
        "3",
        "Restarts before the job fails for good.",
    ),
    cluster(
        "restart-strategy.fixed-delay.delay",
        DURATION,
        "1s",
        Flink::Same,
        "250ms",
        "The delay before each restart.",
    ),
    cluster(
        "restart-strategy.exponential-delay.initial-backoff",
        DURATION,
        "1s",
        Flink::Same,
        "100ms",
        "The first delay (at most max-backoff).",
    ),
    cluster(
        "restart-strategy.exponential-delay.max-backoff",
        DURATION,
        "1min",
        Flink::Same,
        "10s",
        "The longest delay.",
    ),
    cluster(
        "restart-strategy.exponential-delay.backoff-multiplier",
        Kind::Float { min: 1.0 },
        "1.5",
        Flink::Same,
        "2",
        "Each delay is the previous one times this.",
    ),
    cluster(
        "restart-strategy.exponential-delay.reset-backoff-threshold",
        DURATION,
        "1h",
        Flink::Same,
        "10min",
        "After this long without failures the delay starts again from initial-backoff.",
    ),
    cluster(
        "restart-strategy.failure-rate.max-failures-per-interval",
        COUNT,
        "1",
        Flink::Same,
        "2",
        "Failures allowed per interval before the job fails for good.",
    ),
    cluster(
        "restart-strategy.failure-rate.failure-rate-interval",
        POSITIVE_DURATION,
        "1min",
        Flink::Same,
        "30s",
        "The interval failures are counted in.",
    ),
    cluster(
        "restart-strategy.failure-rate.delay",
        DURATION,
        "1s",
        Flink::Same,
        "500ms",
        "The delay before each restart.",
    ),
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
