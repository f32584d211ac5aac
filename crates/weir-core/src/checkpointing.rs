//! Checkpoint settings of a job, with Flink 1.20's key names and defaults.

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::config::Value;

/// How barriers are handled at tasks with several input channels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointingMode {
    /// Aligned barriers: a channel that delivered the barrier waits for the others, so the snapshot
    /// holds exactly the records before the barrier (`EXACTLY_ONCE`, the default).
    #[default]
    ExactlyOnce,
    /// No alignment: records after a barrier may be in the snapshot and are replayed after a
    /// recovery (`AT_LEAST_ONCE`); lower latency under backpressure.
    AtLeastOnce,
}

/// `execution.checkpointing.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    /// `execution.checkpointing.interval`: how often a checkpoint starts; `None` disables
    /// checkpointing (Flink's default).
    pub interval_ms: Option<u64>,
    /// `execution.checkpointing.timeout`: a checkpoint not complete by then is failed (10 min).
    pub timeout_ms: u64,
    /// `execution.checkpointing.min-pause`: the least time between the end of one checkpoint and
    /// the start of the next (0).
    pub min_pause_ms: u64,
    /// `execution.checkpointing.num-retained`: completed checkpoints kept (1).
    pub retained: u32,
    /// `execution.checkpointing.mode`.
    pub mode: CheckpointingMode,
    /// `execution.checkpointing.dir`: where checkpoints are written (a directory or a `file://`
    /// URL); `None`: `~/.local/share/weir/checkpoints`.
    pub dir: Option<String>,
    /// `execution.checkpointing.savepoint-dir`: the default target of savepoints.
    pub savepoint_dir: Option<String>,
    /// `execution.savepoint.path`: the savepoint (or retained checkpoint) the job starts from
    /// (`run -s PATH`).
    pub restore_path: Option<String>,
    /// `execution.savepoint.ignore-unclaimed-state`: whether a restore may leave state of the
    /// snapshot that no operator of the job claims (`--allowNonRestoredState`).
    pub allow_non_restored: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval_ms: None,
            timeout_ms: 600_000,
            min_pause_ms: 0,
            retained: 1,
            mode: CheckpointingMode::ExactlyOnce,
            dir: None,
            savepoint_dir: None,
            restore_path: None,
            allow_non_restored: false,
        }
    }
}

impl CheckpointConfig {
    /// Whether checkpoints are taken.
    pub fn enabled(&self) -> bool {
        self.interval_ms.is_some()
    }

    /// The checkpoint directory: the configured one or the default.
    pub fn dir(&self) -> String {
        match &self.dir {
            Some(d) => d.clone(),
            None => {
                let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
                home.join(".local/share/weir/checkpoints").display().to_string()
            }
        }
    }

