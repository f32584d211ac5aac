//! What a JobManager or TaskManager tells about its own process through Flink's REST endpoints
//! (`/jobmanager/logs`, `.../log`, `.../stdout`, `.../thread-dump`, and the same under
//! `/taskmanagers/{id}`): its log files and its threads.
//!
//! A weir process logs to standard error; whoever starts it decides where that goes. When it goes
//! to a regular file (`weir cluster start` and the resource providers write `*.log` files), that
//! file is the process's log, and its directory is the log directory whose `*.log` and `*.out`
//! files are listed, as Flink lists its `log.file`'s directory. A process logging to a terminal
//! or a pipe has no log file to show, and says so.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// At most this much of a log is sent (its end, when it is longer).
pub const MAX_LOG_BYTES: u64 = 8 << 20;

/// A file of the log directory (Flink's `LogInfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFile {
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its last modification, ms since the epoch.
    pub mtime: i64,
}

/// One thread of the process (Flink's `ThreadInfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadInfo {
    /// Its name.
    pub name: String,
    /// What is known of it: id, state, CPU time, where the kernel has it waiting.
    pub info: String,
}

/// What is asked of a process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The files of the log directory.
    Logs,
    /// The process's log (standard error).
    Log,
    /// Its standard output.
    Stdout,
    /// A file of the log directory, by name.
    File(String),
    /// Its threads.
    Threads,
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// For [`Request::Logs`].
    Logs(Vec<LogFile>),
    /// A file's text (its end, at most [`MAX_LOG_BYTES`]).
    Text(String),
    /// For [`Request::Threads`].
    Threads(Vec<ThreadInfo>),
}

/// Answers `request` about this process; an error says what is missing (for a 404).
pub fn answer(request: &Request) -> Result<Reply, String> {
    match request {
        Request::Logs => logs().map(Reply::Logs),
        Request::Log => read_tail(&file_of(2).ok_or_else(no_file)?).map(Reply::Text),
        Request::Stdout => read_tail(&file_of(1).ok_or_else(no_file)?).map(Reply::Text),
        Request::File(name) => {
            let listed = logs()?;
            if !listed.iter().any(|f| f.name == *name) {
                return Err(format!(
                    "no log file '{name}' in this process's log directory; /logs lists the files there"
                ));
            }
            let dir = log_dir().ok_or_else(no_file)?;
            read_tail(&dir.join(name)).map(Reply::Text)
        }
        Request::Threads => Ok(Reply::Threads(threads())),
    }
}

fn no_file() -> String {
    "this process writes its log to a terminal or a pipe, not to a file; start it with `weir cluster start` \
     (or redirect its output to a file) to see its log here"
        .to_string()
}

/// The regular file descriptor `fd` of this process writes to, if it is one.
fn file_of(fd: u32) -> Option<PathBuf> {
    let path = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    std::fs::metadata(&path).ok().filter(|m| m.is_file()).map(|_| path)
}

/// The directory of the process's log file.
fn log_dir() -> Option<PathBuf> {
    file_of(2).or_else(|| file_of(1)).and_then(|p| p.parent().map(Path::to_path_buf))
}

/// The `*.log` and `*.out` files of the log directory, by name.
fn logs() -> Result<Vec<LogFile>, String> {
    let dir = log_dir().ok_or_else(no_file)?;
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot list the log directory {}: {e}", dir.display()))?;
    let mut out: Vec<LogFile> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            if name.starts_with('.') || !(name.ends_with(".log") || name.ends_with(".out")) {
                return None;
            }
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            Some(LogFile { name, size: meta.len(), mtime })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The text of `path`: its last [`MAX_LOG_BYTES`] (from the start of a line), lossily UTF-8.
fn read_tail(path: &Path) -> Result<String, String> {
    let fail = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut f = std::fs::File::open(path).map_err(fail)?;
    let len = f.metadata().map_err(fail)?.len();
    let from = len.saturating_sub(MAX_LOG_BYTES);
    f.seek(SeekFrom::Start(from)).map_err(fail)?;
    let mut bytes = Vec::with_capacity((len - from) as usize);
    f.take(MAX_LOG_BYTES).read_to_end(&mut bytes).map_err(fail)?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if from > 0 {
        let cut = text.find('\n').map(|i| i + 1).unwrap_or(0);
        text = format!("[the first {} bytes of {} are not shown]\n{}", from + cut as u64, path.display(), &text[cut..]);
    }
    Ok(text)
}

/// Every thread of this process, from `/proc/self/task`: name, id, scheduler state, CPU time and
/// kernel wait channel (native threads have no Java-style stack to print).
fn threads() -> Vec<ThreadInfo> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    let mut tids: Vec<u64> =
        tasks.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect();
    tids.sort_unstable();
    for tid in tids {
        let dir = format!("/proc/self/task/{tid}");
        let name = std::fs::read_to_string(format!("{dir}/comm")).map(|s| s.trim().to_string()).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("{dir}/stat")).unwrap_or_default();
        // After the name's closing parenthesis: state, then 11 fields to utime and stime.
        let rest: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        let state = match rest.first().copied().unwrap_or("?") {
            "R" => "RUNNABLE",
            "S" => "WAITING (sleeping)",
            "D" => "WAITING (uninterruptible)",
            "T" | "t" => "STOPPED",
            "Z" => "ZOMBIE",
            _ => "UNKNOWN",
        };
        let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let wchan = std::fs::read_to_string(format!("{dir}/wchan")).unwrap_or_default();
        let wchan = if wchan.is_empty() || wchan == "0" { String::new() } else { format!(", waiting in {wchan}") };
        let info =
            format!("\"{name}\" tid={tid} {state}, user {} ticks, system {} ticks{wchan}\n", ticks(11), ticks(12));
        out.push(ThreadInfo { name, info });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_name_this_one() {
        let handle = std::thread::Builder::new().name("wprobe".into()).spawn(|| {
            let t = threads();
            t.iter().any(|t| t.name == "wprobe" && t.info.contains("tid="))
        });
        assert!(matches!(handle.map(|h| h.join()), Ok(Ok(true))));
    }

    #[test]
    fn a_tail_starts_at_a_line_and_says_what_it_left_out() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("x.log");
        let line = "0123456789".repeat(10) + "\n";
        let n = (MAX_LOG_BYTES as usize / line.len()) + 10;
        std::fs::write(&path, line.repeat(n)).map_err(|e| e.to_string())?;
        let text = read_tail(&path)?;
        assert!(text.starts_with("[the first "), "{}", &text[..80]);
        assert!(text.lines().skip(1).all(|l| l.len() == 100));
        assert!(text.len() as u64 <= MAX_LOG_BYTES + 200);
        std::fs::write(&path, "short\n").map_err(|e| e.to_string())?;
        assert_eq!(read_tail(&path)?, "short\n");
        Ok(())
    }
}
