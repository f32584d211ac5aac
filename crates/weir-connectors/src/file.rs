//! Text files: a source reading the lines of a file or of every file in a directory, split into
//! byte ranges across parallel readers; and a sink writing one file per subtask.
//!
//! Splitting: the files (sorted by name) are laid end to end and the total byte count is cut into
//! `parallelism` equal ranges. A line belongs to the range its first byte is in, so a reader skips
//! a partial line at the start of its range and reads past the end of its range to finish its last
//! line; every line is read exactly once, whatever the parallelism.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use weir_core::{Error, Result};
use weir_runtime::checkpoint::task::TaskCheckpoint;
use weir_runtime::context::TaskEnv;
use weir_runtime::output::{Batch, Control};
use weir_runtime::source::{Sink, Source};
use weir_runtime::state::{OperatorListState, Redistribution};
use weir_runtime::{OperatorContext, Output, SourceReader, SourceStatus};

use crate::split_range;

/// The lines of a text file, or of every regular file in a directory (hidden files skipped).
#[derive(Clone, Debug)]
pub struct TextFiles {
    path: PathBuf,
}

impl TextFiles {
    /// Lines of the file or directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        TextFiles { path: path.into() }
    }

    fn files(&self) -> Result<Vec<(PathBuf, u64)>> {
        let meta = fs::metadata(&self.path)
            .map_err(|e| Error::io("cannot read the input; pass an existing file or directory:", &self.path, e))?;
        let mut files = Vec::new();
        if meta.is_dir() {
            let entries =
                fs::read_dir(&self.path).map_err(|e| Error::io("cannot list input directory", &self.path, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("cannot list input directory", &self.path, e))?;
                let hidden = entry.file_name().to_string_lossy().starts_with(['.', '_']);
                let m = entry.metadata().map_err(|e| Error::io("cannot read input file", entry.path(), e))?;
                if m.is_file() && !hidden {
                    files.push((entry.path(), m.len()));
                }
            }
            files.sort();
        } else {
            files.push((self.path.clone(), meta.len()));
        }
        Ok(files)
    }
}

impl Source<String> for TextFiles {
    fn name(&self) -> String {
        format!("TextFiles {}", self.path.display())
    }
    fn validate(&self) -> Result<()> {
        for (f, _) in self.files()? {
            File::open(&f).map_err(|e| Error::io("cannot open input file", &f, e))?;
        }
        Ok(())
    }
    fn create_reader(&self, ctx: &OperatorContext) -> Result<Box<dyn SourceReader<String>>> {
        let state = ctx.operator_state.list_state::<(PathBuf, u64, u64)>("ranges", Redistribution::EvenSplit)?;
        // Restored: the byte ranges not read yet, each starting at a line (at another parallelism,
        // spread over the subtasks).
        let mut parts = if ctx.operator_state.is_restored() {
            state.get()?
        } else {
            let files = self.files()?;
            let total: u64 = files.iter().map(|(_, n)| n).sum();
            let range = split_range(total, ctx.parallelism, ctx.subtask);
            let mut parts = Vec::new();
            let mut offset = 0u64;
            for (path, len) in files {
                let (a, b) = (range.start.max(offset), range.end.min(offset + len));
                if a < b {
                    parts.push((path, a - offset, b - offset));
                }
                offset += len;
            }
            parts
        };
        parts.reverse();
        Ok(Box::new(TextReader { parts, current: None, line: Vec::new(), state }))
    }
}

struct OpenPart {
    path: PathBuf,
    reader: BufReader<File>,
    pos: u64,
    end: u64,
}

struct TextReader {
    /// Remaining (file, start, end) ranges, last one first.
    parts: Vec<(PathBuf, u64, u64)>,
    current: Option<OpenPart>,
    line: Vec<u8>,
    /// Its position in checkpoints: the ranges not read yet.
    state: OperatorListState<(PathBuf, u64, u64)>,
}

