//! Replays the `session_script` fuzz target's corpus and regressions on stable, so CI
//! covers what fuzzing found, and checks a few scripts by name.

use std::path::{Path, PathBuf};

use taskwire_reliability::session_script;

fn inputs() -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut found = Vec::new();
    for dir in [
        fuzz.join("corpus/session_script"),
        fuzz.join("regressions/session_script"),
    ] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            found.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    found.sort();
    found
}

#[test]
fn every_session_script_in_the_corpus_holds_its_property() {
    let inputs = inputs();
    assert!(inputs.len() >= 10, "the session_script corpus is missing");
    // Each script gets its own runtime and server, so they run side by side.
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = inputs
            .chunks(inputs.len().div_ceil(workers))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .filter(|path| {
                            let script = std::fs::read(path).expect("readable corpus file");
                            std::panic::catch_unwind(|| session_script::run(&script)).is_err()
                        })
                        .map(|path| path.display().to_string())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a worker"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "session_script broke its property on {failures:?}"
    );
}

#[test]
fn a_hello_and_calls_are_answered_and_the_close_is_clean() {
    // Hello, Health on stream 1, RegisterInstance on stream 3, then a pause and the close.
    let outcome = session_script::run(&[0, 0, 2, 1, 0, 2, 3, 1, 6, 10, 7]);
    assert_eq!(
        outcome.ended,
        Ok(()),
        "the client's close ends the connection cleanly"
    );
    assert!(
        outcome.server_bytes > 3 * 12,
        "Negotiated and two answers came back: {} bytes",
        outcome.server_bytes
    );
}

#[test]
fn a_call_before_the_hello_ends_the_connection_with_a_reason() {
    let outcome = session_script::run(&[2, 1, 0, 7]);
    let reason = outcome.ended.expect_err("a call is not a Hello");
    assert!(reason.contains("Hello"), "{reason}");
}

#[test]
fn a_silent_peer_is_dropped_at_the_hello_deadline() {
    // Three bytes of a header, then 12.75 virtual seconds of silence with the socket
    // open: past the 10 s Hello deadline, before the script's end closes the client.
    let outcome = session_script::run(&[1, 3, 1, 0, 0, 6, 255, 6, 255, 6, 255, 6, 255, 6, 255]);
    let reason = outcome.ended.expect_err("the deadline ends it");
    assert!(reason.contains("no Hello before the deadline"), "{reason}");
}
