//! The file sink, with the semantics of Flink's `FileSink`: records go into part files in buckets
//! (sub-directories chosen per record, by default one per hour), part files roll on size, on time
//! and at every checkpoint, and a part file becomes visible under its final name
//! `<prefix>-<uuid>-<subtask>-<counter><suffix>` only when the checkpoint that covers it completes.
//!
//! - On S3 (`s3://BUCKET/PREFIX`) a part file is a multipart upload to its final key: parts are
//!   uploaded while records come (in the background, at most two at a time), the upload id and
//!   the parts' ids go into the checkpoint, and completing the upload when the checkpoint
//!   completes is the commit. Nothing is renamed or copied; a reader never sees a partial file.
//! - On a local or shared file system a part file is written under a hidden name
//!   (`.<name>.inprogress`), made durable at the barrier, and renamed when the checkpoint
//!   completes.
//!
//! A commit is idempotent, so that a restore commits the restored checkpoint's part files again
//! without harm. Formats: rows ([`Rows::text`], [`Rows::json_lines`], any encoder) and Parquet
//! ([`Parquet`], columns from a serde type).

mod bucket;
mod format;
mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use weir_core::{Error, Result};
use weir_runtime::CancelToken;
use weir_runtime::checkpoint::task::TaskCheckpoint;
use weir_runtime::context::TaskEnv;
use weir_runtime::output::{Batch, Control, Output};
use weir_runtime::source::Sink;
use weir_runtime::state::{OperatorListState, Redistribution};

pub use bucket::{BucketFn, Buckets, DatePattern};
pub use format::{Format, Parquet, PartEncoder, Rows};
pub use parquet::file::properties::WriterProperties;
pub use store::MIN_PART_BYTES;
use store::{Location, PartFile, Pending, PendingFile, Target};

/// Records of a bulk format encoded at once between checks of the part file's size.
const BULK_CHUNK: usize = 1024;

/// When a part file rolls (is closed and a new one started), besides at every checkpoint:
/// Flink's `DefaultRollingPolicy`, with its defaults (128 MiB, 60 s, 60 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RollingPolicy {
    /// A part file rolls once it holds this many bytes.
    pub max_part_size: u64,
    /// ... or once it has been open this long.
    pub rollover_interval: Duration,
    /// ... or once nothing has been written to it for this long.
    pub inactivity_interval: Duration,
}

impl Default for RollingPolicy {
    fn default() -> Self {
        RollingPolicy {
            max_part_size: 128 << 20,
            rollover_interval: Duration::from_secs(60),
            inactivity_interval: Duration::from_secs(60),
        }
    }
}

impl RollingPolicy {
    /// Rolls at `bytes`.
    pub fn with_max_part_size(mut self, bytes: u64) -> Self {
        self.max_part_size = bytes.max(1);
        self
    }
    /// Rolls after `d` open.
    pub fn with_rollover_interval(mut self, d: Duration) -> Self {
        self.rollover_interval = d;
        self
    }
    /// Rolls after `d` without a write.
    pub fn with_inactivity_interval(mut self, d: Duration) -> Self {
        self.inactivity_interval = d;
        self
    }
}

/// How part files are named: `<prefix>-<uuid>-<subtask>-<counter><suffix>` (Flink's
/// `OutputFileConfig`; default prefix `part`, no suffix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputFileConfig {
    /// The name's start.
    pub part_prefix: String,
    /// The name's end, e.g. `.parquet`.
    pub part_suffix: String,
}

impl Default for OutputFileConfig {
    fn default() -> Self {
        OutputFileConfig { part_prefix: "part".into(), part_suffix: String::new() }
    }
}

impl OutputFileConfig {
    /// Names with `prefix` and `suffix`.
    pub fn new(prefix: &str, suffix: &str) -> Self {
        OutputFileConfig { part_prefix: prefix.into(), part_suffix: suffix.into() }
    }
}

/// The file sink (see the crate's documentation).
pub struct FileSink<T> {
    path: String,
    location: Location,
    format: Arc<dyn Format<T>>,
    buckets: Buckets<T>,
    rolling: RollingPolicy,
    names: OutputFileConfig,
    options: Vec<(String, String)>,
}

