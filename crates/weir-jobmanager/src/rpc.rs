//! The JobManager's endpoint for TaskManagers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use weir_core::Result;
use weir_core::protocol::io::{exchange_handshake, read_frame, write_frame};
use weir_core::protocol::{ToJobManager, ToTaskManager};

use crate::cluster::Cluster;
use crate::events::{JobEvent, ResourceEvent};
use crate::state::TaskManager;

static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// Accepts TaskManager connections until shutdown.
pub async fn serve(listener: TcpListener, cluster: Arc<Cluster>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let cluster = cluster.clone();
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, peer, cluster).await {
                            warn!(%peer, error = %e, "TaskManager connection ended with an error");
                        }
                    });
                }
                Err(e) => warn!(error = %e, "cannot accept a TaskManager connection"),
            },
            _ = cluster.shutdown_requested() => return,
        }
    }
}

/// Streams an artifact from the blob store to a TaskManager that asked for it.
async fn send_artifact(
    wr: &mut (impl tokio::io::AsyncWrite + Unpin),
    cluster: &Cluster,
    digest: &weir_core::ArtifactDigest,
    who: &str,
) -> Result<()> {
    // Bounded: fetches beyond blob.fetch.num-concurrent wait their turn.
    let _permit = cluster.blobs.fetch_permit().await;
    let Some(path) = cluster.blobs.locate(digest) else {
        let reason = format!(
            "artifact {} is not in the JobManager's blob store (it was deleted, or the JobManager restarted); \
             submit the job again",
            digest.0
        );
        return write_frame(wr, &ToTaskManager::Rejected { reason }).await;
    };
    let mut file = tokio::fs::File::open(&path).await.map_err(|e| weir_core::Error::io("cannot read", &path, e))?;
    let size = file.metadata().await.map_err(|e| weir_core::Error::io("cannot read", &path, e))?.len();
    write_frame(wr, &ToTaskManager::Artifact { size }).await?;
    let sent = tokio::io::copy(&mut (&mut file).take(size), wr).await.map_err(|e| weir_core::Error::Network {
        context: "cannot send an artifact to".into(),
        peer: who.into(),
        source: e,
    })?;
    info!(artifact = %digest.0, bytes = sent, peer = %who, "artifact sent");
    Ok(())
}

async fn connection(tcp: TcpStream, peer: SocketAddr, cluster: Arc<Cluster>) -> Result<()> {
    let who = format!("TaskManager at {peer}");
    // Control messages are small and answered at once: do not let Nagle hold them back.
    let _ = tcp.set_nodelay(true);
    // Nobody who cannot prove membership (TLS, the cluster secret) gets to say anything.
    let mut stream = cluster.security.accept_async(tcp, &who).await?;
    tokio::time::timeout(Duration::from_secs(10), exchange_handshake(&mut stream, &who))
        .await
        .map_err(|_| weir_core::Error::external(who.clone(), "it sent no handshake within 10 s", false))??;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let first: Option<ToJobManager> =
        tokio::time::timeout(Duration::from_secs(10), read_frame(&mut rd)).await.unwrap_or(Ok(None))?;
    if let Some(ToJobManager::FetchArtifact { digest }) = &first {
        return send_artifact(&mut wr, &cluster, digest, &who).await;
    }
    let Some(ToJobManager::Register { taskmanager_id, slots, host, pid, data_address }) = first else {
        let reason = "expected a registration as the first message".to_string();
        write_frame(&mut wr, &ToTaskManager::Rejected { reason }).await?;
        return Ok(());
    };
    let standby = cluster.ha.as_ref().filter(|ha| ha.leading().is_none());
    let reject = if cluster.is_shutting_down() {
        Some("the cluster is shutting down".to_string())
    } else if let Some(ha) = standby {
        Some(ha.not_leading().to_string())
    } else if slots == 0 {
        Some("a TaskManager must offer at least one slot".to_string())
    } else {
        None
    };
    if let Some(reason) = reject {
        warn!(%peer, %reason, "TaskManager rejected");
        write_frame(&mut wr, &ToTaskManager::Rejected { reason }).await?;
        return Ok(());
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<ToTaskManager>();
    let session = SESSIONS.fetch_add(1, Ordering::SeqCst);
    let taskmanager = TaskManager::new(taskmanager_id.clone(), (host, pid), slots, tx, session, data_address);
    let (reply, answer) = oneshot::channel();
    let _ = cluster.resources.send(ResourceEvent::Register { taskmanager: Box::new(taskmanager), reply });
    let admitted = answer.await.unwrap_or_else(|_| Err("the cluster is shutting down".to_string()));
    if let Err(reason) = admitted {
        warn!(%peer, %reason, "TaskManager rejected");
        write_frame(&mut wr, &ToTaskManager::Rejected { reason }).await?;
        return Ok(());
    }
    let leader_epoch = cluster.ha.as_ref().and_then(|ha| ha.leading()).unwrap_or(0);
    let accepted = ToTaskManager::Accepted {
        heartbeat_interval_ms: cluster.config.heartbeat_interval_ms,
        leader_epoch,
        heartbeat_timeout_ms: cluster.config.heartbeat_timeout_ms,
    };
    if let Err(e) = write_frame(&mut wr, &accepted).await {
        // Registered already: the ResourceManager lets it go again at once.
        let why = format!("its connection failed as it was accepted: {e}");
        let _ = cluster.resources.send(ResourceEvent::Disconnected { taskmanager: taskmanager_id, session, why });
        return Err(e);
    }
    // Messages to it go out in order; the connection's writing side closes once the
    // ResourceManager and the JobMasters let go of it (it was lost, or the cluster stops).
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let last = matches!(m, ToTaskManager::Shutdown);
            if write_frame(&mut wr, &m).await.is_err() || last {
                break;
            }
        }
    });
    info!(taskmanager = %taskmanager_id, %peer, slots, "TaskManager registered");
    let why = loop {
        match read_frame::<_, ToJobManager>(&mut rd).await {
            Ok(Some(ToJobManager::Heartbeat { metrics, .. })) => {
                let event = ResourceEvent::Heartbeat { taskmanager: taskmanager_id.clone(), session, metrics };
                let _ = cluster.resources.send(event);
            }
            Ok(Some(ToJobManager::JobState { job_id, attempt, status, error, result, retryable, damaged })) => {
                let taskmanager = taskmanager_id.clone();
                let report = JobEvent::PartReport { taskmanager, attempt, status, error, result, retryable, damaged };
                cluster.to_job(job_id, report);
            }
            Ok(Some(ToJobManager::Progress { job_id, attempt, counts, metrics })) => {
                let taskmanager = taskmanager_id.clone();
                cluster.to_job(job_id, JobEvent::Progress { taskmanager, attempt, counts, metrics });
            }
            Ok(Some(ToJobManager::Checkpoint { job_id, attempt, event })) => {
                cluster.to_job(job_id, JobEvent::Checkpoint { taskmanager: taskmanager_id.clone(), attempt, event });
            }
            Ok(Some(ToJobManager::Described { request, reply })) => cluster.described(request, reply),
            Ok(Some(ToJobManager::Register { .. } | ToJobManager::FetchArtifact { .. })) => {
                break "sent a message that only opens a connection".to_string();
            }
            Ok(None) => break "its connection closed".to_string(),
            Err(e) => break format!("its connection failed: {e}"),
        }
    };
    let _ = cluster.resources.send(ResourceEvent::Disconnected { taskmanager: taskmanager_id, session, why });
    Ok(())
}
