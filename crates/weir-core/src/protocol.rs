//! The control protocol between JobManager and TaskManagers.
//!
//! A connection starts with a handshake: each side sends the magic bytes `WEIR` and its
//! [`PROTOCOL_VERSION`], so that peers of different versions refuse each other with a clear error
//! before any message is decoded. Then messages flow as frames: a 4-byte big-endian length and a
//! JSON body (control messages are few and small; records travel elsewhere).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::result::JobResult;
use crate::{Error, JobGraph, JobId, JobStatus, Result};

/// Version of this protocol; peers must agree on it.
pub const PROTOCOL_VERSION: u32 = 13;

/// The handshake's magic bytes.
pub const MAGIC: [u8; 4] = *b"WEIR";

/// The largest frame accepted (a job graph with its arguments).
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// This side's handshake bytes.
pub fn handshake() -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&MAGIC);
    h[4..].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    h
}

/// Checks a peer's handshake bytes.
pub fn check_handshake(peer: &[u8; 8], who: &str) -> Result<()> {
    if peer[..4] != MAGIC {
        return Err(Error::external(
            who,
            "it is not a weir process (no weir handshake); check the address and port it was reached at",
            false,
        ));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&peer[4..]);
    let version = u32::from_be_bytes(v);
    if version != PROTOCOL_VERSION {
        return Err(Error::external(
            who,
            format!(
                "it speaks protocol version {version}, this process speaks {PROTOCOL_VERSION}; run the same weir \
                 version on the JobManager and every TaskManager"
            ),
            false,
        ));
    }
    Ok(())
}

/// From a TaskManager to the JobManager.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ToJobManager {
    /// First message: who the TaskManager is and what it offers.
    Register {
        /// The TaskManager's id.
        taskmanager_id: String,
        /// Its slots.
        slots: u32,
        /// Its host name or address.
        host: String,
        /// Its process id.
        pid: u32,
        /// Where other TaskManagers send it records (`host:port`).
        data_address: String,
    },
    /// First and only message of a connection that fetches an artifact from the blob store; the
    /// answer is [`ToTaskManager::Artifact`] followed by the artifact's bytes, or
    /// [`ToTaskManager::Rejected`].
    FetchArtifact {
        /// The artifact's digest.
        digest: crate::ArtifactDigest,
    },
    /// Still alive; the jobs it runs.
    Heartbeat {
        /// Jobs with tasks on this TaskManager.
        running: Vec<JobId>,
        /// The TaskManager's own metrics (its `taskmanager` group), for REST.
        metrics: Vec<crate::metric::GroupSample>,
    },
    /// A job's tasks on this TaskManager changed status.
    JobState {
        /// The job.
        job_id: JobId,
        /// Which run of the job (0 first, one more for every restart).
        attempt: u32,
        /// Its status here.
        status: JobStatus,
        /// The failure, for FAILED.
        error: Option<String>,
        /// The result, for FINISHED.
        result: Option<JobResult>,
        /// For FAILED: whether running the job again may succeed (a deterministic failure, such as a
        /// job graph this artifact cannot rebuild, is not).
        #[serde(default)]
        retryable: bool,
        /// For FAILED: the part could not read the snapshot it restored from (damaged data), so the
        /// JobManager falls back to the checkpoint before it.
        #[serde(default)]
        damaged: bool,
    },
    /// A checkpoint event of a running part (an acknowledgement, a decline, an ended source).
    Checkpoint {
        /// The job.
        job_id: JobId,
        /// Which run of the job.
        attempt: u32,
        /// What happened.
        event: crate::checkpointing::CheckpointEvent,
    },
    /// A running part's record counters so far (sent every [`PROGRESS_INTERVAL_MS`]).
    Progress {
        /// The job.
        job_id: JobId,
        /// Which run of the job.
        attempt: u32,
        /// Counters per operator of the job; operators with no subtask in this part count 0.
        counts: Vec<crate::result::VertexCounts>,
        /// The part's metrics now: its job, task and operator groups.
        metrics: Vec<crate::metric::GroupSample>,
    },
    /// The answer to [`ToTaskManager::Describe`].
    Described {
        /// The request's number.
        request: u64,
        /// What was asked for, or why it cannot be had.
        reply: std::result::Result<crate::process::Reply, String>,
    },
}

/// How often a running part reports its counters, in ms.
pub const PROGRESS_INTERVAL_MS: u64 = 1000;

