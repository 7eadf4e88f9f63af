//! Fuzz target: a server session driven by a script of client actions (Hello, calls,
//! stream items, cancellations, raw bytes, time, close) over an in-memory transport; see
//! `taskwire_reliability::session_script`. Its corpus is replayed on stable by
//! `reliability/tests/session_corpus.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = taskwire_reliability::session_script::run(data);
});
