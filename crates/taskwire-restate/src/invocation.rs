//! Runs one invocation: reads `Start` and the stored journal, runs the handler against
//! it, feeds it the results Restate sends, and ends the stream with exactly one of `End`
//! (after the output), `Suspension` or `Error`.
//!
//! The invocation suspends when the handler is blocked on results only (no step is
//! running) and Restate can send nothing more on this stream: at once in request/response
//! mode, where Restate sends everything before reading the answer, and on HTTP/2 when
//! Restate closes its side (it does so after the service's inactivity timeout).

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use taskwire_codec::CodecError;
use tokio::sync::mpsc;

use crate::HandlerError;
use crate::codec::Frame;
use crate::context::{Inner, Shared};
use crate::generated::registry::{Message, MessageType};
use crate::journal::{AttemptFailure, Journal};
use crate::service::HandlerDef;

/// How one attempt ended, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    End,
    Suspension,
    Error,
}

/// Runs the invocation whose messages arrive on `input`, sending its messages to `output`.
pub(crate) async fn run(
    handler: &HandlerDef,
    max_decoded_size: usize,
    mut input: impl Stream<Item = Result<Frame, CodecError>> + Unpin,
    output: mpsc::UnboundedSender<Frame>,
) -> Ending {
    let send_error = |failure: AttemptFailure| {
        let _ = output.send(Frame::new(&Message::Error(failure.to_message())));
        Ending::Error
    };
    // Start, then the stored journal.
    let start = match input.next().await {
        Some(Ok(frame)) if frame.message_type == MessageType::Start => {
            match frame.decode(max_decoded_size) {
                Ok(Message::Start(start)) => start,
                Ok(_) => {
                    return send_error(AttemptFailure::protocol(
                        "a Start frame held another message",
                    ));
                }
                Err(e) => {
                    return send_error(AttemptFailure::protocol(format!(
                        "an undecodable Start: {e}"
                    )));
                }
            }
        }
        Some(Ok(frame)) => {
            return send_error(AttemptFailure::protocol(format!(
                "the stream began with {} instead of Start",
                frame.message_type.name().unwrap_or("an unknown message")
            )));
        }
        Some(Err(e)) => return send_error(AttemptFailure::protocol(format!("reading Start: {e}"))),
        None => return Ending::Error,
    };
    let mut entries = Vec::new();
    while entries.len() < start.known_entries as usize {
        match input.next().await {
            Some(Ok(frame)) => entries.push(checked(frame, max_decoded_size)),
            Some(Err(e)) => {
                return send_error(AttemptFailure::protocol(format!(
                    "reading the journal: {e}"
                )));
            }
            None => {
                return send_error(AttemptFailure::protocol(format!(
                    "the stream ended after {} of {} stored entries",
                    entries.len(),
                    start.known_entries
                )));
            }
        }
    }
    let entries: Result<Vec<Frame>, AttemptFailure> = entries.into_iter().collect();
    let (journal, input_command) = match entries.and_then(|entries| Journal::new(&start, entries)) {
        Ok(journal) => journal,
        Err(failure) => return send_error(failure),
    };
    let shared = Arc::new(Shared::new(journal));
    let parameter = input_command.value.map_or_else(Bytes::new, |v| v.content);
    let mut handler_run = (handler.run)(Inner(Arc::clone(&shared)), parameter);
    let mut input_open = true;
    loop {
        let finished = tokio::select! {
            biased;
            result = &mut handler_run => Some(result),
            frame = input.next(), if input_open => {
                match frame {
                    Some(Ok(frame)) => {
                        let noted = checked(frame, max_decoded_size).and_then(|f| shared.lock().notify(&f));
                        if let Err(failure) = noted {
                            shared.lock().failure.get_or_insert(failure);
                        }
                    }
                    Some(Err(e)) => {
                        shared.lock().failure.get_or_insert(AttemptFailure::protocol(format!("reading from the runtime: {e}")));
                    }
                    None => {
                        input_open = false;
                        shared.lock().input_closed = true;
                    }
                }
                shared.changed.notify_waiters();
                None
            }
            () = shared.blocked.notified() => None,
        };
        let mut journal = shared.lock();
        let ending = if let Some(failure) = journal.failure.clone() {
            journal.error(&failure);
            Some(Ending::Error)
        } else if let Some(result) = finished {
            Some(finish(&mut journal, result))
        } else if !input_open && !journal.awaiting.is_empty() && journal.running_steps == 0 {
            journal.suspend();
            Some(Ending::Suspension)
        } else {
            None
        };
        for frame in journal.outgoing.drain(..) {
            let _ = output.send(frame);
        }
        if let Some(ending) = ending {
            return ending;
        }
    }
}

/// The handler's result as the end of the stream.
fn finish(journal: &mut Journal, result: Result<Bytes, HandlerError>) -> Ending {
    let recorded = match result {
        Ok(value) => journal.output(Ok(value)),
        Err(HandlerError::Terminal(failure)) => journal.output(Err(failure)),
        Err(error) => Err(AttemptFailure::retryable(&error, None, None)),
    };
    match recorded {
        Ok(()) => Ending::End,
        Err(failure) => {
            journal.error(&failure);
            Ending::Error
        }
    }
}

/// A frame this state machine can read: custom and unknown types are protocol
/// violations here (taskwire registers no custom commands), and no body may decode into
/// more than the decoded-size budget. Bodies decode when they are used.
fn checked(frame: Frame, max_decoded_size: usize) -> Result<Frame, AttemptFailure> {
    if matches!(
        frame.message_type,
        MessageType::Custom(_) | MessageType::Unknown(_)
    ) {
        return Err(AttemptFailure::protocol(format!(
            "message type {:#06x} is not one this endpoint reads",
            frame.message_type.code()
        )));
    }
    frame
        .check_decoded_size(max_decoded_size)
        .map_err(|e| AttemptFailure::protocol(e.to_string()))?;
    Ok(frame)
}
