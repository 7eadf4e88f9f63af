//! `taskwire decode`: frames in, one JSON object per frame out.
//!
//! The frames are decoded by `taskwire-codec`, with the limits of a connection past its
//! first frame, and their bodies by the registry of `taskwire-proto` ([`AnyMessage`]):
//! what this prints is what a taskwire peer would have received. `--dialect rrq` decodes
//! RRQ's runner protocol with `taskwire-rrq` instead, and `--dialect restate` Restate's
//! service protocol with `taskwire-restate`: a message stream as it is, or inside a
//! recorded HTTP/1.1 or HTTP/2 connection (one direction), whose requests, headers and
//! bodies are printed too.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use bytes::BytesMut;
use clap::{Args, ValueEnum};
use serde::{Serialize, Serializer};
use taskwire_codec::tokio_util::codec::Decoder;
use taskwire_codec::{
    Builder, CodecError, DEFAULT_MAX_FRAME_LENGTH, Frame, HEADER_LEN, JSON_LENGTH_PREFIX_LEN,
    VERSION,
};
use taskwire_proto::MessageSet;
use taskwire_proto::registry::AnyMessage;

use crate::error::CliError;

const DECODE_HELP: &str = "\
Output:
  One JSON object per frame and line, with the members
    offset    byte offset of the frame's start in the input
    framing   \"binary\" or \"json\"
    version   the binary header's version byte; null for JSON frames, which have none
    flags     \"END_STREAM\" and \"STATUS\", as set (implied by `end` and the type in JSON)
    type_id   the registry type id, for example \"0x0105\"
    type      the message's full name, for example \"taskwire.instance.v1.RegisterInstanceRequest\"
    stream    the stream id
    length    the binary body length, or the length of the JSON text
    body      the message in canonical proto3 JSON
  A bad or truncated frame ends the output with `error at byte OFFSET: ...` on stderr and
  exit code 1, after the frames before it.

  With --dialect rrq, each line has offset, dialect (\"rrq\"), length (of the JSON text),
  type (request, response or cancel) and payload, as RRQ sent them.

  With --dialect restate, each message's line has offset (in its body), dialect
  (\"restate\"), type (the 16-bit code), name, flags, length and message (proto3 JSON).
  Inside a recorded HTTP connection (--http auto finds it), a line per HTTP message or
  HTTP/2 header block comes first (http, stream, start line or headers), and each line
  names its http_message or stream; a body that is not a message stream (discovery's
  manifest) is printed as text.

Examples:
  # A capture of binary or JSON frames (the framing is read from the first byte):
  taskwire decode capture.bin
  # From standard input, one pretty-printed object per frame:
  cat capture.bin | taskwire decode --pretty -
  # A Ping, given as hex:
  taskwire decode --hex '010100070000000000000003 08e807'
  # JSON frames larger than the 16 MiB default:
  taskwire decode --framing json --max-frame-length 67108864 dump.jsonframes
  # One side of an RRQ orchestrator's connection to its runner:
  taskwire decode --dialect rrq orchestrator-to-runner.bin
  # Restate's side of a recorded HTTP/2 connection to an endpoint:
  taskwire decode --dialect restate restate-to-endpoint.bin";

/// How much input is read at a time.
const READ_CHUNK: usize = 64 * 1024;

/// `taskwire decode`.
#[derive(Debug, Args)]
#[command(after_help = DECODE_HELP)]
pub(crate) struct DecodeArgs {
    /// The file to read frames from; `-` or nothing reads standard input.
    #[arg(value_name = "FILE", conflicts_with = "hex")]
    input: Option<PathBuf>,
    /// Decode these bytes, written as hex digits (whitespace between them is ignored),
    /// instead of a file.
    #[arg(long, value_name = "HEX")]
    hex: Option<String>,
    /// Whose protocol the frames are: taskwire's own, or a dialect taskwire speaks.
    #[arg(long, value_enum, default_value_t = DialectArg::Taskwire)]
    dialect: DialectArg,
    /// With --dialect restate: whether the input is a recorded HTTP connection. `auto`
    /// reads the start: the HTTP/2 preface or a SETTINGS frame, a request or status line.
    #[arg(long, value_enum, default_value_t = HttpArg::Auto)]
    http: HttpArg,
    /// The framing of taskwire input. `auto` reads the first byte: 0x01 is the version
    /// byte of a binary frame, anything else the top byte of a JSON frame's length prefix.
    #[arg(long, value_enum, default_value_t = FramingArg::Auto)]
    framing: FramingArg,
    /// The largest frame accepted, in bytes: the body of a binary frame, the text of a
    /// JSON frame.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME_LENGTH)]
    max_frame_length: u32,
    /// Print each frame's JSON over several indented lines.
    #[arg(long)]
    pretty: bool,
}

/// `--dialect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DialectArg {
    /// taskwire's binary or JSON frames.
    Taskwire,
    /// RRQ's runner protocol: a 4-byte length, then a `{"type", "payload"}` envelope.
    Rrq,
    /// Restate's service protocol: an 8-byte header, then protobuf.
    Restate,
}

/// `--http`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum HttpArg {
    /// Decide from the start of the input.
    Auto,
    /// A bare message stream.
    None,
    /// One direction of an HTTP/1.1 connection.
    H1,
    /// One direction of an HTTP/2 connection.
    H2,
}

