//! The command line of every artifact: the `weir` executable's, and every user program's behind
//! `--weir` (DESIGN.md section 2: every artifact plays every role, so a user's binary is its own
//! cluster image).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use weir_api::{Driver, Registry};
use weir_core::config::ClusterConfig;
use weir_core::{Error, Result};

use crate::cli::{InfoArgs, exit_code, print_info};
use crate::remote::{self, Settings};
use crate::targets::{RestExecutor, WeirTargets};

/// weir: Flink's architecture in a native binary.
#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "weir: Flink's architecture (JobManager, TaskManagers, session clusters) in a native binary",
    after_help = "Configuration: --config FILE or $WEIR_CONF_DIR/config.yaml, then -D key=value. Logs: WEIR_LOG=info."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Settings every command takes.
#[derive(Args, Clone, Debug)]
struct Common {
    /// A configuration file (YAML, Flink's key names); default `$WEIR_CONF_DIR/config.yaml`.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Configuration overrides, `key=value`.
    #[arg(short = 'D', value_name = "KEY=VALUE", global = true)]
    define: Vec<String>,
}

impl Common {
    /// These settings as arguments for another process of this program.
    fn forwarded(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(c) = &self.config {
            args.extend(["--config".to_string(), c.display().to_string()]);
        }
        for d in &self.define {
            args.extend(["-D".to_string(), d.clone()]);
        }
        args
    }
}

