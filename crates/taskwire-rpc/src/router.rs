//! Handlers by request type, for every call shape.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use taskwire_codec::{Frame, RawFrame};
use taskwire_proto::registry::{self, CallShape};
use taskwire_proto::session::v1::{Conversation, Ping, Pong};
use taskwire_proto::{MessageSet, Rpc, WireMessage, budget};
use tokio::sync::mpsc;

use crate::budget::TenantBudget;
use crate::stream::{
    Queued, RequestSender, RequestStream, ResponseSink, channel_capacity, request_channel,
};
use crate::{CallContext, Status};

type UnaryFn =
    dyn Fn(CallContext, Bytes) -> BoxFuture<'static, Result<RawFrame, Status>> + Send + Sync;
type OneWayFn = dyn Fn(CallContext, Bytes) -> BoxFuture<'static, ()> + Send + Sync;
type ServerStreamingFn = dyn Fn(CallContext, Bytes, mpsc::Sender<RawFrame>) -> BoxFuture<'static, Result<(), Status>>
    + Send
    + Sync;
type ClientStreamingFn = dyn Fn(CallContext, mpsc::Receiver<Queued>) -> BoxFuture<'static, Result<RawFrame, Status>>
    + Send
    + Sync;
type BidiFn = dyn Fn(
        CallContext,
        mpsc::Receiver<Queued>,
        mpsc::Sender<RawFrame>,
    ) -> BoxFuture<'static, Result<(), Status>>
    + Send
    + Sync;
type AuthorizeFn = dyn Fn(&CallContext, u16) -> Result<(), Status> + Send + Sync;

#[derive(Clone)]
enum Handler {
    Unary(Arc<UnaryFn>),
    OneWay(Arc<OneWayFn>),
    ServerStreaming(Arc<ServerStreamingFn>),
    ClientStreaming(Arc<ClientStreamingFn>),
    Bidi(Arc<BidiFn>),
}

impl Handler {
    fn shape(&self) -> CallShape {
        match self {
            Handler::Unary(_) => CallShape::Unary,
            Handler::OneWay(_) => CallShape::OneWay,
            Handler::ServerStreaming(_) => CallShape::ServerStreaming,
            Handler::ClientStreaming(_) => CallShape::ClientStreaming,
            Handler::Bidi(_) => CallShape::BidiStreaming,
        }
    }
}

/// Routes each call to the handler registered for the type of its first frame.
///
/// ```
/// use taskwire_rpc::{Router, Status};
/// use taskwire_proto::runner::v1::{ExecutionOutcome, ExecutionRequest};
///
/// let mut router = Router::new();
/// router.unary(|_ctx, request: ExecutionRequest| async move {
///     if request.function_name.is_empty() {
///         return Err(Status::invalid_argument("function_name is empty"));
///     }
///     Ok(ExecutionOutcome { job_id: request.job_id, request_id: request.request_id, ..Default::default() })
/// });
/// assert!(router.handles(<ExecutionRequest as taskwire_proto::WireMessage>::TYPE_ID));
/// ```
#[derive(Clone)]
pub struct Router {
    handlers: HashMap<u16, Handler>,
    /// Request types of routed rpcs marked safe to replay, which may arrive as early data.
    replay_safe: HashSet<u16>,
    authorize: Option<Arc<AuthorizeFn>>,
    buffers: Arc<TenantBudget>,
}

impl Default for Router {
    fn default() -> Self {
        Router {
            handlers: HashMap::new(),
            replay_safe: HashSet::new(),
            authorize: None,
            buffers: TenantBudget::buffered_frames(),
        }
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut routes: Vec<String> = self
            .handlers
            .iter()
            .map(|(id, h)| {
                let name = registry::by_type_id(*id).map_or("<extension>", |info| info.name);
                format!("{id:#06x} {name} ({:?})", h.shape())
            })
            .collect();
        routes.sort();
        f.debug_struct("Router")
            .field("routes", &routes)
            .field("authorize", &self.authorize.is_some())
            .field("buffers", &self.buffers)
            .finish()
    }
}

fn decode<M: WireMessage>(body: Bytes) -> Result<M, Status> {
    if budget::needs_walk(body.len(), budget::DEFAULT_MAX_DECODED_SIZE) {
        budget::decoded_size(M::TYPE_ID, &body, budget::DEFAULT_MAX_DECODED_SIZE).map_err(
            |over| {
                Status::resource_exhausted(format!(
                    "{} would decode to more than {} bytes",
                    M::NAME,
                    over.max
                ))
            },
        )?;
    }
    M::decode(body).map_err(|e| Status::invalid_argument(format!("invalid {}: {e}", M::NAME)))
}

fn encode<M: WireMessage>(message: M) -> RawFrame {
    RawFrame::encode(&Frame::new(message))
}

