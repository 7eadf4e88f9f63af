//! `taskwire decode --dialect restate`: Restate service protocol messages, bare or inside
//! one direction of a recorded HTTP/1.1 or HTTP/2 connection, one JSON line each.

use std::io::{self, Write as _};

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};
use taskwire_codec::Builder;
use taskwire_codec::tokio_util::codec::Decoder as _;
use taskwire_restate::RestateCodec;
use taskwire_restate::capture::{H2_PREFACE, read_h1, read_h2};

use crate::error::CliError;

/// What the input is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Http {
    /// A bare message stream.
    None,
    /// One direction of an HTTP/1.1 connection.
    H1,
    /// One direction of an HTTP/2 connection.
    H2,
}

impl Http {
    /// What `--http auto` makes of the input's start.
    fn sniff(input: &[u8]) -> Http {
        // A server's side of an HTTP/2 connection opens with a SETTINGS frame on stream 0.
        let settings_first = input.len() >= 9 && input[3] == 0x04 && input[5..9] == [0, 0, 0, 0];
        if input.starts_with(H2_PREFACE) || settings_first {
            return Http::H2;
        }
        let h1_starts: [&[u8]; 4] = [b"GET ", b"POST ", b"PUT ", b"HTTP/1."];
        if h1_starts.iter().any(|start| input.starts_with(start)) {
            Http::H1
        } else {
            Http::None
        }
    }
}

struct Printer {
    out: io::StdoutLock<'static>,
    pretty: bool,
}

impl Printer {
    fn line(&mut self, value: &Value) -> Result<(), CliError> {
        let mut text = if self.pretty {
            serde_json::to_vec_pretty(value)?
        } else {
            serde_json::to_vec(value)?
        };
        text.push(b'\n');
        self.out.write_all(&text).map_err(CliError::Stdout)
    }

    /// The messages of `body`, each line carrying `context`'s members too. A body that
    /// is not a message stream is printed as text.
    fn body(
        &mut self,
        body: &Bytes,
        max_frame_length: u32,
        context: &Value,
    ) -> Result<(), CliError> {
        if body.is_empty() {
            return Ok(());
        }
        let looks_like_json = matches!(body.first(), Some(b'{' | b'['));
        let mut builder = Builder::new();
        builder.max_frame_length(max_frame_length);
        let mut codec = RestateCodec::from_builder(&builder);
        let mut buffer = BytesMut::from(&body[..]);
        let mut offset = 0u64;
        if looks_like_json {
            let mut line = context.clone();
            line["body"] = json!(String::from_utf8_lossy(body));
            return self.line(&line);
        }
        loop {
            let before = buffer.len();
            let frame = match codec.decode_eof(&mut buffer) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => return Err(CliError::at_byte(offset, e)),
            };
            let length = (before - buffer.len()) as u64;
            let mut line = context.clone();
            line["offset"] = json!(offset);
            line["dialect"] = json!("restate");
            line["type"] = json!(format!("{:#06x}", frame.message_type.code()));
            line["name"] = json!(frame.message_type.name());
            line["flags"] = json!(format!("{:#06x}", frame.flags));
            line["length"] = json!(frame.body.len());
            line["message"] = match frame.decode(usize::MAX) {
                Ok(message) => message.to_json()?,
                Err(e) => json!({"undecoded": hex::encode(&frame.body), "error": e.to_string()}),
            };
            self.line(&line)?;
            offset += length;
        }
    }
}

fn at(e: taskwire_restate::capture::CaptureError) -> CliError {
    CliError::at_byte(e.offset as u64, e.message)
}

/// Decodes `input` as `http` says (or as its start shows, when `None`).
pub(crate) fn run(
    input: &[u8],
    http: Option<Http>,
    max_frame_length: u32,
    pretty: bool,
) -> Result<(), CliError> {
    let mut printer = Printer {
        out: io::stdout().lock(),
        pretty,
    };
    match http.unwrap_or_else(|| Http::sniff(input)) {
        Http::None => printer.body(&Bytes::copy_from_slice(input), max_frame_length, &json!({})),
        Http::H1 => {
            for (index, message) in read_h1(input).map_err(at)?.into_iter().enumerate() {
                printer.line(&json!({
                    "http": "1.1",
                    "http_message": index,
                    "offset": message.offset,
                    "line": message.start_line,
                    "headers": message.headers,
                }))?;
                printer.body(
                    &message.body,
                    max_frame_length,
                    &json!({"http_message": index}),
                )?;
            }
            Ok(())
        }
        Http::H2 => {
            let capture = read_h2(input).map_err(at)?;
            // Header blocks decode in connection order: HPACK's table is the connection's.
            let mut decoder = loona_hpack::Decoder::new();
            let mut headers: Vec<(u32, Vec<(String, String)>)> = Vec::new();
            for (stream, block) in &capture.header_blocks {
                let decoded = decoder
                    .decode(block)
                    .map_err(|e| CliError::msg(format!("HPACK in stream {stream}: {e:?}")))?;
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                headers.push((
                    *stream,
                    decoded.iter().map(|(n, v)| (text(n), text(v))).collect(),
                ));
            }
            for stream in &capture.streams {
                for (_, block) in headers.iter().filter(|(id, _)| *id == stream.id) {
                    printer.line(&json!({"http": "2", "stream": stream.id, "headers": block}))?;
                }
                printer.body(
                    &stream.body,
                    max_frame_length,
                    &json!({"stream": stream.id}),
                )?;
            }
            Ok(())
        }
    }
}
