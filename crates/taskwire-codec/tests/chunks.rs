//! `BinaryCodec::encode_chunks`: the same bytes as `encode`, with long `bytes` fields left
//! in the message's own buffers.

use bytes::{Bytes, BytesMut};
use taskwire_codec::tokio_util::codec::Encoder;
use taskwire_codec::{
    BinaryCodec, Builder, CodecError, Frame, HEADER_LEN, MIN_SHARED_LEN, RawFrame,
};
use taskwire_proto::MessageSet;
use taskwire_proto::environment::v1::ImageUpload;
use taskwire_proto::environment::v1::image_upload::Part;
use taskwire_proto::instance::v1::{InstanceEvent, InstanceEventBatch};

fn codec() -> BinaryCodec {
    Builder::new().first_frame_done(true).new_binary_codec()
}

fn encoded<M: MessageSet>(frame: &Frame<M>) -> Vec<u8> {
    let mut out = BytesMut::new();
    codec().encode(frame, &mut out).expect("encodes");
    out.to_vec()
}

fn chunks<M: MessageSet>(frame: &Frame<M>) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    codec()
        .encode_chunks(frame, &mut chunks)
        .expect("encodes as chunks");
    chunks
}

/// Whether one of `chunks` is `field` itself: the same memory, not a copy of it.
fn shares(chunks: &[Bytes], field: &Bytes) -> bool {
    chunks
        .iter()
        .any(|c| c.as_ptr() == field.as_ptr() && c.len() == field.len())
}

fn upload(chunk: Bytes) -> Frame<ImageUpload> {
    Frame::new(ImageUpload {
        part: Some(Part::Chunk(chunk)),
    })
    .with_stream_id(9)
}

#[test]
fn a_long_bytes_field_is_sent_as_its_own_buffer_not_copied() {
    let data = Bytes::from(vec![0x5a; 64 * 1024]);
    let frame = upload(data.clone());
    let chunks = chunks(&frame);
    assert_eq!(chunks.len(), 2, "the header and tag, then the data");
    assert!(shares(&chunks, &data), "the 64 KiB field was copied");
    assert_eq!(chunks.concat(), encoded(&frame));
}

#[test]
fn a_frame_without_long_bytes_fields_is_one_buffer() {
    let data = Bytes::from(vec![0x5a; MIN_SHARED_LEN - 1]);
    let frame = upload(data.clone());
    let chunks = chunks(&frame);
    assert_eq!(chunks.len(), 1);
    assert!(!shares(&chunks, &data));
    assert_eq!(chunks.concat(), encoded(&frame));
}

#[test]
fn fields_between_and_after_long_fields_keep_their_order() {
    let output = Bytes::from(vec![1; MIN_SHARED_LEN]);
    let payload = Bytes::from(vec![2; 3 * MIN_SHARED_LEN]);
    let event = |id: &str| InstanceEvent {
        instance_id: id.into(),
        event_type: 5,
        output: output.clone(),
        custom_type: "progress".into(),
        payload: payload.clone(),
        checkpoint_id: "cp-7".into(),
        ..Default::default()
    };
    // Nested twice: the events are length-delimited messages inside the batch.
    let frame = Frame::new(InstanceEventBatch {
        events: vec![event("a"), event("b")],
    });
    let chunks = chunks(&frame);
    assert_eq!(chunks.concat(), encoded(&frame));
    // Each event's two fields are shared, with the fields around them copied between.
    assert_eq!(
        chunks.len(),
        9,
        "{:?}",
        chunks.iter().map(Bytes::len).collect::<Vec<_>>()
    );
    assert!(shares(&chunks, &output) && shares(&chunks, &payload));
}

#[test]
fn chunks_obey_the_frame_limit_and_append_nothing_on_error() {
    let frame = upload(Bytes::from(vec![0; 64 * 1024]));
    let mut codec = Builder::new()
        .first_frame_done(true)
        .max_frame_length(32 * 1024)
        .new_binary_codec();
    let mut chunks = vec![Bytes::from_static(b"earlier")];
    let error = codec.encode_chunks(&frame, &mut chunks).unwrap_err();
    assert!(
        matches!(error, CodecError::FrameTooLarge { max: 32768, .. }),
        "{error:?}"
    );
    assert_eq!(chunks, [Bytes::from_static(b"earlier")]);
}

#[test]
fn chunks_append_after_what_the_list_holds() {
    let first = upload(Bytes::from(vec![3; 2 * MIN_SHARED_LEN]));
    let second = upload(Bytes::from_static(b"tail"));
    let mut codec = codec();
    let mut chunks = Vec::new();
    codec.encode_chunks(&first, &mut chunks).expect("first");
    codec.encode_chunks(&second, &mut chunks).expect("second");
    assert_eq!(
        chunks.concat(),
        [encoded(&first), encoded(&second)].concat()
    );
}

fn raw_chunks(frame: &RawFrame) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    codec()
        .encode_raw_chunks(frame, &mut chunks)
        .expect("encodes as chunks");
    chunks
}

fn raw_encoded(frame: &RawFrame) -> Vec<u8> {
    let mut out = BytesMut::new();
    codec().encode(frame, &mut out).expect("encodes");
    out.to_vec()
}

#[test]
fn a_long_raw_body_follows_its_header_uncopied() {
    let frame = RawFrame::encode(&upload(Bytes::from(vec![7; 64 * 1024])));
    let chunks = raw_chunks(&frame);
    assert_eq!(chunks.len(), 2, "the header, then the body");
    assert_eq!(chunks[0].len(), HEADER_LEN);
    assert!(shares(&chunks, &frame.body), "the body was copied");
    assert_eq!(chunks.concat(), raw_encoded(&frame));
}

#[test]
fn a_short_raw_body_is_one_buffer_with_its_header() {
    let frame = RawFrame::encode(&upload(Bytes::from_static(b"short")));
    let chunks = raw_chunks(&frame);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks.concat(), raw_encoded(&frame));
}

#[test]
fn raw_chunks_obey_the_frame_limit() {
    let frame = RawFrame::encode(&upload(Bytes::from(vec![0; 64 * 1024])));
    let mut codec = Builder::new()
        .first_frame_done(true)
        .max_frame_length(1024)
        .new_binary_codec();
    let mut chunks = Vec::new();
    let error = codec.encode_raw_chunks(&frame, &mut chunks).unwrap_err();
    assert!(
        matches!(error, CodecError::FrameTooLarge { max: 1024, .. }),
        "{error:?}"
    );
    assert!(chunks.is_empty());
}
