//! Replays the `restate_frames` fuzz target's corpus and regression inputs through the
//! same property the fuzzer checks, so stable CI covers what fuzzing found.

use std::path::Path;

#[test]
fn restate_frames_corpus_holds_its_properties() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut inputs = Vec::new();
    for dir in [
        fuzz.join("corpus/restate_frames"),
        fuzz.join("regressions/restate_frames"),
    ] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            inputs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    inputs.sort();
    assert!(
        inputs.len() >= 6,
        "the restate_frames corpus is missing: {} inputs",
        inputs.len()
    );
    for path in &inputs {
        let data = std::fs::read(path).unwrap();
        let outcome =
            std::panic::catch_unwind(|| taskwire_restate::fuzzing::check_invocation(&data));
        assert!(
            outcome.is_ok(),
            "restate_frames broke its property on {}",
            path.display()
        );
    }
}
