//! Replays every fuzz target's corpus and regression inputs through the same property
//! functions the fuzzers run, so stable CI covers what fuzzing found.

use std::path::{Path, PathBuf};

use taskwire_codec::fuzzing;

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut found = Vec::new();
    for dir in [
        fuzz.join("corpus").join(target),
        fuzz.join("regressions").join(target),
    ] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            found.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    found.sort();
    found
}

fn replay(target: &str, check: impl Fn(&[u8])) {
    let inputs = inputs(target);
    assert!(
        !inputs.is_empty(),
        "no corpus for {target} under fuzz/corpus/{target}"
    );
    for path in &inputs {
        let data = std::fs::read(path).expect("readable corpus file");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        assert!(
            outcome.is_ok(),
            "{target} broke its property on {}",
            path.display()
        );
    }
}

#[test]
fn binary_frames_corpus_holds_its_properties() {
    replay("binary_frames", |data| {
        let _ = fuzzing::binary_frames(data);
    });
}

#[test]
fn json_frames_corpus_holds_its_properties() {
    replay("json_frames", |data| {
        let _ = fuzzing::json_frames(data);
    });
}

#[test]
fn stream_splitting_corpus_holds_its_properties() {
    replay("stream_splitting", fuzzing::stream_splitting);
}
