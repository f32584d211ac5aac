//! The cluster roles of the executable: `weir jobmanager` and `weir taskmanager`, and the
//! resource provider a JobManager starts TaskManagers with. The client side (REST client,
//! settings, targets) is the `weir-client` crate, re-exported here for the command line.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use weir_api::Registry;
use weir_core::config::ClusterConfig;
use weir_core::{Error, Result};
use weir_deploy::{DockerProvider, ProcessProvider, ResourceProvider};

pub use weir_client::rest::{RestClient, cancel, client, cluster_rest_address, list, rest_address, savepoint};
pub use weir_client::runtime;
pub use weir_client::settings::Settings;

async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// The resource provider `resourcemanager.provider` names (`None`: standalone), starting
/// TaskManagers from this program behind `role_prefix` with `forwarded` settings; `quiet`: their
/// output goes nowhere.
pub fn provider(
    cluster: &ClusterConfig,
    forwarded: &[String],
    role_prefix: &[&str],
    quiet: bool,
) -> Result<Option<Arc<dyn ResourceProvider>>> {
    match cluster.provider.as_str() {
        "process" => {
            let program = weir_core::graph::this_program()?;
            let prefix = role_prefix.iter().map(|s| s.to_string()).collect();
            Ok(Some(Arc::new(ProcessProvider::new(program, prefix, forwarded.to_vec(), quiet)?)))
        }
        "docker" => {
            let needs = |key: &str, value: &Option<String>| {
                value.clone().ok_or_else(|| {
                    Error::Config(format!(
                        "resourcemanager.provider: docker needs {key} (run-application -t docker sets it for you)"
                    ))
                })
            };
            let image = needs("docker.image", &cluster.docker_image)?;
            let network = needs("docker.network", &cluster.docker_network)?;
            let docker = weir_deploy::docker::Docker::new(cluster.docker_host.as_deref())?;
            let program = vec![weir_deploy::image::PROGRAM.to_string(), "--weir".to_string()];
            Ok(Some(Arc::new(DockerProvider::new(docker, image, network, program, forwarded.to_vec())?)))
        }
        _ => Ok(None),
    }
}

/// `weir jobmanager`: serves until `DELETE /cluster`, SIGTERM or Ctrl-C (a per-job cluster: until
/// its job ended). `forwarded` are its settings as arguments, for the TaskManagers it starts with
/// an active resource provider (from this program, behind `role_prefix`).
pub fn jobmanager(
    settings: &Settings,
    forwarded: &[String],
    per_job: bool,
    detached: bool,
    role_prefix: &[&str],
) -> Result<()> {
    let cluster = settings.cluster()?;
    settings.execution()?;
    let job_defaults = settings.job_config()?;
    let provider = provider(&cluster, forwarded, role_prefix, detached)?;
    let options = weir_jobmanager::Options { provider: provider.clone(), per_job, job_defaults, security: None };
    let cluster_config = cluster.clone();
    let outcome = runtime()?.block_on(async {
        let jm = weir_jobmanager::JobManager::start(cluster, options).await?;
        let scheme = weir_security::rest::scheme(&cluster_config);
        println!("weir jobmanager ready: rest={scheme}://{} rpc={}", jm.rest_address, jm.rpc_address);
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = jm.wait_for_shutdown() => {}
            _ = terminated() => jm.cluster().request_shutdown(),
        }
        // Let the shutdown messages and the REST answer go out (a provider then waits for its
        // TaskManagers to be gone, which says the messages went out).
        tokio::time::sleep(Duration::from_millis(if provider.is_some() { 20 } else { 200 })).await;
        Ok(())
    });
    // The TaskManagers it started stop on its shutdown message; any that does not is ended.
    if let Some(p) = provider {
        p.shutdown();
    }
    outcome
}

/// `weir taskmanager`: registers with the JobManager and runs what it deploys.
pub fn taskmanager(settings: &Settings, id: Option<String>, registry: Registry) -> Result<()> {
    let mut options = weir_taskmanager::Options {
        id,
        cluster: settings.cluster()?,
        job_defaults: settings.job_config()?,
        security: None,
    };
    // One id for every registration, so the leaders (and the metrics) see the same TaskManager.
    let id = options.id.get_or_insert_with(weir_taskmanager::default_id).clone();
    let _metrics = weir_taskmanager::start_metrics(&id, &options.cluster)?;
    runtime()?.block_on(async {
        if let Some(ha) = weir_ha::connect(&options.cluster.ha).await? {
            return tokio::select! {
                r = follow_leaders(&options, ha, registry) => r,
                _ = terminated() => Ok(()),
            };
        }
        let registered = weir_taskmanager::register(&options).await?;
        // On stderr: a TaskManager's stdout carries its jobs' output (print sinks), which a per-job
        // or application cluster passes on as the program's own.
        eprintln!("weir taskmanager ready: id={} jobmanager={}", registered.id, registered.jobmanager);
        tokio::select! {
            r = weir_taskmanager::serve(registered, registry, options.job_defaults.clone(), std::future::pending()) => r,
            _ = terminated() => Ok(()),
        }
    })
}

/// A TaskManager with high availability: it registers with whichever JobManager leads, and when
/// a newer leader is elected (or its JobManager goes away) its jobs are cancelled and it registers
/// with the new one. It ends when a leader shuts it down.
async fn follow_leaders(
    options: &weir_taskmanager::Options,
    ha: Arc<dyn weir_ha::HaServices>,
    registry: Registry,
) -> Result<()> {
    let mut leader = weir_ha::follow_leader(ha.clone());
    let mut announced = false;
    loop {
        let current = leader
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::internal("leader retrieval stopped"))?
            .clone()
            .ok_or_else(|| Error::internal("leader retrieval gave no leader"))?;
        let registered = match weir_taskmanager::register_at(options, &current.info.rpc, 1).await {
            Ok(r) if r.leader_epoch >= current.epoch => r,
            Ok(r) => {
                tracing::warn!(epoch = r.leader_epoch, newest = current.epoch, "refusing a deposed leader");
                tokio::time::sleep(weir_ha::RETRIEVAL_INTERVAL).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(leader = %current.info.rpc, error = %e, "cannot register with the leader; retrying");
                tokio::time::sleep(weir_ha::RETRIEVAL_INTERVAL).await;
                continue;
            }
        };
        let epoch = registered.leader_epoch;
        if !announced {
            eprintln!(
                "weir taskmanager ready: id={} jobmanager={} (high availability)",
                registered.id, registered.jobmanager
            );
            announced = true;
        }
        tracing::info!(leader = %current.info.id, epoch, service = %ha.describe(), "serving the leader");
        let mut watch = leader.clone();
        let deposed = async move {
            let _ = watch.wait_for(|l| l.as_ref().is_some_and(|l| l.epoch > epoch)).await;
        };
        match weir_taskmanager::serve(registered, registry.clone(), options.job_defaults.clone(), deposed).await {
            Ok(()) => return Ok(()),
            Err(e) => tracing::warn!(error = %e, "the leader is gone; finding the next one"),
        }
    }
}