/// From the JobManager to a TaskManager.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ToTaskManager {
    /// Registration accepted.
    Accepted {
        /// How often to send heartbeats, in ms.
        heartbeat_interval_ms: u64,
        /// The JobManager's leader epoch with high availability (0 without): a TaskManager takes
        /// orders only from the newest leader it knows of.
        leader_epoch: u64,
        /// How long the TaskManager waits without a word from the JobManager (which sends
        /// [`ToTaskManager::Heartbeat`]s) before it takes it for lost and cancels its tasks, in ms
        /// (0: it waits for the connection to close).
        #[serde(default)]
        heartbeat_timeout_ms: u64,
    },
    /// Registration refused, and why.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Run this job in the given slots.
    Deploy(Box<Deployment>),
    /// Sources of this part: put barrier `id` into your outputs (`last`: the job's final one).
    TriggerCheckpoint {
        /// The job.
        job_id: JobId,
        /// Which run of the job.
        attempt: u32,
        /// The checkpoint.
        id: u64,
        /// Whether it is the final checkpoint (every source ended, or a stop's savepoint).
        last: bool,
        /// Whether sources emit the largest watermark first (stop with `--drain`).
        #[serde(default)]
        drain: bool,
    },
    /// Checkpoint `id` is complete: commit what it covers.
    CheckpointComplete {
        /// The job.
        job_id: JobId,
        /// Which run of the job.
        attempt: u32,
        /// The checkpoint.
        id: u64,
    },
    /// Cancel this job's tasks.
    Cancel {
        /// The job.
        job_id: JobId,
    },
    /// Stop: the cluster is shutting down.
    Shutdown,
    /// The JobManager is there (sent every half heartbeat interval): a TaskManager that hears
    /// nothing for `heartbeat_timeout_ms` takes it for lost (partitioned away, stalled) and
    /// cancels its tasks, so that an old run never goes on beside its replacement.
    Heartbeat,
    /// The artifact asked for follows: exactly `size` raw bytes after this frame.
    Artifact {
        /// Its size in bytes.
        size: u64,
    },
    /// Tell about your process (log files, threads: for REST); answered by
    /// [`ToJobManager::Described`] with the same `request` number.
    Describe {
        /// A number the answer carries back.
        request: u64,
        /// What to tell.
        what: crate::process::Request,
    },
}

/// From a worker process to the TaskManager that started it, over a loopback connection the worker
/// opens to the address it was given (after the handshake). The TaskManager answers with
/// [`ToTaskManager`] messages (`Deploy`, `Cancel`, `Shutdown`); a worker whose connection closes
/// cancels its job and exits, so no worker outlives its TaskManager.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// First message: the token the worker was started with, and where records for its part arrive.
    Hello {
        /// The secret the TaskManager passed to this worker, proving it is the process it started.
        token: String,
        /// The worker's data server (`host:port`).
        data_address: String,
    },
    /// The part it runs changed status (a [`ToJobManager::JobState`]).
    State(ToJobManager),
}

/// Where the parts of one run of a job are: slot `i` runs subtask `i` of every operator, and each
/// part (one per TaskManager) runs some of the slots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Which run of the job this is.
    pub attempt: u32,
    /// The part the receiving TaskManager runs.
    pub part: u32,
    /// For every slot, the part that runs it.
    pub slot_parts: Vec<u32>,
    /// Every part's data address.
    pub part_addresses: Vec<String>,
    /// The key the receiving part presents when it opens a data connection to another part of
    /// this run: random per run and part, known only to the JobManager and this part's TaskManager
    /// (empty: none is asked for).
    #[serde(default)]
    pub send_key: Vec<u8>,
    /// For every part of this run, the SHA-256 of its send key: a data connection that claims to
    /// come from part `q` is taken only with the key whose digest is `sender_digests[q]`, so no
    /// other process (not even another part of the run) can feed this part's channels.
    #[serde(default)]
    pub sender_digests: Vec<Vec<u8>>,
    /// The id of the TaskManager the part is deployed to (the `tm_id` of its metrics).
    #[serde(default)]
    pub taskmanager: String,
}

/// A cached file of a job, as deployed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedFile {
    /// Its content's digest: the TaskManager fetches it from the JobManager's blob store.
    pub digest: crate::ArtifactDigest,
    /// Where the receiving process finds it, once its TaskManager fetched it.
    #[serde(default)]
    pub path: Option<String>,
}

/// One part of a job, as the JobManager deploys it to a TaskManager (and a TaskManager passes it on
/// to the worker process that runs it): everything the receiver needs to rebuild the job and run
/// its share of the slots.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deployment {
    /// The job's id.
    pub job_id: JobId,
    /// The job graph.
    pub graph: Box<JobGraph>,
    /// The job's own settings (its program's, over the cluster's defaults for jobs), applied
    /// over the receiving process's defaults.
    pub config: crate::config::JobConfig,
    /// Which of the job's slots run here, and where the others are.
    pub assignment: Assignment,
    /// The job's cached files by name, in the JobManager's blob store.
    #[serde(default)]
    pub cached_files: BTreeMap<String, CachedFile>,
    /// The snapshot the part restores its state from (a restart after a failure, or a job
    /// started from a savepoint).
    #[serde(default)]
    pub restore: Option<crate::checkpointing::RestoreFrom>,
}

impl ToJobManager {
    /// A part of run `attempt` of `job_id` failed with `e` (whether a new run may succeed, and
    /// whether stored data was damaged, as `e` says).
    pub fn failed(job_id: JobId, attempt: u32, e: &Error) -> ToJobManager {
        ToJobManager::JobState {
            job_id,
            attempt,
            status: JobStatus::Failed,
            error: Some(e.to_string()),
            result: None,
            retryable: e.is_retryable(),
            damaged: e.is_damaged(),
        }
    }
}

