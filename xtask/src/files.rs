//! Writing generated files: write only what changed, or in check mode report what is stale.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Whether generated files are written or only compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Write files whose contents differ and delete stale ones.
    Write,
    /// Change nothing; report every difference as an error.
    Check,
}

/// The workspace root: the parent of this crate's directory.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// A set of files that one generator owns completely, inside one directory.
///
/// Files in the directory that the generator did not produce are stale and are deleted
/// (in [`Mode::Write`]) or reported (in [`Mode::Check`]).
#[derive(Debug)]
pub(crate) struct GeneratedDir {
    dir: PathBuf,
    files: std::collections::BTreeMap<String, Vec<u8>>,
}

impl GeneratedDir {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            files: Default::default(),
        }
    }

    /// The files and contents that would be written, by name.
    #[cfg(test)]
    pub(crate) fn contents(&self) -> &std::collections::BTreeMap<String, Vec<u8>> {
        &self.files
    }

    pub(crate) fn add(&mut self, name: impl Into<String>, contents: impl Into<Vec<u8>>) {
        self.files.insert(name.into(), contents.into());
    }

    /// Applies `mode`; returns a one-line summary, or an error listing every stale file.
    pub(crate) fn finish(self, root: &Path, mode: Mode) -> Result<String, String> {
        let mut stale = Vec::new();
        let mut expected = std::collections::BTreeSet::new();
        for (name, contents) in &self.files {
            expected.insert(name.clone());
            let path = self.dir.join(name);
            let current = std::fs::read(&path).ok();
            if current.as_deref() != Some(contents.as_slice()) {
                stale.push(path.clone());
                if mode == Mode::Write {
                    std::fs::create_dir_all(&self.dir)
                        .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
                    std::fs::write(&path, contents)
                        .map_err(|e| format!("writing {}: {e}", path.display()))?;
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !expected.contains(&name) {
                    stale.push(entry.path());
                    if mode == Mode::Write {
                        std::fs::remove_file(entry.path())
                            .map_err(|e| format!("removing {}: {e}", entry.path().display()))?;
                    }
                }
            }
        }
        let shown = |p: &PathBuf| p.strip_prefix(root).unwrap_or(p).display().to_string();
        match (mode, stale.is_empty()) {
            (_, true) => Ok(format!(
                "{}: {} files up to date",
                shown(&self.dir),
                self.files.len()
            )),
            (Mode::Write, false) => Ok(format!(
                "{}: updated {} of {} files",
                shown(&self.dir),
                stale.len(),
                self.files.len()
            )),
            (Mode::Check, false) => {
                let mut message = String::from("generated files are stale:\n");
                for path in &stale {
                    let _ = writeln!(message, "  {}", shown(path));
                }
                message.push_str("run `cargo xtask codegen` and commit the result");
                Err(message)
            }
        }
    }
}

/// Replaces the text between `<!-- NAME:start -->` and `<!-- NAME:end -->` in `path` for
/// each `(NAME, text)`, or in check mode reports the sections that differ.
pub(crate) fn ensure_sections(
    path: &Path,
    sections: &[(&str, String)],
    mode: Mode,
) -> Result<String, String> {
    let original = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = original.clone();
    for (name, content) in sections {
        let start = format!("<!-- {name}:start -->\n");
        let end = format!("<!-- {name}:end -->");
        let from = text
            .find(&start)
            .ok_or_else(|| format!("{}: missing marker `{}`", path.display(), start.trim()))?
            + start.len();
        let to = from
            + text[from..]
                .find(&end)
                .ok_or_else(|| format!("{}: missing marker `{end}`", path.display()))?;
        text.replace_range(from..to, content);
    }
    if text == original {
        return Ok(format!("{}: generated sections up to date", path.display()));
    }
    match mode {
        Mode::Check => Err(format!(
            "{}: generated sections are stale\nrun `cargo xtask codegen` and commit the result",
            path.display()
        )),
        Mode::Write => {
            std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
            Ok(format!("{}: updated generated sections", path.display()))
        }
    }
}
