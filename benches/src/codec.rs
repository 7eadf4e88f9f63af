//! The codec workloads: each taskwire operation and each peer's, on the same message at
//! three sizes, as functions that time a number of iterations. The criterion bench
//! (`benches/codec.rs`) and the interleaved ratio bench (`benches/codec_ratios.rs`) run the
//! same code, so their figures describe the same work.
//!
//! Decoding runs over a buffer holding [`BATCH`] frames, as a connection's read buffer
//! does. Every decode iteration, taskwire's and each peer's alike, starts from a fresh copy
//! of its input made outside the measurement and frees it outside the measurement, so both
//! sides read the same amount of memory in the same cache state.
//!
//! Encoding writes [`BATCH`] messages back to back into one reused output buffer, cleared
//! before each batch, as a connection's write buffer collects frames. The frames then land
//! at every offset within a memory page, for taskwire and each peer alike. With one message
//! per buffer, where the allocator happened to put each side's buffer decided the result: a
//! 128 B frame written across a 4 KiB page boundary takes about 1.5 times as long, and the
//! same code measured 30 ns in one comparison and 48 ns in another of the same run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use taskwire_codec::tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};
use taskwire_codec::{Builder, Frame};
use taskwire_proto::instance::v1::CheckpointRequest;
use taskwire_proto::registry::InstanceMessage;

/// Body sizes: a small control message, a typical checkpoint, a large one.
pub const SIZES: [(&str, usize); 3] = [("128B", 128), ("2KiB", 2048), ("64KiB", 64 * 1024)];

/// Frames per decode iteration, and messages per encode iteration.
pub const BATCH: usize = 64;

/// Times `iters` iterations and returns the total measured time.
pub type Run = Box<dyn FnMut(u64) -> Duration>;

/// One benchmark: a group (`decode`, `encode`, `json-decode`, `json-encode`), the function
/// id of taskwire or a peer, and the size label.
pub struct Workload {
    /// The criterion group.
    pub group: &'static str,
    /// Whose code runs: `framed-binary`, `bare-prost`, ...
    pub id: &'static str,
    /// The size label from [`SIZES`].
    pub size: &'static str,
    /// Bytes of message processed per iteration, for throughput.
    pub bytes: u64,
    /// Runs the workload.
    pub run: Run,
}

/// A `CheckpointRequest` of two short strings, a sequence number and a `bytes` state field
/// that fills its encoding to about `size` bytes.
pub fn message(size: usize) -> CheckpointRequest {
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

fn codecs() -> Builder {
    *Builder::new().first_frame_done(true)
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.group, self.id, self.size)
    }
}

/// Every workload at every size.
pub fn workloads() -> Vec<Workload> {
    let mut all = Vec::new();
    for (size, bytes) in SIZES {
        all.extend(decode(size, bytes));
        all.extend(encode(size, bytes));
        all.extend(json_decode(size, bytes));
        all.extend(json_encode(size, bytes));
    }
    all
}

/// The workload `group`/`id` at `size`, if there is one.
pub fn workload(group: &str, id: &str, size: &str) -> Option<Workload> {
    workloads()
        .into_iter()
        .find(|w| w.group == group && w.id == id && w.size == size)
}

/// The workloads of one group at one size.
fn group(
    name: &'static str,
    size: &'static str,
    bytes: u64,
    runs: Vec<(&'static str, Run)>,
) -> Vec<Workload> {
    runs.into_iter()
        .map(|(id, run)| Workload {
            group: name,
            id,
            size,
            bytes,
            run,
        })
        .collect()
}

/// Runs `routine` on `iters` inputs from `setup`, timing only `routine`; each input is
/// dropped after its clock stops, as a connection's buffer outlives any one batch.
fn timed_inputs<S>(
    iters: u64,
    mut setup: impl FnMut() -> S,
    mut routine: impl FnMut(&mut S),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut input = setup();
        let start = Instant::now();
        measured(|| routine(&mut input));
        total += start.elapsed();
        drop(input);
    }
    total
}

fn timed(iters: u64, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    measured(|| {
        for _ in 0..iters {
            op();
        }
    });
    start.elapsed()
}

/// The measured code, in a function of its own so that a profiler can count it alone:
/// `valgrind --tool=callgrind --toggle-collect='*codec::measured*'`.
#[inline(never)]
fn measured(work: impl FnOnce()) {
    work();
}

