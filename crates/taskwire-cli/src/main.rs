//! `taskwire`, the command-line tool of the taskwire crates.
//!
//! Each subcommand lives in its own module with its own clap `Args` struct and a `run`
//! function; this file only parses the command line, dispatches, and reports a failure as
//! one line on stderr (`error: ...`) with exit code 1. Usage errors are clap's: a message
//! and exit code 2.
#![forbid(unsafe_code)]
// Printing is what a command-line tool is for. (The modules here write through
// `error::print_line` and `writeln!`, which turn a closed pipe into an error instead of the
// panic of `println!`.)
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod bridge;
mod call;
mod cert;
mod conformance;
mod decode;
mod decode_restate;
mod demo;
mod error;
mod serve;
mod tls_setup;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::CliError;

const EXAMPLES: &str = "\
Examples:
  # A development CA, a server certificate and a worker's client certificate:
  taskwire cert ca --out certs
  taskwire cert server --ca certs --out certs --dns localhost --ip 127.0.0.1
  taskwire cert client --ca certs --out certs --tenant acme --id worker-7
  taskwire cert inspect certs/client.pem

  # The whole protocol in one process, then a server to call:
  taskwire demo
  taskwire serve
  taskwire call taskwire.management.v1.HealthRequest --pin <PIN printed by serve>

  # RRQ's jobs to runners on another machine, over QUIC with mutual TLS:
  taskwire bridge rrq --listen 127.0.0.1:9000 --to quic://runners.internal:7443 \\
      --ca ca.pem --cert client.pem --key client.key.pem

  # What crossed the wire:
  taskwire decode capture.bin
  taskwire decode --hex '010100070000000000000003 08e807'";

/// The taskwire command-line tool.
#[derive(Debug, Parser)]
#[command(name = "taskwire", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per subcommand, each with its module's `Args` struct.
#[derive(Debug, Subcommand)]
enum Command {
    /// Issue and inspect TLS certificates: a private CA, server and client certificates.
    Cert(cert::CertArgs),
    /// Decode binary or JSON frames and print each as one line of JSON.
    Decode(decode::DecodeArgs),
    /// Serve the in-memory reference server over QUIC (and TCP) until Ctrl-C.
    Serve(serve::ServeArgs),
    /// Send one request given as JSON to a server and print the answer as JSON.
    Call(call::CallArgs),
    /// Run a reference server and a worker through every conversation, with a transcript.
    Demo(demo::DemoArgs),
    /// Load a server with unary calls and report calls/s and latency percentiles.
    Bench(bench::BenchArgs),
    /// Check a server against the conformance kit's scripted sessions, over QUIC or TCP.
    Conformance(conformance::ConformanceArgs),
    /// Carry another system's protocol over QUIC or TCP with mutual TLS (RRQ's runners).
    Bridge(bridge::BridgeArgs),
    /// Print shell completions for bash, zsh, fish, elvish or PowerShell.
    #[command(after_help = "\
Examples:
  taskwire completions bash > ~/.local/share/bash-completion/completions/taskwire
  taskwire completions zsh > ~/.zfunc/_taskwire
  taskwire completions fish > ~/.config/fish/completions/taskwire.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Cert(args) => cert::run(args),
        Command::Decode(args) => decode::run(args),
        Command::Serve(args) => runtime("info")?.block_on(serve::run(args)),
        Command::Call(args) => runtime("warn")?.block_on(call::run(args)),
        Command::Demo(args) => runtime("warn")?.block_on(demo::run(args)),
        Command::Bench(args) => runtime("warn")?.block_on(bench::run(args)),
        Command::Conformance(args) => runtime("warn")?.block_on(conformance::run(args)),
        Command::Bridge(args) => runtime("info")?.block_on(bridge::run(args)),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "taskwire",
                &mut out,
            );
            std::io::stdout().write_all(&out).map_err(CliError::Stdout)
        }
    }
}

/// The runtime of the networked subcommands, with logs to stderr filtered by `RUST_LOG`
/// (or `default_filter` when it is unset).
fn runtime(default_filter: &str) -> Result<tokio::runtime::Runtime, CliError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    tokio::runtime::Builder::new_multi_thread()
        // `bench` reads its CPU time per call from the threads named `client`.
        .thread_name("client")
        .enable_all()
        .build()
        .map_err(|e| CliError::msg(format!("starting the async runtime: {e}")))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            // Not `eprintln!`, which panics if stderr is closed.
            let _ = writeln!(std::io::stderr(), "{}", e.line());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// clap checks its definitions only when asked (or, in debug builds, when parsing):
    /// a conflicting definition would otherwise be a panic at run time.
    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