#[derive(Subcommand)]
enum Command {
    /// Runs a built-in job and waits for it: on the embedded local cluster (`-t local`, the
    /// default) or on a running cluster (`-t remote -m host:port`).
    Run {
        /// The job to run (see `weir info`).
        job: String,
        /// The job's arguments, as JSON.
        #[arg(long, default_value = "null")]
        args: String,
        /// Default parallelism.
        #[arg(short = 'p', long)]
        parallelism: Option<u32>,
        /// Where to run: local (in this process), remote (a running session cluster, `-m`) or
        /// per-job (a cluster started for this job, gone when it ends).
        #[arg(short = 't', long, default_value = "local")]
        target: String,
        /// The JobManager's REST address (`host:port`) for `-t remote`; default rest.address:rest.port.
        #[arg(short = 'm', long = "jobmanager")]
        jobmanager: Option<String>,
        /// Submit and return without waiting (`-t remote`).
        #[arg(short = 'd', long)]
        detached: bool,
        /// Start from this savepoint or retained checkpoint (its directory).
        #[arg(short = 's', long = "fromSavepoint", value_name = "PATH")]
        from_savepoint: Option<String>,
        /// With `-s`: drop state of the snapshot that no operator of the job claims.
        #[arg(short = 'n', long = "allowNonRestoredState")]
        allow_non_restored: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Takes a savepoint of a running job and waits for it (into TARGET, else
    /// execution.checkpointing.savepoint-dir); or, with --dispose, deletes a savepoint.
    Savepoint {
        /// The job's id.
        job_id: Option<String>,
        /// The directory to write the savepoint under.
        target: Option<String>,
        /// Delete the savepoint at this path instead.
        #[arg(short = 'd', long, value_name = "PATH")]
        dispose: Option<String>,
        /// The JobManager's REST address (`host:port`).
        #[arg(short = 'm', long = "jobmanager")]
        jobmanager: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Stops a running job with a savepoint: its sources end after the savepoint's barrier, and
    /// the job finishes once the savepoint is complete.
    Stop {
        /// The job's id.
        job_id: String,
        /// The directory to write the savepoint under (else execution.checkpointing.savepoint-dir).
        #[arg(short = 'p', long = "savepointPath", value_name = "DIR")]
        savepoint_path: Option<String>,
        /// Emit the largest watermark first, so that event-time windows and timers fire.
        #[arg(short = 'd', long)]
        drain: bool,
        /// The JobManager's REST address (`host:port`).
        #[arg(short = 'm', long = "jobmanager")]
        jobmanager: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Prints a job's plan as JSON or Graphviz DOT, or lists the registered jobs.
    Info(InfoArgs),
    /// Lists the jobs of a running cluster.
    List {
        /// The JobManager's REST address (`host:port`).
        #[arg(short = 'm', long = "jobmanager")]
        jobmanager: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Cancels a job on a running cluster.
    Cancel {
        /// The job's id.
        job_id: String,
        /// The JobManager's REST address (`host:port`).
        #[arg(short = 'm', long = "jobmanager")]
        jobmanager: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Starts an application on a cluster of its own and returns: the JobManager runs the
    /// artifact's `main` with ARGS; the cluster goes when the application ends.
    RunApplication {
        /// Where the cluster runs: process (processes on this host) or docker (containers).
        #[arg(short = 't', long, default_value = "process")]
        target: String,
        /// The program to run (an executable built with weir).
        artifact: PathBuf,
        /// The arguments for the program's `main`.
        #[arg(last = true)]
        args: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Builds the container image of a weir program (default: this one) from scratch, with no
    /// image pulled, and prints its reference; for the docker compose file and the docker target.
    Image {
        /// The program (an executable built with weir); default: this executable.
        artifact: Option<PathBuf>,
        /// Also name the image so (e.g. weir:latest, as the compose file expects).
        #[arg(long)]
        tag: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Shows the applications in the job result store (job-result-store.storage-path), running or
    /// ended, or one of them with its jobs.
    Applications {
        /// An application's id.
        id: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Runs a JobManager: REST endpoint (rest.port) and TaskManager endpoint (jobmanager.rpc.port).
    Jobmanager {
        /// A per-job cluster: accept one job, and shut down (with the TaskManagers it started)
        /// once that job ended and its result was fetched.
        #[arg(long)]
        per_job: bool,
        /// With --per-job: its client does not wait, so the output of the TaskManagers it starts
        /// goes nowhere.
        #[arg(long, hide = true, requires = "per_job")]
        detached: bool,
        /// An application cluster: run this program's `main` with ARGS as application ID, and shut
        /// down when it ends (started by `run-application`).
        #[arg(long, hide = true, value_name = "ID", conflicts_with = "per_job")]
        application: Option<String>,
        /// The arguments of the application's `main`.
        #[arg(last = true, hide = true)]
        args: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Starts, stops or shows a standalone session cluster on this host, in the background.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Runs a TaskManager that registers with the JobManager at jobmanager.rpc.address/port.
    Taskmanager {
        /// This TaskManager's id (default: host, pid and a random suffix).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Runs one part of a job for the TaskManager that started this process (internal).
    #[command(hide = true)]
    Worker {
        /// The job whose part it runs.
        #[arg(long)]
        job: String,
        /// The TaskManager's loopback address.
        #[arg(long)]
        connect: String,
        /// This artifact's digest, as the TaskManager verified it.
        #[arg(long)]
        artifact: String,
        /// The host other processes reach this worker's data server by.
        #[arg(long)]
        data_host: String,
        /// The address the data server listens on.
        #[arg(long)]
        bind_host: String,
    },
    /// Prints the job graph of a job as JSON, as `run -t remote` would submit it (used by the
    /// JobManager to run an uploaded artifact's job).
    #[command(hide = true)]
    Graph {
        /// The job.
        job: String,
        /// The job's arguments, as JSON.
        #[arg(long, default_value = "null")]
        args: String,
        /// Default parallelism.
        #[arg(short = 'p', long)]
        parallelism: Option<u32>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Starts one JobManager and N TaskManagers; returns once all are registered.
    Start {
        /// Number of TaskManagers.
        #[arg(long, default_value_t = 1)]
        taskmanagers: u32,
        /// Slots per TaskManager.
        #[arg(long, default_value_t = 1)]
        slots: u32,
        /// Directory for logs and the cluster's state file (default: `weir/cluster` under
        /// `$XDG_STATE_HOME`, or `~/.local/state`), created private to this user.
        #[arg(long)]
        dir: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Stops the cluster started from the directory.
    Stop {
        /// The directory given to `start`.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Shows the cluster started from the directory.
    Status {
        /// The directory given to `start`.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// What `run` was asked: the job and its arguments, where it goes and how.
struct RunRequest<'a> {
    job: &'a str,
    args: &'a str,
    target: &'a str,
    jobmanager: Option<&'a str>,
    detached: bool,
    parallelism: Option<u32>,
    common: Common,
}

fn run(program: &Program<'_>, request: RunRequest<'_>) -> Result<()> {
    let RunRequest { job, args, target, jobmanager, detached, parallelism, common } = request;
    if !ClusterConfig::TARGETS.contains(&target) {
        return Err(Error::Config(format!(
            "unknown target '{target}'; valid targets: {}",
            ClusterConfig::TARGETS.join(", ")
        )));
    }
    let settings = Settings::gather(common.config.as_deref(), parallelism, &common.define)?;
    let mut driver = program.driver();
    settings.configure(&mut driver)?;
    let args = crate::cli::parse_json_args(args)?;
    let prefix = program.role_prefix.iter().map(|s| s.to_string()).collect();
    let driver = match target {
        "remote" => {
            let address = remote::rest_address(&settings, jobmanager)?;
            driver.with_executor(Arc::new(RestExecutor::remote(&address, &settings.cluster()?)))
        }
        "per-job" => {
            if jobmanager.is_some() {
                return Err(Error::Config(
                    "-m applies to -t remote only: a per-job cluster is started for the job".into(),
                ));
            }
            // The job graph is checked before any process starts.
            driver.job_graph(job, &args)?;
            driver.with_executor(Arc::new(RestExecutor::per_job(common.forwarded(), prefix, detached)))
        }
        _ if detached || jobmanager.is_some() => {
            return Err(Error::Config("-d applies to -t remote and per-job, -m to -t remote only".into()));
        }
        _ => driver,
    };
    let client = driver.execute_named(job, &args)?;
    let id = client.job_id();
    if target == "local" {
        eprintln!("Job {id} ({job}) submitted to the local cluster");
    } else {
        println!("Job has been submitted with JobID {id}");
    }
    if detached {
        return Ok(());
    }
    let mut progress = crate::cli::Progress::new();
    let mut last = None;
    let result = loop {
        if let Some(result) = client.wait_timeout(std::time::Duration::from_millis(250))? {
            break result;
        }
        let status = client.status()?;
        if target != "local" && last != Some(status) {
            eprintln!("Job {id} is {status}");
            last = Some(status);
        }
        // What the sources (the operators nothing feeds) emitted.
        let read = client.counts().iter().filter(|c| c.records_in == 0).map(|c| c.records_out).sum();
        progress.show(&id.to_string(), read);
    };
    eprintln!("Job {id} FINISHED in {:.3} s", result.net_runtime().as_secs_f64());
    for c in result.counts() {
        // A source shows what it read (emitted); every other operator what it took in.
        let shown = if c.records_in == 0 { c.records_out } else { c.records_in };
        eprintln!("  {:<40} records in {:>12}", c.name, shown);
    }
    Ok(())
}

fn dispatch(program: &Program<'_>, command: &Command) -> Result<()> {
    let registry = &program.registry;
    match command {
        Command::Run {
            job,
            args,
            parallelism,
            target,
            jobmanager,
            detached,
            from_savepoint,
            allow_non_restored,
            common,
        } => {
            let mut common = common.clone();
            if let Some(path) = from_savepoint {
                common.define.push(format!("execution.savepoint.path={path}"));
            }
            if *allow_non_restored {
                common.define.push("execution.savepoint.ignore-unclaimed-state=true".into());
            }
            let request = RunRequest {
                job,
                args,
                target,
                jobmanager: jobmanager.as_deref(),
                detached: *detached,
                parallelism: *parallelism,
                common,
            };
            run(program, request)
        }
        Command::Savepoint { job_id, target, dispose, jobmanager, common } => {
            savepoint(job_id.as_deref(), target.as_deref(), dispose.as_deref(), jobmanager.as_deref(), common)
        }
        Command::Stop { job_id, savepoint_path, drain, jobmanager, common } => {
            let settings = Settings::gather(common.config.as_deref(), None, &common.define)?;
            let client = remote::client(&settings, jobmanager.as_deref())?;
            remote::savepoint(&client, job_id, savepoint_path.as_deref(), Some(*drain))
        }
        Command::Info(info) => print_info(registry, info),
        Command::List { jobmanager, common } => {
            let settings = Settings::gather(common.config.as_deref(), None, &common.define)?;
            remote::list(&remote::client(&settings, jobmanager.as_deref())?)
        }
        Command::Cancel { job_id, jobmanager, common } => {
            let settings = Settings::gather(common.config.as_deref(), None, &common.define)?;
            remote::cancel(&remote::client(&settings, jobmanager.as_deref())?, job_id)
        }
        Command::RunApplication { target, artifact, args, common } => run_application(target, artifact, args, common),
        Command::Image { artifact, tag, common } => image(artifact.as_deref(), tag.as_deref(), common),
        Command::Applications { id, common } => {
            let settings = Settings::gather(common.config.as_deref(), None, &common.define)?;
            crate::launch::show(&settings.cluster()?, id.as_deref())
        }
        Command::Jobmanager { application: Some(id), args, common, .. } => {
            application_master(program, id, args, common)
        }
        Command::Jobmanager { per_job, detached, common, .. } => {
            let settings = Settings::gather(common.config.as_deref(), None, &common.define)?;
            remote::jobmanager(&settings, &common.forwarded(), *per_job, *detached, program.role_prefix)
        }
        Command::Cluster { action } => cluster(program, action),
        Command::Worker { job, connect, artifact, data_host, bind_host } => {
            let variable = weir_taskmanager::worker::TOKEN_VARIABLE;
            let token = std::env::var(variable).map_err(|_| {
                Error::Config(format!(
                    "a worker is started by its TaskManager, which gives it {variable}; it is not for starting by hand"
                ))
            })?;
            let args = weir_taskmanager::worker::WorkerArgs {
                job: job.parse()?,
                connect: connect.clone(),
                token,
                artifact: weir_core::blob::parse_digest(artifact)?,
                data_host: data_host.clone(),
                bind_host: bind_host.clone(),
            };
            weir_taskmanager::worker::run_worker(registry.clone(), args)
        }
        Command::Graph { job, args, parallelism, common } => graph(program, job, args, *parallelism, common),
        Command::Taskmanager { id, common } => {
            let settings = Settings::gather(common.config.as_deref(), None, &common.define)?;
            remote::taskmanager(&settings, id.clone(), registry.clone())
        }
    }
}

/// `jobmanager --application ID`: the JobManager of an application cluster, which runs the
/// program's `main`.
fn application_master(program: &Program<'_>, id: &str, args: &[String], common: &Common) -> Result<()> {
    let settings = Settings::gather(common.config.as_deref(), None, &common.define)?;
    let main = program
        .main
        .take()
        .ok_or_else(|| Error::Config(format!("{} has no main to run as an application", program.name)))?;
    let app = crate::application::ApplicationArgs {
        id: id.parse()?,
        program: program.name.to_string(),
        args: args.to_vec(),
        settings: &settings,
        forwarded: &common.forwarded(),
        role_prefix: program.role_prefix,
    };
    crate::application::run(app, program.driver(), main)
}

/// `cluster start|stop|status`: a standalone cluster of local processes.
fn cluster(program: &Program<'_>, action: &ClusterAction) -> Result<()> {
    match action {
        ClusterAction::Start { taskmanagers, slots, dir, common } => {
            // Check the settings here, where errors are clearest, then hand them on.
            Settings::gather(common.config.as_deref(), None, &common.define)?.cluster()?;
            let args = common.forwarded();
            let dir = crate::standalone::directory(dir.as_deref())?;
            let state = crate::standalone::start(&dir, *taskmanagers, *slots, &args, program.role_prefix)?;
            println!("{}", state.rest);
            Ok(())
        }
        ClusterAction::Stop { dir } => crate::standalone::stop(&crate::standalone::directory(dir.as_deref())?),
        ClusterAction::Status { dir } => crate::standalone::status(&crate::standalone::directory(dir.as_deref())?),
    }
}

/// `savepoint JOB [DIR]`, or `savepoint --dispose PATH`.
fn savepoint(
    job_id: Option<&str>,
    target: Option<&str>,
    dispose: Option<&str>,
    jobmanager: Option<&str>,
    common: &Common,
) -> Result<()> {
    match (dispose, job_id) {
        (Some(path), None) => {
            weir_runtime::checkpoint::io::dispose(path)?;
            println!("Savepoint '{path}' disposed.");
            Ok(())
        }
        (Some(_), Some(_)) => {
            Err(Error::Config("--dispose takes a savepoint path and no job id; pass one or the other".into()))
        }
        (None, None) => Err(Error::Config("give the job's id (see `weir list`), or --dispose PATH".into())),
        (None, Some(job)) => {
            let settings = Settings::gather(common.config.as_deref(), None, &common.define)?;
            let client = remote::client(&settings, jobmanager)?;
            remote::savepoint(&client, job, target, None)
        }
    }
}

/// `run-application -t TARGET ARTIFACT [ARGS...]`.
fn run_application(target: &str, artifact: &std::path::Path, args: &[String], common: &Common) -> Result<()> {
    if !crate::launch::TARGETS.contains(&target) {
        return Err(Error::Config(format!(
            "unknown target '{target}'; valid targets of run-application: {}",
            crate::launch::TARGETS.join(", ")
        )));
    }
    let settings = Settings::gather(common.config.as_deref(), None, &common.define)?;
    let cluster = settings.cluster()?;
    settings.execution()?;
    match target {
        "docker" => crate::launch::run_docker(artifact, args, &cluster, &common.forwarded()),
        _ => crate::launch::run_process(artifact, args, &cluster, &common.forwarded()),
    }
}

/// `image [ARTIFACT] [--tag REPO:TAG]`: the artifact's image, built once.
fn image(artifact: Option<&std::path::Path>, tag: Option<&str>, common: &Common) -> Result<()> {
    let settings = Settings::gather(common.config.as_deref(), None, &common.define)?;
    let docker = weir_deploy::docker::Docker::new(settings.cluster()?.docker_host.as_deref())?;
    docker.ping()?;
    let artifact = match artifact {
        Some(a) => crate::launch::check_artifact(a)?,
        // The file itself (ldd must look at it, not at /proc/self/exe).
        None => std::env::current_exe().map_err(|e| Error::internal(format!("cannot locate this executable: {e}")))?,
    };
    let reference = weir_deploy::image::ensure(&docker, &artifact)?;
    if let Some(tag) = tag {
        let (repo, t) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
        docker.tag(&reference, repo, t)?;
    }
    println!("{reference}");
    Ok(())
}

/// `graph JOB`: the job graph a remote submission would send, as JSON.
fn graph(program: &Program<'_>, job: &str, args: &str, parallelism: Option<u32>, common: &Common) -> Result<()> {
    let settings = Settings::gather(common.config.as_deref(), parallelism, &common.define)?;
    let mut driver = program.driver();
    settings.configure(&mut driver)?;
    let mut graph = driver.job_graph(job, &crate::cli::parse_json_args(args)?)?;
    graph.artifact = weir_core::ArtifactDigest::current()?;
    let text = serde_json::to_string(&graph).map_err(|e| Error::internal(format!("cannot encode: {e}")))?;
    println!("{text}");
    Ok(())
}

/// An artifact, as its command line sees it.
pub struct Program<'a> {
    /// Its name, for help and error messages.
    pub name: &'a str,
    /// The jobs it can run.
    pub registry: Registry,
    /// What comes before a command to reach this command line in this executable (`--weir` in a
    /// user's program, nothing in `weir`): used to start cluster processes of the same artifact.
    pub role_prefix: &'a [&'a str],
    /// Its `main`, which an application cluster runs (`jobmanager --application`).
    pub main: std::cell::Cell<Option<crate::application::Main<'a>>>,
}

impl Program<'_> {
    /// A driver for this program's jobs that reaches every target.
    pub fn driver(&self) -> Driver {
        let role_prefix = self.role_prefix.iter().map(|s| s.to_string()).collect();
        Driver::local(self.registry.clone()).with_targets(Arc::new(WeirTargets { role_prefix }))
    }
}

/// Parses `args` (without the program name) and runs the command; errors are printed with what to
/// do and turned into the exit code.
pub fn main(program: Program<'_>, args: Vec<String>) -> ExitCode {
    weir_core::graph::keep_artifact_marker();
    crate::cli::init_tracing();
    let name = program.name.to_string();
    let parsed = Cli::command()
        .name(name.clone())
        .bin_name(
            std::iter::once(name.as_str()).chain(program.role_prefix.iter().copied()).collect::<Vec<_>>().join(" "),
        )
        .try_get_matches_from(std::iter::once(name.clone()).chain(args))
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match dispatch(&program, &cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e}");
            exit_code(&e)
        }
    }
}
