//! Allocation counts, measured with dhat's counting allocator: framing adds no allocation
//! per frame beyond what prost (or serde_json) spends on the body itself, and a peer's
//! declared length costs nothing until its bytes arrive.
//!
//! One test function, because dhat runs one profiler per process at a time.

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use taskwire_codec::tokio_util::codec::{Decoder, Encoder};
use taskwire_codec::{Builder, Frame};
use taskwire_proto::WireMessage;
use taskwire_proto::journal::v1::SetStateEntry;
use taskwire_proto::registry::JournalMessage;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const FRAMES: u64 = 1000;

static VALUE: [u8; 2048] = [7; 2048];

/// A message whose encoding allocates nothing in prost: static `Bytes` clone for free
/// (a `Bytes` from a `Vec` allocates on its first clone, which prost's encoder makes).
fn message(i: u64) -> SetStateEntry {
    SetStateEntry {
        key: Bytes::from_static(&VALUE[..(i % 16) as usize + 1]),
        value: Bytes::from_static(&VALUE),
        name: String::new(),
    }
}

/// Allocations made while `f` runs.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = dhat::HeapStats::get().total_blocks;
    f();
    dhat::HeapStats::get().total_blocks - before
}

#[test]
fn framing_adds_no_allocation_per_frame() {
    let _profiler = dhat::Profiler::builder().testing().build();

    let frames: Vec<Frame<JournalMessage>> = (0..FRAMES)
        .map(|i| Frame::new(JournalMessage::from(message(i))))
        .collect();
    let bodies: Vec<Bytes> = (0..FRAMES)
        .map(|i| Bytes::from(message(i).encode_to_vec()))
        .collect();

    // Encoding into a buffer with room: no allocation at all.
    let mut codec = Builder::new()
        .first_frame_done(true)
        .new_binary_message_codec::<JournalMessage>();
    let mut wire = BytesMut::with_capacity(4 * 1024 * 1024);
    let encode = allocations(|| {
        for frame in &frames {
            codec.encode(frame, &mut wire).unwrap();
        }
    });
    assert_eq!(encode, 0, "binary encoding allocated");

    // Bare prost decoding of the same bodies, from Bytes: the baseline.
    let bare = allocations(|| {
        for body in &bodies {
            std::hint::black_box(SetStateEntry::decode(body.clone()).unwrap());
        }
    });

    // Framed decoding: the header parse, the body split and the typed dispatch add at most
    // one allocation for the whole run (BytesMut turning shared on the first split).
    let mut decoded = 0;
    let framed = allocations(|| {
        while let Some(frame) = codec.decode(&mut wire).unwrap() {
            std::hint::black_box(frame);
            decoded += 1;
        }
    });
    assert_eq!(decoded, FRAMES);
    assert!(
        framed <= bare + 1,
        "framed decode: {framed} allocations, bare prost: {bare}"
    );

    // JSON: framed decoding allocates what serde_json needs for the body, plus nothing
    // per frame for the envelope.
    let mut json = Builder::new()
        .first_frame_done(true)
        .new_json_codec::<JournalMessage>();
    let mut text = BytesMut::new();
    for frame in &frames {
        json.encode(frame, &mut text).unwrap();
    }
    let json_bodies: Vec<String> = frames
        .iter()
        .map(|f| match &f.message {
            JournalMessage::SetStateEntry(m) => serde_json::to_string(m).unwrap(),
            _ => unreachable!(),
        })
        .collect();
    let bare_json = allocations(|| {
        for body in &json_bodies {
            std::hint::black_box(serde_json::from_str::<SetStateEntry>(body).unwrap());
        }
    });
    let framed_json = allocations(|| {
        while let Some(frame) = json.decode(&mut text).unwrap() {
            std::hint::black_box(frame);
        }
    });
    assert!(
        framed_json <= bare_json + 1,
        "framed JSON decode: {framed_json} allocations, bare serde_json: {bare_json}"
    );

    // A declared 16 MiB frame with 10 bytes received allocates nothing toward 16 MiB.
    let mut codec = Builder::new().first_frame_done(true).new_binary_codec();
    let mut header = taskwire_codec::FrameHeader {
        flags: taskwire_codec::Flags::empty(),
        type_id: SetStateEntry::TYPE_ID,
        stream_id: 0,
        body_len: 16 * 1024 * 1024,
    }
    .to_bytes()
    .to_vec();
    header.extend_from_slice(&[0; 10]);
    let mut src = BytesMut::from(&header[..]);
    let before = dhat::HeapStats::get().curr_bytes;
    assert!(codec.decode(&mut src).unwrap().is_none());
    let after = dhat::HeapStats::get().curr_bytes;
    assert!(
        after <= before,
        "waiting for a declared 16 MiB body grew the heap by {} bytes",
        after - before
    );
}
