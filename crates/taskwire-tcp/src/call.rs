//! One call on a TCP connection, from its first frame until both sides are done with it:
//! its bookkeeping entry and the task that runs it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use taskwire_codec::{CodecError, ErrorKind, Flags, RawFrame};
use taskwire_rpc::{Dispatch, RequestSender, Status};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::wire::status_frame;

/// A call on a connection, from its first frame until both sides are done with it.
pub(crate) struct Entry {
    pub(crate) cancel: CancellationToken,
    /// Where the call's further request frames go, while its handler reads them.
    pub(crate) requests: Option<RequestSender>,
    /// The client may still send frames on the stream (no END_STREAM or CancelCall yet).
    pub(crate) client_open: bool,
    /// The server has answered (or refused) the call. An entry that is answered but
    /// still open to the client stays, so that the client's late frames are dropped
    /// rather than taken for a new call on the same stream id.
    pub(crate) answered: bool,
}

impl Entry {
    /// A call answered at once with a refusal while the client may still send on it.
    pub(crate) fn refused() -> Entry {
        Entry {
            cancel: CancellationToken::new(),
            requests: None,
            client_open: true,
            answered: true,
        }
    }

    pub(crate) fn done(&self) -> bool {
        self.answered && !self.client_open
    }
}

/// The calls of one connection by stream id, shared with the tasks that run them.
pub(crate) type Calls = Arc<Mutex<HashMap<u32, Entry>>>;

/// Records that the client sends nothing more on `stream_id` (END_STREAM, a status frame
/// or CancelCall), and forgets the call if the server is done with it too.
pub(crate) fn client_ended(calls: &mut HashMap<u32, Entry>, stream_id: u32) {
    if let Some(entry) = calls.get_mut(&stream_id) {
        entry.client_open = false;
        entry.requests = None;
        if entry.done() {
            calls.remove(&stream_id);
        }
    }
}

/// Records that the server has answered `stream_id`, and forgets the call if the client
/// is done with it too.
pub(crate) fn server_answered(calls: &Calls, stream_id: u32) {
    let mut calls = calls.lock().expect("calls lock");
    if let Some(entry) = calls.get_mut(&stream_id) {
        entry.answered = true;
        entry.requests = None;
        if entry.done() {
            calls.remove(&stream_id);
        }
    }
}

/// The status a call is answered with when one of its frames was refused by the codec
/// with its frame boundary intact (`docs/protocol.md` §9).
pub(crate) fn status_for_refused(error: &CodecError) -> Status {
    match error.kind() {
        ErrorKind::UnknownMessageType => match error {
            CodecError::UnknownMessageType { type_id: 0, .. } => {
                Status::protocol_violation(error.to_string())
            }
            _ => Status::unimplemented(error.to_string()),
        },
        ErrorKind::JsonUnknownType => Status::unimplemented(error.to_string()),
        ErrorKind::DecodedTooLarge => Status::resource_exhausted(error.to_string()),
        _ => Status::invalid_argument(error.to_string()),
    }
}

fn with_stream(mut frame: RawFrame, stream_id: u32, end: bool) -> RawFrame {
    frame.stream_id = stream_id;
    if end {
        frame.flags = frame.flags | Flags::END_STREAM;
    }
    frame
}

/// Waits for `deadline`, or forever without one.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Runs one call, sending its streamed frames on `stream_id`, and returns the frame that
/// ends it (none for a one-way call).
pub(crate) async fn drive(
    dispatch: Dispatch,
    stream_id: u32,
    deadline: Option<Instant>,
    cancel: CancellationToken,
    out: &mpsc::Sender<RawFrame>,
) -> Option<RawFrame> {
    let work = async {
        match dispatch {
            Dispatch::Rejected(status) => Some(status_frame(&status, stream_id)),
            Dispatch::OneWay(run) => {
                run.await;
                None
            }
            Dispatch::Unary(run) | Dispatch::ClientStreaming { run, .. } => Some(match run.await {
                Ok(frame) => with_stream(frame, stream_id, true),
                Err(status) => status_frame(&status, stream_id),
            }),
            Dispatch::ServerStreaming { run, responses }
            | Dispatch::Bidi { run, responses, .. } => {
                Some(forward(run, responses, stream_id, out).await)
            }
            _ => Some(status_frame(
                &Status::unimplemented("unsupported call shape"),
                stream_id,
            )),
        }
    };
    tokio::select! {
        last = work => last,
        () = until(deadline) => {
            cancel.cancel();
            Some(status_frame(&Status::deadline_exceeded("the call's deadline passed before the handler answered"), stream_id))
        }
        () = cancel.cancelled() => Some(status_frame(&Status::cancelled("cancelled by the caller"), stream_id)),
    }
}

/// Forwards a streaming handler's frames, then ends the stream: a status frame with OK
/// after the last item (a byte stream has no FIN per call), or the handler's failure.
async fn forward(
    run: futures::future::BoxFuture<'static, Result<(), Status>>,
    mut responses: mpsc::Receiver<RawFrame>,
    stream_id: u32,
    out: &mpsc::Sender<RawFrame>,
) -> RawFrame {
    let mut run = std::pin::pin!(run);
    let mut result = None;
    loop {
        tokio::select! {
            biased;
            frame = responses.recv() => match frame {
                Some(frame) => {
                    if out.send(with_stream(frame, stream_id, false)).await.is_err() {
                        return status_frame(&Status::cancelled("the connection closed"), stream_id);
                    }
                }
                None => break,
            },
            r = &mut run, if result.is_none() => result = Some(r),
        }
    }
    let result = match result {
        Some(result) => result,
        None => run.await,
    };
    match result {
        Ok(()) => status_frame(&Status::new(taskwire_rpc::StatusCode::Ok, ""), stream_id),
        Err(status) => status_frame(&status, stream_id),
    }
}
