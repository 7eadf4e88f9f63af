//! The stateful session harness: a fuzz input read as a script of client actions against
//! one server connection (the TCP transport's session over an in-memory duplex stream,
//! serving the reference server's router), on a paused clock.
//!
//! Each action is one byte, sometimes followed by its operands:
//!
//! | byte % 8 | action |
//! |---|---|
//! | 0 | send a Hello (operand bit 0: JSON framing instead of binary, for the whole script) |
//! | 1 | send raw bytes: a length byte, then that many bytes of the script |
//! | 2 | start a unary call: stream byte, request byte (one of [`REQUESTS`]) |
//! | 3 | cancel a call: stream byte |
//! | 4 | open an image upload (client stream): stream byte |
//! | 5 | send an upload chunk: stream byte, flags byte (bit 0: last) |
//! | 6 | let time pass: tens of milliseconds, one byte |
//! | 7 | close the client side and stop |
//!
//! The property: whatever the script, nothing panics, and once the client is gone the
//! server's connection task ends within [`END_WITHIN`] of (virtual) time, having held no
//! more than its limits allow (libFuzzer's `-rss_limit_mb` checks the memory).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use taskwire_codec::tokio_util::codec::Encoder;
use taskwire_codec::{Builder, Frame};
use taskwire_proto::environment::v1::ImageUpload;
use taskwire_proto::environment::v1::image_upload::{ImageManifest, Part};
use taskwire_proto::instance::v1::{
    CheckpointRequest, GetInstanceStatusRequest, RegisterInstanceRequest,
};
use taskwire_proto::management::v1::HealthRequest;
use taskwire_proto::registry::AnyMessage;
use taskwire_proto::runner::v1::{CancelRequest, ExecutionRequest};
use taskwire_proto::session::v1::{CancelCall, Codec};
use taskwire_reference::{ReferenceConfig, ReferenceServer, TenantSource};
use taskwire_rpc::session::ClientSession;
use taskwire_tcp::TcpServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long, in virtual time, the server may take to end the connection once the client
/// is gone.
pub const END_WITHIN: Duration = Duration::from_secs(120);

/// The requests a script can send, by its request byte modulo their number.
pub const REQUESTS: usize = 7;

fn request(choice: u8) -> AnyMessage {
    use taskwire_proto::registry::{InstanceMessage, ManagementMessage, RunnerMessage};
    match usize::from(choice) % REQUESTS {
        0 => ManagementMessage::from(HealthRequest {}).into(),
        1 => InstanceMessage::from(RegisterInstanceRequest {
            instance_id: "i".into(),
            image_id: "img".into(),
            ..Default::default()
        })
        .into(),
        2 => InstanceMessage::from(CheckpointRequest {
            instance_id: "i".into(),
            checkpoint_id: format!("c{choice}"),
            sequence: u64::from(choice),
            state: Bytes::from_static(b"state"),
        })
        .into(),
        3 => InstanceMessage::from(GetInstanceStatusRequest {
            instance_id: "i".into(),
        })
        .into(),
        4 => {
            let mut params = taskwire_proto::wkt::Struct::default();
            params.fields.insert(
                "seconds".into(),
                taskwire_proto::wkt::Value {
                    kind: Some(taskwire_proto::wkt::value::Kind::NumberValue(
                        f64::from(choice) / 100.0,
                    )),
                },
            );
            RunnerMessage::from(ExecutionRequest {
                job_id: "j".into(),
                function_name: "sleep".into(),
                params: Some(params),
                ..Default::default()
            })
            .into()
        }
        5 => RunnerMessage::from(CancelRequest {
            job_id: "j".into(),
            ..Default::default()
        })
        .into(),
        _ => InstanceMessage::from(taskwire_proto::instance::v1::PollSignalsRequest {
            instance_id: "i".into(),
            max_signals: 0,
            wait: Some(Duration::from_millis(u64::from(choice) * 10).into()),
        })
        .into(),
    }
}

/// Encodes frames in the script's framing.
struct Wire {
    json: bool,
}

impl Wire {
    fn frame(&self, message: AnyMessage, stream: u32, end: bool) -> BytesMut {
        let mut frame = Frame::new(message).with_stream_id(stream);
        if end {
            frame = frame.end_stream();
        }
        let mut out = BytesMut::new();
        let mut builder = Builder::new();
        builder.first_frame_done(true);
        // Scripts build only small frames from defaults, so encoding cannot fail; a
        // failure would be a bug worth the panic.
        if self.json {
            builder
                .new_any_json_codec()
                .encode(&frame, &mut out)
                .expect("JSON encodes");
        } else {
            builder
                .new_binary_message_codec::<AnyMessage>()
                .encode(&frame, &mut out)
                .expect("binary encodes");
        }
        out
    }
}

