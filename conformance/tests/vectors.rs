//! This crate's codec against every golden vector, both ways.

use taskwire_conformance::vectors::{self, InvalidVector, ValidVector};
use taskwire_proto::registry;

#[test]
fn every_valid_vector_decodes_and_reencodes_exactly() {
    let file = vectors::read::<ValidVector>("valid.json");
    assert_eq!(file.format, vectors::FORMAT);
    let failures: Vec<String> = file
        .vectors
        .iter()
        .filter_map(|v| {
            vectors::check_valid(v)
                .err()
                .map(|e| format!("{}: {e}", v.name))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} vectors failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_message_type_has_a_vector_in_both_framings() {
    let file = vectors::read::<ValidVector>("valid.json");
    for info in registry::messages() {
        for framing in [vectors::Framing::Binary, vectors::Framing::Json] {
            assert!(
                file.vectors
                    .iter()
                    .any(|v| v.framing == framing
                        && v.frames.iter().any(|f| f.type_id == info.type_id)),
                "no {framing:?} vector carries {}",
                info.name
            );
        }
    }
}

#[test]
fn every_invalid_vector_is_rejected_with_its_error_kind() {
    let file = vectors::read::<InvalidVector>("invalid.json");
    assert!(
        file.vectors.len() >= 15,
        "the spec promises at least 15 invalid vectors"
    );
    let failures: Vec<String> = file
        .vectors
        .iter()
        .filter_map(|v| {
            vectors::check_invalid(v)
                .err()
                .map(|e| format!("{}: {e}", v.name))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} vectors failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The checked-in vectors are what the generator writes today.
#[test]
fn vector_files_are_up_to_date() {
    for (name, contents) in vectors::generated_files() {
        let path = vectors::vectors_dir().join(name);
        let current = std::fs::read(&path).unwrap_or_default();
        assert!(
            current == contents,
            "{} is stale: run `cargo xtask vectors` and commit the result",
            path.display()
        );
    }
}
