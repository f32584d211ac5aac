//! The `weir` executable: the built-in jobs, and every role (client, JobManager, TaskManager).

use std::process::ExitCode;

fn main() -> ExitCode {
    let program = weir::command::Program {
        name: "weir",
        registry: weir::builtin::registry(),
        role_prefix: &[],
        main: std::cell::Cell::new(Some(Box::new(weir::builtin::main))),
    };
    // `--weir COMMAND` reaches the same command line as in every user program, so that a
    // TaskManager or JobManager can start any artifact the same way.
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--weir") {
        args.remove(0);
    }
    weir::command::main(program, args)
}