/// What one script did to the server.
#[derive(Debug)]
pub struct Outcome {
    /// Bytes the server sent back.
    pub server_bytes: usize,
    /// How the server's connection ended: `Ok` for a clean close, else its reason.
    pub ended: Result<(), String>,
}

/// Runs one script. Panics (the fuzzer's finding) if the server panics or does not end
/// the connection within [`END_WITHIN`] of the client going away.
pub fn run(script: &[u8]) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(drive(script))
}

async fn drive(mut script: &[u8]) -> Outcome {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let reference = ReferenceServer::new(
        ReferenceConfig::default()
            .tenants(TenantSource::ClaimedInHello)
            .max_image_bytes(1024),
    );
    let peer: SocketAddr = "127.0.0.1:9".parse().expect("a literal address");
    let config =
        TcpServerConfig::plaintext_loopback("127.0.0.1:0".parse().expect("a literal address"));
    let served = tokio::spawn(taskwire_tcp::serve_stream(
        server,
        peer,
        None,
        &config,
        Arc::new(reference.router()),
    ));
    let (mut reader, mut writer) = tokio::io::split(client);
    // The server's output is read and dropped, so it never blocks on a full pipe.
    let drained = tokio::spawn(async move {
        let mut buffer = vec![0u8; 16 * 1024];
        let mut total = 0;
        while let Ok(n) = reader.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let mut wire = Wire { json: false };
    let next = |script: &mut &[u8]| -> u8 {
        let (&byte, rest) = script.split_first().unwrap_or((&0, &[]));
        *script = rest;
        byte
    };
    while !script.is_empty() {
        let op = next(&mut script);
        let bytes: BytesMut = match op % 8 {
            0 => {
                wire.json = next(&mut script) & 1 == 1;
                let codec = if wire.json {
                    Codec::Json
                } else {
                    Codec::Protobuf
                };
                let hello = ClientSession::default().hello(codec);
                wire.frame(
                    taskwire_proto::registry::SessionMessage::from(hello).into(),
                    0,
                    false,
                )
            }
            1 => {
                let len = usize::from(next(&mut script)).min(script.len());
                let (raw, rest) = script.split_at(len);
                script = rest;
                BytesMut::from(raw)
            }
            2 => {
                let stream = u32::from(next(&mut script));
                let choice = next(&mut script);
                wire.frame(request(choice), stream, true)
            }
            3 => {
                let stream = u64::from(next(&mut script));
                let cancel = CancelCall {
                    request_id: stream,
                    reason: "script".into(),
                };
                wire.frame(
                    taskwire_proto::registry::SessionMessage::from(cancel).into(),
                    0,
                    false,
                )
            }
            4 => {
                let stream = u32::from(next(&mut script));
                let manifest = ImageUpload {
                    part: Some(Part::Manifest(ImageManifest {
                        name: "fuzz".into(),
                        size_bytes: 16,
                        sha256: Bytes::from_static(&[0; 32]),
                        ..Default::default()
                    })),
                };
                wire.frame(
                    taskwire_proto::registry::EnvironmentMessage::from(manifest).into(),
                    stream,
                    false,
                )
            }
            5 => {
                let stream = u32::from(next(&mut script));
                let last = next(&mut script) & 1 == 1;
                let chunk = ImageUpload {
                    part: Some(Part::Chunk(Bytes::from_static(b"0123"))),
                };
                wire.frame(
                    taskwire_proto::registry::EnvironmentMessage::from(chunk).into(),
                    stream,
                    last,
                )
            }
            6 => {
                tokio::time::sleep(Duration::from_millis(u64::from(next(&mut script)) * 10)).await;
                continue;
            }
            _ => break,
        };
        if writer.write_all(&bytes).await.is_err() {
            break;
        }
    }
    // The end of the client's byte stream, as a closed socket would show it.
    let _ = writer.shutdown().await;
    drop(writer);
    let ended = match tokio::time::timeout(END_WITHIN, served).await {
        Ok(Ok(ended)) => ended,
        Ok(Err(join)) => std::panic::resume_unwind(join.into_panic()),
        Err(_) => {
            panic!("the server kept the connection {END_WITHIN:?} after the client went away")
        }
    };
    let server_bytes = drained.await.unwrap_or(0);
    Outcome {
        server_bytes,
        ended,
    }
}
