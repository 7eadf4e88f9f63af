//! The decoded-size budget against repeated-field amplification, with the heap measured by
//! dhat's counting allocator: a few MiB that would decode into hundreds of MiB are refused
//! before anything proportional to the expansion is allocated, and the count the budget
//! uses is an upper bound of the heap a decode really takes.
//!
//! One test function, because dhat runs one profiler per process at a time.

use bytes::BytesMut;
use taskwire_codec::tokio_util::codec::Decoder;
use taskwire_codec::{Builder, CodecError, ErrorKind, Frame};
use taskwire_proto::WireMessage;
use taskwire_proto::budget::{self, MESSAGE_COST};
use taskwire_proto::environment::v1::ListInstancesResponse;
use taskwire_proto::instance::v1::PollSignalsResponse;
use taskwire_proto::registry::AnyMessage;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// A binary frame of `type_id` whose body is `count` empty elements of repeated field 1.
fn empty_elements(type_id: u16, count: usize) -> BytesMut {
    let body = [0x0a, 0x00].repeat(count);
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&[1, 0]);
    frame.extend_from_slice(&type_id.to_be_bytes());
    frame.extend_from_slice(&0u32.to_be_bytes());
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// The heap's peak while `f` runs, above what was allocated before it. dhat's peak never
/// goes down, so a ballast first raises the heap to its high-water mark: any new peak is
/// then this step's.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let stats = dhat::HeapStats::get();
    let ballast = vec![1u8; stats.max_bytes - stats.curr_bytes];
    let before = dhat::HeapStats::get();
    assert_eq!(
        before.curr_bytes, before.max_bytes,
        "at the high-water mark"
    );
    let out = f();
    let after = dhat::HeapStats::get();
    drop(ballast);
    (out, (after.max_bytes - before.curr_bytes) as u64)
}

#[test]
fn amplified_bodies_are_refused_within_a_bounded_heap() {
    let _profiler = dhat::Profiler::builder().testing().build();

    // 1. 4 MiB of empty Signals: 2 million messages, about 272 MiB as Rust structs.
    let signals = 2 * 1024 * 1024;
    let mut wire = empty_elements(PollSignalsResponse::TYPE_ID, signals);
    let frame_bytes = wire.len() as u64;
    let mut codec = Builder::new()
        .first_frame_done(true)
        .new_binary_message_codec::<AnyMessage>();
    let (refused, peak) = peak_during(|| codec.decode(&mut wire));
    match refused {
        Err(error @ CodecError::DecodedTooLarge { .. }) => {
            assert_eq!(error.kind(), ErrorKind::DecodedTooLarge);
            let text = error.to_string();
            assert!(
                text.contains("taskwire.instance.v1.PollSignalsResponse"),
                "{text}"
            );
            assert!(
                text.contains(&budget::DEFAULT_MAX_DECODED_SIZE.to_string()),
                "{text}"
            );
        }
        other => panic!("expected decoded_too_large, got {other:?}"),
    }
    assert!(
        peak < 64 * 1024,
        "refusing a {frame_bytes}-byte amplified frame took {peak} bytes of heap"
    );
    drop(wire);

    // 2. The same shape under a budget that admits it: the count bounds the real heap,
    //    for the type with the smallest elements and for the one with the largest.
    for (type_id, name, count) in [
        (PollSignalsResponse::TYPE_ID, "PollSignalsResponse", 20_000),
        (
            ListInstancesResponse::TYPE_ID,
            "ListInstancesResponse",
            20_000,
        ),
    ] {
        let mut wire = empty_elements(type_id, count);
        let counted = budget::decoded_size(type_id, &wire[12..], usize::MAX).unwrap();
        assert_eq!(counted, (count + 1) * MESSAGE_COST);
        let mut codec = Builder::new()
            .first_frame_done(true)
            .max_decoded_size(counted)
            .new_binary_message_codec::<AnyMessage>();
        let (decoded, peak): (Result<Option<Frame<AnyMessage>>, _>, u64) =
            peak_during(|| codec.decode(&mut wire));
        assert!(
            decoded.unwrap().is_some(),
            "{name} within its budget decodes"
        );
        assert!(
            peak <= counted as u64,
            "{name}: decoding {count} empty elements took {peak} bytes, more than the {counted} counted"
        );
    }

    // 3. The same amplification in JSON: `{}` is two bytes too.
    let elements = vec!["{}"; 1_000_000].join(",");
    let text = format!(
        r#"{{"type":"taskwire.instance.v1.PollSignalsResponse","body":{{"signals":[{elements}]}}}}"#
    );
    let mut json = BytesMut::new();
    json.extend_from_slice(&u32::try_from(text.len()).unwrap().to_be_bytes());
    json.extend_from_slice(text.as_bytes());
    drop(elements);
    drop(text);
    let mut codec = Builder::new().first_frame_done(true).new_any_json_codec();
    let (refused, peak) = peak_during(|| codec.decode(&mut json));
    assert_eq!(
        refused.unwrap_err().kind(),
        ErrorKind::DecodedTooLarge,
        "a million empty JSON objects are refused"
    );
    assert!(
        peak < 64 * 1024,
        "refusing the JSON frame took {peak} bytes of heap"
    );
}
