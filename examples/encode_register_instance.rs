//! Builds a `RegisterInstanceRequest`, frames it in both of taskwire's framings, decodes
//! both and prints what crossed the wire.
//!
//! ```text
//! cargo run -p taskwire-examples --bin encode-register-instance
//! ```
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;

use bytes::BytesMut;
use taskwire_codec::tokio_util::codec::{Decoder, Encoder};
use taskwire_codec::{Builder, Frame};
use taskwire_proto::instance::v1::RegisterInstanceRequest;
use taskwire_proto::registry::InstanceMessage;
use taskwire_proto::{Message, WireMessage};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let request = RegisterInstanceRequest {
        instance_id: "order-7".into(),
        tenant_id: "acme".into(),
        image_id: "img-checkout-v3".into(),
        input: br#"{"order":7,"total":"19.99"}"#.to_vec().into(),
        labels: BTreeMap::from([("region".to_owned(), "eu-west".to_owned())]),
        resumed_from_checkpoint_id: String::new(),
    };
    let frame = Frame::new(InstanceMessage::from(request.clone())).with_stream_id(1);
    println!(
        "message: {} (type id {:#06x}), {} protobuf bytes",
        RegisterInstanceRequest::NAME,
        RegisterInstanceRequest::TYPE_ID,
        request.encoded_len()
    );

    let mut binary = Builder::new().new_binary_message_codec::<InstanceMessage>();
    let mut wire = BytesMut::new();
    binary.encode(&frame, &mut wire)?;
    println!(
        "\nbinary frame, {} bytes:\n  header {}\n  body   {}",
        wire.len(),
        hex(&wire[..12]),
        hex(&wire[12..])
    );
    let decoded = binary.decode(&mut wire)?.ok_or("incomplete binary frame")?;
    assert_eq!(decoded, frame);
    println!(
        "  decoded: stream {}, {:?}",
        decoded.stream_id, decoded.message
    );

    let mut json = Builder::new().new_json_codec::<InstanceMessage>();
    let mut wire = BytesMut::new();
    json.encode(&frame, &mut wire)?;
    println!(
        "\nJSON frame, {} bytes:\n  length {}\n  text   {}",
        wire.len(),
        hex(&wire[..4]),
        String::from_utf8_lossy(&wire[4..])
    );
    let decoded = json.decode(&mut wire)?.ok_or("incomplete JSON frame")?;
    assert_eq!(decoded, frame);
    println!(
        "  decoded: stream {}, {:?}",
        decoded.stream_id, decoded.message
    );
    println!("\nboth framings decoded to the message that was sent");
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
