//! The real systems taskwire's dialects are proven against, as the tests start them.
//!
//! `cargo xtask seed-systems` installs them into `target/seed-systems/` (or
//! `$TASKWIRE_SEED_SYSTEMS_DIR`); this crate finds them there and runs them on loopback
//! ports for one test: Redis and RRQ ([`rrq`]), and the Restate server ([`restate`]).
//!
//! A test that needs a system it cannot find does not pass silently: [`require!`] writes a
//! loud `SKIPPED` line naming what is missing and how to install it, straight to the
//! terminal (past the test harness's output capture), and returns. With
//! `TASKWIRE_REQUIRE_SEED_SYSTEMS=1`, which CI sets after running the installer, a missing
//! system fails the test instead.
#![forbid(unsafe_code)]
// A harness that reports skips on the terminal.
#![allow(clippy::print_stderr)]

pub mod process;
pub mod restate;
pub mod rrq;

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The environment variable that turns a skip into a failure.
pub const REQUIRE_VAR: &str = "TASKWIRE_REQUIRE_SEED_SYSTEMS";

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("seed-systems lives one level below the workspace root")
        .to_path_buf()
}

/// Where `cargo xtask seed-systems` installs: `$TASKWIRE_SEED_SYSTEMS_DIR`, else
/// `$CARGO_TARGET_DIR/seed-systems`, else `target/seed-systems` in the workspace.
pub fn install_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TASKWIRE_SEED_SYSTEMS_DIR") {
        return PathBuf::from(dir);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("seed-systems")
}

/// Why a system is not available to a test.
#[derive(Debug)]
pub struct Missing(pub String);

impl Missing {
    /// Reports the skip on the terminal, or panics when skips are failures. The test is
    /// named by its thread (libtest names each test's thread after it), else `fallback`.
    pub fn report(&self, fallback: &str) {
        let thread = std::thread::current();
        let test = thread
            .name()
            .filter(|name| *name != "main")
            .unwrap_or(fallback);
        let line = format!(
            "SKIPPED {test}: {}. Run `cargo xtask seed-systems` to install the real systems into target/seed-systems/.",
            self.0
        );
        if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") {
            panic!("{line} ({REQUIRE_VAR}=1 makes this a failure)");
        }
        // Straight to the terminal: libtest captures `eprintln!` of passing tests.
        let _ = writeln!(std::io::stderr(), "\n*** {line}\n");
    }
}

/// Unwraps an availability check, or reports the skip and returns from the test.
///
/// ```ignore
/// let rrq = taskwire_seed_systems::require!(taskwire_seed_systems::rrq::Install::find());
/// ```
#[macro_export]
macro_rules! require {
    ($found:expr) => {
        match $found {
            Ok(found) => found,
            Err(missing) => {
                $crate::Missing::report(&missing, module_path!());
                return;
            }
        }
    };
}

/// A loopback port nobody listens on now. (Another process could take it before the
/// caller binds it; the tests accept that race.)
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// Waits until something accepts TCP connections on `addr`, up to `timeout`.
pub fn wait_for_listener(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("nothing listened on {addr} within {timeout:?}"))
}

/// A program on the `PATH`.
pub fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
