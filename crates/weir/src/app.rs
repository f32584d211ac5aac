//! The entry point of a user's program: its registered jobs and its driver.

use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_api::{Driver, Job, Registry};
use weir_core::Result;

use crate::cli::{InfoArgs, exit_code, init_tracing, print_info};

/// A weir program: the jobs it registers and the driver code in its `main`.
///
/// [`App::run`] answers weir's reserved arguments itself (`--info ...` prints a job's plan) and
/// otherwise calls the driver closure with the program's arguments.
#[derive(Debug)]
pub struct App {
    name: String,
    registry: Registry,
}

#[derive(Parser)]
#[command(no_binary_name = true)]
struct InfoCommand {
    #[command(flatten)]
    info: InfoArgs,
}

impl App {
    /// A program called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        App { name: name.into(), registry: Registry::new() }
    }

    /// Registers a job.
    pub fn job<A: Serialize + DeserializeOwned + 'static>(mut self, job: &'static Job<A>) -> Self {
        self.registry = self.registry.register(job);
        self
    }

    /// The registered jobs.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs the program: `main` gets a driver and the command-line arguments (without the program
    /// name). Errors are printed with what to do, and turned into the exit code (2: fix your
    /// input or job; 1: anything else).
    ///
    /// `--weir COMMAND ...` reaches weir's own command line with this program's jobs: the roles of
    /// a cluster (`--weir jobmanager`, `--weir taskmanager`, `--weir cluster start`) and the client
    /// commands (`--weir run -t remote JOB --args JSON`, `--weir list`, `--weir cancel`), exactly as
    /// the `weir` executable has them. So a program is its own cluster image.
    pub fn run<'m>(self, main: impl FnOnce(&mut Driver, &[String]) -> Result<()> + 'm) -> ExitCode {
        weir_core::graph::keep_artifact_marker();
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.first().map(String::as_str) == Some("--weir") {
            let program = crate::command::Program {
                name: &self.name,
                registry: self.registry,
                role_prefix: &["--weir"],
                main: std::cell::Cell::new(Some(Box::new(main))),
            };
            return crate::command::main(program, args[1..].to_vec());
        }
        init_tracing();
        let result = if args.first().map(String::as_str) == Some("--info") {
            match InfoCommand::try_parse_from(&args[1..]) {
                Ok(cmd) => print_info(&self.registry, &cmd.info),
                Err(e) => {
                    let _ = e.print();
                    return ExitCode::from(2);
                }
            }
        } else {
            let targets = crate::targets::WeirTargets { role_prefix: vec!["--weir".into()] };
            let mut driver = Driver::local(self.registry).with_targets(std::sync::Arc::new(targets));
            match weir_core::config::ConfigFile::from_env() {
                Ok(Some(file)) => match driver.apply_file(&file) {
                    Ok(_) => main(&mut driver, &args),
                    Err(e) => Err(e),
                },
                Ok(None) => main(&mut driver, &args),
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{}: error: {e}", self.name);
                exit_code(&e)
            }
        }
    }
}