/// `--framing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum FramingArg {
    /// 12-byte binary headers and protobuf bodies.
    Binary,
    /// 4-byte length prefixes and JSON envelopes.
    Json,
    /// Decide from the first byte of the input.
    Auto,
}

/// The framing the input is decoded with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Binary,
    Json,
}

impl Framing {
    /// What `--framing auto` makes of the input's first byte, as a server tells the framing
    /// of a connection from its first byte (`docs/protocol.md` §6): the binary version
    /// byte, or else the top byte of a JSON length prefix.
    fn sniff(first_byte: u8) -> Framing {
        if first_byte == VERSION {
            Framing::Binary
        } else {
            Framing::Json
        }
    }

    fn name(self) -> &'static str {
        match self {
            Framing::Binary => "binary",
            Framing::Json => "json",
        }
    }

    /// The bytes in front of the body (binary) or the JSON text (JSON).
    fn prefix_len(self) -> u64 {
        match self {
            Framing::Binary => HEADER_LEN as u64,
            Framing::Json => JSON_LENGTH_PREFIX_LEN as u64,
        }
    }

    fn decoder(
        self,
        builder: &Builder,
    ) -> Box<dyn Decoder<Item = Frame<AnyMessage>, Error = CodecError>> {
        match self {
            Framing::Binary => Box::new(builder.new_binary_message_codec::<AnyMessage>()),
            Framing::Json => Box::new(builder.new_any_json_codec()),
        }
    }
}

/// Where the bytes come from.
struct Input {
    reader: Box<dyn Read>,
    /// For error messages.
    name: String,
    chunk: Box<[u8]>,
    eof: bool,
}

impl Input {
    fn open(args: &DecodeArgs) -> Result<Input, CliError> {
        let (reader, name): (Box<dyn Read>, String) = match (&args.hex, &args.input) {
            (Some(hex), _) => {
                let digits: String = hex.split_ascii_whitespace().collect();
                let bytes = hex::decode(&digits)
                    .map_err(|e| CliError::msg(format!("--hex is not hex: {e}")))?;
                (Box::new(io::Cursor::new(bytes)), "--hex".to_owned())
            }
            (None, Some(path)) if path.as_os_str() != "-" => {
                let file = File::open(path)
                    .map_err(|e| CliError::msg(format!("cannot open {}: {e}", path.display())))?;
                (Box::new(file), path.display().to_string())
            }
            (None, _) => (Box::new(io::stdin().lock()), "standard input".to_owned()),
        };
        Ok(Input {
            reader,
            name,
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            eof: false,
        })
    }

    /// Appends what the next read brings to `buffer`; sets `eof` at the end of the input.
    fn read_into(&mut self, buffer: &mut BytesMut) -> Result<(), CliError> {
        loop {
            match self.reader.read(&mut self.chunk) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(read) => {
                    buffer.extend_from_slice(&self.chunk[..read]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(CliError::msg(format!("cannot read {}: {e}", self.name))),
            }
        }
    }
}

/// One line of output.
#[derive(Serialize)]
struct FrameJson<'a> {
    offset: u64,
    framing: &'static str,
    version: Option<u8>,
    flags: Vec<&'static str>,
    type_id: String,
    #[serde(rename = "type")]
    type_name: &'static str,
    stream: u32,
    length: u64,
    #[serde(serialize_with = "canonical_json")]
    body: &'a AnyMessage,
}

fn canonical_json<S: Serializer>(message: &&AnyMessage, serializer: S) -> Result<S::Ok, S::Error> {
    message.serialize_json_body(serializer)
}

impl<'a> FrameJson<'a> {
    fn new(frame: &'a Frame<AnyMessage>, framing: Framing, offset: u64, frame_len: u64) -> Self {
        let mut flags = Vec::new();
        if frame.flags.is_end_stream() {
            flags.push("END_STREAM");
        }
        if frame.flags.is_status() {
            flags.push("STATUS");
        }
        FrameJson {
            offset,
            framing: framing.name(),
            version: (framing == Framing::Binary).then_some(VERSION),
            flags,
            type_id: format!("{:#06x}", frame.message.type_id()),
            type_name: frame.message.name(),
            stream: frame.stream_id,
            length: frame_len - framing.prefix_len(),
            body: &frame.message,
        }
    }
}

impl DecodeArgs {
    fn http_kind(&self) -> Option<crate::decode_restate::Http> {
        use crate::decode_restate::Http;
        match self.http {
            HttpArg::Auto => None,
            HttpArg::None => Some(Http::None),
            HttpArg::H1 => Some(Http::H1),
            HttpArg::H2 => Some(Http::H2),
        }
    }
}

