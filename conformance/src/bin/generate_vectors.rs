//! Writes `conformance/vectors/valid.json`, `invalid.json` and the compiled schema
//! `taskwire.binpb`; with `--check`, fails instead if any differs from what would be
//! written. Run as `cargo xtask vectors`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use taskwire_conformance::vectors;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let dir = vectors::vectors_dir();
    let mut stale = Vec::new();
    for (name, contents) in vectors::generated_files() {
        let path = dir.join(name);
        if std::fs::read(&path).ok().as_deref() == Some(contents.as_slice()) {
            continue;
        }
        stale.push(path.display().to_string());
        if !check && let Err(e) = std::fs::write(&path, contents) {
            eprintln!("error: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    match (check, stale.is_empty()) {
        (_, true) => println!("conformance/vectors: up to date"),
        (false, false) => println!("conformance/vectors: wrote {}", stale.join(", ")),
        (true, false) => {
            eprintln!(
                "error: stale vectors: {}\nrun `cargo xtask vectors` and commit the result",
                stale.join(", ")
            );
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