impl TextReader {
    fn open(path: PathBuf, start: u64, end: u64) -> Result<OpenPart> {
        let mut file = File::open(&path).map_err(|e| Error::io("cannot open input file", &path, e))?;
        let mut pos = start;
        if start > 0 {
            // Look at the byte before the range: if it ends a line, our first line starts here;
            // otherwise the line in progress belongs to the previous range.
            file.seek(SeekFrom::Start(start - 1)).map_err(|e| Error::io("cannot seek in input file", &path, e))?;
            let mut reader = BufReader::with_capacity(1 << 16, file);
            let mut skipped = Vec::new();
            let n =
                reader.read_until(b'\n', &mut skipped).map_err(|e| Error::io("cannot read input file", &path, e))?;
            pos = start - 1 + n as u64;
            return Ok(OpenPart { path, reader, pos, end });
        }
        Ok(OpenPart { path, reader: BufReader::with_capacity(1 << 16, file), pos, end })
    }
}

impl SourceReader<String> for TextReader {
    fn poll(&mut self, out: &mut Vec<String>, max: usize) -> Result<SourceStatus> {
        let mut produced = 0;
        while produced < max {
            let part = match &mut self.current {
                Some(p) => p,
                None => match self.parts.pop() {
                    Some((path, a, b)) => self.current.insert(Self::open(path, a, b)?),
                    None => return Ok(SourceStatus::Finished),
                },
            };
            if part.pos >= part.end {
                self.current = None;
                continue;
            }
            self.line.clear();
            let n = part
                .reader
                .read_until(b'\n', &mut self.line)
                .map_err(|e| Error::io("cannot read input file", &part.path, e))?;
            if n == 0 {
                self.current = None;
                continue;
            }
            let line_start = part.pos;
            part.pos += n as u64;
            if self.line.last() == Some(&b'\n') {
                self.line.pop();
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
            }
            match std::str::from_utf8(&self.line) {
                Ok(s) => out.push(s.to_owned()),
                Err(e) => {
                    return Err(Error::io(
                        format!("input is not UTF-8 text (line starting at byte {line_start}) in"),
                        &part.path,
                        std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                    ));
                }
            }
            produced += 1;
        }
        Ok(SourceStatus::Continue)
    }

    fn snapshot(&mut self) -> Result<()> {
        // The rest of the open range starts at a line (the byte before it ends one); the others
        // are as they were split.
        let current = self.current.as_ref().filter(|p| p.pos < p.end).map(|p| (p.path.clone(), p.pos, p.end));
        self.state.update(current.into_iter().chain(self.parts.iter().rev().cloned()).collect())
    }
}

/// Writes records as lines of text into a directory.
///
/// Without checkpoints, each subtask writes one file, `part-<subtask>`, complete when the job ends.
///
/// With checkpoints the sink is exactly-once by default, through two-phase commit bound to
/// checkpoints: records go to a hidden in-progress file; at each barrier it is flushed, synced and
/// renamed to a hidden pending file (pre-commit, recorded in the checkpoint); once the checkpoint
/// completes, pending files are renamed to `part-<subtask>-<checkpoint>` (commit). Visible files are
/// therefore only ever committed ones, and a recovery, which restores the pending files of the
/// checkpoint it starts from and commits them, never writes a record twice. Records a job emits
/// after its final checkpoint (windows flushed at the end of input) go to `part-<subtask>-final`,
/// written whole under that name, so that a replay rewrites rather than repeats it.
///
/// [`TextFileSink::at_least_once`] writes visible files directly and syncs them at each barrier:
/// nothing is lost, but what was written after the last completed checkpoint is written again by a
/// recovery (into the next attempt's file, `part-<subtask>-<attempt>`).
#[derive(Clone, Debug)]
pub struct TextFileSink {
    dir: PathBuf,
    at_least_once: bool,
}

impl TextFileSink {
    /// A sink writing into directory `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        TextFileSink { dir: dir.into(), at_least_once: false }
    }

    /// With checkpoints: write visible files directly, synced at every barrier (see the type).
    pub fn at_least_once(mut self) -> Self {
        self.at_least_once = true;
        self
    }

    /// The file subtask `subtask` writes.
    pub fn part_path(dir: &Path, subtask: u32) -> PathBuf {
        dir.join(format!("part-{subtask}"))
    }
}

