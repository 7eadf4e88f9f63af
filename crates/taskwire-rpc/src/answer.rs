//! Reading a call's answer frame, the same on every transport.

use prost::Message as _;
use taskwire_codec::RawFrame;
use taskwire_proto::session::v1::Status as StatusMessage;
use taskwire_proto::{MessageSet, WireMessage, budget, registry};

use crate::{CallError, Status, StatusCode};

/// Decodes an answer frame: a message of the set `T` (one type, or a set such as
/// `AnyMessage` when the type is known only at run time), or the failure a status frame
/// carries, or a protocol error for anything else.
pub fn decode_answer<T: MessageSet>(frame: RawFrame) -> Result<T, CallError> {
    let type_id = frame.type_id;
    // A Status frame is never an answer's payload: it is how a call ends.
    if type_id == StatusMessage::TYPE_ID {
        return match decode_status(frame)? {
            Some(status) => Err(CallError::Status(status)),
            None => Err(CallError::Protocol(
                "expected an answer, got a Status with code OK".into(),
            )),
        };
    }
    if budget::needs_walk(frame.body.len(), budget::DEFAULT_MAX_DECODED_SIZE) {
        budget::decoded_size(type_id, &frame.body, budget::DEFAULT_MAX_DECODED_SIZE).map_err(
            |over| {
                CallError::Protocol(format!(
                    "the answer {} would decode to more than {} bytes",
                    type_name(type_id),
                    over.max
                ))
            },
        )?;
    }
    match T::decode_body(type_id, frame.body) {
        Some(decoded) => decoded
            .map_err(|e| CallError::Protocol(format!("undecodable {}: {e}", type_name(type_id)))),
        None => Err(CallError::Protocol(format!(
            "unexpected answer {} ({type_id:#06x})",
            type_name(type_id)
        ))),
    }
}

fn type_name(type_id: u16) -> &'static str {
    registry::by_type_id(type_id).map_or("an unregistered message", |info| info.name)
}

/// The status a status frame carries: `Ok(None)` for `STATUS_CODE_OK` (the end of a
/// stream that succeeded), `Ok(Some(..))` for a failure, and a protocol error if the
/// frame is not a Status.
pub fn decode_status(frame: RawFrame) -> Result<Option<Status>, CallError> {
    if frame.type_id != StatusMessage::TYPE_ID {
        return Err(CallError::Protocol(format!(
            "expected a Status, got type {:#06x}",
            frame.type_id
        )));
    }
    let status = StatusMessage::decode(frame.body)
        .map_err(|e| CallError::Protocol(format!("undecodable Status: {e}")))?;
    let status = Status::from_message(status);
    Ok((status.code() != StatusCode::Ok).then_some(status))
}
