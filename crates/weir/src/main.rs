//! The `weir` executable: the built-in jobs, and every role (client, JobManager, TaskManager).

use std::process::ExitCode;

fn main() -> ExitCode {
    let program = weir::command::Program { name: "weir", registry: weir::builtin::registry(), role_prefix: &[] };
    weir::command::main(program, std::env::args().skip(1).collect())
}
