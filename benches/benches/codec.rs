//! Codec benchmarks: each taskwire operation beside the peer it must keep up with, on the
//! same message at three sizes.
//!
//! | group | taskwire | peer |
//! |---|---|---|
//! | `decode` | `framed-binary` | `bare-prost`, `length-delimited+prost` |
//! | `encode` | `framed-binary` | `bare-prost`, `length-delimited+prost` |
//! | `json-decode` | `framed-json` | `bare-serde-json` |
//! | `json-encode` | `framed-json` | `bare-serde-json` |
//!
//! `cargo bench -p taskwire-benches --bench codec`, then
//! `cargo run -p taskwire-benches --bin bench-report` prints the median ratios.

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use taskwire_codec::tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};
use taskwire_codec::{Builder, Frame};
use taskwire_proto::instance::v1::CheckpointRequest;
use taskwire_proto::registry::InstanceMessage;

/// Body sizes: a small control message, a typical checkpoint, a large one.
const SIZES: [(&str, usize); 3] = [("128B", 128), ("2KiB", 2048), ("64KiB", 64 * 1024)];

fn message(size: usize) -> CheckpointRequest {
    let mut message = CheckpointRequest {
        instance_id: "order-7".into(),
        checkpoint_id: "cp-000042".into(),
        sequence: 42,
        state: Bytes::new(),
    };
    let overhead = message.encoded_len() + 4;
    message.state = Bytes::from(vec![0xA5; size.saturating_sub(overhead)]);
    message
}

/// A read buffer holding `frames`, in the state a connection's buffer is in after its first
/// frame: already shared, so splitting a frame off it costs no allocation. (A fresh
/// `BytesMut` allocates once on its first split; a connection pays that once per buffer,
/// not per frame.)
fn steady_state_buffer(frames: &BytesMut) -> BytesMut {
    let mut buffer = BytesMut::with_capacity(frames.len() + 1);
    buffer.extend_from_slice(frames);
    buffer.extend_from_slice(&[0]);
    drop(buffer.split_off(frames.len()));
    buffer
}

fn codecs() -> Builder {
    *Builder::new().first_frame_done(true)
}