impl<T: Send + 'static> FileSink<T> {
    /// A sink of rows (one encoded record after another) under `path`: a directory, a `file://`
    /// URL or an `s3://BUCKET/PREFIX` URL.
    pub fn for_row_format(path: &str, format: Rows<T>) -> Result<Self> {
        Self::new(path, Arc::new(format))
    }

    /// A sink of bulk-encoded files (Parquet) under `path`.
    pub fn for_bulk_format(path: &str, format: Parquet<T>) -> Result<Self>
    where
        T: serde::Serialize,
    {
        Self::new(path, Arc::new(format))
    }

    /// A sink in `format` under `path`.
    pub fn new(path: &str, format: Arc<dyn Format<T>>) -> Result<Self> {
        Ok(FileSink {
            path: path.trim().to_string(),
            location: Location::parse(path)?,
            format,
            buckets: Buckets::default(),
            rolling: RollingPolicy::default(),
            names: OutputFileConfig::default(),
            options: Vec::new(),
        })
    }

    /// Chooses buckets (default: hourly by processing time, `yyyy-MM-dd--HH`).
    pub fn with_bucket_assigner(mut self, buckets: Buckets<T>) -> Self {
        self.buckets = buckets;
        self
    }

    /// Sets when part files roll, besides at checkpoints.
    pub fn with_rolling_policy(mut self, rolling: RollingPolicy) -> Self {
        self.rolling = rolling;
        self
    }

    /// Sets how part files are named.
    pub fn with_output_file_config(mut self, names: OutputFileConfig) -> Self {
        self.names = names;
        self
    }

    /// Sets one of Flink's `s3.*` options for an S3 path (`s3.endpoint`, `s3.access-key`,
    /// `s3.secret-key`, `s3.region`, `s3.path.style.access`, `s3.upload.min.part.size`); without
    /// them the standard `AWS_*` environment variables of each process apply.
    pub fn with_option(mut self, key: &str, value: &str) -> Self {
        self.options.push((key.to_string(), value.to_string()));
        self
    }
}

impl<T: Send + 'static> Sink<T> for FileSink<T> {
    fn name(&self) -> String {
        format!("FileSink {} ({})", self.path, self.format.name())
    }

    fn validate(&self) -> Result<()> {
        Target::open(&self.path, &self.location, &self.options)?.check()
    }

    fn create_writer(&self, env: &TaskEnv) -> Result<Box<dyn Output<T>>> {
        Ok(Box::new(FileWriter::open(self, env)?))
    }
}

/// A part file being written, in one bucket.
struct OpenPart<T> {
    file: PartFile,
    encoder: Box<dyn PartEncoder<T>>,
    /// Encoded bytes not yet handed to the file.
    buf: Vec<u8>,
    /// Bytes encoded so far (handed over or not).
    written: u64,
    opened: i64,
    last_write: i64,
}

/// What a run of records is bucketed by, cheap to compare record to record.
#[derive(Clone, PartialEq, Eq)]
enum BucketKey {
    Base,
    Period(i64),
    Name(String),
}

/// One subtask's writer.
struct FileWriter<T> {
    target: Target,
    format: Arc<dyn Format<T>>,
    buckets: Buckets<T>,
    rolling: RollingPolicy,
    names: OutputFileConfig,
    /// The first part of every name this writer gives (fresh per attempt).
    uuid: String,
    subtask: u32,
    counter: u64,
    open: HashMap<String, OpenPart<T>>,
    /// Part files closed since the last barrier.
    closed: Vec<PendingFile>,
    /// Part files pre-committed at a barrier, waiting for their checkpoint.
    pending: Vec<Pending>,
    /// Commits under way (S3), with what they commit.
    committing: Vec<(Pending, weir_storage::Spawned<Result<()>>)>,
    /// The pending part files, in checkpoints (`None` when the job takes none: part files are
    /// committed as soon as they close).
    state: Option<OperatorListState<Pending>>,
    checkpoint: TaskCheckpoint,
    cancel: CancelToken,
    /// The last bucket name formatted from a date pattern, and its period.
    cached: Option<(i64, String)>,
    /// Where subtask and attempt appear in logs.
    who: String,
}

