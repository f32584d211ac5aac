//! The job result store: what an application cluster leaves behind when it is gone. One JSON file
//! per application under `job-result-store.storage-path`, rewritten whole (through a temporary
//! file and a rename) at every change, so a reader sees the old record or the new one, never half.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weir_core::{Error, JobId, Result};

/// An application's outcome so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ApplicationRecord {
    /// Its id.
    pub id: JobId,
    /// The program that ran it (the artifact's file name).
    pub program: String,
    /// The arguments its `main` got.
    pub args: Vec<String>,
    /// RUNNING, SUCCEEDED, FAILED or CANCELED.
    pub status: String,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// Where its JobManager's REST endpoint was, while it ran.
    pub rest: String,
    /// Its JobManager's process id, while it ran.
    pub pid: u32,
    /// Start and end (ms since the epoch).
    pub start_time: i64,
    /// End, once it ended.
    pub end_time: Option<i64>,
    /// Its jobs, in submission order.
    pub jobs: Vec<ApplicationJob>,
}

/// One job of an application.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ApplicationJob {
    /// Its id.
    pub id: JobId,
    /// Its registered name.
    pub name: String,
    /// Its status when last recorded.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
}

impl ApplicationRecord {
    /// Whether the application ended.
    pub fn is_terminal(&self) -> bool {
        self.status != "RUNNING"
    }
}

/// Application records in a directory.
#[derive(Clone, Debug)]
pub struct JobResultStore {
    dir: PathBuf,
}

impl JobResultStore {
    /// The store in `dir` (created when the first record is written).
    pub fn new(dir: impl Into<PathBuf>) -> JobResultStore {
        JobResultStore { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: JobId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Where an application's JobManager writes its output.
    pub fn log_path(&self, id: JobId) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    /// Writes (or replaces) a record.
    pub fn write(&self, record: &ApplicationRecord) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            Error::io("cannot create the job result store (job-result-store.storage-path)", &self.dir, e)
        })?;
        let path = self.path(record.id);
        let temp = self.dir.join(format!(".{}.json.tmp", record.id));
        let text = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::internal(format!("cannot encode an application record: {e}")))?;
        std::fs::write(&temp, text).map_err(|e| Error::io("cannot write the job result store", &temp, e))?;
        std::fs::rename(&temp, &path).map_err(|e| Error::io("cannot write the job result store", &path, e))
    }

    /// The record of application `id`, if there is one.
    pub fn get(&self, id: JobId) -> Result<Option<ApplicationRecord>> {
        let path = self.path(id);
        match std::fs::read(&path) {
            // A damaged record, not a setting.
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::Storage {
                context: "cannot read the job result store's record".into(),
                location: path.display().to_string(),
                message: format!(
                    "it is not an application record ({e}): it is damaged or from another weir version; remove it, \
                     or point job-result-store.storage-path elsewhere"
                ),
                blame: weir_core::Blame::External,
                retryable: false,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("cannot read the job result store", &path, e)),
        }
    }

    /// Every record, oldest first (records that cannot be read are skipped: one bad file does not
    /// hide the others).
    pub fn list(&self) -> Vec<ApplicationRecord> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut all: Vec<ApplicationRecord> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json")?.parse::<JobId>().ok())
            .filter_map(|id| self.get(id).ok().flatten())
            .collect();
        all.sort_by_key(|r| (r.start_time, r.id));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_replace_whole() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::internal(e.to_string()))?;
        let store = JobResultStore::new(dir.path().join("results"));
        assert!(store.list().is_empty());
        let mut r = ApplicationRecord {
            id: JobId(7),
            program: "app".into(),
            args: vec!["x".into()],
            status: "RUNNING".into(),
            error: None,
            rest: "127.0.0.1:1".into(),
            pid: 1,
            start_time: 5,
            end_time: None,
            jobs: Vec::new(),
        };
        store.write(&r)?;
        r.status = "FAILED".into();
        r.error = Some("boom".into());
        store.write(&r)?;
        assert_eq!(store.get(JobId(7))?, Some(r.clone()));
        assert_eq!(store.list(), vec![r]);
        assert_eq!(store.get(JobId(8))?, None);
        std::fs::write(store.dir().join(format!("{}.json", JobId(9))), b"{")
            .map_err(|e| Error::internal(e.to_string()))?;
        assert!(store.get(JobId(9)).is_err());
        assert_eq!(store.list().len(), 1);
        Ok(())
    }
}
