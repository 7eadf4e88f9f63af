//! Hostile input, case by case: what the peer sees, and the heap it costs, measured with
//! dhat's counting allocator. Part one runs every invalid golden vector through the codec,
//! whole and in 1-byte chunks; part two runs session-level cases against a server
//! connection (the TCP transport's session over an in-memory stream, serving the reference
//! server). Each case states its memory bound; the measured figures are written to
//! `target/reliability/bad_input.md` for `docs/reliability.md`.
//!
//! One test function, because dhat runs one profiler per process at a time.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use taskwire_codec::tokio_util::codec::{Decoder, Encoder};
use taskwire_codec::{Builder, Frame, RawFrame};
use taskwire_conformance::vectors::{self, Framing, InvalidVector};
use taskwire_proto::instance::v1::sleep_request::Wake;
use taskwire_proto::instance::v1::{
    InstanceEventBatch, PollSignalsRequest, RegisterInstanceRequest, SignalAckRequest, SleepRequest,
};
use taskwire_proto::management::v1::HealthRequest;
use taskwire_proto::registry::AnyMessage;
use taskwire_proto::session::v1::{CancelCall, Codec, Hello, Status as StatusMessage, StatusCode};
use taskwire_proto::wkt::Timestamp;
use taskwire_proto::{Message as _, MessageSet, WireMessage};
use taskwire_reference::{ReferenceConfig, ReferenceServer, TenantSource};
use taskwire_rpc::session::ClientSession;
use taskwire_tcp::TcpServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// The heap's peak while `f` runs, above what was allocated before it (a ballast first
/// raises the heap to its high-water mark, since dhat's peak never goes down).
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let stats = dhat::HeapStats::get();
    let ballast = vec![1u8; stats.max_bytes - stats.curr_bytes];
    let before = dhat::HeapStats::get();
    let out = f();
    let after = dhat::HeapStats::get();
    drop(ballast);
    (out, after.max_bytes - before.curr_bytes)
}

/// One measured row of the report.
struct Row {
    case: String,
    seen: String,
    peak: usize,
    bound: usize,
}