impl<T: Send + 'static> FileWriter<T> {
    fn open(sink: &FileSink<T>, env: &TaskEnv) -> Result<Self> {
        let target = Target::open(&sink.path, &sink.location, &sink.options)?;
        let state = if env.checkpoint.enabled() {
            Some(env.op.operator_state.list_state::<Pending>("file-sink-pending", Redistribution::EvenSplit)?)
        } else {
            None
        };
        let restored = match &state {
            Some(s) => s.get()?,
            None => Vec::new(),
        };
        let mut w = FileWriter {
            target,
            format: sink.format.clone(),
            buckets: sink.buckets.clone(),
            rolling: sink.rolling,
            names: sink.names.clone(),
            uuid: uuid::Uuid::new_v4().to_string(),
            subtask: env.op.subtask,
            counter: 0,
            open: HashMap::new(),
            closed: Vec::new(),
            pending: restored,
            committing: Vec::new(),
            state,
            checkpoint: env.checkpoint.clone(),
            cancel: env.op.cancel.clone(),
            cached: None,
            who: format!(
                "job {} vertex {} subtask {} attempt {}",
                env.op.job_id, env.op.vertex, env.op.subtask, env.op.attempt
            ),
        };
        // The restored part files belong to the checkpoint the job restored from, which
        // completed: commit them now, before anything new is written.
        if !w.pending.is_empty() {
            tracing::info!(
                job = %env.op.job_id, vertex = %env.op.vertex, subtask = env.op.subtask, attempt = env.op.attempt,
                files = w.pending.len(), "file sink: committing the restored checkpoint's part files"
            );
            w.commit(u64::MAX)?;
            w.wait_commits()?;
        }
        Ok(w)
    }

    /// The key of a record's bucket.
    fn key_of(&self, r: &T, ts: Option<i64>, now: i64) -> Result<BucketKey> {
        Ok(match &self.buckets {
            Buckets::None => BucketKey::Base,
            Buckets::ProcessingTime(p) => BucketKey::Period(p.period_of(now)),
            Buckets::EventTime(p) => match ts {
                Some(t) => BucketKey::Period(p.period_of(t)),
                None => {
                    return Err(Error::Config(format!(
                        "the file sink to {} buckets by event time, but its input has no timestamps; assign \
                         timestamps and watermarks upstream, or bucket by processing time",
                        self.target.shown()
                    )));
                }
            },
            Buckets::Custom(f) => BucketKey::Name(f(r, ts)),
        })
    }

    /// The bucket's name for a key (`at`: an instant in its period).
    fn name_of(&mut self, key: &BucketKey, at: i64) -> String {
        match (key, &self.buckets) {
            (BucketKey::Period(p), Buckets::ProcessingTime(pattern) | Buckets::EventTime(pattern)) => {
                if let Some((cp, name)) = &self.cached
                    && cp == p
                {
                    return name.clone();
                }
                let name = pattern.format(at);
                self.cached = Some((*p, name.clone()));
                name
            }
            (BucketKey::Name(n), _) => n.clone(),
            _ => String::new(),
        }
    }

    /// The open part file of `bucket`, opened now if there is none.
    fn part_for(&mut self, bucket: &str, now: i64) -> Result<&mut OpenPart<T>> {
        if !self.open.contains_key(bucket) {
            let name = format!(
                "{}-{}-{}-{}{}",
                self.names.part_prefix, self.uuid, self.subtask, self.counter, self.names.part_suffix
            );
            self.counter += 1;
            let file = self.target.begin(bucket, &name)?;
            let encoder = self.format.open()?;
            let part = OpenPart { file, encoder, buf: Vec::new(), written: 0, opened: now, last_write: now };
            self.open.insert(bucket.to_string(), part);
        }
        self.open.get_mut(bucket).ok_or_else(|| Error::internal("a part file vanished as it opened"))
    }

    /// Writes a run of records of one bucket, rolling its part file whenever it reaches the
    /// size limit. The size is checked as often as a format allows at a fair cost: after every
    /// record of a row format, after every chunk of a bulk format's columns.
    fn write_run(&mut self, bucket: &str, mut records: &[T], now: i64) -> Result<()> {
        let step = if self.format.is_bulk() { BULK_CHUNK } else { 1 };
        let max = self.rolling.max_part_size;
        while !records.is_empty() {
            let part = self.part_for(bucket, now)?;
            part.last_write = now;
            let mut full = false;
            while !records.is_empty() && !full {
                let (head, tail) = records.split_at(step.min(records.len()));
                records = tail;
                let before = part.buf.len();
                part.encoder.write(head, &mut part.buf)?;
                part.written += (part.buf.len() - before) as u64;
                full = part.written + part.encoder.buffered() >= max;
            }
            if full {
                self.roll(bucket)?;
            } else {
                part.file.drain(&mut part.buf, false)?;
            }
        }
        Ok(())
    }

    /// Closes the part file of `bucket`: pending until the next barrier, or committed now when
    /// the job takes no checkpoints.
    fn roll(&mut self, bucket: &str) -> Result<()> {
        let Some(mut part) = self.open.remove(bucket) else { return Ok(()) };
        part.encoder.finish(&mut part.buf)?;
        let file = part.file.close(&mut part.buf)?;
        if self.state.is_some() {
            self.closed.push(file);
        } else {
            let p = Pending { checkpoint: 0, file };
            if let Some(s) = self.target.commit(&p)? {
                s.wait()??;
            }
        }
        Ok(())
    }

    fn roll_all(&mut self) -> Result<()> {
        let buckets: Vec<String> = self.open.keys().cloned().collect();
        for b in buckets {
            self.roll(&b)?;
        }
        Ok(())
    }

    /// Rolls the part files that have been open or idle too long.
    fn roll_by_time(&mut self, now: i64) -> Result<()> {
        let (open_for, idle_for) = (
            i64::try_from(self.rolling.rollover_interval.as_millis()).unwrap_or(i64::MAX),
            i64::try_from(self.rolling.inactivity_interval.as_millis()).unwrap_or(i64::MAX),
        );
        let due: Vec<String> = self
            .open
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.opened) >= open_for || now.saturating_sub(p.last_write) >= idle_for)
            .map(|(b, _)| b.clone())
            .collect();
        for b in due {
            self.roll(&b)?;
        }
        Ok(())
    }

    /// Starts committing the pending part files of checkpoints up to `completed`, and takes in
    /// the commits that have finished (an error fails the task; the restore commits again).
    fn commit(&mut self, completed: u64) -> Result<()> {
        let mut i = 0;
        while i < self.committing.len() {
            let (p, s) = self.committing.swap_remove(i);
            match s.try_take() {
                Ok(done) => done??,
                Err(s) => {
                    self.committing.push((p, s));
                    let last = self.committing.len() - 1;
                    self.committing.swap(i, last);
                    i += 1;
                }
            }
        }
        if self.pending.first().is_none_or(|p| p.checkpoint > completed) {
            return Ok(());
        }
        let (due, keep): (Vec<Pending>, Vec<Pending>) = self.pending.drain(..).partition(|p| p.checkpoint <= completed);
        self.pending = keep;
        for p in due {
            tracing::debug!(writer = %self.who, checkpoint = p.checkpoint, file = ?p.file, "file sink: committing");
            if let Some(s) = self.target.commit(&p)? {
                self.committing.push((p, s));
            }
        }
        Ok(())
    }

    /// Waits for every commit under way.
    fn wait_commits(&mut self) -> Result<()> {
        for (_, s) in self.committing.drain(..) {
            s.wait()??;
        }
        Ok(())
    }

    /// Pre-commit at barrier `id`: every open part file rolls (a checkpoint always rolls), and the
    /// part files closed since the last barrier become pending for checkpoint `id`.
    fn pre_commit(&mut self, id: u64) -> Result<()> {
        self.roll_all()?;
        self.pending.extend(self.closed.drain(..).map(|file| Pending { checkpoint: id, file }));
        if let Some(state) = &self.state {
            let all: Vec<Pending> =
                self.pending.iter().chain(self.committing.iter().map(|(p, _)| p)).cloned().collect();
            state.update(all)?;
        }
        Ok(())
    }
}

