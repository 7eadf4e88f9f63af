//! Reading a call's answer frame, the same on every transport.

use prost::Message as _;
use taskwire_codec::RawFrame;
use taskwire_proto::WireMessage;
use taskwire_proto::session::v1::Status as StatusMessage;

use crate::{CallError, Status, StatusCode};

/// Decodes an answer frame: the expected type `T`, or the failure a status frame carries,
/// or a protocol error for anything else.
pub fn decode_answer<T: WireMessage>(frame: RawFrame) -> Result<T, CallError> {
    if frame.type_id == T::TYPE_ID {
        return T::decode(frame.body)
            .map_err(|e| CallError::Protocol(format!("undecodable {}: {e}", T::NAME)));
    }
    match decode_status(frame) {
        Ok(Some(status)) => Err(CallError::Status(status)),
        Ok(None) => Err(CallError::Protocol(format!(
            "expected {}, got a Status with code OK",
            T::NAME
        ))),
        Err(error) => Err(error),
    }
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