impl Router {
    /// An empty router: every call is answered `UNIMPLEMENTED`.
    pub fn new() -> Router {
        Router::default()
    }

    /// Whether a handler is registered for calls opening with `type_id`.
    pub fn handles(&self, type_id: u16) -> bool {
        self.handlers.contains_key(&type_id)
    }

    /// The shape of the call opening with `type_id`, if routed.
    pub fn shape_of(&self, type_id: u16) -> Option<CallShape> {
        self.handlers.get(&type_id).map(Handler::shape)
    }

    /// Whether a call opening with `type_id` may be executed when it arrived as TLS early
    /// data: its rpc is routed and marked safe to replay ([`Rpc::REPLAY_SAFE`]), or it is
    /// the built-in `Ping`.
    pub fn is_replay_safe(&self, type_id: u16) -> bool {
        self.replay_safe.contains(&type_id)
            || (type_id == Ping::TYPE_ID && !self.handlers.contains_key(&type_id))
    }

    fn insert(&mut self, type_id: u16, handler: Handler, replay_safe: bool) -> &mut Router {
        if replay_safe {
            self.replay_safe.insert(type_id);
        } else {
            self.replay_safe.remove(&type_id);
        }
        if self.handlers.insert(type_id, handler).is_some() {
            tracing::warn!(
                type_id,
                "a handler replaced an earlier one for the same request type"
            );
        }
        self
    }

    /// Checks every call before its handler runs, for example that the peer's certificate
    /// names a tenant allowed to make it. A refusal answers the call with the status.
    pub fn authorize(
        &mut self,
        check: impl Fn(&CallContext, u16) -> Result<(), Status> + Send + Sync + 'static,
    ) -> &mut Router {
        self.authorize = Some(Arc::new(check));
        self
    }

    /// The budget for request frames queued for handlers that have not read them yet,
    /// with a share per tenant. Default [`TenantBudget::buffered_frames`]: 512 MiB in all,
    /// 128 MiB per tenant. A frame past either is not queued: its call's handler reads
    /// `RESOURCE_EXHAUSTED` instead, and nothing more of that call is delivered.
    ///
    /// Memory: the budget is the bound; the bookkeeping is one map entry per tenant with
    /// frames queued. Clones of a router share their budget, so a server running both
    /// transports from clones of one router has one budget; routers built apart have one
    /// each unless given the same `Arc`.
    pub fn buffer_budget(&mut self, budget: Arc<TenantBudget>) -> &mut Router {
        self.buffers = budget;
        self
    }

    /// The budget request frames are queued against (see [`buffer_budget`](Self::buffer_budget)).
    pub fn buffers(&self) -> &Arc<TenantBudget> {
        &self.buffers
    }

    /// Routes the unary rpc whose request is `R`.
    pub fn unary<R, F, Fut>(&mut self, handler: F) -> &mut Router
    where
        R: Rpc,
        R::Response: WireMessage,
        F: Fn(CallContext, R) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Response, Status>> + Send + 'static,
    {
        self.route_unary::<R, R::Response, F, Fut>(handler);
        if R::REPLAY_SAFE {
            self.replay_safe.insert(R::TYPE_ID);
        }
        self
    }

    /// Routes a unary call from `Req` to `Resp` for messages without a schema `service`,
    /// such as users' own extension messages.
    pub fn route_unary<Req, Resp, F, Fut>(&mut self, handler: F) -> &mut Router
    where
        Req: WireMessage,
        Resp: WireMessage,
        F: Fn(CallContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Arc<UnaryFn> = Arc::new(move |ctx, body| {
            let handler = Arc::clone(&handler);
            contained(async move { Ok(encode(handler(ctx, decode::<Req>(body)?).await?)) }).boxed()
        });
        self.insert(Req::TYPE_ID, Handler::Unary(erased), false)
    }

