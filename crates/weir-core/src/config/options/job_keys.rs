//! The job keys: parallelism, batches, watermarks, checkpoints and savepoints, state backends.

use super::super::def::{Flink, Kind, OptionDef};
use super::declare::{DAY_MS, DURATION, FOREVER_MS, POSITIVE_DURATION, choice, job};
use crate::keygroup::UPPER_BOUND_MAX_PARALLELISM;

pub(in crate::config) const JOB: &[OptionDef] = &[
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
];
