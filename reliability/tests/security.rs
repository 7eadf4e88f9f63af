//! Where skipping server verification is reachable: only through
//! `ClientConfigBuilder::dangerous().skip_server_verification()`, used only where
//! `docs/operations.md` and `taskwire-tls` say, and never behind a Cargo feature or a flag.

use std::path::{Path, PathBuf};

/// The files allowed to call `skip_server_verification` outside comments: the test that
/// proves it works and logs its warning. (Its definition and doc example are in
/// `taskwire-tls`, which documents it as dangerous.)
const ALLOWED: &[&str] = &["crates/taskwire-tls/tests/handshakes.rs"];

/// Whether `text` calls the method in code, not in a comment.
fn calls_skip_verification(text: &str) -> bool {
    // Built from parts, so this file does not match itself.
    let call = [".skip_server", "_verification()"].concat();
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .any(|line| line.contains(&call))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(dir: &Path, extension: &str, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != ".git" && name != "corpus" && name != "artifacts" {
                files(&path, extension, found);
            }
        } else if path.extension().is_some_and(|e| e == extension) || name == extension {
            found.push(path);
        }
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace())
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

#[test]
fn skipping_server_verification_is_called_only_where_documented() {
    let mut sources = Vec::new();
    files(&workspace(), "rs", &mut sources);
    assert!(sources.len() > 50, "the scan found the workspace's sources");
    let mut callers: Vec<String> = sources
        .iter()
        .filter(|path| {
            std::fs::read_to_string(path).is_ok_and(|text| calls_skip_verification(&text))
        })
        .map(|path| relative(path))
        .collect();
    callers.sort();
    let unexpected: Vec<&String> = callers
        .iter()
        .filter(|c| !ALLOWED.contains(&c.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "skip_server_verification is called outside the documented places: {unexpected:?}"
    );
    assert_eq!(callers, ALLOWED, "the scan sees the one documented caller");
}

#[test]
fn no_cargo_feature_or_cli_flag_turns_verification_off() {
    let mut manifests = Vec::new();
    files(&workspace(), "Cargo.toml", &mut manifests);
    assert!(manifests.len() > 8, "the scan found the manifests");
    for manifest in &manifests {
        let text = std::fs::read_to_string(manifest).unwrap();
        let features = text.split("[features]").nth(1).unwrap_or("");
        let features = features.split("\n[").next().unwrap_or("");
        for word in ["insecure", "dangerous", "no-verify", "skip-verif"] {
            assert!(
                !features.contains(word),
                "{} has a feature mentioning {word:?}",
                relative(manifest)
            );
        }
    }
    let mut cli = Vec::new();
    files(&workspace().join("crates/taskwire-cli/src"), "rs", &mut cli);
    for source in cli {
        let text = std::fs::read_to_string(&source).unwrap();
        // The one flag with "insecure" in its name relaxes where tenants come from in
        // development (`serve --insecure-claimed-tenants`); it verifies as ever.
        let other_insecure = text
            .replace("insecure_claimed_tenants", "")
            .replace("insecure-claimed-tenants", "")
            .contains("insecure");
        assert!(
            !text.contains(".dangerous()") && !other_insecure,
            "{} reaches the dangerous API",
            relative(&source)
        );
    }
}