/// Frames per measured iteration: decoding runs over a buffer holding this many, as a
/// connection's read buffer does, so per-iteration harness costs are spread thin.
const BATCH: usize = 64;

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (label, size) in SIZES {
        let msg = message(size);
        let body = Bytes::from(msg.encode_to_vec());
        group.throughput(Throughput::Bytes((body.len() * BATCH) as u64));

        let mut framed = BytesMut::new();
        let mut encoder = codecs().new_binary_message_codec::<InstanceMessage>();
        for _ in 0..BATCH {
            encoder
                .encode(Frame::new(InstanceMessage::from(msg.clone())), &mut framed)
                .unwrap();
        }
        let mut codec = codecs().new_binary_message_codec::<InstanceMessage>();
        group.bench_function(BenchmarkId::new("framed-binary", label), |b| {
            b.iter_batched(
                || steady_state_buffer(&framed),
                |mut src| {
                    while let Some(frame) = codec.decode(&mut src).unwrap() {
                        std::hint::black_box(frame);
                    }
                    // Returned, so the buffer is freed outside the measurement, as a
                    // connection's reused buffer is never freed per batch.
                    src
                },
                BatchSize::SmallInput,
            );
        });

        let mut single = codecs().new_binary_message_codec::<CheckpointRequest>();
        group.bench_function(BenchmarkId::new("framed-binary-one-type", label), |b| {
            b.iter_batched(
                || steady_state_buffer(&framed),
                |mut src| {
                    while let Some(frame) = single.decode(&mut src).unwrap() {
                        std::hint::black_box(frame);
                    }
                    src
                },
                BatchSize::SmallInput,
            );
        });

        // The same bodies, laid out one after another as the frames are, so both sides
        // read the same amount of distinct memory.
        let contiguous = Bytes::from(body.repeat(BATCH));
        group.bench_function(BenchmarkId::new("bare-prost", label), |b| {
            b.iter_batched(
                || {
                    (0..BATCH)
                        .map(|i| contiguous.slice(i * body.len()..(i + 1) * body.len()))
                        .collect::<Vec<_>>()
                },
                |bodies| {
                    for body in bodies {
                        std::hint::black_box(CheckpointRequest::decode(body).unwrap());
                    }
                },
                BatchSize::SmallInput,
            );
        });

        let mut delimited = BytesMut::new();
        for _ in 0..BATCH {
            LengthDelimitedCodec::new()
                .encode(body.clone(), &mut delimited)
                .unwrap();
        }
        let mut ldc = LengthDelimitedCodec::builder()
            .max_frame_length(16 << 20)
            .new_codec();
        group.bench_function(BenchmarkId::new("length-delimited+prost", label), |b| {
            b.iter_batched(
                || steady_state_buffer(&delimited),
                |mut src| {
                    while let Some(frame) = ldc.decode(&mut src).unwrap() {
                        std::hint::black_box(CheckpointRequest::decode(frame.freeze()).unwrap());
                    }
                    src
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (label, size) in SIZES {
        let msg = message(size);
        group.throughput(Throughput::Bytes(msg.encoded_len() as u64));
        let frame = Frame::new(InstanceMessage::from(msg.clone()));

        let mut codec = codecs().new_binary_message_codec::<InstanceMessage>();
        let mut out = BytesMut::with_capacity(size * 2);
        group.bench_function(BenchmarkId::new("framed-binary", label), |b| {
            b.iter(|| {
                out.clear();
                codec.encode(&frame, &mut out).unwrap();
            });
        });

        let mut out = BytesMut::with_capacity(size * 2);
        group.bench_function(BenchmarkId::new("bare-prost", label), |b| {
            b.iter(|| {
                out.clear();
                msg.encode(&mut out).unwrap();
            });
        });

        // The usual hand-rolled stack: encode the body, then frame it with a length.
        let mut ldc = LengthDelimitedCodec::builder()
            .max_frame_length(16 << 20)
            .new_codec();
        let mut out = BytesMut::with_capacity(size * 2);
        group.bench_function(BenchmarkId::new("length-delimited+prost", label), |b| {
            b.iter(|| {
                out.clear();
                ldc.encode(Bytes::from(msg.encode_to_vec()), &mut out)
                    .unwrap();
            });
        });
    }
    group.finish();
}

fn json_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("json-decode");
    for (label, size) in SIZES {
        let msg = message(size);
        let body = serde_json::to_vec(&msg).unwrap();
        group.throughput(Throughput::Bytes((body.len() * BATCH) as u64));

        let mut framed = BytesMut::new();
        let mut encoder = codecs().new_json_codec::<InstanceMessage>();
        for _ in 0..BATCH {
            encoder
                .encode(Frame::new(InstanceMessage::from(msg.clone())), &mut framed)
                .unwrap();
        }
        let mut codec = codecs().new_json_codec::<InstanceMessage>();
        group.bench_function(BenchmarkId::new("framed-json", label), |b| {
            b.iter_batched(
                || steady_state_buffer(&framed),
                |mut src| {
                    while let Some(frame) = codec.decode(&mut src).unwrap() {
                        std::hint::black_box(frame);
                    }
                    // Returned, so the buffer is freed outside the measurement, as a
                    // connection's reused buffer is never freed per batch.
                    src
                },
                BatchSize::SmallInput,
            );
        });

        group.bench_function(BenchmarkId::new("bare-serde-json", label), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    std::hint::black_box(
                        serde_json::from_slice::<CheckpointRequest>(&body).unwrap(),
                    );
                }
            });
        });
    }
    group.finish();
}

fn json_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("json-encode");
    for (label, size) in SIZES {
        let msg = message(size);
        group.throughput(Throughput::Bytes(
            serde_json::to_vec(&msg).unwrap().len() as u64
        ));
        let frame = Frame::new(InstanceMessage::from(msg.clone()));

        let mut codec = codecs().new_json_codec::<InstanceMessage>();
        let mut out = BytesMut::with_capacity(size * 2);
        group.bench_function(BenchmarkId::new("framed-json", label), |b| {
            b.iter(|| {
                out.clear();
                codec.encode(&frame, &mut out).unwrap();
            });
        });

        let mut out = Vec::with_capacity(size * 2);
        group.bench_function(BenchmarkId::new("bare-serde-json", label), |b| {
            b.iter(|| {
                out.clear();
                serde_json::to_writer(&mut out, &msg).unwrap();
            });
        });
    }
    group.finish();
}

criterion_group!(benches, decode, encode, json_decode, json_encode);
criterion_main!(benches);