    /// Sets one key from its text, through the option registry; `Ok(false)` when the key is
    /// not a checkpointing key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool> {
        let (def, value) = crate::config::registry::parse(key, value)?;
        self.apply(def.key, &value)
    }

    /// Sets one key from its typed value (the registry checked it); `Ok(false)` when the key is
    /// not a checkpointing key.
    pub fn apply(&mut self, key: &str, value: &Value) -> Result<bool> {
        match key {
            "execution.checkpointing.interval" => self.interval_ms = Some(value.number(key)?),
            "execution.checkpointing.timeout" => self.timeout_ms = value.number(key)?,
            "execution.checkpointing.min-pause" => self.min_pause_ms = value.number(key)?,
            "execution.checkpointing.num-retained" => self.retained = value.int(key)?,
            "execution.checkpointing.mode" => {
                self.mode = match value.text(key)? {
                    "AT_LEAST_ONCE" => CheckpointingMode::AtLeastOnce,
                    _ => CheckpointingMode::ExactlyOnce,
                }
            }
            "execution.checkpointing.dir" => self.dir = Some(value.text(key)?.to_string()),
            "execution.checkpointing.savepoint-dir" => self.savepoint_dir = Some(value.text(key)?.to_string()),
            "execution.savepoint.path" => self.restore_path = Some(value.text(key)?.to_string()),
            "execution.savepoint.ignore-unclaimed-state" => self.allow_non_restored = value.flag(key)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Every setting that differs from the default, as `key: value`.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let d = CheckpointConfig::default();
        if let Some(i) = self.interval_ms {
            out.push(("execution.checkpointing.interval", format!("{i}ms")));
        }
        if self.timeout_ms != d.timeout_ms {
            out.push(("execution.checkpointing.timeout", format!("{}ms", self.timeout_ms)));
        }
        if self.min_pause_ms != d.min_pause_ms {
            out.push(("execution.checkpointing.min-pause", format!("{}ms", self.min_pause_ms)));
        }
        if self.retained != d.retained {
            out.push(("execution.checkpointing.num-retained", self.retained.to_string()));
        }
        if self.mode != d.mode {
            out.push(("execution.checkpointing.mode", "AT_LEAST_ONCE".into()));
        }
        if let Some(dir) = &self.dir {
            out.push(("execution.checkpointing.dir", dir.clone()));
        }
        if let Some(dir) = &self.savepoint_dir {
            out.push(("execution.checkpointing.savepoint-dir", dir.clone()));
        }
        if let Some(p) = &self.restore_path {
            out.push(("execution.savepoint.path", p.clone()));
        }
        if self.allow_non_restored {
            out.push(("execution.savepoint.ignore-unclaimed-state", "true".into()));
        }
        out
    }
}

/// Where keyed state lives while a job runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateBackendKind {
    /// On the heap, in hash maps (`hashmap`, the default).
    #[default]
    HashMap,
    /// In an embedded on-disk store with a bounded cache in front (`disk`): state larger than
    /// memory, and incremental checkpoints.
    Disk,
}

/// `state.backend.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateBackendConfig {
    /// `state.backend.type`: `hashmap` or `disk`.
    pub kind: StateBackendKind,
    /// `state.backend.incremental`: with the disk backend, checkpoints write only what changed since
    /// the previous one (false, as in Flink).
    pub incremental: bool,
    /// `state.backend.disk.dir`: where the disk backend keeps its working files (the system's
    /// temporary directory when unset); removed when the task ends.
    pub dir: Option<String>,
    /// `state.backend.disk.cache-entries`: keys each operator instance keeps decoded in memory.
    pub cache_entries: usize,
    /// `state.backend.disk.timer-service.factory: heap`: with the disk backend, process functions'
    /// timers stay on the heap (written into each snapshot) instead of in the store, as Flink's
    /// `state.backend.rocksdb.timer-service.factory: HEAP` does: much faster for timer-heavy jobs
    /// whose timers fit in memory. `disk` (the default) keeps them in the store.
    #[serde(default)]
    pub timers_on_heap: bool,
}

impl Default for StateBackendConfig {
    fn default() -> Self {
        StateBackendConfig {
            kind: StateBackendKind::HashMap,
            incremental: false,
            dir: None,
            cache_entries: 100_000,
            timers_on_heap: false,
        }
    }
}

