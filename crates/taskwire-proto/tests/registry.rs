//! The registry agrees with the schemas: ids unique and in range, names and ids as the
//! descriptor set declares them, message sets and rpc pairing complete.

use std::collections::{BTreeMap, HashSet};

use prost_reflect::DescriptorPool;
use taskwire_proto::registry::{
    self, AnyMessage, CallShape, Conversation, EXTENSION_RANGE, InstanceMessage, PRIVATE_RANGE,
    SessionMessage,
};
use taskwire_proto::{FILE_DESCRIPTOR_SET, MessageSet, Rpc, WireMessage};

fn pool() -> DescriptorPool {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("the exported descriptor set decodes")
}

/// Every top-level message of a conversation package, with the type id its option gives.
fn declared_ids() -> BTreeMap<String, u16> {
    let pool = pool();
    let option = pool
        .get_extension_by_name("taskwire.options.v1.type_id")
        .expect("the type_id option is in the descriptor set");
    let mut ids = BTreeMap::new();
    for file in pool.files() {
        if !file.package_name().starts_with("taskwire.")
            || file.package_name() == "taskwire.options.v1"
        {
            continue;
        }
        for message in file.messages() {
            let value = message
                .options()
                .get_extension(&option)
                .as_u32()
                .expect("u32 option");
            ids.insert(
                message.full_name().to_owned(),
                u16::try_from(value).expect("fits u16"),
            );
        }
    }
    ids
}

#[test]
fn type_ids_are_unique_nonzero_and_sorted() {
    let table = registry::messages();
    assert!(
        table.len() > 60,
        "expected every conversation's messages, got {}",
        table.len()
    );
    let mut seen = HashSet::new();
    for pair in table.windows(2) {
        assert!(
            pair[0].type_id < pair[1].type_id,
            "{:?} and {:?} out of order",
            pair[0],
            pair[1]
        );
    }
    for info in table {
        assert_ne!(info.type_id, 0, "{} uses the never-used id 0", info.name);
        assert!(
            seen.insert(info.type_id),
            "{:#06x} used twice",
            info.type_id
        );
        assert!(seen.len() <= table.len());
    }
}

#[test]
fn type_ids_fall_in_their_conversation_range() {
    for info in registry::messages() {
        assert!(
            info.conversation.type_id_range().contains(&info.type_id),
            "{} ({:#06x}) is outside {:?}'s range",
            info.name,
            info.type_id,
            info.conversation
        );
        assert!(
            info.name.starts_with(info.conversation.package()),
            "{} not in {:?}",
            info.name,
            info.conversation
        );
        assert_eq!(
            Conversation::of_type_id(info.type_id),
            Some(info.conversation)
        );
    }
}

#[test]
fn ranges_do_not_overlap() {
    let mut ranges: Vec<_> = Conversation::ALL
        .iter()
        .map(|c| c.type_id_range())
        .collect();
    ranges.push(EXTENSION_RANGE);
    ranges.push(PRIVATE_RANGE);
    ranges.sort_by_key(|r| *r.start());
    assert!(*ranges[0].start() > 0, "id 0 is never assigned");
    for pair in ranges.windows(2) {
        assert!(
            pair[0].end() < pair[1].start(),
            "{:?} overlaps {:?}",
            pair[0],
            pair[1]
        );
    }
    assert_eq!(Conversation::of_type_id(*EXTENSION_RANGE.start()), None);
}

#[test]
fn names_and_ids_match_the_descriptor_set() {
    let declared = declared_ids();
    let registered: BTreeMap<String, u16> = registry::messages()
        .iter()
        .map(|info| (info.name.to_owned(), info.type_id))
        .collect();
    assert_eq!(
        registered, declared,
        "the registry and the descriptor set disagree"
    );
}

#[test]
fn lookups_by_id_and_name_agree() {
    for info in registry::messages() {
        assert_eq!(registry::by_type_id(info.type_id), Some(info));
        assert_eq!(registry::by_name(info.name), Some(info));
        assert!(AnyMessage::contains(info.type_id));
        assert_eq!(AnyMessage::type_id_of(info.name), Some(info.type_id));
    }
    assert_eq!(registry::by_type_id(0), None);
    assert_eq!(registry::by_name("taskwire.session.v1.NoSuchMessage"), None);
    assert!(!AnyMessage::contains(0x7FFF));
}

#[test]
fn conversation_sets_hold_exactly_their_messages() {
    for info in registry::messages() {
        let in_session = SessionMessage::contains(info.type_id);
        let in_instance = InstanceMessage::contains(info.type_id);
        assert_eq!(
            in_session,
            info.conversation == Conversation::Session,
            "{}",
            info.name
        );
        assert_eq!(
            in_instance,
            info.conversation == Conversation::Instance,
            "{}",
            info.name
        );
    }
}

#[test]
fn wire_message_constants_match_the_table() {
    use taskwire_proto::runner::v1::ExecutionRequest;
    use taskwire_proto::session::v1::{Hello, Status};
    for (id, name) in [
        (Hello::TYPE_ID, Hello::NAME),
        (Status::TYPE_ID, Status::NAME),
        (ExecutionRequest::TYPE_ID, ExecutionRequest::NAME),
    ] {
        assert_eq!(registry::by_type_id(id).map(|i| i.name), Some(name));
    }
}

#[test]
fn every_rpc_pairs_registered_messages() {
    let rpcs = registry::rpcs();
    assert!(!rpcs.is_empty());
    let mut requests = HashSet::new();
    for rpc in rpcs {
        assert!(rpc.method.starts_with("/taskwire."), "{}", rpc.method);
        assert!(
            registry::by_type_id(rpc.request_type_id).is_some(),
            "{} request unregistered",
            rpc.method
        );
        assert!(
            requests.insert(rpc.request_type_id),
            "{} shares its request type",
            rpc.method
        );
        match rpc.shape {
            CallShape::OneWay => assert_eq!(rpc.response_type_id, None, "{}", rpc.method),
            _ => assert!(
                rpc.response_type_id
                    .and_then(registry::by_type_id)
                    .is_some(),
                "{} response unregistered",
                rpc.method
            ),
        }
        assert_eq!(registry::rpc_by_request(rpc.request_type_id), Some(rpc));
    }
    // Every shape the transports implement is declared somewhere.
    for shape in [
        CallShape::Unary,
        CallShape::ServerStreaming,
        CallShape::ClientStreaming,
        CallShape::OneWay,
    ] {
        assert!(
            rpcs.iter().any(|rpc| rpc.shape == shape),
            "no {shape:?} rpc declared"
        );
    }
}

#[test]
fn rpc_trait_pairs_request_with_response_at_compile_time() {
    use taskwire_proto::runner::v1::{ExecutionOutcome, ExecutionRequest};
    fn response_name<R: Rpc>() -> &'static str
    where
        R::Response: WireMessage,
    {
        <R::Response as WireMessage>::NAME
    }
    assert_eq!(response_name::<ExecutionRequest>(), ExecutionOutcome::NAME);
    assert_eq!(<ExecutionRequest as Rpc>::SHAPE, CallShape::Unary);
    assert_eq!(
        <ExecutionRequest as Rpc>::METHOD,
        "/taskwire.runner.v1.RunnerService/Execute"
    );
}