impl<T: std::fmt::Display + 'static> Sink<T> for TextFileSink {
    fn name(&self) -> String {
        format!("TextFiles {}", self.dir.display())
    }
    fn validate(&self) -> Result<()> {
        if self.dir.is_file() {
            return Err(Error::io(
                "the text sink writes a directory of part files, but this path is a file; pass a directory path:",
                &self.dir,
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "is a file"),
            ));
        }
        fs::create_dir_all(&self.dir).map_err(|e| Error::io("cannot create output directory", &self.dir, e))?;
        let probe = self.dir.join(".weir-write-probe");
        File::create(&probe).map_err(|e| Error::io("cannot write into output directory", &self.dir, e))?;
        let _ = fs::remove_file(&probe);
        Ok(())
    }
    fn create_writer(&self, env: &TaskEnv) -> Result<Box<dyn Output<T>>> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io("cannot create output directory", &self.dir, e))?;
        if env.checkpoint.enabled() && !self.at_least_once {
            return Ok(Box::new(TransactionalWriter::open(&self.dir, env)?));
        }
        let path = if env.checkpoint.enabled() {
            self.dir.join(format!("part-{}-{}", env.op.subtask, env.op.attempt))
        } else {
            Self::part_path(&self.dir, env.op.subtask)
        };
        let file = File::create(&path).map_err(|e| Error::io("cannot create output file", &path, e))?;
        Ok(Box::new(TextWriter { out: BufWriter::with_capacity(1 << 16, file), path }))
    }
}

struct TextWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl<T: std::fmt::Display> Output<T> for TextWriter {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        batch.timestamps = None;
        for r in batch.records.drain(..) {
            writeln!(self.out, "{r}").map_err(|e| Error::io("cannot write output file", &self.path, e))?;
        }
        Ok(())
    }
    fn control(&mut self, event: Control) -> Result<()> {
        // At-least-once: what came before the barrier is on disk before the barrier is acknowledged.
        if let Control::Barrier(_) = event {
            self.out.flush().map_err(|e| Error::io("cannot write output file", &self.path, e))?;
            self.out.get_ref().sync_data().map_err(|e| Error::io("cannot sync output file", &self.path, e))?;
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io("cannot write output file", &self.path, e))?;
        self.out.get_ref().sync_all().map_err(|e| Error::io("cannot sync output file", &self.path, e))
    }
}

/// A pre-committed file: written and synced under its hidden pending name, to be renamed to its
/// final name once its checkpoint completes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct PendingFile {
    checkpoint: u64,
    pending: String,
    fin: String,
}

/// The exactly-once writer (see [`TextFileSink`]).
struct TransactionalWriter {
    dir: PathBuf,
    subtask: u32,
    attempt: u32,
    current: Option<(BufWriter<File>, PathBuf)>,
    pending: Vec<PendingFile>,
    state: OperatorListState<PendingFile>,
    checkpoint: TaskCheckpoint,
    cancel: weir_runtime::CancelToken,
}

impl TransactionalWriter {
    fn open(dir: &Path, env: &TaskEnv) -> Result<Self> {
        let state = env.op.operator_state.list_state::<PendingFile>("pending-files", Redistribution::EvenSplit)?;
        let mut w = TransactionalWriter {
            dir: dir.to_path_buf(),
            subtask: env.op.subtask,
            attempt: env.op.attempt,
            current: None,
            pending: state.get()?,
            state,
            checkpoint: env.checkpoint.clone(),
            cancel: env.op.cancel.clone(),
        };
        // The restored pending files belong to a completed checkpoint: commit them now.
        w.commit(u64::MAX)?;
        w.clean_up()?;
        Ok(w)
    }