/// Encodes a message as a frame.
pub fn encode<M: Serialize>(message: &M) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(message).map_err(|e| Error::internal(format!("cannot encode a message: {e}")))?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(Error::InvalidJob(format!(
            "a message of {} bytes exceeds the {} byte frame limit; pass large job arguments as files",
            body.len(),
            MAX_FRAME_BYTES
        )));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// The body length a frame header announces, checked against the limit.
pub fn frame_length(header: [u8; 4]) -> Result<usize> {
    let n = u32::from_be_bytes(header) as usize;
    if n > MAX_FRAME_BYTES {
        return Err(Error::external(
            "a peer of the control protocol",
            format!("it announced a frame of {n} bytes, over the {MAX_FRAME_BYTES} byte limit"),
            false,
        ));
    }
    Ok(n)
}

/// Decodes a frame body.
pub fn decode<M: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<M> {
    serde_json::from_slice(body).map_err(|e| {
        Error::external(
            "a peer of the control protocol",
            format!("it sent a message this version cannot read: {e}"),
            false,
        )
    })
}

/// Blocking frame I/O, for processes and threads without an async runtime (worker processes).
pub mod blocking {
    use std::io::{Read, Write};

    use super::*;

    fn net(context: &str, e: std::io::Error) -> Error {
        Error::Network { context: context.into(), peer: "its TaskManager".into(), source: e }
    }

    /// Writes one message.
    pub fn write_frame<W: Write, M: Serialize>(w: &mut W, message: &M) -> Result<()> {
        w.write_all(&encode(message)?).and_then(|_| w.flush()).map_err(|e| net("cannot send to", e))
    }

    /// Reads one message; `Ok(None)` when the peer closed the connection between messages.
    pub fn read_frame<R: Read, M: for<'de> Deserialize<'de>>(r: &mut R) -> Result<Option<M>> {
        let mut header = [0u8; 4];
        match r.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(net("cannot read from", e)),
        }
        let mut body = vec![0u8; frame_length(header)?];
        r.read_exact(&mut body).map_err(|e| net("connection closed in the middle of a message from", e))?;
        decode(&body).map(Some)
    }

    /// Exchanges handshakes: sends ours, reads and checks the peer's.
    pub fn exchange_handshake<S: Read + Write>(s: &mut S, who: &str) -> Result<()> {
        s.write_all(&handshake()).map_err(|e| net("cannot send the handshake to", e))?;
        let mut peer = [0u8; 8];
        s.read_exact(&mut peer).map_err(|e| net("no weir handshake from", e))?;
        check_handshake(&peer, who)
    }
}

/// Async frame I/O.
#[cfg(feature = "net")]
pub mod io {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    use super::*;

    /// Writes one message.
    pub async fn write_frame<W: AsyncWrite + Unpin, M: Serialize>(w: &mut W, message: &M) -> Result<()> {
        let frame = encode(message)?;
        w.write_all(&frame).await.map_err(|e| Error::Network {
            context: "cannot send to".into(),
            peer: "peer".into(),
            source: e,
        })
    }

    /// Reads one message; `Ok(None)` when the peer closed the connection between messages.
    pub async fn read_frame<R: AsyncRead + Unpin, M: for<'de> Deserialize<'de>>(r: &mut R) -> Result<Option<M>> {
        let mut header = [0u8; 4];
        match r.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => {
                return Err(Error::Network { context: "cannot read from".into(), peer: "peer".into(), source: e });
            }
        }
        let mut body = vec![0u8; frame_length(header)?];
        r.read_exact(&mut body).await.map_err(|e| Error::Network {
            context: "connection closed in the middle of a message from".into(),
            peer: "peer".into(),
            source: e,
        })?;
        decode(&body).map(Some)
    }

    /// Exchanges handshakes: sends ours, reads and checks the peer's.
    pub async fn exchange_handshake<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, who: &str) -> Result<()> {
        s.write_all(&handshake()).await.map_err(|e| Error::Network {
            context: "cannot send the handshake to".into(),
            peer: who.into(),
            source: e,
        })?;
        let mut peer = [0u8; 8];
        s.read_exact(&mut peer).await.map_err(|e| Error::Network {
            context: "no weir handshake (is it a weir process of the same version?) from".into(),
            peer: who.into(),
            source: e,
        })?;
        check_handshake(&peer, who)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_handshakes_are_checked() -> Result<()> {
        let m = ToTaskManager::Cancel { job_id: JobId(7) };
        let frame = encode(&m)?;
        let mut h = [0u8; 4];
        h.copy_from_slice(&frame[..4]);
        let n = frame_length(h)?;
        let back: ToTaskManager = decode(&frame[4..4 + n])?;
        assert!(matches!(back, ToTaskManager::Cancel { job_id } if job_id == JobId(7)));
        assert!(check_handshake(&handshake(), "peer").is_ok());
        let mut other = handshake();
        other[7] = 99;
        let e = check_handshake(&other, "TaskManager 127.0.0.1:1").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("protocol version 99") && e.contains("same weir version"), "{e}");
        assert!(check_handshake(b"HTTP/1.1", "x").is_err());
        assert!(frame_length([0xff; 4]).is_err());
        Ok(())
    }
}