/// A fresh buffer holding `frames`, in the state a connection's read buffer is in after
/// its first frame: already shared, so splitting a frame off it costs no allocation. (A
/// fresh `BytesMut` allocates once on its first split; a connection pays that once per
/// buffer, not per frame.)
fn steady_state_buffer(frames: &[u8]) -> BytesMut {
    let mut buffer = BytesMut::with_capacity(frames.len() + 1);
    buffer.extend_from_slice(frames);
    buffer.extend_from_slice(&[0]);
    drop(buffer.split_off(frames.len()));
    buffer
}

/// Decodes the whole batch `frames` with `codec` per iteration, from a fresh copy.
fn decode_batches<D>(frames: Bytes, mut codec: D) -> Run
where
    D: Decoder + 'static,
    D::Error: std::fmt::Debug,
{
    Box::new(move |iters| {
        timed_inputs(
            iters,
            || steady_state_buffer(&frames),
            |src| {
                let mut decoded = 0;
                while let Some(frame) = codec.decode(src).expect("decodes") {
                    black_box(frame);
                    decoded += 1;
                }
                check_batch(decoded);
            },
        )
    })
}

/// Asserts a decode iteration saw the whole batch: a benchmark that silently decodes less
/// would report a false speed.
fn check_batch(decoded: usize) {
    assert_eq!(
        decoded, BATCH,
        "a decode iteration decoded {decoded} frames"
    );
}

fn decode(size: &'static str, bytes: usize) -> Vec<Workload> {
    let msg = message(bytes);
    let body = msg.encode_to_vec();
    let throughput = (body.len() * BATCH) as u64;
    let mut framed = BytesMut::new();
    let mut encoder = codecs().new_binary_message_codec::<InstanceMessage>();
    for _ in 0..BATCH {
        encoder
            .encode(Frame::new(InstanceMessage::from(msg.clone())), &mut framed)
            .expect("encodes");
    }
    let framed = framed.freeze();
    let mut delimited = BytesMut::new();
    for _ in 0..BATCH {
        LengthDelimitedCodec::new()
            .encode(Bytes::from(body.clone()), &mut delimited)
            .expect("encodes");
    }
    let delimited = delimited.freeze();
    // The bodies laid out one after another, as the frames are.
    let contiguous = body.repeat(BATCH);
    let body_len = body.len();

    let framed_binary = decode_batches(
        framed.clone(),
        codecs().new_binary_message_codec::<InstanceMessage>(),
    );
    let one_type = decode_batches(
        framed,
        codecs().new_binary_message_codec::<CheckpointRequest>(),
    );

    let bare_prost: Run = Box::new(move |iters| {
        timed_inputs(
            iters,
            || {
                let copy = Bytes::copy_from_slice(&contiguous);
                let bodies: Vec<Bytes> = (0..BATCH)
                    .map(|i| copy.slice(i * body_len..(i + 1) * body_len))
                    .collect();
                (copy, bodies)
            },
            |(_, bodies)| {
                let mut decoded = 0;
                for body in bodies.drain(..) {
                    black_box(CheckpointRequest::decode(body).expect("decodes"));
                    decoded += 1;
                }
                check_batch(decoded);
            },
        )
    });

    let mut ldc = LengthDelimitedCodec::builder()
        .max_frame_length(16 << 20)
        .new_codec();
    let length_delimited: Run = Box::new(move |iters| {
        timed_inputs(
            iters,
            || steady_state_buffer(&delimited),
            |src| {
                let mut decoded = 0;
                while let Some(frame) = ldc.decode(src).expect("splits") {
                    black_box(CheckpointRequest::decode(frame.freeze()).expect("decodes"));
                    decoded += 1;
                }
                check_batch(decoded);
            },
        )
    });

    group(
        "decode",
        size,
        throughput,
        vec![
            ("framed-binary", framed_binary),
            ("framed-binary-one-type", one_type),
            ("bare-prost", bare_prost),
            ("length-delimited+prost", length_delimited),
        ],
    )
}

/// A run that encodes [`BATCH`] messages per iteration into one reused output buffer,
/// cleared before each batch; `encode` appends one message. The buffer holds a batch of
/// messages of up to `message_room` bytes each without growing.
fn encode_batches(message_room: usize, mut encode: impl FnMut(&mut BytesMut) + 'static) -> Run {
    let mut out = BytesMut::with_capacity(message_room * BATCH);
    Box::new(move |iters| {
        timed(iters, || {
            out.clear();
            for _ in 0..BATCH {
                encode(&mut out);
            }
            black_box(&out);
        })
    })
}

