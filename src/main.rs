//! The binary's edge: parse the command line, set up logging, run the
//! command, turn the outcome into an exit status.

mod cli;
mod commands;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, LogFormat};
use gitlab_docker_autodep::printable::LogLineWriter;

fn init_logging(global: &cli::GlobalOptions) {
    let default = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AUTODEP_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "gitlab_docker_autodep={default},gitlab_sim=warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match global.log_format {
        // JSON escapes control characters itself.
        LogFormat::Json => builder.json().with_writer(std::io::stderr).init(),
        LogFormat::Text => builder
            .without_time()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(|| LogLineWriter(std::io::stderr()))
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(commands::EXIT_USAGE);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!(
                "error: {}",
                gitlab_docker_autodep::printable::one_line(&format!("{e:#}"))
            );
            ExitCode::from(commands::exit_code_for(&e))
        }
    }
}