impl<T: Send + 'static> Output<T> for FileWriter<T> {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        if self.state.is_some() {
            self.commit(self.checkpoint.completed())?;
        }
        let now = weir_core::clock::now_millis();
        let records = std::mem::take(&mut batch.records);
        let timestamps = batch.timestamps.take();
        let ts = |i: usize| timestamps.as_ref().and_then(|t| t.get(i).copied());
        let mut start = 0;
        while start < records.len() {
            let key = self.key_of(&records[start], ts(start), now)?;
            let mut end = start + 1;
            while end < records.len() && self.key_of(&records[end], ts(end), now)? == key {
                end += 1;
            }
            let name = self.name_of(&key, ts(start).unwrap_or(now));
            self.write_run(&name, &records[start..end], now)?;
            start = end;
        }
        batch.records = records;
        batch.records.clear();
        if let Some(mut t) = timestamps {
            t.clear();
            batch.timestamps = Some(t);
        }
        Ok(())
    }

    fn control(&mut self, event: Control) -> Result<()> {
        match event {
            Control::Barrier(id) => self.pre_commit(id),
            Control::Tick(now) => {
                self.roll_by_time(now)?;
                if self.state.is_some() {
                    self.commit(self.checkpoint.completed())?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.roll_all()?;
        if self.state.is_none() {
            return Ok(());
        }
        // Everything up to the final checkpoint is committed once it completes.
        let last = self.pending.last().map(|p| p.checkpoint);
        let sink = format!("the file sink to {}", self.target.shown());
        let left = "its part files stay invisible (pending) until a restore from that checkpoint commits them";
        if !self.checkpoint.wait_final(last, &self.cancel, &sink, left)? {
            return Ok(());
        }
        self.commit(self.checkpoint.completed())?;
        self.wait_commits()?;
        // Part files of records after the final barrier (windows flushed at the end of input) are
        // committed now: the job is over and no replay follows.
        for file in std::mem::take(&mut self.closed) {
            if let Some(s) = self.target.commit(&Pending { checkpoint: 0, file })? {
                s.wait()??;
            }
        }
        Ok(())
    }
}

impl<T> Drop for FileWriter<T> {
    /// A writer dropped with part files open (its task failed or was cancelled) gives them up:
    /// their records are replayed from the last checkpoint into new part files.
    fn drop(&mut self) {
        for (_, part) in self.open.drain() {
            part.file.abandon();
        }
    }
}
