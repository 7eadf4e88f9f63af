//! The endpoint over HTTP: HTTP/2 cleartext (prior knowledge) and HTTP/1.1 on one port,
//! told apart by the first bytes of each connection.
//!
//! * `GET {prefix}/discover`: the manifest, in the newest version the `accept` header and
//!   this endpoint share (415 if none). The protocol mode is bidirectional when the
//!   request came over HTTP/2 and request/response over HTTP/1.1, unless the
//!   configuration fixes it.
//! * `POST {prefix}/invoke/{service}/{handler}`: one invocation. The `content-type`
//!   names the protocol version (`application/vnd.restate.invocation.v5` or `v6`); any
//!   other is answered 415, an unknown service or handler 404. The answer is 200 with the
//!   same content type, streaming the invocation's messages.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use http::{Method, Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt as _, BodyStream, Full, StreamBody, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use taskwire_codec::Builder;
use taskwire_codec::tokio_util::codec::{Decoder as _, Encoder as _};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::codec::{Frame, RestateCodec};
use crate::manifest::{self, PROTOCOL_VERSIONS, ProtocolMode};
use crate::service::Endpoint;
use crate::{EndpointError, invocation};

/// What the endpoint announces in `x-restate-server`.
pub const SERVER_HEADER: &str = concat!("taskwire-restate/", env!("CARGO_PKG_VERSION"));

/// How long [`ServerHandle::shutdown`] waits for invocations in flight: 10 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint's server needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The address to listen on.
    pub bind_addr: SocketAddr,
    /// The protocol mode to announce; `None` (the default) picks it from the HTTP version
    /// of the discovery request: HTTP/2 is bidirectional, HTTP/1.1 request/response.
    pub protocol_mode: Option<ProtocolMode>,
    /// Frame limits: the largest message (16 MiB by default) and the decoded-size
    /// budget (64 MiB). Memory: one invocation buffers at most one message as it arrives,
    /// plus its journal.
    pub codec: Builder,
    /// How long a graceful shutdown waits for invocations in flight. Default
    /// [`DEFAULT_DRAIN_TIMEOUT`].
    pub drain_timeout: Duration,
}

impl ServerConfig {
    /// A server on `bind_addr` with the defaults.
    pub fn new(bind_addr: SocketAddr) -> ServerConfig {
        ServerConfig {
            bind_addr,
            protocol_mode: None,
            codec: Builder::new(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

struct State {
    endpoint: Endpoint,
    config: ServerConfig,
    invocations: TaskTracker,
}

/// A bound endpoint server; [`serve`](EndpointServer::serve) runs it.
#[derive(Debug)]
pub struct EndpointServer {
    listener: TcpListener,
    endpoint: Endpoint,
    config: ServerConfig,
}

impl EndpointServer {
    /// Binds the listener.
    pub async fn bind(
        endpoint: Endpoint,
        config: ServerConfig,
    ) -> Result<EndpointServer, EndpointError> {
        let listener = TcpListener::bind(config.bind_addr)
            .await
            .map_err(|source| EndpointError::Bind {
                addr: config.bind_addr,
                source,
            })?;
        Ok(EndpointServer {
            listener,
            endpoint,
            config,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.bind_addr)
    }

    /// Serves until shut down.
    pub fn serve(self) -> ServerHandle {
        let local_addr = self.local_addr();
        let stop = CancellationToken::new();
        let connections = TaskTracker::new();
        let state = Arc::new(State {
            endpoint: self.endpoint,
            config: self.config,
            invocations: TaskTracker::new(),
        });
        let accept = tokio::spawn(accept_loop(
            self.listener,
            Arc::clone(&state),
            stop.clone(),
            connections.clone(),
        ));
        ServerHandle {
            local_addr,
            stop,
            accept,
            connections,
            state,
        }
    }
}

/// A running endpoint server.
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: CancellationToken,
    accept: tokio::task::JoinHandle<()>,
    connections: TaskTracker,
    state: Arc<State>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The address it listens on (register `http://ADDR` with Restate).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets the invocations in flight end (up to the drain timeout),
    /// then closes every connection.
    pub async fn shutdown(self) {
        self.accept.abort();
        let _ = self.accept.await;
        self.state.invocations.close();
        let _ = tokio::time::timeout(
            self.state.config.drain_timeout,
            self.state.invocations.wait(),
        )
        .await;
        self.stop.cancel();
        self.connections.close();
        self.connections.wait().await;
    }

    /// Stops at once, as if the process died: connections close and invocations stop
    /// where they are.
    pub async fn abort(self) {
        self.accept.abort();
        let _ = self.accept.await;
        self.stop.cancel();
        self.connections.close();
        self.connections.wait().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    stop: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // One failed accept never ends the loop.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let stop = stop.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(&state, request)) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                served = connection => {
                    if let Err(error) = served {
                        tracing::debug!(%peer, %error, "a connection ended with an error");
                    }
                }
                () = stop.cancelled() => {}
            }
        });
    }
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("x-restate-server", SERVER_HEADER)
        .body(Full::new(Bytes::from(text.into())).boxed())
        .expect("a valid response")
}