    /// Removes this subtask's hidden files of earlier attempts that no checkpoint covers: in-progress
    /// files, and pending files of checkpoints after the one the job restored from (pending files of
    /// that checkpoint are in its state, and whichever subtask restored them commits them).
    fn clean_up(&self) -> Result<()> {
        let restored = self.checkpoint.completed();
        let prefix = format!(".part-{}-", self.subtask);
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io("cannot list output directory", &self.dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&prefix) else { continue };
            // `<checkpoint or next>.a<attempt>.<inprogress|pending>`
            let mut parts = rest.split('.');
            let (Some(id), Some(attempt), Some(kind)) = (parts.next(), parts.next(), parts.next()) else { continue };
            let Some(attempt) = attempt.strip_prefix('a').and_then(|a| a.parse::<u32>().ok()) else { continue };
            let stale = match kind {
                "inprogress" => true,
                "pending" => id.parse::<u64>().is_ok_and(|id| id > restored),
                _ => false,
            };
            if stale && attempt < self.attempt {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
        Error::io(what, path, e)
    }

    /// Commits every pending file of a checkpoint up to `completed` (idempotent: a file already
    /// renamed is left as it is).
    fn commit(&mut self, completed: u64) -> Result<()> {
        let (done, keep): (Vec<PendingFile>, Vec<PendingFile>) =
            self.pending.drain(..).partition(|p| p.checkpoint <= completed);
        self.pending = keep;
        let renamed = !done.is_empty();
        for p in done {
            let (from, to) = (self.dir.join(&p.pending), self.dir.join(&p.fin));
            match fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => {}
                Err(e) => return Err(Self::io("cannot commit output file", &from, e)),
            }
        }
        if renamed {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Makes the renames in the output directory durable: a pending file's name before the
    /// checkpoint that refers to it is acknowledged, a committed file's once it is committed.
    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Self::io("cannot make the output directory durable (fsync)", &self.dir, e))
    }

    /// Flushes, syncs and closes the in-progress file; its path, if it held anything.
    fn close_current(&mut self) -> Result<Option<PathBuf>> {
        let Some((mut out, path)) = self.current.take() else { return Ok(None) };
        out.flush().map_err(|e| Self::io("cannot write output file", &path, e))?;
        out.get_ref().sync_all().map_err(|e| Self::io("cannot sync output file", &path, e))?;
        Ok(Some(path))
    }

    /// Pre-commit at barrier `id`: the in-progress file becomes a pending file of checkpoint `id`.
    fn pre_commit(&mut self, id: u64) -> Result<()> {
        if let Some(path) = self.close_current()? {
            let pending = format!(".part-{}-{id}.a{}.pending", self.subtask, self.attempt);
            fs::rename(&path, self.dir.join(&pending))
                .map_err(|e| Self::io("cannot pre-commit output file", &path, e))?;
            self.sync_dir()?;
            self.pending.push(PendingFile { checkpoint: id, pending, fin: format!("part-{}-{id}", self.subtask) });
        }
        self.state.update(self.pending.clone())
    }
}