impl StateBackendConfig {
    /// Sets one key from its text, through the option registry; `Ok(false)` for another key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool> {
        let (def, value) = crate::config::registry::parse(key, value)?;
        self.apply(def.key, &value)
    }

    /// Sets one key from its typed value (the registry checked it); `Ok(false)` for another key.
    pub fn apply(&mut self, key: &str, value: &Value) -> Result<bool> {
        match key {
            "state.backend.type" => {
                self.kind = match value.text(key)? {
                    "disk" => StateBackendKind::Disk,
                    _ => StateBackendKind::HashMap,
                }
            }
            "state.backend.incremental" => self.incremental = value.flag(key)?,
            "state.backend.disk.dir" => self.dir = Some(value.text(key)?.to_string()),
            "state.backend.disk.cache-entries" => self.cache_entries = value.int(key)?,
            "state.backend.disk.timer-service.factory" => self.timers_on_heap = value.text(key)? == "heap",
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Every setting that differs from the default, as `key: value`.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let d = StateBackendConfig::default();
        let mut out = Vec::new();
        if self.kind == StateBackendKind::Disk {
            out.push(("state.backend.type", "disk".to_string()));
        }
        if self.incremental {
            out.push(("state.backend.incremental", "true".to_string()));
        }
        if let Some(dir) = &self.dir {
            out.push(("state.backend.disk.dir", dir.clone()));
        }
        if self.cache_entries != d.cache_entries {
            out.push(("state.backend.disk.cache-entries", self.cache_entries.to_string()));
        }
        if self.timers_on_heap {
            out.push(("state.backend.disk.timer-service.factory", "heap".to_string()));
        }
        out
    }
}

/// One state file of a snapshot: what a task wrote for one checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// The chain's head vertex.
    pub head: u32,
    /// The subtask.
    pub subtask: u32,
    /// Path relative to the snapshot's directory (or to that of `checkpoint`).
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// The uids of the operators whose state it holds.
    pub uids: Vec<String>,
    /// For incremental state: the earlier checkpoint whose directory holds this file, which the
    /// snapshot builds on (`None`: the snapshot's own file).
    #[serde(default)]
    pub checkpoint: Option<u64>,
}

impl StateFile {
    /// Whether the file is the snapshot's own (not an earlier checkpoint's it builds on).
    pub fn is_own(&self) -> bool {
        self.checkpoint.is_none()
    }
}

/// A task's acknowledgement: its state for a checkpoint is written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAck {
    /// The checkpoint.
    pub checkpoint_id: u64,
    /// The file.
    pub file: StateFile,
    /// Earlier checkpoints whose file of the same task this one builds on (incremental state),
    /// oldest first.
    pub references: Vec<u64>,
}

/// What the tasks of a job part tell the job's checkpoint coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointEvent {
    /// A task's state is written.
    Ack(TaskAck),
    /// A task could not write its state for this checkpoint.
    Decline {
        /// The checkpoint.
        id: u64,
        /// Why.
        reason: String,
    },
    /// A source subtask read all its input; the job's final checkpoint may come once all have.
    SourceEnded,
}

/// Where a job part restores its state from: a snapshot's directory in a checkpoint storage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreFrom {
    /// The storage (`execution.checkpointing.dir`, or a savepoint's own path).
    pub location: String,
    /// The snapshot's directory in it ("" for the storage's root).
    pub dir: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_with_flinks_notation_and_give_themselves_back() -> Result<()> {
        let mut c = CheckpointConfig::default();
        assert!(!c.enabled());
        assert!(c.set("execution.checkpointing.interval", "1 s")?);
        assert!(c.set("execution.checkpointing.mode", "at-least-once")?);
        assert!(c.set("execution.checkpointing.num-retained", "3")?);
        assert!(c.set("execution.checkpointing.dir", "/tmp/cp")?);
        assert!(!c.set("parallelism.default", "3")?);
        assert_eq!(c.interval_ms, Some(1000));
        let mut back = CheckpointConfig::default();
        for (k, v) in c.entries() {
            back.set(k, &v)?;
        }
        assert_eq!(back, c);
        for (k, v) in [
            ("execution.checkpointing.interval", "1ms"),
            ("execution.checkpointing.interval", "soon"),
            ("execution.checkpointing.num-retained", "0"),
            ("execution.checkpointing.mode", "twice"),
            ("execution.checkpointing.dir", " "),
            ("execution.checkpointing.timeout", "0"),
        ] {
            assert!(c.set(k, v).is_err(), "{k}: {v}");
        }
        Ok(())
    }
}