#[test]
fn hostile_input_gets_its_typed_answer_within_a_measured_memory_bound() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let mut rows = Vec::new();
    codec_cases(&mut rows);
    session_cases(&mut rows);

    let mut report =
        String::from("| case | what the peer sees | peak heap | bound |\n|---|---|---|---|\n");
    let mut failures = Vec::new();
    for row in &rows {
        let _ = writeln!(
            report,
            "| {} | {} | {} B | {} B |",
            row.case, row.seen, row.peak, row.bound
        );
        if row.peak > row.bound {
            failures.push(format!(
                "{}: peak {} B over its bound {} B",
                row.case, row.peak, row.bound
            ));
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/reliability");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("bad_input.md"), &report);
    assert!(rows.len() >= 60, "only {} cases ran", rows.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Part one: every invalid vector through the codec, whole and in 1-byte chunks.
// ---------------------------------------------------------------------------------------

/// Decodes `bytes` fed `chunk` bytes at a time, the end of input after the last.
fn decode_chunked(vector: &InvalidVector, bytes: &[u8], chunk: usize) -> (usize, Option<String>) {
    let mut builder = Builder::new();
    if let Some(max) = vector.limits.max_frame_length {
        builder.max_frame_length(max);
    }
    if let Some(max) = vector.limits.max_first_frame_length {
        builder.max_first_frame_length(max);
    }
    if let Some(max) = vector.limits.max_decoded_size {
        builder.max_decoded_size(usize::try_from(max).unwrap());
    }
    let mut binary = builder.new_binary_message_codec::<AnyMessage>();
    let mut json = builder.new_any_json_codec();
    let mut src = BytesMut::new();
    let mut frames = 0;
    let mut decode = |src: &mut BytesMut, eof: bool| match (vector.framing, eof) {
        (Framing::Binary, false) => binary.decode(src),
        (Framing::Binary, true) => binary.decode_eof(src),
        (Framing::Json, false) => json.decode(src),
        (Framing::Json, true) => json.decode_eof(src),
    };
    for piece in bytes.chunks(chunk) {
        src.extend_from_slice(piece);
        loop {
            match decode(&mut src, false) {
                Ok(Some(_)) => frames += 1,
                Ok(None) => break,
                Err(e) => return (frames, Some(e.kind().as_str().to_owned())),
            }
        }
    }
    loop {
        match decode(&mut src, true) {
            Ok(Some(_)) => frames += 1,
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e.kind().as_str().to_owned())),
        }
    }
}

fn codec_cases(rows: &mut Vec<Row>) {
    let file = vectors::read::<InvalidVector>("invalid.json");
    for vector in &file.vectors {
        let bytes = hex::decode(&vector.hex).unwrap();
        // What the input holds, plus 64 KiB: a declared length costs nothing by itself.
        let bound = bytes.len() + 64 * 1024;
        for (how, chunk) in [("whole", usize::MAX), ("1-byte chunks", 1)] {
            let ((frames, error), peak) =
                peak_during(|| decode_chunked(vector, &bytes, chunk.min(bytes.len().max(1))));
            assert_eq!(
                (frames, error.as_deref()),
                (vector.frames_before_error, Some(vector.error.as_str())),
                "{} ({how})",
                vector.name
            );
            rows.push(Row {
                case: format!("codec: {} ({how})", vector.name),
                seen: format!("`{}` after {frames} frame(s)", vector.error),
                peak,
                bound,
            });
        }
    }

    // A million empty frames, fed as a socket delivers them (64 KiB reads): all decode,
    // and the heap does not grow with their number.
    let mut wire = BytesMut::new();
    let mut codec = *Builder::new().first_frame_done(true);
    let mut encoder = codec.new_binary_codec();
    let empty = RawFrame::encode(&Frame::new(taskwire_proto::session::v1::Ping::default()));
    for _ in 0..1_000_000 {
        encoder.encode(empty.clone(), &mut wire).unwrap();
    }
    let wire = wire.freeze();
    let (count, peak) = peak_during(|| {
        let mut decoder = codec.new_binary_message_codec::<AnyMessage>();
        let mut src = BytesMut::with_capacity(128 * 1024);
        let mut count = 0;
        for piece in wire.chunks(64 * 1024) {
            src.extend_from_slice(piece);
            while let Some(_frame) = decoder.decode(&mut src).unwrap() {
                count += 1;
            }
        }
        count
    });
    assert_eq!(count, 1_000_000);
    rows.push(Row {
        case: "codec: a million empty frames in 64 KiB reads".into(),
        seen: "1,000,000 frames decoded".into(),
        peak,
        bound: 256 * 1024,
    });

    // A length of 16 MiB declared, 10 bytes sent: about 10 bytes of cost.
    let mut header = vec![1, 0, 0, 1, 0, 0, 0, 0];
    header.extend_from_slice(&(16u32 * 1024 * 1024).to_be_bytes());
    header.extend_from_slice(&[0; 10]);
    let (pending, peak) = peak_during(|| {
        let mut decoder = codec.max_frame_length(16 * 1024 * 1024).new_binary_codec();
        let mut src = BytesMut::new();
        src.extend_from_slice(&header);
        decoder.decode(&mut src).unwrap()
    });
    assert!(pending.is_none());
    rows.push(Row {
        case: "codec: 16 MiB declared, 10 bytes sent".into(),
        seen: "waits for the rest; nothing reserved".into(),
        peak,
        bound: 1024,
    });

    // Length 0: an empty body is the message with every field at its default.
    let mut zero = BytesMut::from(&[1u8, 0, 0x03, 0x01, 0, 0, 0, 0, 0, 0, 0, 0][..]);
    let (decoded, peak) = peak_during(|| {
        codec
            .new_binary_message_codec::<AnyMessage>()
            .decode(&mut zero)
            .unwrap()
    });
    assert_eq!(
        decoded.unwrap().message.name(),
        "taskwire.management.v1.HealthResponse"
    );
    rows.push(Row {
        case: "codec: length 0".into(),
        seen: "the message with default fields".into(),
        peak,
        bound: 1024,
    });
}

// ---------------------------------------------------------------------------------------
// Part two: a server connection (TCP session over an in-memory stream).
// ---------------------------------------------------------------------------------------

/// The client end of one server connection.
struct Peer {
    reader: ReadHalf<DuplexStream>,
    writer: WriteHalf<DuplexStream>,
    decoder: taskwire_codec::BinaryCodec,
    buffer: BytesMut,
    served: tokio::task::JoinHandle<Result<(), String>>,
}

impl Peer {
    fn connect() -> Peer {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let reference =
            ReferenceServer::new(ReferenceConfig::default().tenants(TenantSource::ClaimedInHello));
        let config = TcpServerConfig::plaintext_loopback("127.0.0.1:0".parse().unwrap());
        let served = tokio::spawn(taskwire_tcp::serve_stream(
            server,
            "127.0.0.1:9".parse().unwrap(),
            None,
            &config,
            Arc::new(reference.router()),
        ));
        let (reader, writer) = tokio::io::split(client);
        Peer {
            reader,
            writer,
            decoder: Builder::new().new_binary_codec(),
            buffer: BytesMut::new(),
            served,
        }
    }

    async fn hello(&mut self) {
        let hello = ClientSession::default().hello(Codec::Protobuf);
        self.send_message(hello, 0, false).await;
        let negotiated = self.next().await.expect("an answer to the Hello");
        assert_eq!(
            negotiated.type_id,
            taskwire_proto::session::v1::Negotiated::TYPE_ID
        );
    }

    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.writer.write_all(bytes).await;
    }

    async fn send_message<M: WireMessage>(&mut self, message: M, stream: u32, end: bool) {
        let mut out = BytesMut::new();
        let mut frame = Frame::new(message).with_stream_id(stream);
        if end {
            frame = frame.end_stream();
        }
        Builder::new()
            .first_frame_done(true)
            .new_binary_codec()
            .encode(&frame, &mut out)
            .unwrap();
        self.send(&out).await;
    }

    /// The next frame from the server; `None` when it closed the connection.
    async fn next(&mut self) -> Option<RawFrame> {
        loop {
            if let Ok(Some(frame)) = self.decoder.decode(&mut self.buffer) {
                return Some(frame);
            }
            match tokio::time::timeout(
                Duration::from_secs(60),
                self.reader.read_buf(&mut self.buffer),
            )
            .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(_)) => {}
                Err(_) => panic!("the server neither answered nor closed within 60 s"),
            }
        }
    }

    /// The status answering `stream`, skipping other frames.
    async fn status_of(&mut self, stream: u32) -> Option<StatusMessage> {
        loop {
            let frame = self.next().await?;
            if frame.stream_id == stream && frame.type_id == StatusMessage::TYPE_ID {
                return StatusMessage::decode(frame.body).ok();
            }
        }
    }

    /// Waits until the server ends the connection; its reason.
    async fn closed(mut self) -> String {
        while self.next().await.is_some() {}
        match self.served.await.unwrap() {
            Ok(()) => "closed".into(),
            Err(reason) => reason,
        }
    }
}

