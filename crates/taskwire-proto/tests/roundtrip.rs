//! Every message of every conversation round-trips through protobuf and canonical JSON,
//! with random field values (property tests) and with filled-in examples; and our JSON is
//! the canonical proto3 JSON an independent implementation (prost-reflect) produces.

use proptest::prelude::*;
use taskwire_conformance::sample::{self, Rng};
use taskwire_proto::MessageSet;
use taskwire_proto::registry::{self, AnyMessage, Conversation};

struct Body<'a>(&'a AnyMessage);

impl serde::Serialize for Body<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_json_body(s)
    }
}

/// Protobuf and JSON round trips, and agreement with prost-reflect's canonical JSON.
fn check_roundtrips(message: &AnyMessage) -> Result<(), TestCaseError> {
    let type_id = message.type_id();

    let mut wire = Vec::new();
    message.encode_body(&mut wire);
    prop_assert_eq!(wire.len(), message.body_len());
    let decoded = AnyMessage::decode_body(type_id, wire.into()).expect("registered");
    prop_assert_eq!(
        decoded.as_ref().ok(),
        Some(message),
        "protobuf round trip of {}",
        message.name()
    );

    let json = serde_json::to_string(&Body(message)).expect("serializes");
    let mut de = serde_json::Deserializer::from_str(&json);
    let back = AnyMessage::deserialize_json_body(type_id, &mut de);
    prop_assert_eq!(
        back.as_ref().ok(),
        Some(message),
        "JSON round trip of {}: {}",
        message.name(),
        json
    );

    let ours: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    let reference =
        serde_json::to_value(sample::to_dynamic(message)).expect("prost-reflect serializes");
    prop_assert_eq!(ours, reference, "canonical JSON of {}", message.name());
    Ok(())
}

fn type_ids(conversation: Conversation) -> Vec<u16> {
    registry::messages()
        .iter()
        .filter(|info| info.conversation == conversation)
        .map(|info| info.type_id)
        .collect()
}

fn random_messages(conversation: Conversation) -> impl Strategy<Value = AnyMessage> {
    let ids = type_ids(conversation);
    assert!(!ids.is_empty(), "{conversation:?} has messages");
    (0..ids.len(), any::<u64>())
        .prop_map(move |(index, seed)| sample::random(ids[index], &mut Rng::new(seed)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn session_messages_roundtrip(message in random_messages(Conversation::Session)) {
        check_roundtrips(&message)?;
    }

    #[test]
    fn instance_messages_roundtrip(message in random_messages(Conversation::Instance)) {
        check_roundtrips(&message)?;
    }

    #[test]
    fn runner_messages_roundtrip(message in random_messages(Conversation::Runner)) {
        check_roundtrips(&message)?;
    }

    #[test]
    fn environment_messages_roundtrip(message in random_messages(Conversation::Environment)) {
        check_roundtrips(&message)?;
    }

    #[test]
    fn management_messages_roundtrip(message in random_messages(Conversation::Management)) {
        check_roundtrips(&message)?;
    }

    #[test]
    fn journal_messages_roundtrip(message in random_messages(Conversation::Journal)) {
        check_roundtrips(&message)?;
    }
}

#[test]
fn every_filled_in_example_roundtrips() {
    for info in registry::messages() {
        let example = sample::example(info.type_id);
        if sample::descriptor(info.type_id).fields().len() > 0 {
            assert_ne!(example.body_len(), 0, "{} example sets no field", info.name);
        }
        check_roundtrips(&example).unwrap_or_else(|e| panic!("{}: {e}", info.name));
    }
}

#[test]
fn bytes_fields_borrow_from_the_decoded_buffer() {
    use taskwire_proto::Message;
    use taskwire_proto::instance::v1::CheckpointRequest;
    let request = CheckpointRequest {
        state: vec![7; 4096].into(),
        ..Default::default()
    };
    let wire = bytes::Bytes::from(request.encode_to_vec());
    let decoded = CheckpointRequest::decode(wire.clone()).expect("decodes");
    let start = wire.as_ptr() as usize;
    let state = decoded.state.as_ptr() as usize;
    assert!(
        state >= start && state < start + wire.len(),
        "state was copied out of the frame buffer"
    );
}

/// What a visitor sees of a message: its type's id and name, and its encoding.
struct Seen;

impl taskwire_proto::MessageVisitor for Seen {
    type Output = (u16, &'static str, Vec<u8>);

    fn visit<T: taskwire_proto::WireMessage>(self, message: &T) -> Self::Output {
        (T::TYPE_ID, T::NAME, message.encode_to_vec())
    }
}

#[test]
fn visit_hands_over_each_message_as_its_own_type() {
    for info in registry::messages() {
        let example = sample::example(info.type_id);
        let (type_id, name, body) = example.visit(Seen);
        assert_eq!(type_id, info.type_id, "{}", info.name);
        assert_eq!(name, info.name);
        let mut expected = Vec::new();
        example.encode_body(&mut expected);
        assert_eq!(
            body, expected,
            "{}: the visitor saw another message",
            info.name
        );
    }
}