impl<T: std::fmt::Display> Output<T> for TransactionalWriter {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        batch.timestamps = None;
        let completed = self.checkpoint.completed();
        if self.pending.first().is_some_and(|p| p.checkpoint <= completed) {
            self.commit(completed)?;
        }
        let (out, path) = match &mut self.current {
            Some(c) => c,
            None => {
                let path = self.dir.join(format!(".part-{}-next.a{}.inprogress", self.subtask, self.attempt));
                let file = File::create(&path).map_err(|e| Self::io("cannot create output file", &path, e))?;
                self.current.insert((BufWriter::with_capacity(1 << 16, file), path))
            }
        };
        for r in batch.records.drain(..) {
            writeln!(out, "{r}").map_err(|e| Error::io("cannot write output file", &*path, e))?;
        }
        Ok(())
    }

    fn control(&mut self, event: Control) -> Result<()> {
        match event {
            Control::Barrier(id) => self.pre_commit(id),
            Control::Tick(_) => self.commit(self.checkpoint.completed()),
            _ => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<()> {
        // Everything up to the final checkpoint is committed once it completes.
        let last = self.pending.last().map(|p| p.checkpoint);
        let sink = format!("the file sink writing to {}", self.dir.display());
        let left = "the output written before it stays pending there until a run completes it";
        if !self.checkpoint.wait_final(last, &self.cancel, &sink, left)? {
            return Ok(());
        }
        self.commit(self.checkpoint.completed())?;
        // Records after the final barrier (emitted at the end of input) are written whole under a
        // fixed name.
        if let Some(path) = self.close_current()? {
            let fin = self.dir.join(format!("part-{}-final", self.subtask));
            fs::rename(&path, &fin).map_err(|e| Self::io("cannot commit output file", &path, e))?;
            self.sync_dir()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ctx, env, read_all};

    #[test]
    fn a_restored_reader_goes_on_at_the_next_line_at_any_parallelism() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let mut expected = Vec::new();
        for f in 0..2 {
            let lines: Vec<String> = (0..60).map(|l| format!("f{f} l{l} {}", "y".repeat(l % 7))).collect();
            fs::write(dir.path().join(format!("f{f}.txt")), lines.join("\n") + "\n")
                .map_err(|e| Error::io("write", dir.path(), e))?;
            expected.extend(lines);
        }
        expected.sort();
        let src = TextFiles::new(dir.path());
        // Two readers each read 9 lines and snapshot mid-range.
        let mut read = Vec::new();
        let mut snaps = Vec::new();
        for s in 0..2 {
            let c = ctx(s, 2);
            let mut r = src.create_reader(&c)?;
            r.poll(&mut read, 9)?;
            r.snapshot()?;
            snaps.push(c.operator_state.snapshot()?);
        }
        for p in [1, 2, 3] {
            let mut all = read.clone();
            for s in 0..p {
                let c = crate::testing::restored_ctx(&snaps, "ranges", s, p);
                all.extend(read_all(src.create_reader(&c)?));
            }
            all.sort();
            assert_eq!(all, expected, "parallelism {p}: every line once");
        }
        Ok(())
    }

    #[test]
    fn every_line_is_read_once_at_any_parallelism() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let mut expected = Vec::new();
        for f in 0..3 {
            let mut text = String::new();
            for l in 0..(37 * (f + 1)) {
                let line = format!("file{f} line{l} {}", "x".repeat(l % 13));
                text.push_str(&line);
                text.push_str(if l % 5 == 0 { "\r\n" } else { "\n" });
                expected.push(line);
            }
            if f == 2 {
                text.push_str("no newline at the end");
                expected.push("no newline at the end".into());
            }
            fs::write(dir.path().join(format!("f{f}.txt")), text).map_err(|e| Error::io("write", dir.path(), e))?;
        }
        fs::write(dir.path().join(".hidden"), "skip me\n").map_err(|e| Error::io("write", dir.path(), e))?;
        expected.sort();
        let src = TextFiles::new(dir.path());
        src.validate()?;
        for p in [1, 2, 3, 7, 64] {
            let mut all = Vec::new();
            for s in 0..p {
                all.extend(read_all(src.create_reader(&ctx(s, p))?));
            }
            all.sort();
            assert_eq!(all, expected, "parallelism {p}");
        }
        Ok(())
    }

    #[test]
    fn missing_input_and_unwritable_output_are_clear_errors() {
        let e = TextFiles::new("/definitely/not/here").validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("/definitely/not/here") && e.contains("existing file or directory"), "{e}");
        let file = tempfile::NamedTempFile::new().ok();
        let path = file.as_ref().map(|f| f.path().to_path_buf()).unwrap_or_default();
        let e = Sink::<String>::validate(&TextFileSink::new(&path)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("pass a directory path"), "{e}");
    }

    #[test]
    fn the_sink_writes_one_file_per_subtask() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let sink = TextFileSink::new(dir.path().join("out"));
        Sink::<u32>::validate(&sink)?;
        let mut w: Box<dyn Output<u32>> = sink.create_writer(&env(1, 2))?;
        w.push(&mut Batch::of(vec![1, 2, 3]))?;
        w.finish()?;
        let text = fs::read_to_string(TextFileSink::part_path(&dir.path().join("out"), 1))
            .map_err(|e| Error::io("read", dir.path(), e))?;
        assert_eq!(text, "1\n2\n3\n");
        Ok(())
    }
}
