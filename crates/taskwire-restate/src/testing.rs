//! Running a handler without a server: one invocation attempt from the bytes Restate would
//! send, to the bytes the endpoint answers. For unit tests of handlers against a chosen
//! journal, and for fuzzing the state machine.
//!
//! The whole input is given up front, as in request/response mode: an invocation that
//! needs a result the input does not hold suspends.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use taskwire_restate::protocol::{InputCommandMessage, StartMessage, Value};
//! use taskwire_restate::{Context, Endpoint, Frame, HandlerResult, Json, Message, MessageType, Service};
//!
//! async fn greet(_ctx: Context, Json(name): Json<String>) -> HandlerResult<Json<String>> {
//!     Ok(Json(format!("Hello, {name}!")))
//! }
//! let endpoint = Endpoint::builder().bind(Service::new("Greeter").handler("greet", greet)).build()?;
//! let input = vec![
//!     Frame::new(&Message::Start(StartMessage { known_entries: 1, ..Default::default() })),
//!     Frame::new(&Message::InputCommand(InputCommandMessage {
//!         value: Some(Value { content: br#""Ada""#.to_vec().into() }),
//!         ..Default::default()
//!     })),
//! ];
//! let answer = taskwire_restate::testing::invoke(&endpoint, "Greeter", "greet", input).await?;
//! let types: Vec<MessageType> = answer.iter().map(|f| f.message_type).collect();
//! assert_eq!(types, [MessageType::OutputCommand, MessageType::End]);
//! # Ok(()) }
//! ```

use bytes::{Bytes, BytesMut};
use taskwire_codec::tokio_util::codec::{Decoder as _, Encoder as _};
use taskwire_codec::{Builder, CodecError, DEFAULT_MAX_DECODED_SIZE};
use tokio::sync::mpsc;

use crate::codec::{Frame, RestateCodec};
use crate::{Endpoint, invocation};

/// Runs one attempt of `service`/`handler` on `input` (`Start`, the stored journal, and
/// any results), returning what the endpoint sends. `Err` names an unknown handler.
pub async fn invoke(
    endpoint: &Endpoint,
    service: &str,
    handler: &str,
    input: Vec<Frame>,
) -> Result<Vec<Frame>, String> {
    let (_, definition) = endpoint
        .handler(service, handler)
        .ok_or_else(|| format!("no handler {service}/{handler}"))?;
    let (output, mut answers) = mpsc::unbounded_channel();
    let input = futures::stream::iter(input.into_iter().map(Ok::<Frame, CodecError>));
    invocation::run(definition, DEFAULT_MAX_DECODED_SIZE, input, output).await;
    let mut frames = Vec::new();
    while let Ok(frame) = answers.try_recv() {
        frames.push(frame);
    }
    Ok(frames)
}

/// [`invoke`] on a request body's bytes, answering the response body's bytes. Input that
/// does not decode ends the input where it breaks, as a broken stream would.
pub async fn invoke_bytes(
    endpoint: &Endpoint,
    service: &str,
    handler: &str,
    body: &[u8],
) -> Result<Bytes, String> {
    let mut codec = RestateCodec::from_builder(&Builder::new());
    let mut buffer = BytesMut::from(body);
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = codec.decode_eof(&mut buffer) {
        frames.push(frame);
    }
    let answer = invoke(endpoint, service, handler, frames).await?;
    let mut out = BytesMut::new();
    for frame in &answer {
        codec
            .encode(frame, &mut out)
            .map_err(|e| format!("encoding the answer: {e}"))?;
    }
    Ok(out.freeze())
}