    /// Routes the one-way rpc whose request is `R`: nothing is sent back.
    pub fn one_way<R, F, Fut>(&mut self, handler: F) -> &mut Router
    where
        R: Rpc,
        F: Fn(CallContext, R) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Arc<OneWayFn> = Arc::new(move |ctx, body| {
            let handler = Arc::clone(&handler);
            contained(async move {
                let request = decode::<R>(body)?;
                handler(ctx, request).await;
                Ok(())
            })
            .map(|outcome| {
                if let Err(status) = outcome {
                    tracing::debug!(%status, "a one-way call failed");
                }
            })
            .boxed()
        });
        self.insert(R::TYPE_ID, Handler::OneWay(erased), R::REPLAY_SAFE)
    }

    /// Routes the server-streaming rpc whose request is `R`: the handler sends items into
    /// the sink; returning ends the stream (with a status, if it fails).
    pub fn server_streaming<R, F, Fut>(&mut self, handler: F) -> &mut Router
    where
        R: Rpc,
        R::Response: WireMessage,
        F: Fn(CallContext, R, ResponseSink<R::Response>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Arc<ServerStreamingFn> = Arc::new(move |ctx, body, out| {
            let handler = Arc::clone(&handler);
            contained(async move { handler(ctx, decode::<R>(body)?, ResponseSink::new(out)).await })
                .boxed()
        });
        self.insert(R::TYPE_ID, Handler::ServerStreaming(erased), R::REPLAY_SAFE)
    }

    /// Routes the client-streaming rpc whose stream item is `R`: the handler reads the
    /// items (the first one included) and answers once.
    pub fn client_streaming<R, F, Fut>(&mut self, handler: F) -> &mut Router
    where
        R: Rpc,
        R::Response: WireMessage,
        F: Fn(CallContext, RequestStream<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Response, Status>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Arc<ClientStreamingFn> = Arc::new(move |ctx, frames| {
            let handler = Arc::clone(&handler);
            contained(async move { Ok(encode(handler(ctx, RequestStream::new(frames)).await?)) })
                .boxed()
        });
        self.insert(R::TYPE_ID, Handler::ClientStreaming(erased), R::REPLAY_SAFE)
    }

    /// Routes bidirectional streams that open with a `First` message, carrying messages of
    /// the set `M` both ways (a journal session opens with `Start` and carries
    /// `JournalMessage`s). The handler reads the stream (the first message included).
    pub fn bidi<First, M, F, Fut>(&mut self, handler: F) -> &mut Router
    where
        First: WireMessage,
        M: MessageSet,
        F: Fn(CallContext, RequestStream<M>, ResponseSink<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Arc<BidiFn> = Arc::new(move |ctx, incoming, outgoing| {
            let handler = Arc::clone(&handler);
            contained(async move {
                handler(
                    ctx,
                    RequestStream::new(incoming),
                    ResponseSink::new(outgoing),
                )
                .await
            })
            .boxed()
        });
        self.insert(First::TYPE_ID, Handler::Bidi(erased), false)
    }

    /// Starts the call whose first frame (after any call header) is `first`.
    ///
    /// Before any handler runs, in this order (`docs/protocol.md` §7): a call of a
    /// conversation the connection did not negotiate is refused (`PROTOCOL_VIOLATION`);
    /// `taskwire.session.v1.Ping` is answered with its `Pong` unless a handler is
    /// registered for it; a call without a handler is `UNIMPLEMENTED`; a call whose
    /// deadline has already passed is `DEADLINE_EXCEEDED`, and its handler never runs; a
    /// call that arrived as TLS early data ([`CallContext::early_data`]) and is not
    /// [replay-safe](Router::is_replay_safe) is `UNAVAILABLE` without running, so the
    /// client may send it again once the handshake is complete; then the
    /// [`authorize`](Router::authorize) hook decides.
    pub fn dispatch(&self, context: CallContext, first: RawFrame) -> Dispatch {
        let type_id = first.type_id;
        let info = registry::by_type_id(type_id);
        if let Some(conversation) = registry::Conversation::of_type_id(type_id)
            && let Some(negotiable) = session_conversation(conversation)
            && !context.peer.negotiated(negotiable)
        {
            return Dispatch::Rejected(Status::protocol_violation(format!(
                "type {type_id:#06x} belongs to {}, which this connection did not negotiate",
                conversation.package()
            )));
        }
        let Some(handler) = self.handlers.get(&type_id) else {
            if type_id == Ping::TYPE_ID {
                // Ping is replay-safe: answering it again changes nothing.
                return answer_ping(first.body);
            }
            let name = info.map_or("an unregistered message", |info| info.name);
            return Dispatch::Rejected(Status::unimplemented(format!(
                "no handler for calls opening with {name} ({type_id:#06x})"
            )));
        };
        if context
            .deadline
            .is_some_and(|deadline| deadline <= std::time::Instant::now())
        {
            return Dispatch::Rejected(Status::deadline_exceeded(
                "the call's deadline had passed when it arrived",
            ));
        }
        if context.early_data && !self.is_replay_safe(type_id) {
            let name = info.map_or("an extension message", |info| info.name);
            return Dispatch::Rejected(Status::unavailable(format!(
                "{name} ({type_id:#06x}) arrived as early data (0-RTT), which can be replayed, \
                 and is not marked replay-safe; send it again after the handshake"
            )));
        }
        if let Some(authorize) = &self.authorize
            && let Err(status) = authorize(&context, type_id)
        {
            return Dispatch::Rejected(status);
        }
        match handler {
            Handler::Unary(f) => Dispatch::Unary(f(context, first.body)),
            Handler::OneWay(f) => Dispatch::OneWay(f(context, first.body)),
            Handler::ServerStreaming(f) => {
                let (tx, rx) = mpsc::channel(channel_capacity());
                Dispatch::ServerStreaming {
                    run: f(context, first.body, tx),
                    responses: rx,
                }
            }
            Handler::ClientStreaming(f) => {
                let (tx, rx) = self.request_channel(&context, first);
                Dispatch::ClientStreaming {
                    run: f(context, rx),
                    requests: tx,
                }
            }
            Handler::Bidi(f) => {
                let (in_tx, in_rx) = self.request_channel(&context, first);
                let (out_tx, out_rx) = mpsc::channel(channel_capacity());
                Dispatch::Bidi {
                    run: f(context, in_rx, out_tx),
                    requests: in_tx,
                    responses: out_rx,
                }
            }
        }
    }
}