fn route(state: &Arc<State>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    if request.method() == Method::GET && path.ends_with("/discover") {
        return discover(state, &request);
    }
    if request.method() == Method::POST {
        let mut parts = path.rsplitn(4, '/');
        let (handler, service, invoke) = (parts.next(), parts.next(), parts.next());
        if let (Some(handler), Some(service), Some("invoke")) = (handler, service, invoke) {
            return invoke_handler(state, service.to_owned(), handler.to_owned(), request);
        }
    }
    plain(
        StatusCode::NOT_FOUND,
        format!("no route for {} {path}", request.method()),
    )
}

fn discover(state: &State, request: &Request<Incoming>) -> Response<Body> {
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(version) = manifest::negotiate(accept) else {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("none of the manifest versions in accept {accept:?} is one of v1 to v4"),
        );
    };
    let mode = state
        .config
        .protocol_mode
        .unwrap_or(if request.version() == Version::HTTP_2 {
            ProtocolMode::BidiStream
        } else {
            ProtocolMode::RequestResponse
        });
    let body = manifest::manifest(&state.endpoint, version, mode).to_string();
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, manifest::content_type(version))
        .header("x-restate-server", SERVER_HEADER)
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("a valid response")
}

/// The protocol version a `content-type` names, if this endpoint speaks it.
fn protocol_version(content_type: &str) -> Option<u32> {
    let version: u32 = content_type
        .trim()
        .strip_prefix("application/vnd.restate.invocation.v")?
        .parse()
        .ok()?;
    PROTOCOL_VERSIONS.contains(&version).then_some(version)
}

fn invoke_handler(
    state: &Arc<State>,
    service: String,
    handler: String,
    request: Request<Incoming>,
) -> Response<Body> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let Some(version) = protocol_version(&content_type) else {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "protocol {content_type:?} is not one of application/vnd.restate.invocation.v5 or v6"
            ),
        );
    };
    let Some((_, definition)) = state.endpoint.handler(&service, &handler) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("no handler {service}/{handler}"),
        );
    };
    let definition = definition.clone();
    let invocation_id = request
        .headers()
        .get("x-restate-invocation-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (out, mut outgoing) = mpsc::unbounded_channel::<Frame>();
    let codec = state.config.codec;
    let frames = request_frames(request.into_body(), RestateCodec::from_builder(&codec));
    state.invocations.spawn(async move {
        let ending = invocation::run(&definition, codec.get_max_decoded_size(), frames, out).await;
        tracing::debug!(%service, %handler, %invocation_id, ?ending, "an invocation attempt ended");
    });
    let mut encoder = RestateCodec::from_builder(&codec);
    let body = futures::stream::poll_fn(move |cx| outgoing.poll_recv(cx)).map(move |frame| {
        let mut chunk = BytesMut::new();
        if let Err(error) = encoder.encode(&frame, &mut chunk) {
            tracing::error!(%error, "a message could not be encoded");
        }
        Ok::<_, Infallible>(http_body::Frame::data(chunk.freeze()))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            format!("application/vnd.restate.invocation.v{version}"),
        )
        .header("x-restate-server", SERVER_HEADER)
        .body(http_body_util::BodyExt::boxed(StreamBody::new(body)))
        .expect("a valid response")
}

/// The request body as a stream of frames.
fn request_frames(
    body: Incoming,
    codec: RestateCodec,
) -> impl futures::Stream<Item = Result<Frame, taskwire_codec::CodecError>> + Unpin + Send {
    let reader = FrameReader {
        chunks: BodyStream::new(body),
        buffer: BytesMut::new(),
        codec,
        ended: false,
    };
    Box::pin(futures::stream::unfold(reader, |mut reader| async move {
        let frame = reader.next_frame().await?;
        Some((frame, reader))
    }))
}

/// Decodes frames from a body's data as it arrives.
struct FrameReader {
    chunks: BodyStream<Incoming>,
    buffer: BytesMut,
    codec: RestateCodec,
    /// The body ended, or a frame failed: nothing more is read.
    ended: bool,
}

impl FrameReader {
    async fn next_frame(&mut self) -> Option<Result<Frame, taskwire_codec::CodecError>> {
        loop {
            if self.ended {
                let last = self.codec.decode_eof(&mut self.buffer).transpose();
                if matches!(last, Some(Err(_))) {
                    self.fail();
                }
                return last;
            }
            match self.codec.decode(&mut self.buffer) {
                Ok(Some(frame)) => return Some(Ok(frame)),
                Ok(None) => {}
                Err(error) => {
                    self.fail();
                    return Some(Err(error));
                }
            }
            match self.chunks.next().await {
                Some(Ok(chunk)) => {
                    if let Ok(data) = chunk.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(error)) => {
                    self.fail();
                    return Some(Err(std::io::Error::other(error.to_string()).into()));
                }
                None => self.ended = true,
            }
        }
    }

    /// After an error the stream ends: nothing buffered is read.
    fn fail(&mut self) {
        self.ended = true;
        self.buffer.clear();
        self.codec = RestateCodec::new();
    }
}
