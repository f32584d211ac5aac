//! Every configuration key weir knows: the one place a key is declared, in the file of its part
//! (`job_keys`, `cluster_keys`, `security_keys`, `ha_keys`, `metrics_keys`; their order is the reference's). A new key is one entry
//! there, one arm in the typed configuration that acts on it, and `weir config reference >
//! docs/config.md`.

use super::def::OptionDef;

/// Flink keys weir refuses, with what to use instead.
pub(super) const RETIRED: &[(&str, &str)] = &[
    (
        "state.backend.rocksdb.timer-service.factory",
        "weir has no RocksDB backend; its disk backend takes state.backend.disk.timer-service.factory (disk or heap)",
    ),
    ("state.backend.rocksdb.localdir", "weir has no RocksDB backend; its disk backend takes state.backend.disk.dir"),
];

mod cluster_keys;
mod declare;
mod ha_keys;
mod job_keys;
mod metrics_keys;
mod security_keys;

/// Every key, in the order of the reference.
pub(super) const OPTIONS: &[OptionDef] = &ALL;

const ALL: [OptionDef;
    job_keys::JOB.len()
        + cluster_keys::CLUSTER.len()
        + security_keys::SECURITY.len()
        + ha_keys::HA.len()
        + metrics_keys::METRICS.len()] =
    concat([job_keys::JOB, cluster_keys::CLUSTER, security_keys::SECURITY, ha_keys::HA, metrics_keys::METRICS]);

/// The declarations of the five files, in order (their order is the reference's).
const fn concat<const N: usize>(parts: [&[OptionDef]; 5]) -> [OptionDef; N] {
    let mut out = [parts[0][0]; N];
    let (mut p, mut n) = (0, 0);
    while p < parts.len() {
        let mut i = 0;
        while i < parts[p].len() {
            out[n] = parts[p][i];
            i += 1;
            n += 1;
        }
        p += 1;
    }
    out
}