fn code_name(status: &StatusMessage) -> &'static str {
    StatusCode::try_from(status.code).map_or("?", |c| c.as_str_name())
}

/// Runs one session case on a fresh paused-clock runtime, measuring its heap.
fn session_case(rows: &mut Vec<Row>, case: &str, bound: usize, run: impl AsyncFnOnce() -> String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let (seen, peak) = peak_during(|| runtime.block_on(run()));
    drop(runtime);
    rows.push(Row {
        case: format!("session: {case}"),
        seen,
        peak,
        bound,
    });
}

fn frame_bytes<M: WireMessage>(message: M, stream: u32, flags: u8) -> Vec<u8> {
    let mut out = BytesMut::new();
    Builder::new()
        .first_frame_done(true)
        .new_binary_codec()
        .encode(
            &Frame::new(message).with_stream_id(stream).end_stream(),
            &mut out,
        )
        .unwrap();
    out[1] = flags;
    out.to_vec()
}

/// What a whole connection costs the server: its buffers and one reference store.
const CONNECTION_BOUND: usize = 512 * 1024;

fn session_cases(rows: &mut Vec<Row>) {
    session_case(
        rows,
        "a Hello over the 64 KiB first-frame limit",
        CONNECTION_BOUND,
        async || {
            let mut peer = Peer::connect();
            let mut header = frame_bytes(Hello::default(), 0, 0);
            header[8..12].copy_from_slice(&(64u32 * 1024 + 1).to_be_bytes());
            peer.send(&header[..12]).await;
            let reason = peer.closed().await;
            assert!(reason.contains("exceeds the limit of 65536"), "{reason}");
            "connection closed: frame_too_large".into()
        },
    );
    session_case(
        rows,
        "a Hello never sent (slowloris: 3 bytes, then silence)",
        CONNECTION_BOUND,
        async || {
            let mut peer = Peer::connect();
            peer.send(&[1, 0, 0]).await;
            let reason = peer.closed().await;
            assert!(reason.contains("no Hello before the deadline"), "{reason}");
            "connection closed at the 10 s Hello deadline".into()
        },
    );
    session_case(
        rows,
        "a call before the Hello",
        CONNECTION_BOUND,
        async || {
            let mut peer = Peer::connect();
            peer.send_message(HealthRequest {}, 1, true).await;
            let reason = peer.closed().await;
            assert!(reason.contains("must be a Hello"), "{reason}");
            "connection closed: the first frame must be a Hello".into()
        },
    );
    session_case(rows, "a second Hello", CONNECTION_BOUND, async || {
        let mut peer = Peer::connect();
        peer.hello().await;
        peer.send_message(ClientSession::default().hello(Codec::Protobuf), 0, false)
            .await;
        let reason = peer.closed().await;
        assert!(reason.contains("a second Hello"), "{reason}");
        "connection closed: not a control frame".into()
    });
    session_case(
        rows,
        "reserved flag bits on a call",
        CONNECTION_BOUND,
        async || {
            let mut peer = Peer::connect();
            peer.hello().await;
            peer.send(&frame_bytes(HealthRequest {}, 1, 0x81)).await;
            let reason = peer.closed().await;
            assert!(reason.contains("reserved flag"), "{reason}");
            "connection closed: reserved_flags".into()
        },
    );
    session_case(
        rows,
        "an unknown message type opens a call",
        CONNECTION_BOUND,
        async || {
            let mut peer = Peer::connect();
            peer.hello().await;
            let mut frame = frame_bytes(HealthRequest {}, 1, 1);
            frame[2..4].copy_from_slice(&0x7ffeu16.to_be_bytes());
            peer.send(&frame).await;
            let status = peer.status_of(1).await.expect("a status");
            assert_eq!(code_name(&status), "STATUS_CODE_UNIMPLEMENTED");
            peer.send_message(HealthRequest {}, 3, true).await;
            assert!(peer.next().await.is_some(), "the connection still serves");
            "UNIMPLEMENTED; the connection goes on".into()
        },
    );
    session_case(
        rows,
        "a request body that is not protobuf",
        CONNECTION_BOUND,
        async || {
            let mut peer = Peer::connect();
            peer.hello().await;
            let mut frame = frame_bytes(RegisterInstanceRequest::default(), 1, 1);
            frame[8..12].copy_from_slice(&2u32.to_be_bytes());
            frame.extend_from_slice(&[0x0f, 0xff]);
            peer.send(&frame).await;
            let status = peer.status_of(1).await.expect("a status");
            assert_eq!(
                code_name(&status),
                "STATUS_CODE_INVALID_ARGUMENT",
                "{}",
                status.message
            );
            "INVALID_ARGUMENT naming the message; the connection goes on".into()
        },
    );
    session_case(
        rows,
        "an invalid UTF-8 string in a request",
        CONNECTION_BOUND,
        async || {
            let mut peer = Peer::connect();
            peer.hello().await;
            let mut frame = vec![1, 1];
            frame.extend_from_slice(&RegisterInstanceRequest::TYPE_ID.to_be_bytes());
            frame.extend_from_slice(&1u32.to_be_bytes());
            frame.extend_from_slice(&4u32.to_be_bytes());
            frame.extend_from_slice(&[0x0a, 0x02, 0xff, 0xfe]);
            peer.send(&frame).await;
            let status = peer.status_of(1).await.expect("a status");
            assert_eq!(
                code_name(&status),
                "STATUS_CODE_INVALID_ARGUMENT",
                "{}",
                status.message
            );
            "INVALID_ARGUMENT".into()
        },
    );
    session_case(
        rows,
        "nesting past 100 levels in a request",
        CONNECTION_BOUND,
        async || {
            let mut peer = Peer::connect();
            peer.hello().await;
            // ExecutionRequest.params (field 5): Struct { fields: { "": Value { struct_value: ... } } }
            let mut body: Vec<u8> = Vec::new();
            for _ in 0..60 {
                let mut value = vec![0x2a];
                push_len(&mut value, &body);
                let mut entry = vec![0x12];
                push_len(&mut entry, &value);
                let mut fields = vec![0x0a];
                push_len(&mut fields, &entry);
                body = fields;
            }
            let mut request = vec![0x2a];
            push_len(&mut request, &body);
            let mut frame = vec![1, 1];
            frame.extend_from_slice(
                &taskwire_proto::runner::v1::ExecutionRequest::TYPE_ID.to_be_bytes(),
            );
            frame.extend_from_slice(&1u32.to_be_bytes());
            frame.extend_from_slice(&u32::try_from(request.len()).unwrap().to_be_bytes());
            frame.extend_from_slice(&request);
            peer.send(&frame).await;
            let status = peer.status_of(1).await.expect("a status");
            assert_eq!(
                code_name(&status),
                "STATUS_CODE_INVALID_ARGUMENT",
                "{}",
                status.message
            );
            assert!(status.message.contains("recursion"), "{}", status.message);
            "INVALID_ARGUMENT: recursion limit".into()
        },
    );
    session_case(
        rows,
        "an unknown enum value (SignalAck outcome 99)",
        CONNECTION_BOUND,
        async || {
            let mut peer = Peer::connect();
            peer.hello().await;
            let ack = SignalAckRequest {
                instance_id: "i".into(),
                signal_id: "s".into(),
                outcome: 99,
                message: String::new(),
            };
            peer.send_message(ack, 1, true).await;
            let status = peer.status_of(1).await.expect("a status");
            assert_eq!(
                code_name(&status),
                "STATUS_CODE_INVALID_ARGUMENT",
                "{}",
                status.message
            );
            assert!(status.message.contains("99"), "{}", status.message);
            "INVALID_ARGUMENT naming 99".into()
        },
    );
    session_case(
        rows,
        "an out-of-range timestamp (Sleep until year 10000)",
        CONNECTION_BOUND,
        async || {
            let mut peer = Peer::connect();
            peer.hello().await;
            peer.send_message(
                RegisterInstanceRequest {
                    instance_id: "i".into(),
                    image_id: "img".into(),
                    ..Default::default()
                },
                1,
                true,
            )
            .await;
            peer.next().await.expect("registered");
            let sleep = SleepRequest {
                instance_id: "i".into(),
                wake: Some(Wake::WakeAt(Timestamp {
                    seconds: 253_402_300_800,
                    nanos: 0,
                })),
                checkpoint_id: String::new(),
            };
            peer.send_message(sleep, 3, true).await;
            let status = peer.status_of(3).await.expect("a status");
            assert_eq!(
                code_name(&status),
                "STATUS_CODE_INVALID_ARGUMENT",
                "{}",
                status.message
            );
            "INVALID_ARGUMENT: outside the Timestamp range".into()
        },
    );
    // The body is built as bytes, so the measured heap is the server's, not a client's
    // 56 MB of Rust structs.
    let mut amplified = vec![1, 1];
    amplified.extend_from_slice(&InstanceEventBatch::TYPE_ID.to_be_bytes());
    amplified.extend_from_slice(&1u32.to_be_bytes());
    amplified.extend_from_slice(&400_000u32.to_be_bytes());
    amplified.extend_from_slice(&[0x0a, 0x00].repeat(200_000));
    session_case(
        rows,
        "repeated-field amplification (400 KB of empty events)",
        CONNECTION_BOUND + 3 * 400_000,
        async || {
            let mut peer = Peer::connect();
            peer.hello().await;
            peer.send(&amplified).await;
            let status = peer.status_of(1).await.expect("a status");
            assert_eq!(
                code_name(&status),
                "STATUS_CODE_RESOURCE_EXHAUSTED",
                "{}",
                status.message
            );
            peer.send_message(HealthRequest {}, 3, true).await;
            assert!(peer.next().await.is_some(), "the connection still serves");
            "RESOURCE_EXHAUSTED before decoding; the connection goes on".into()
        },
    );
    session_case(
        rows,
        "16 MiB declared on a call, 10 bytes sent, then silence",
        CONNECTION_BOUND,
        async || {
            let mut peer = Peer::connect();
            peer.hello().await;
            let mut header = frame_bytes(HealthRequest {}, 1, 1);
            header[8..12].copy_from_slice(&(16u32 * 1024 * 1024).to_be_bytes());
            peer.send(&header[..12]).await;
            peer.send(&[0; 10]).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            let _ = peer.writer.shutdown().await;
            let reason = match peer.served.await.unwrap() {
                Ok(()) => "closed".to_owned(),
                Err(reason) => reason,
            };
            assert!(
                reason.contains("ended inside a frame") || reason.contains("closed"),
                "{reason}"
            );
            "nothing reserved for the declared length; truncated at close".into()
        },
    );
    session_case(
        rows,
        "calls past the 64 in flight",
        CONNECTION_BOUND * 2,
        async || {
            let mut peer = Peer::connect();
            peer.hello().await;
            peer.send_message(
                RegisterInstanceRequest {
                    instance_id: "i".into(),
                    image_id: "img".into(),
                    ..Default::default()
                },
                1,
                true,
            )
            .await;
            peer.next().await.expect("registered");
            for stream in 0..65u32 {
                let poll = PollSignalsRequest {
                    instance_id: "i".into(),
                    max_signals: 0,
                    wait: Some(Duration::from_secs(30).into()),
                };
                peer.send_message(poll, 3 + 2 * stream, true).await;
            }
            let status = peer
                .status_of(3 + 2 * 64)
                .await
                .expect("a status for the 65th");
            assert_eq!(
                code_name(&status),
                "STATUS_CODE_RESOURCE_EXHAUSTED",
                "{}",
                status.message
            );
            "RESOURCE_EXHAUSTED for the 65th; the 64 wait".into()
        },
    );
    session_case(
        rows,
        "10,000 calls opened and cancelled at once",
        CONNECTION_BOUND * 2,
        async || {
            let mut peer = Peer::connect();
            peer.hello().await;
            peer.send_message(
                RegisterInstanceRequest {
                    instance_id: "i".into(),
                    image_id: "img".into(),
                    ..Default::default()
                },
                1,
                true,
            )
            .await;
            peer.next().await.expect("registered");
            let Peer {
                mut reader,
                mut writer,
                mut decoder,
                mut buffer,
                served,
            } = peer;
            // The answers are read as they come, so the server never waits on a full pipe.
            let answers = tokio::spawn(async move {
                // (cancelled, refused past the in-flight limit, other)
                let mut counts = (0u32, 0u32, 0u32);
                loop {
                    while let Ok(Some(frame)) = decoder.decode(&mut buffer) {
                        if frame.stream_id == 1 {
                            return counts;
                        }
                        match StatusMessage::decode(frame.body).map(|status| status.code()) {
                            Ok(StatusCode::Cancelled) => counts.0 += 1,
                            Ok(StatusCode::ResourceExhausted) => counts.1 += 1,
                            _ => counts.2 += 1,
                        }
                    }
                    if matches!(reader.read_buf(&mut buffer).await, Ok(0) | Err(_)) {
                        return counts;
                    }
                }
            });
            let mut out = BytesMut::new();
            let mut codec = Builder::new().first_frame_done(true).new_binary_codec();
            for i in 0..10_000u32 {
                out.clear();
                let stream = 3 + 2 * i;
                let poll = PollSignalsRequest {
                    instance_id: "i".into(),
                    max_signals: 0,
                    wait: Some(Duration::from_secs(30).into()),
                };
                codec
                    .encode(
                        &Frame::new(poll).with_stream_id(stream).end_stream(),
                        &mut out,
                    )
                    .unwrap();
                codec
                    .encode(
                        &Frame::new(CancelCall {
                            request_id: u64::from(stream),
                            reason: String::new(),
                        }),
                        &mut out,
                    )
                    .unwrap();
                writer.write_all(&out).await.unwrap();
            }
            out.clear();
            codec
                .encode(
                    &Frame::new(HealthRequest {}).with_stream_id(1).end_stream(),
                    &mut out,
                )
                .unwrap();
            writer.write_all(&out).await.unwrap();
            let (cancelled, refused, other) = answers.await.unwrap();
            assert_eq!(
                other, 0,
                "every call is answered CANCELLED or refused at the limit"
            );
            assert_eq!(cancelled + refused, 10_000, "every call is answered");
            assert!(cancelled >= 64, "{cancelled} cancelled");
            let _ = writer.shutdown().await;
            let _ = served.await;
            format!(
                "{cancelled} answered CANCELLED, {refused} RESOURCE_EXHAUSTED past the 64 in flight; heap flat"
            )
        },
    );
    session_case(
        rows,
        "a Hello and a call sent 1 byte at a time",
        CONNECTION_BOUND,
        async || {
            let mut peer = Peer::connect();
            let mut bytes = frame_bytes(ClientSession::default().hello(Codec::Protobuf), 0, 0);
            bytes.extend(frame_bytes(HealthRequest {}, 1, 1));
            for byte in bytes {
                peer.send(&[byte]).await;
            }
            assert!(peer.next().await.is_some(), "Negotiated");
            let answer = peer.next().await.expect("the Health answer");
            assert_eq!(
                answer.type_id,
                taskwire_proto::management::v1::HealthResponse::TYPE_ID
            );
            "answered as if sent whole".into()
        },
    );
    session_case(
        rows,
        "a JSON session: nesting past 128",
        CONNECTION_BOUND,
        async || {
            let mut peer = Peer::connect();
            let hello = ClientSession::default().hello(Codec::Json);
            let mut out = BytesMut::new();
            Builder::new()
                .new_any_json_codec()
                .encode(
                    &Frame::new(AnyMessage::from(
                        taskwire_proto::registry::SessionMessage::from(hello),
                    )),
                    &mut out,
                )
                .unwrap();
            peer.send(&out).await;
            let mut text = String::from(
                r#"{"type":"taskwire.runner.v1.ExecutionRequest","stream":1,"end":true,"body":{"params":"#,
            );
            text.push_str(&r#"{"a":"#.repeat(130));
            text.push('1');
            text.push_str(&"}".repeat(130));
            text.push_str("}}");
            let mut frame = u32::try_from(text.len()).unwrap().to_be_bytes().to_vec();
            frame.extend_from_slice(text.as_bytes());
            peer.send(&frame).await;
            let mut raw = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(60), peer.reader.read_to_end(&mut raw))
                    .await;
            let reason = match peer.served.await.unwrap() {
                Ok(()) => "closed".to_owned(),
                Err(reason) => reason,
            };
            assert!(
                reason.contains("recursion") || reason.contains("json"),
                "{reason}"
            );
            "connection closed: json_syntax".into()
        },
    );
}

fn push_len(out: &mut Vec<u8>, body: &[u8]) {
    let mut len = body.len();
    while len >= 0x80 {
        out.push(u8::try_from(len & 0x7f).unwrap() | 0x80);
        len >>= 7;
    }
    out.push(u8::try_from(len).unwrap());
    out.extend_from_slice(body);
}
