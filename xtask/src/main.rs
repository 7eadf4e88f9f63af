//! Developer tasks for the taskwire workspace, run as `cargo xtask <task>`.
//!
//! * `cargo xtask codegen` regenerates `crates/taskwire-proto/src/generated/` from `proto/`.
//! * `cargo xtask codegen --check` fails, naming the stale files, when that code is out of date.
//! * `cargo xtask vectors [--check]` does the same for the golden vectors in
//!   `conformance/vectors/`, which the conformance crate's generator writes.
//! * `cargo xtask seed-systems [rrq|restate]` installs the real systems the dialect tests
//!   run against into `target/seed-systems/`.
#![forbid(unsafe_code)]
// A command-line tool reports on stdout/stderr by design.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod codegen;
mod files;
mod seed_systems;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task> [--check]

tasks:
  codegen    regenerate the Rust types, JSON mapping, registry and descriptor set from proto/
  vectors    regenerate the valid golden vectors in conformance/vectors/ (the invalid ones are
             listed by hand in conformance/src/invalid.rs and written alongside)
  seed-systems [rrq|restate]
             install the real systems the dialect tests run against (Redis and RRQ 0.11.1,
             restate-server 1.7.12) into target/seed-systems/; Redis comes from apt (as root)

options:
  --check    change nothing; fail if a generated file differs from what would be written";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|a| a == "--check");
    let mode = if check {
        files::Mode::Check
    } else {
        files::Mode::Write
    };
    let task = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(String::as_str);
    let result = match task {
        Some("codegen") => codegen::run(&files::workspace_root(), mode),
        Some("vectors") => vectors(mode),
        Some("seed-systems") => {
            let only = args.iter().filter(|a| !a.starts_with("--")).nth(1);
            seed_systems::run(&files::workspace_root(), only.map(String::as_str))
        }
        Some("help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown task `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the conformance crate's generator, which links the codec the vectors describe.
/// It is a separate binary so that this one never depends on the generated code it writes.
fn vectors(mode: files::Mode) -> Result<String, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = std::process::Command::new(cargo);
    command.current_dir(files::workspace_root()).args([
        "run",
        "--quiet",
        "--package",
        "taskwire-conformance",
        "--bin",
        "generate-vectors",
        "--",
    ]);
    if mode == files::Mode::Check {
        command.arg("--check");
    }
    let status = command
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if status.success() {
        Ok(String::new())
    } else {
        Err("the vector generator failed (see above)".to_owned())
    }
}
