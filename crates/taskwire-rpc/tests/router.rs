//! The router's dispatch rules and the call context's reading of a call header.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use taskwire_codec::{Flags, Frame, RawFrame};
use taskwire_proto::WireMessage;
use taskwire_proto::session::v1::{CallHeader, Ping, Pong};
use taskwire_proto::wkt;
use taskwire_rpc::{CallContext, Dispatch, PeerInfo, Router, Status, StatusCode};

fn context() -> CallContext {
    CallContext::new(Arc::new(PeerInfo::default()))
}

fn echo() -> Router {
    let mut router = Router::new();
    router.unary(|_ctx, ping: Ping| async move {
        Ok(Pong {
            nonce: ping.nonce,
            sent_at: None,
        })
    });
    router
}

fn rejected(dispatch: Dispatch) -> Status {
    match dispatch {
        Dispatch::Rejected(status) => status,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn a_unary_handler_answers_with_its_response_frame() {
    let request = RawFrame::encode(&Frame::new(Ping {
        nonce: 7,
        sent_at: None,
    }));
    let Dispatch::Unary(run) = echo().dispatch(context(), request) else {
        panic!("not unary")
    };
    let frame = run.await.unwrap();
    assert_eq!(frame.type_id, Pong::TYPE_ID);
    assert_eq!(frame.decode::<Pong>().unwrap().message.nonce, 7);
}

#[test]
fn an_unrouted_type_is_unimplemented_naming_the_message() {
    let request = RawFrame::encode(&Frame::new(Pong::default()));
    let status = rejected(echo().dispatch(context(), request));
    assert_eq!(status.code(), StatusCode::Unimplemented);
    assert!(
        status.message().contains("taskwire.session.v1.Pong"),
        "{status}"
    );
}

#[tokio::test]
async fn an_undecodable_request_is_invalid_argument() {
    let request = RawFrame {
        flags: Flags::empty(),
        type_id: Ping::TYPE_ID,
        stream_id: 0,
        body: Bytes::from_static(&[0x0f]),
    };
    let Dispatch::Unary(run) = echo().dispatch(context(), request) else {
        panic!("not unary")
    };
    assert_eq!(run.await.unwrap_err().code(), StatusCode::InvalidArgument);
}

#[test]
fn the_authorization_hook_runs_before_the_handler() {
    let mut router = echo();
    router.authorize(|ctx, type_id| {
        if ctx.peer.tenant() == Some("acme") {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "no tenant may call {type_id:#06x} here"
            )))
        }
    });
    let request = RawFrame::encode(&Frame::new(Ping::default()));
    assert_eq!(
        rejected(router.dispatch(context(), request)).code(),
        StatusCode::PermissionDenied
    );
}

#[test]
fn the_earlier_of_deadline_and_timeout_applies() {
    let now = Instant::now();
    let far = wkt::Timestamp::from(std::time::SystemTime::now() + Duration::from_secs(3600));
    let header = CallHeader {
        deadline: Some(far),
        timeout: Some(wkt::Duration {
            seconds: 2,
            nanos: 0,
        }),
        ..Default::default()
    };
    let ctx = CallContext::from_header(Arc::new(PeerInfo::default()), header, now);
    assert_eq!(ctx.deadline, Some(now + Duration::from_secs(2)));

    let past = wkt::Timestamp::from(std::time::SystemTime::now() - Duration::from_secs(5));
    let header = CallHeader {
        deadline: Some(past),
        request_id: 9,
        ..Default::default()
    };
    let ctx = CallContext::from_header(Arc::new(PeerInfo::default()), header, now);
    assert_eq!(
        ctx.deadline,
        Some(now),
        "a deadline in the past is due at once"
    );
    assert_eq!(ctx.request_id, 9);
    assert_eq!(ctx.remaining(), Some(Duration::ZERO));
}

#[test]
fn statuses_round_trip_through_the_wire_message_with_retry_advice() {
    let status = Status::unavailable("restarting").with_retry_after(Duration::from_millis(1500));
    let back = Status::from_message(status.to_message());
    assert_eq!(back, status);
    assert!(back.is_retryable());
    assert!(!Status::invalid_argument("bad").is_retryable());
    let mut unknown = Status::internal("x").to_message();
    unknown.code = 999;
    let back = Status::from_message(unknown);
    assert_eq!(back.code(), StatusCode::Unknown);
    assert!(back.message().contains("999"), "{back}");
}

fn checkpoints(ran: &Arc<std::sync::atomic::AtomicUsize>) -> Router {
    use taskwire_proto::instance::v1::{
        CheckpointRequest, CheckpointResponse, GetCheckpointRequest, GetCheckpointResponse,
    };
    let mut router = Router::new();
    let counter = Arc::clone(ran);
    router.unary(move |_ctx, _: CheckpointRequest| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Ok(CheckpointResponse::default()) }
    });
    let counter = Arc::clone(ran);
    router.unary(move |_ctx, _: GetCheckpointRequest| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Ok(GetCheckpointResponse::default()) }
    });
    router
}

#[test]
fn a_call_not_marked_replay_safe_is_unavailable_as_early_data_and_never_runs() {
    use taskwire_proto::instance::v1::CheckpointRequest;
    let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let router = checkpoints(&ran);
    assert!(!router.is_replay_safe(CheckpointRequest::TYPE_ID));
    let mut early = context();
    early.early_data = true;
    let request = RawFrame::encode(&Frame::new(CheckpointRequest::default()));
    let status = rejected(router.dispatch(early, request));
    assert_eq!(status.code(), StatusCode::Unavailable);
    assert!(
        status
            .message()
            .contains("taskwire.instance.v1.CheckpointRequest")
            && status.message().contains("early data"),
        "{status}"
    );
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn replay_safe_calls_and_ping_run_as_early_data() {
    use taskwire_proto::instance::v1::GetCheckpointRequest;
    let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let router = checkpoints(&ran);
    assert!(router.is_replay_safe(GetCheckpointRequest::TYPE_ID));
    assert!(router.is_replay_safe(Ping::TYPE_ID), "the built-in Ping");
    let mut early = context();
    early.early_data = true;
    let request = RawFrame::encode(&Frame::new(GetCheckpointRequest::default()));
    let Dispatch::Unary(run) = router.dispatch(early.clone(), request) else {
        panic!("not unary")
    };
    run.await.unwrap();
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 1);
    let ping = RawFrame::encode(&Frame::new(Ping::default()));
    let Dispatch::Unary(run) = router.dispatch(early, ping) else {
        panic!("not unary")
    };
    assert_eq!(run.await.unwrap().type_id, Pong::TYPE_ID);
}
