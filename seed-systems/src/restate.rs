//! The Restate server 1.7.12 as the tests run it.

use std::path::PathBuf;

use crate::{Missing, install_dir};

/// restate-server's installed binary.
#[derive(Clone, Debug)]
pub struct Install {
    /// The server binary (the linux-x64 build npm installs).
    pub server: PathBuf,
}

impl Install {
    /// Finds what `cargo xtask seed-systems` installed.
    pub fn find() -> Result<Install, Missing> {
        let server = install_dir()
            .join("restate/node_modules/@restatedev/restate-server-linux-x64/bin/restate-server");
        if !server.is_file() {
            return Err(Missing(format!(
                "restate-server 1.7.12 is not installed ({} is missing)",
                server.display()
            )));
        }
        Ok(Install { server })
    }
}
