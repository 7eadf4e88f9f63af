//! Conversation enums stay small: a decoder returns one by value, and each move copies
//! the whole enum whatever variant it holds.

use std::mem::size_of;

use taskwire_proto::registry::{
    AnyMessage, EnvironmentMessage, InstanceMessage, JournalMessage, ManagementMessage,
    RunnerMessage, SessionMessage,
};

/// The largest a conversation enum may be. A message that would push its enum past this
/// belongs in `BOXED_IN_ENUMS` in `xtask/src/codegen/registry.rs`.
const MAX_ENUM_SIZE: usize = 256;

#[test]
fn conversation_enums_stay_small() {
    let sizes = [
        ("SessionMessage", size_of::<SessionMessage>()),
        ("InstanceMessage", size_of::<InstanceMessage>()),
        ("EnvironmentMessage", size_of::<EnvironmentMessage>()),
        ("ManagementMessage", size_of::<ManagementMessage>()),
        ("RunnerMessage", size_of::<RunnerMessage>()),
        ("JournalMessage", size_of::<JournalMessage>()),
        ("AnyMessage", size_of::<AnyMessage>()),
    ];
    let too_large: Vec<_> = sizes
        .iter()
        .filter(|(_, size)| *size > MAX_ENUM_SIZE)
        .collect();
    assert!(
        too_large.is_empty(),
        "over {MAX_ENUM_SIZE} bytes: {too_large:?}; box their largest messages (BOXED_IN_ENUMS in xtask/src/codegen/registry.rs)"
    );
}

#[test]
fn a_boxed_variant_round_trips_through_its_enum() {
    use taskwire_proto::MessageSet;
    use taskwire_proto::instance::v1::InstanceStatus;

    let status = InstanceStatus {
        instance_id: "order-7".into(),
        attempt: 3,
        ..Default::default()
    };
    let message = InstanceMessage::from(status.clone());
    let mut body = Vec::new();
    message.encode_body(&mut body);
    let decoded = InstanceMessage::decode_body(message.type_id(), body.into())
        .expect("an instance message")
        .expect("decodes");
    assert_eq!(decoded, InstanceMessage::InstanceStatus(Box::new(status)));
}
