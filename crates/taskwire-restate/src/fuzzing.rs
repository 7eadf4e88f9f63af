//! The properties the `restate_frames` fuzz target checks, shared with the tests that
//! replay its corpus.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use taskwire_codec::Builder;
use taskwire_codec::tokio_util::codec::Decoder as _;

use crate::codec::{Frame, RestateCodec};
use crate::{Context, Endpoint, HandlerResult, Json, ObjectContext, Service, VirtualObject};

/// The frame limit the fuzzer decodes with, 512 KiB, as taskwire's codec targets: run
/// with `-malloc_limit_mb=1`, any allocation sized by a declared length rather than by
/// the bytes received is a crash.
pub const FUZZ_MAX_FRAME_LENGTH: u32 = 512 * 1024;

/// Decodes `data` as a stream of frames and checks what every input must keep: no panic,
/// and every message that decodes re-encodes to a body that decodes to the same message.
/// Returns the frames read before the stream ended or broke.
pub fn check_frames(data: &[u8]) -> Vec<Frame> {
    let mut codec =
        RestateCodec::from_builder(Builder::new().max_frame_length(FUZZ_MAX_FRAME_LENGTH));
    let mut buffer = BytesMut::from(data);
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = codec.decode_eof(&mut buffer) {
        if let Ok(message) = frame.decode(usize::MAX) {
            let again = Frame::new(&message);
            assert_eq!(again.message_type, frame.message_type);
            let decoded = again
                .decode(usize::MAX)
                .expect("a re-encoded message decodes");
            assert_eq!(
                decoded, message,
                "the message changed through encode and decode"
            );
        }
        frames.push(frame);
    }
    frames
}

fn endpoint() -> &'static Endpoint {
    static ENDPOINT: OnceLock<Endpoint> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        Endpoint::builder()
            .bind(Service::new("Greeter").handler(
                "greet",
                |ctx: Context, Json(name): Json<String>| async move {
                    let Json(stamp): Json<String> = ctx
                        .run("stamp", || async { Ok(Json("ok".to_owned())) })
                        .await?;
                    ctx.sleep(Duration::from_millis(1)).await?;
                    let (_, woken) = ctx.awakeable::<Json<String>>();
                    let _ = woken.await;
                    HandlerResult::Ok(Json(format!("{name}:{stamp}")))
                },
            ))
            .bind(VirtualObject::new("Counter").exclusive(
                "add",
                |ctx: ObjectContext, Json(delta): Json<i64>| async move {
                    let count = ctx.get::<Json<i64>>("count").await?.map_or(0, |Json(n)| n) + delta;
                    ctx.set("count", &Json(count))?;
                    let _ = ctx.state_keys().await?;
                    HandlerResult::Ok(Json(count))
                },
            ))
            .build()
            .expect("a valid endpoint")
    })
}

/// Runs the frames of `data` as an invocation of a greeter (steps, a timer, an
/// awakeable) or, if the first byte is odd, a counter (state), and checks that nothing
/// panics and the attempt ends with exactly one of End, Suspension or Error (none if no
/// Start could be read).
pub fn check_invocation(data: &[u8]) {
    let (target, data) = match data.split_first() {
        Some((first, rest)) if first % 2 == 1 => (("Counter", "add"), rest),
        Some((_, rest)) => (("Greeter", "greet"), rest),
        None => (("Greeter", "greet"), data),
    };
    let frames = check_frames(data);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let answer = runtime
        .block_on(crate::testing::invoke(
            endpoint(),
            target.0,
            target.1,
            frames,
        ))
        .expect("the handler exists");
    let terminators = answer
        .iter()
        .filter(|f| {
            matches!(
                f.message_type,
                crate::MessageType::End
                    | crate::MessageType::Suspension
                    | crate::MessageType::Error
            )
        })
        .count();
    if answer.is_empty() {
        return;
    }
    assert_eq!(terminators, 1, "an attempt ends exactly once");
}
