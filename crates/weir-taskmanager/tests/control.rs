//! The TaskManager's control connection, against a JobManager stand-in that controls exactly
//! which bytes arrive when.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use weir_core::config::{ClusterConfig, JobConfig};
use weir_core::graph::{ArtifactDigest, JOB_GRAPH_FORMAT_VERSION, JobGraph};
use weir_core::protocol::io::{exchange_handshake, read_frame, write_frame};
use weir_core::protocol::{Assignment, Deployment, ToJobManager, ToTaskManager, encode};
use weir_core::{JobId, JobStatus};

/// A deployment of a job its registry does not know, of this very program (so it is built in
/// the TaskManager's process, not a worker), with `padding` bytes of arguments: the TaskManager
/// must read all of it to answer (it reports the job FAILED, naming it).
fn deployment(job_id: JobId, padding: usize) -> weir_core::Result<ToTaskManager> {
    let plan = weir_core::plan::Plan::default();
    let graph = JobGraph {
        format_version: JOB_GRAPH_FORMAT_VERSION,
        artifact: ArtifactDigest::current()?,
        job_name: "no-such-job".into(),
        args: serde_json::Value::String("x".repeat(padding)),
        fingerprint: plan.fingerprint(),
        plan,
    };
    Ok(ToTaskManager::Deploy(Box::new(Deployment {
        job_id,
        graph: Box::new(graph),
        config: JobConfig::default(),
        assignment: Assignment {
            attempt: 0,
            part: 0,
            slot_parts: vec![0],
            part_addresses: vec![String::new()],
            send_key: Vec::new(),
            sender_digests: Vec::new(),
            taskmanager: "tm".into(),
        },
        cached_files: Default::default(),
        restore: None,
    })))
}

/// A TaskManager registered with a JobManager stand-in that accepted it with heartbeats every
/// `interval_ms` and `timeout_ms` of silence allowed: the stand-in's end of the connection, the
/// TaskManager's task (its outcome) and what stops it.
type Standin = (
    Box<dyn weir_security::AsyncStream>,
    tokio::task::JoinHandle<weir_core::Result<()>>,
    tokio::sync::oneshot::Sender<()>,
);

async fn standin(interval_ms: u64, timeout_ms: u64) -> weir_core::Result<Standin> {
    let io = |e: std::io::Error| weir_core::Error::internal(e.to_string());
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
    let port = listener.local_addr().map_err(io)?.port();
    let mut config = ClusterConfig::default();
    for (k, v) in [
        ("jobmanager.rpc.address", "127.0.0.1".to_string()),
        ("jobmanager.rpc.port", port.to_string()),
        ("taskmanager.host", "127.0.0.1".into()),
        ("taskmanager.job-isolation", "shared".into()),
    ] {
        config.set(k, &v)?;
    }
    // The stand-in proves the same cluster secret as a JobManager would.
    let security = weir_security::Internal::open().with_secret(weir_security::Secret::generate()?);
    let options = weir_taskmanager::Options {
        id: Some("tm-1".into()),
        cluster: config,
        job_defaults: JobConfig::default(),
        security: Some(security.clone()),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let taskmanager = tokio::spawn(async move {
        let registered = weir_taskmanager::register(&options).await?;
        weir_taskmanager::serve(registered, weir_api::Registry::new(), JobConfig::default(), async {
            let _ = stopped.await;
        })
        .await
    });
    let (tcp, _) = listener.accept().await.map_err(io)?;
    let mut stream = security.accept_async(tcp, "the TaskManager").await?;
    exchange_handshake(&mut stream, "the TaskManager").await?;
    let registered = read_frame::<_, ToJobManager>(&mut stream).await?;
    assert!(matches!(registered, Some(ToJobManager::Register { .. })), "{registered:?}");
    let accepted = ToTaskManager::Accepted {
        heartbeat_interval_ms: interval_ms,
        leader_epoch: 0,
        heartbeat_timeout_ms: timeout_ms,
    };
    write_frame(&mut stream, &accepted).await?;
    Ok((stream, taskmanager, stop))
}

fn runtime() -> weir_core::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| weir_core::Error::internal(e.to_string()))
}

#[test]
fn a_frame_that_arrives_in_two_parts_across_heartbeats_is_read_whole() -> weir_core::Result<()> {
    runtime()?.block_on(async {
        // Heartbeats every 5 ms, no silence limit: only the frame is at stake here.
        let (mut stream, taskmanager, stop) = standin(5, 0).await?;

        // A deployment of 1 MB, sent as two halves 100 ms apart: about twenty heartbeat ticks
        // fire while the TaskManager holds half a frame.
        let job = JobId::random();
        let frame = encode(&deployment(job, 1 << 20)?)?;
        let (first, second) = frame.split_at(frame.len() / 2);
        let io = |e: std::io::Error| weir_core::Error::internal(e.to_string());
        stream.write_all(first).await.map_err(io)?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.write_all(second).await.map_err(io)?;

        // The TaskManager answers about the job (it does not know it: FAILED), and its heartbeats
        // go on: the connection survived.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut answered = None;
        let mut heartbeats_after = 0;
        let mut seen = Vec::new();
        while heartbeats_after < 3 {
            assert!(Instant::now() < deadline, "no answer about the job, or no heartbeats after it: {seen:?}");
            let left = deadline.saturating_duration_since(Instant::now());
            let message = tokio::time::timeout(left, read_frame::<_, ToJobManager>(&mut stream))
                .await
                .map_err(|_| weir_core::Error::internal("the TaskManager went quiet"))??;
            seen.push(format!("{message:?}").chars().take(200).collect::<String>());
            match message {
                Some(ToJobManager::JobState { job_id, status, error, .. }) if job_id == job => {
                    answered = Some((status, error));
                }
                Some(ToJobManager::Heartbeat { .. }) if answered.is_some() => heartbeats_after += 1,
                Some(_) => {}
                None => panic!("the TaskManager closed the connection: it lost the frame"),
            }
        }
        let (status, error) = answered.unwrap_or((JobStatus::Created, None));
        assert_eq!(status, JobStatus::Failed);
        assert!(error.as_deref().unwrap_or_default().contains("no-such-job"), "{error:?}");
        assert!(!taskmanager.is_finished(), "the TaskManager is still serving");
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), taskmanager).await;
        Ok(())
    })
}

#[test]
fn a_taskmanager_that_hears_nothing_from_its_jobmanager_gives_up_and_says_why() -> weir_core::Result<()> {
    runtime()?.block_on(async {
        let (mut stream, mut taskmanager, _stop) = standin(20, 300).await?;
        // The stand-in speaks every 50 ms for 600 ms, twice the silence allowed: the TaskManager
        // stays.
        for _ in 0..12 {
            write_frame(&mut stream, &ToTaskManager::Heartbeat).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!taskmanager.is_finished(), "a TaskManager that hears its JobManager stays");
        // Then it falls silent without closing the connection (a partition, a stalled process).
        let outcome = tokio::time::timeout(Duration::from_secs(10), &mut taskmanager)
            .await
            .map_err(|_| weir_core::Error::internal("the TaskManager waited on a silent JobManager"))?
            .map_err(|e| weir_core::Error::internal(e.to_string()))?;
        let error = outcome.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("sent nothing for 300 ms (heartbeat.timeout)"), "{error}");
        drop(stream);
        Ok(())
    })
}
