//! The identity URI vectors (`conformance/vectors/identities.json`) against
//! `taskwire_tls`'s parser and issuer: the rule of docs/protocol.md §6, "Identity names".

use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/identities.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn every_valid_identity_parses_to_its_tenant_and_id_and_can_be_issued() {
    let vectors = vectors();
    let valid = vectors["valid"].as_array().unwrap();
    assert!(valid.len() >= 5);
    for v in valid {
        let (uri, tenant, id) = (
            v["uri"].as_str().unwrap(),
            v["tenant"].as_str().unwrap(),
            v["id"].as_str().unwrap(),
        );
        assert_eq!(
            taskwire_tls::parse_identity_uri(uri),
            Some((tenant, id)),
            "{uri}"
        );
        assert_eq!(
            taskwire_tls::identity_uri(tenant, id).unwrap(),
            format!("taskwire://{tenant}/{id}")
        );
    }
}

#[test]
fn every_invalid_identity_is_refused_by_the_parser_and_the_issuer() {
    let vectors = vectors();
    let invalid = vectors["invalid"].as_array().unwrap();
    assert!(invalid.len() >= 20);
    for v in invalid {
        let uri = v["uri"].as_str().unwrap();
        assert_eq!(
            taskwire_tls::parse_identity_uri(uri),
            None,
            "{uri}: {}",
            v["why"]
        );
        // Where the URI splits into a tenant and an id, the issuer refuses them too.
        if let Some(rest) = uri.strip_prefix("taskwire://")
            && let Some((tenant, id)) = rest.split_once('/')
        {
            assert!(
                taskwire_tls::identity_uri(tenant, id).is_err(),
                "{uri}: {}",
                v["why"]
            );
        }
    }
}
