//! Properties of the RRQ codec and mapping over generated messages and arbitrary bytes.

use std::collections::BTreeMap;

use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::{Map, Number, Value as Json};
use taskwire_codec::tokio_util::codec::{Decoder as _, Encoder as _};
use taskwire_proto::wkt::Timestamp;
use taskwire_rrq::mapping::{execution_request, rrq_request};
use taskwire_rrq::{Cancel, Context, Message, OutcomeError, Request, Response, RrqCodec, Status};

/// JSON whose numbers survive `google.protobuf.Value`: integers within ±2^53 and
/// non-integral doubles.
fn json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        (-(1_i64 << 53)..(1_i64 << 53)).prop_map(|n| Json::Number(n.into())),
        (-1e12..1e12_f64)
            .prop_filter("not integral", |f| f.fract() != 0.0)
            .prop_map(|f| Json::Number(Number::from_f64(f).unwrap())),
        "\\PC{0,12}".prop_map(Json::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Map<String, Json>> {
    prop::collection::btree_map("[a-z_]{1,8}", json(), 0..5).prop_map(|m| m.into_iter().collect())
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (0_i64..253_402_300_799, 0_i32..1_000_000_000)
        .prop_map(|(seconds, nanos)| Timestamp { seconds, nanos })
}

fn strings() -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
    prop::option::of(prop::collection::btree_map("[a-z]{1,8}", "\\PC{0,8}", 1..3))
}

fn request() -> impl Strategy<Value = Request> {
    (
        (
            "[a-f0-9-]{1,36}",
            "[a-f0-9-]{1,36}",
            "[a-z_]{1,12}",
            object(),
        ),
        (
            any::<u32>(),
            timestamp(),
            "[a-z:]{1,20}",
            prop::option::of(timestamp()),
            strings(),
            strings(),
            prop::option::of("[a-z0-9_]{1,12}"),
        ),
    )
        .prop_map(
            |(
                (request_id, job_id, function_name, params),
                (
                    attempt,
                    enqueue_time,
                    queue_name,
                    deadline,
                    trace_context,
                    correlation_context,
                    worker_id,
                ),
            )| Request {
                protocol_version: "2".into(),
                request_id,
                job_id: job_id.clone(),
                function_name,
                params,
                context: Context {
                    job_id,
                    attempt,
                    enqueue_time,
                    queue_name,
                    deadline,
                    trace_context,
                    correlation_context,
                    worker_id,
                },
            },
        )
}

fn response() -> impl Strategy<Value = Response> {
    let status = prop_oneof![
        Just(Status::Success),
        Just(Status::Retry),
        Just(Status::Timeout),
        Just(Status::Error)
    ];
    let error = prop::option::of(
        (
            "\\PC{0,20}",
            prop::option::of("[a-z_]{1,10}"),
            prop::option::of("[A-Z0-9]{1,5}"),
            prop::option::of(object()),
        )
            .prop_map(|(message, r#type, code, details)| OutcomeError {
                message,
                r#type,
                code,
                details,
            }),
    );
    (
        prop::option::of("[a-f0-9-]{1,36}"),
        prop::option::of("[a-f0-9-]{1,36}"),
        status,
        json(),
        error,
        prop::option::of(-1e6..1e6_f64),
    )
        .prop_map(
            |(job_id, request_id, status, result, error, retry_after_seconds)| Response {
                job_id,
                request_id,
                status,
                result,
                error,
                retry_after_seconds,
            },
        )
}

fn cancel() -> impl Strategy<Value = Cancel> {
    (
        "[a-f0-9-]{1,36}",
        prop::option::of("[a-f0-9-]{1,36}"),
        any::<bool>(),
    )
        .prop_map(|(job_id, request_id, hard_kill)| Cancel {
            protocol_version: "2".into(),
            job_id,
            request_id,
            hard_kill,
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        request().prop_map(Message::Request),
        response().prop_map(Message::Response),
        cancel().prop_map(Message::Cancel)
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips_through_the_codec(message in message()) {
        taskwire_rrq::fuzzing::roundtrip(&message);
    }

    #[test]
    fn frames_split_at_any_point_decode_the_same(messages in prop::collection::vec(message(), 1..4), cut in any::<prop::sample::Index>()) {
        let mut wire = BytesMut::new();
        let mut codec = RrqCodec::new();
        for message in &messages {
            codec.encode(message, &mut wire).unwrap();
        }
        let cut = cut.index(wire.len());
        let mut buffer = BytesMut::from(&wire[..cut]);
        let mut decoded = Vec::new();
        while let Some(message) = codec.decode(&mut buffer).unwrap() {
            decoded.push(message);
        }
        buffer.extend_from_slice(&wire[cut..]);
        while let Some(message) = codec.decode_eof(&mut buffer).unwrap() {
            decoded.push(message);
        }
        prop_assert_eq!(decoded, messages);
    }

    #[test]
    fn requests_cross_runner_v1_and_back_unchanged(request in request()) {
        let back = rrq_request(execution_request(request.clone()));
        prop_assert_eq!(back, request);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        taskwire_rrq::fuzzing::check_stream(&bytes);
    }

    #[test]
    fn arbitrary_json_in_a_well_formed_frame_never_panics(payload in json(), kind in prop_oneof![Just("request"), Just("response"), Just("cancel"), Just("other")]) {
        let text = serde_json::json!({"type": kind, "payload": payload}).to_string();
        let mut frame = u32::try_from(text.len()).unwrap().to_be_bytes().to_vec();
        frame.extend_from_slice(text.as_bytes());
        taskwire_rrq::fuzzing::check_stream(&frame);
    }
}
