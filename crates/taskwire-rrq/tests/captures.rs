//! The bytes of a real RRQ 0.11.1 run (`tests/captures/`: the orchestrator's and the Python
//! runner's side of two connections, and `frames.jsonl`, every frame decoded by hand):
//! they decode, map to `taskwire.runner.v1` and back, and re-encode to equal JSON.

use std::collections::BTreeMap;

use bytes::BytesMut;
use serde_json::Value as Json;
use taskwire_codec::tokio_util::codec::{Decoder as _, Encoder as _};
use taskwire_rrq::mapping::{
    cancel_request, execution_outcome, execution_request, rrq_cancel, rrq_request, rrq_response,
};
use taskwire_rrq::{Message, RrqCodec};

fn capture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/captures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Every frame of one capture file.
fn decode_all(bytes: &[u8]) -> Vec<Message> {
    let mut codec = RrqCodec::new();
    let mut buffer = BytesMut::from(bytes);
    let mut messages = Vec::new();
    while let Some(message) = codec.decode_eof(&mut buffer).unwrap() {
        messages.push(message);
    }
    assert!(buffer.is_empty());
    messages
}

/// The hand-decoded frames of `frames.jsonl`, by connection and direction.
fn recorded() -> BTreeMap<(u64, String), Vec<Json>> {
    let text = std::fs::read_to_string(format!(
        "{}/tests/captures/frames.jsonl",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut frames: BTreeMap<(u64, String), Vec<Json>> = BTreeMap::new();
    for line in text.lines() {
        let record: Json = serde_json::from_str(line).unwrap();
        if let Some(json) = record.get("json") {
            let key = (
                record["conn"].as_u64().unwrap(),
                record["dir"].as_str().unwrap().to_owned(),
            );
            frames.entry(key).or_default().push(json.clone());
        }
    }
    frames
}

/// `message` as RRQ's envelope JSON, through the codec.
fn as_json(message: &Message) -> Json {
    let mut wire = BytesMut::new();
    RrqCodec::new().encode(message, &mut wire).unwrap();
    let len = u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize;
    assert_eq!(len, wire.len() - 4);
    serde_json::from_slice(&wire[4..]).unwrap()
}

/// Equal as JSON values, numbers compared by value (`1` and `1.0` are one number, as
/// RRQ's Python runner and orchestrator both read them).
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Through runner.v1 and back.
fn through_runner_v1(message: Message) -> Message {
    match message {
        Message::Request(request) => Message::Request(rrq_request(execution_request(request))),
        Message::Response(response) => Message::Response(rrq_response(execution_outcome(response))),
        Message::Cancel(cancel) => Message::Cancel(rrq_cancel(cancel_request(cancel))),
    }
}

#[test]
fn every_captured_frame_decodes_to_what_rrq_sent() {
    let recorded = recorded();
    let mut total = 0;
    for (conn, dir) in [(1, "c2s"), (1, "s2c"), (2, "c2s")] {
        let messages = decode_all(&capture(&format!("conn{conn}.{dir}.bin")));
        let expected = &recorded[&(conn, dir.to_owned())];
        assert_eq!(messages.len(), expected.len(), "conn {conn} {dir}");
        for (message, expected) in messages.iter().zip(expected) {
            assert_eq!(
                &as_json(message),
                expected,
                "conn {conn} {dir}: re-encoded as decoded"
            );
        }
        total += messages.len();
    }
    assert_eq!(
        total, 14,
        "the requests, responses and the cancel of the captured run"
    );
}

#[test]
fn every_captured_frame_crosses_runner_v1_and_back_unchanged() {
    let recorded = recorded();
    for (conn, dir) in [(1, "c2s"), (1, "s2c"), (2, "c2s")] {
        let messages = decode_all(&capture(&format!("conn{conn}.{dir}.bin")));
        for (message, expected) in messages.into_iter().zip(&recorded[&(conn, dir.to_owned())]) {
            let kind = message.type_name();
            let back = as_json(&through_runner_v1(message));
            assert!(
                same(&back, expected),
                "conn {conn} {dir} {kind} changed:\n  sent {expected}\n  back {back}"
            );
        }
    }
}

#[test]
fn the_orchestrators_requests_re_encode_byte_for_byte() {
    // RRQ's orchestrator writes compact JSON in declaration order, as this codec does.
    let bytes = capture("conn1.c2s.bin");
    let mut wire = BytesMut::new();
    for message in decode_all(&bytes) {
        RrqCodec::new().encode(&message, &mut wire).unwrap();
    }
    assert_eq!(&wire[..], &bytes[..]);
}

#[test]
fn the_captured_outcomes_map_to_the_runner_v1_outcomes_they_mean() {
    use taskwire_proto::runner::v1::execution_outcome::Outcome;
    let outcomes: Vec<Outcome> = decode_all(&capture("conn1.s2c.bin"))
        .into_iter()
        .filter_map(|message| match message {
            Message::Response(response) => execution_outcome(response).outcome,
            _ => None,
        })
        .collect();
    let kinds: Vec<&str> = outcomes
        .iter()
        .map(|outcome| match outcome {
            Outcome::Success(_) => "success",
            Outcome::Failure(_) => "failure",
            Outcome::RetryAfter(_) => "retry_after",
            Outcome::Timeout(_) => "timeout",
            Outcome::Cancelled(_) => "cancelled",
            Outcome::HandlerNotFound(_) => "handler_not_found",
        })
        .collect();
    for kind in [
        "success",
        "retry_after",
        "failure",
        "handler_not_found",
        "timeout",
    ] {
        assert!(
            kinds.contains(&kind),
            "the capture's {kind} outcome: {kinds:?}"
        );
    }
    let missing = outcomes.iter().find_map(|o| match o {
        Outcome::HandlerNotFound(missing) => Some(missing.function_name.as_str()),
        _ => None,
    });
    assert_eq!(missing, Some("no_such_handler"));
}