fn encode(size: &'static str, bytes: usize) -> Vec<Workload> {
    let msg = message(bytes);
    let throughput = (msg.encoded_len() * BATCH) as u64;

    let frame = Frame::new(InstanceMessage::from(msg.clone()));
    let mut codec = codecs().new_binary_message_codec::<InstanceMessage>();
    let framed_binary = encode_batches(bytes * 2, move |out| {
        codec.encode(&frame, out).expect("encodes");
    });

    // One message type, as the RPC layer encodes each request and response.
    let single = Frame::new(msg.clone());
    let mut codec = codecs().new_binary_message_codec::<CheckpointRequest>();
    let one_type = encode_batches(bytes * 2, move |out| {
        codec.encode(&single, out).expect("encodes");
    });

    let bare = msg.clone();
    let bare_prost = encode_batches(bytes * 2, move |out| {
        bare.encode(out).expect("encodes");
    });

    // The usual hand-rolled stack: encode the body, then frame it with a length.
    let mut ldc = LengthDelimitedCodec::builder()
        .max_frame_length(16 << 20)
        .new_codec();
    let length_delimited = encode_batches(bytes * 2, move |out| {
        ldc.encode(Bytes::from(msg.encode_to_vec()), out)
            .expect("encodes");
    });

    group(
        "encode",
        size,
        throughput,
        vec![
            ("framed-binary", framed_binary),
            ("framed-binary-one-type", one_type),
            ("bare-prost", bare_prost),
            ("length-delimited+prost", length_delimited),
        ],
    )
}

fn json_decode(size: &'static str, bytes: usize) -> Vec<Workload> {
    let msg = message(bytes);
    let body = serde_json::to_vec(&msg).expect("serializes");
    let throughput = (body.len() * BATCH) as u64;
    let mut framed = BytesMut::new();
    let mut encoder = codecs().new_json_codec::<InstanceMessage>();
    for _ in 0..BATCH {
        encoder
            .encode(Frame::new(InstanceMessage::from(msg.clone())), &mut framed)
            .expect("encodes");
    }
    let framed = framed.freeze();
    let framed_json = decode_batches(framed.clone(), codecs().new_json_codec::<InstanceMessage>());
    // Into one message type: the envelope's cost without the enum's dispatch.
    let one_type = decode_batches(framed, codecs().new_json_codec::<CheckpointRequest>());

    let contiguous = body.repeat(BATCH);
    let body_len = body.len();
    let bare_serde_json: Run = Box::new(move |iters| {
        timed_inputs(
            iters,
            || contiguous.clone(),
            |texts| {
                let mut decoded = 0;
                for text in texts.chunks_exact(body_len) {
                    black_box(
                        serde_json::from_slice::<CheckpointRequest>(text).expect("deserializes"),
                    );
                    decoded += 1;
                }
                check_batch(decoded);
            },
        )
    });

    group(
        "json-decode",
        size,
        throughput,
        vec![
            ("framed-json", framed_json),
            ("framed-json-one-type", one_type),
            ("bare-serde-json", bare_serde_json),
        ],
    )
}

fn json_encode(size: &'static str, bytes: usize) -> Vec<Workload> {
    let msg = message(bytes);
    let throughput = (serde_json::to_vec(&msg).expect("serializes").len() * BATCH) as u64;

    let frame = Frame::new(InstanceMessage::from(msg.clone()));
    let mut codec = codecs().new_json_codec::<InstanceMessage>();
    let framed_json = encode_batches(bytes * 2, move |out| {
        codec.encode(&frame, out).expect("encodes");
    });

    let mut out = Vec::with_capacity(bytes * 2 * BATCH);
    let bare_serde_json: Run = Box::new(move |iters| {
        timed(iters, || {
            out.clear();
            for _ in 0..BATCH {
                serde_json::to_writer(&mut out, &msg).expect("serializes");
            }
            black_box(&out);
        })
    });

    group(
        "json-encode",
        size,
        throughput,
        vec![
            ("framed-json", framed_json),
            ("bare-serde-json", bare_serde_json),
        ],
    )
}