/// One line of `--dialect rrq` output.
#[derive(Serialize)]
struct RrqFrameJson<'a> {
    offset: u64,
    dialect: &'static str,
    length: u64,
    #[serde(rename = "type")]
    type_name: &'static str,
    payload: &'a serde_json::Value,
}

/// Runs `taskwire decode`.
pub(crate) fn run(args: DecodeArgs) -> Result<(), CliError> {
    let mut input = Input::open(&args)?;
    let mut buffer = BytesMut::new();
    while buffer.is_empty() && !input.eof {
        input.read_into(&mut buffer)?;
    }
    let Some(&first_byte) = buffer.first() else {
        // No input, no frames.
        return Ok(());
    };
    let mut builder = Builder::new();
    // Not a connection: the Hello's 64 KiB limit has no business here.
    builder
        .max_frame_length(args.max_frame_length)
        .first_frame_done(true);
    let mut frames = Frames {
        input,
        buffer,
        pretty: args.pretty,
    };
    match args.dialect {
        DialectArg::Restate => {
            // A recorded connection is read whole: its messages span its HTTP framing.
            while !frames.input.eof {
                frames.input.read_into(&mut frames.buffer)?;
            }
            crate::decode_restate::run(
                &frames.buffer,
                args.http_kind(),
                args.max_frame_length,
                args.pretty,
            )
        }
        DialectArg::Taskwire => {
            let framing = match args.framing {
                FramingArg::Binary => Framing::Binary,
                FramingArg::Json => Framing::Json,
                FramingArg::Auto => Framing::sniff(first_byte),
            };
            frames.print(
                &mut *framing.decoder(&builder),
                |frame, offset, len| {
                    serde_json::to_value(FrameJson::new(frame, framing, offset, len))
                },
                |error, offset| frame_error(error, offset, args.framing, first_byte),
            )
        }
        DialectArg::Rrq => frames.print(
            &mut taskwire_rrq::RrqCodec::from_builder(&builder),
            |message, offset, len| {
                let envelope = serde_json::to_value(message)?;
                serde_json::to_value(RrqFrameJson {
                    offset,
                    dialect: "rrq",
                    length: len - taskwire_rrq::LENGTH_PREFIX_LEN as u64,
                    type_name: message.type_name(),
                    payload: &envelope["payload"],
                })
            },
            |error, offset| CliError::at_byte(offset, error),
        ),
    }
}

/// The input being decoded, and how each frame is printed.
struct Frames {
    input: Input,
    buffer: BytesMut,
    pretty: bool,
}

impl Frames {
    /// Decodes frames until the input ends, printing each as `render` makes it (from the
    /// frame, its offset and its length); a bad frame ends with `error`'s message.
    fn print<T>(
        &mut self,
        decoder: &mut dyn Decoder<Item = T, Error = CodecError>,
        render: impl Fn(&T, u64, u64) -> Result<serde_json::Value, serde_json::Error>,
        error: impl Fn(CodecError, u64) -> CliError,
    ) -> Result<(), CliError> {
        let mut stdout = io::stdout().lock();
        let mut line = Vec::new();
        // Bytes the decoder has taken from the buffer, and where the current frame starts.
        let (mut consumed, mut frame_start) = (0u64, 0u64);
        loop {
            let before = self.buffer.len();
            let decoded = if self.input.eof {
                decoder.decode_eof(&mut self.buffer)
            } else {
                decoder.decode(&mut self.buffer)
            };
            consumed += (before - self.buffer.len()) as u64;
            match decoded {
                Ok(Some(frame)) => {
                    let json = render(&frame, frame_start, consumed - frame_start)?;
                    line.clear();
                    if self.pretty {
                        serde_json::to_writer_pretty(&mut line, &json)?;
                    } else {
                        serde_json::to_writer(&mut line, &json)?;
                    }
                    line.push(b'\n');
                    stdout.write_all(&line).map_err(CliError::Stdout)?;
                    frame_start = consumed;
                }
                Ok(None) if self.input.eof => return Ok(()),
                Ok(None) => self.input.read_into(&mut self.buffer)?,
                Err(e) => {
                    stdout.flush().map_err(CliError::Stdout)?;
                    return Err(error(e, frame_start));
                }
            }
        }
    }
}

/// The error for a bad frame starting at `offset`. When `--framing auto` read the input as
/// JSON although its first byte is not 0x00 (the top byte of any JSON length under 16 MiB),
/// the message says so: such input is more likely binary with a bad version byte.
fn frame_error(error: CodecError, offset: u64, framing: FramingArg, first_byte: u8) -> CliError {
    if offset == 0 && framing == FramingArg::Auto && first_byte != 0 && first_byte != VERSION {
        return CliError::at_byte(
            offset,
            format!(
                "{error} (--framing auto read the first byte {first_byte:#04x} as the top of a \
                 JSON length prefix, since it is not the binary version byte {VERSION:#04x})"
            ),
        );
    }
    CliError::at_byte(offset, error)
}
