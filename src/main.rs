//! The `warden` binary: parse arguments, start logging, run one command, map its outcome
//! to an exit code (0 ok/allowed, 1 blocked, 2 error, 3 `serve` stopped with blocks it
//! could not write to the audit log). Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = warden::cli::Cli::parse();
    warden::cli::init_tracing(cli.verbose);
    match warden::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("warden: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