impl Router {
    /// A streaming call's request channel, holding its first frame. The first frame is
    /// the transport's to hold (within its per-connection limits) and is not counted; the
    /// ones after it are, for the tenant the peer's certificate proves or, without one,
    /// the tenant it claimed.
    fn request_channel(
        &self,
        context: &CallContext,
        first: RawFrame,
    ) -> (RequestSender, mpsc::Receiver<Queued>) {
        let peer = &context.peer;
        let tenant = peer.tenant().unwrap_or(&peer.claimed_tenant);
        let (tx, rx) = request_channel(Arc::clone(&self.buffers), tenant);
        tx.queue_first(first);
        (tx, rx)
    }
}

/// The `Hello`/`Negotiated` value naming a registry conversation.
fn session_conversation(conversation: registry::Conversation) -> Option<Conversation> {
    Some(match conversation {
        registry::Conversation::Session => Conversation::Session,
        registry::Conversation::Instance => Conversation::Instance,
        registry::Conversation::Environment => Conversation::Environment,
        registry::Conversation::Management => Conversation::Management,
        registry::Conversation::Runner => Conversation::Runner,
        registry::Conversation::Journal => Conversation::Journal,
        _ => return None,
    })
}

/// `SessionService/Ping` as a call: the `Pong` echoes the nonce and the send time.
fn answer_ping(body: Bytes) -> Dispatch {
    let answer = decode::<Ping>(body).map(|ping| {
        encode(Pong {
            nonce: ping.nonce,
            sent_at: ping.sent_at,
        })
    });
    Dispatch::Unary(futures::future::ready(answer).boxed())
}

/// A handler's future, with a panic turned into an `INTERNAL` status: the transport then
/// answers the call and frees its slot, as for any failure, instead of losing the task
/// (and, on QUIC, ending the stream as if it had succeeded).
fn contained<T>(
    handler: impl Future<Output = Result<T, Status>>,
) -> impl Future<Output = Result<T, Status>> {
    std::panic::AssertUnwindSafe(handler)
        .catch_unwind()
        .map(|outcome| {
            outcome.unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("a non-string payload");
                tracing::error!(panic = what, "a handler panicked");
                Err(Status::internal("the handler panicked"))
            })
        })
}

/// A started call, for the transport to drive.
#[non_exhaustive]
pub enum Dispatch {
    /// Await the response frame (or status) and send it.
    Unary(BoxFuture<'static, Result<RawFrame, Status>>),
    /// Await it; send nothing.
    OneWay(BoxFuture<'static, ()>),
    /// Forward `responses` onto the wire while awaiting `run`; then end the stream with
    /// END_STREAM or the status.
    ServerStreaming {
        /// The handler.
        run: BoxFuture<'static, Result<(), Status>>,
        /// Frames the handler sends.
        responses: mpsc::Receiver<RawFrame>,
    },
    /// Feed the remaining request frames into `requests` (closing it at END_STREAM, or
    /// sending an `Err` if the stream fails) while awaiting the response from `run`.
    ClientStreaming {
        /// The handler.
        run: BoxFuture<'static, Result<RawFrame, Status>>,
        /// Where request frames go.
        requests: RequestSender,
    },
    /// Both of the above at once.
    Bidi {
        /// The handler.
        run: BoxFuture<'static, Result<(), Status>>,
        /// Where request frames go.
        requests: RequestSender,
        /// Frames the handler sends.
        responses: mpsc::Receiver<RawFrame>,
    },
    /// No handler, or the authorization hook refused: answer with the status.
    Rejected(Status),
}

impl fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Dispatch::Unary(_) => "Unary",
            Dispatch::OneWay(_) => "OneWay",
            Dispatch::ServerStreaming { .. } => "ServerStreaming",
            Dispatch::ClientStreaming { .. } => "ClientStreaming",
            Dispatch::Bidi { .. } => "Bidi",
            Dispatch::Rejected(_) => "Rejected",
        };
        f.write_str(name)
    }
}
