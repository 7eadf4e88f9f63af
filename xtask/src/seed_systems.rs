//! `cargo xtask seed-systems`: installs the real systems the dialect tests run against,
//! into `target/seed-systems/` (or `$TASKWIRE_SEED_SYSTEMS_DIR`):
//!
//! * `rrq/venv/`: a Python virtualenv with RRQ 0.11.1 from PyPI (its Rust orchestrator
//!   `rrq`, its Python runner `rrq-runner`, its client);
//! * Redis: Debian's `redis-server`, installed with apt when it is not on the `PATH` (this
//!   needs root; CI runs as root);
//! * `restate/node_modules/`: restate-server 1.7.12 from npm, pinned by
//!   `seed-systems/restate/package-lock.json`.
//!
//! Each step is skipped when what it installs is already there at the pinned version, so
//! running it again is cheap. `taskwire-seed-systems` (the tests' harness) finds the same
//! paths; the layout is written down in both places.

use std::path::{Path, PathBuf};
use std::process::Command;

/// RRQ's version on PyPI.
const RRQ_VERSION: &str = "0.11.1";
/// restate-server's version on npm (also pinned in `seed-systems/restate/package.json`).
const RESTATE_VERSION: &str = "1.7.12";

/// Where the systems go.
pub(crate) fn install_dir(root: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("TASKWIRE_SEED_SYSTEMS_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("seed-systems")
}

pub(crate) fn run(root: &Path, only: Option<&str>) -> Result<String, String> {
    let dir = install_dir(root);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut report = Vec::new();
    if only.is_none_or(|o| o == "rrq") {
        report.push(redis()?);
        report.push(rrq(&dir)?);
    }
    if only.is_none_or(|o| o == "restate") {
        report.push(restate(root, &dir)?);
    }
    if report.is_empty() {
        return Err(format!(
            "unknown system {:?}: expected rrq or restate",
            only.unwrap_or_default()
        ));
    }
    report.push(format!("installed under {}", dir.display()));
    Ok(report.join("\n"))
}

/// Runs `command`, failing with its output when it fails.
fn run_command(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    println!("$ {shown}");
    let output = command
        .output()
        .map_err(|e| format!("running {shown}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{shown} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn redis() -> Result<String, String> {
    if let Some(found) = on_path("redis-server") {
        return Ok(format!("redis: {} (already installed)", found.display()));
    }
    if !is_root() {
        return Err(
            "redis-server is not on the PATH and installing it with apt needs root: run `apt-get install redis-server` as root, then this again".into(),
        );
    }
    run_command(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    run_command(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "redis-server"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let found = on_path("redis-server")
        .ok_or("apt-get installed redis-server, but it is not on the PATH")?;
    Ok(format!("redis: {} (installed with apt)", found.display()))
}

fn rrq(dir: &Path) -> Result<String, String> {
    let home = dir.join("rrq");
    let venv = home.join("venv");
    let stamp = home.join("VERSION");
    if std::fs::read_to_string(&stamp).is_ok_and(|v| v.trim() == RRQ_VERSION)
        && venv.join("bin/rrq").is_file()
    {
        return Ok(format!(
            "rrq {RRQ_VERSION}: {} (already installed)",
            venv.display()
        ));
    }
    let python = on_path("python3").ok_or("python3 is not on the PATH")?;
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::create_dir_all(&home).map_err(|e| format!("creating {}: {e}", home.display()))?;
    run_command(Command::new(python).args(["-m", "venv"]).arg(&venv))?;
    run_command(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--disable-pip-version-check", "--quiet"])
            .arg(format!("rrq=={RRQ_VERSION}")),
    )?;
    std::fs::write(&stamp, RRQ_VERSION).map_err(|e| format!("writing {}: {e}", stamp.display()))?;
    Ok(format!(
        "rrq {RRQ_VERSION}: {} (installed from PyPI)",
        venv.display()
    ))
}

fn restate(root: &Path, dir: &Path) -> Result<String, String> {
    let home = dir.join("restate");
    let binary = home.join("node_modules/@restatedev/restate-server-linux-x64/bin/restate-server");
    let pinned = root.join("seed-systems/restate");
    let lock = std::fs::read(pinned.join("package-lock.json"))
        .map_err(|e| format!("reading the pinned package-lock.json: {e}"))?;
    let installed_lock = std::fs::read(home.join("package-lock.json")).ok();
    if binary.is_file() && installed_lock.as_deref() == Some(lock.as_slice()) {
        return Ok(format!(
            "restate-server {RESTATE_VERSION}: {} (already installed)",
            binary.display()
        ));
    }
    on_path("npm").ok_or("npm is not on the PATH (restate-server comes from the npm registry)")?;
    std::fs::create_dir_all(&home).map_err(|e| format!("creating {}: {e}", home.display()))?;
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(pinned.join(file), home.join(file))
            .map_err(|e| format!("copying {file}: {e}"))?;
    }
    run_command(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&home),
    )?;
    if !binary.is_file() {
        return Err(format!(
            "npm ci finished but {} is missing (restate-server ships a linux-x64 binary only for this platform)",
            binary.display()
        ));
    }
    Ok(format!(
        "restate-server {RESTATE_VERSION}: {} (installed from npm)",
        binary.display()
    ))
}
