//! An in-memory implementation of every taskwire conversation, faithful enough to exercise
//! each rpc: the protocol's executable example.
//!
//! [`ReferenceServer::router`] answers the instance, environment, management and runner
//! rpcs and the journal stream. It keeps instances, checkpoints, signals, images and jobs
//! in memory, per tenant, so it is **not** a durable engine: a restart forgets
//! everything. The `taskwire` command serves it, the demo drives it, and the integration
//! tests, benches and interop checks call it.
//!
//! # Tenants
//!
//! Every call is scoped to the caller's tenant, taken from its client certificate
//! (`taskwire://TENANT/ID`, see `taskwire-tls`). A tenant sees only its own instances,
//! checkpoints, signals, images and jobs: asking for another tenant's object answers
//! `NOT_FOUND`, exactly as if it did not exist, and naming another tenant in a request
//! field answers `PERMISSION_DENIED`. A caller without a certificate tenant is refused
//! `UNAUTHENTICATED`, unless the server is configured with
//! [`TenantSource::ClaimedInHello`] for local development.
//!
//! # Example
//!
//! The router served over plaintext TCP on loopback (it serves QUIC the same way, with
//! `taskwire_quic::QuicServer::serve`), for a client that claims tenant `acme` in its
//! Hello: it registers an instance, then reads its status back.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use taskwire_proto::instance::v1::{InstanceState, RegisterInstanceRequest};
//! use taskwire_proto::management::v1::GetInstanceStatusRequest;
//! use taskwire_reference::{ReferenceConfig, ReferenceServer, TenantSource};
//! use taskwire_tcp::{TcpClient, TcpClientConfig, TcpServer, TcpServerConfig};
//!
//! // Local development without client certificates: trust the tenant claimed in the Hello.
//! let config = ReferenceConfig::default().tenants(TenantSource::ClaimedInHello);
//! let reference = ReferenceServer::new(config);
//! let router = reference.router();
//! assert!(router.handles(0x0105), "RegisterInstanceRequest is routed");
//! let listen = TcpServerConfig::plaintext_loopback("127.0.0.1:0".parse()?);
//! let server = TcpServer::bind(listen).await?.serve(router);
//!
//! let mut client = TcpClientConfig::plaintext_loopback(server.local_addr());
//! client.session.tenant = "acme".into();
//! let connection = TcpClient::new(client).connect().await?;
//!
//! let registered = connection
//!     .call(RegisterInstanceRequest {
//!         instance_id: "order-7".into(),
//!         image_id: "orders:1".into(),
//!         ..Default::default()
//!     })
//!     .await?;
//! assert!(registered.accepted);
//!
//! let answer = connection
//!     .call(GetInstanceStatusRequest { instance_id: "order-7".into() })
//!     .await?;
//! let status = answer.status.expect("the instance has a status");
//! assert_eq!(status.state(), InstanceState::Running);
//! assert_eq!(status.tenant_id, "acme");
//!
//! drop(connection);
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod environment;
mod instance;
mod journal;
mod management;
mod paging;
mod runner;
mod store;
mod tenant;

use std::sync::Arc;
use std::time::{Duration, Instant};

use taskwire_rpc::Router;

pub use journal::{GREETER_SLEEP, greeting};
pub use runner::FUNCTIONS;
pub use store::StoreSizes;
pub use tenant::TenantSource;

use crate::store::Shared;

/// Limits and policies of a [`ReferenceServer`]. Every limit bounds memory a client can
/// make the server hold; past one, the call is answered `RESOURCE_EXHAUSTED`.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct ReferenceConfig {
    /// Where a call's tenant comes from. Default: [`TenantSource::Certificate`].
    pub tenants: TenantSource,
    /// Most instances one tenant may hold. Default: 100,000.
    pub max_instances_per_tenant: usize,
    /// Most checkpoints stored per instance. Default: 10,000.
    pub max_checkpoints_per_instance: usize,
    /// Most unacknowledged signals per instance. Default: 1,000.
    pub max_pending_signals: usize,
    /// Most images one tenant may hold. Default: 1,000.
    pub max_images_per_tenant: usize,
    /// Largest image content accepted by `RegisterImage`, in bytes. The upload is held in
    /// memory while it arrives, so this is also the memory one upload can cost. Default:
    /// 64 MiB.
    pub max_image_bytes: u64,
    /// Bytes the server stores for all tenants together (checkpoint state, instance
    /// inputs, image content); past it a call that would store more is answered
    /// `RESOURCE_EXHAUSTED` before anything is kept, and an image upload before its first
    /// chunk is read. Default: 1 GiB.
    pub max_stored_bytes: u64,
    /// The share of [`max_stored_bytes`](Self::max_stored_bytes) one tenant may hold, so
    /// that one tenant cannot take the budget from the others. Default: 256 MiB.
    pub max_stored_bytes_per_tenant: u64,
    /// Bytes of request frames (upload chunks, journal entries) queued for handlers that
    /// have not read them yet, for all tenants together, over every transport the
    /// server's routers serve; a frame past it answers its call `RESOURCE_EXHAUSTED`
    /// ([`Router::buffer_budget`]). Default: 512 MiB.
    pub max_buffered_bytes: u64,
    /// The share of [`max_buffered_bytes`](Self::max_buffered_bytes) one tenant may hold.
    /// Default: 128 MiB.
    pub max_buffered_bytes_per_tenant: u64,
    /// Longest a `PollSignals` call is held waiting for a signal. Default: 30 s.
    pub max_poll_wait: Duration,
    /// How long the journal handler waits for a result it needs before it suspends the
    /// invocation. Default: 200 ms.
    pub journal_suspend_after: Duration,
}

impl Default for ReferenceConfig {
    fn default() -> Self {
        ReferenceConfig {
            tenants: TenantSource::Certificate,
            max_instances_per_tenant: 100_000,
            max_checkpoints_per_instance: 10_000,
            max_pending_signals: 1_000,
            max_images_per_tenant: 1_000,
            max_image_bytes: 64 << 20,
            max_stored_bytes: 1 << 30,
            max_stored_bytes_per_tenant: 256 << 20,
            max_buffered_bytes: taskwire_rpc::DEFAULT_MAX_BUFFERED_BYTES,
            max_buffered_bytes_per_tenant: taskwire_rpc::DEFAULT_MAX_BUFFERED_BYTES_PER_TENANT,
            max_poll_wait: Duration::from_secs(30),
            journal_suspend_after: Duration::from_millis(200),
        }
    }
}

impl ReferenceConfig {
    /// Sets [`tenants`](Self::tenants).
    pub fn tenants(mut self, value: TenantSource) -> Self {
        self.tenants = value;
        self
    }

    /// Sets [`max_instances_per_tenant`](Self::max_instances_per_tenant).
    pub fn max_instances_per_tenant(mut self, value: usize) -> Self {
        self.max_instances_per_tenant = value;
        self
    }

    /// Sets [`max_checkpoints_per_instance`](Self::max_checkpoints_per_instance).
    pub fn max_checkpoints_per_instance(mut self, value: usize) -> Self {
        self.max_checkpoints_per_instance = value;
        self
    }

    /// Sets [`max_pending_signals`](Self::max_pending_signals).
    pub fn max_pending_signals(mut self, value: usize) -> Self {
        self.max_pending_signals = value;
        self
    }

    /// Sets [`max_images_per_tenant`](Self::max_images_per_tenant).
    pub fn max_images_per_tenant(mut self, value: usize) -> Self {
        self.max_images_per_tenant = value;
        self
    }

    /// Sets [`max_image_bytes`](Self::max_image_bytes).
    pub fn max_image_bytes(mut self, value: u64) -> Self {
        self.max_image_bytes = value;
        self
    }

    /// Sets [`max_stored_bytes`](Self::max_stored_bytes).
    pub fn max_stored_bytes(mut self, value: u64) -> Self {
        self.max_stored_bytes = value;
        self
    }

    /// Sets [`max_stored_bytes_per_tenant`](Self::max_stored_bytes_per_tenant).
    pub fn max_stored_bytes_per_tenant(mut self, value: u64) -> Self {
        self.max_stored_bytes_per_tenant = value;
        self
    }

    /// Sets [`max_buffered_bytes`](Self::max_buffered_bytes).
    pub fn max_buffered_bytes(mut self, value: u64) -> Self {
        self.max_buffered_bytes = value;
        self
    }

    /// Sets [`max_buffered_bytes_per_tenant`](Self::max_buffered_bytes_per_tenant).
    pub fn max_buffered_bytes_per_tenant(mut self, value: u64) -> Self {
        self.max_buffered_bytes_per_tenant = value;
        self
    }

    /// Sets [`max_poll_wait`](Self::max_poll_wait).
    pub fn max_poll_wait(mut self, value: Duration) -> Self {
        self.max_poll_wait = value;
        self
    }

    /// Sets [`journal_suspend_after`](Self::journal_suspend_after).
    pub fn journal_suspend_after(mut self, value: Duration) -> Self {
        self.journal_suspend_after = value;
        self
    }
}

/// The in-memory reference server. Cheap to clone: clones share one store.
#[derive(Clone, Debug)]
pub struct ReferenceServer {
    shared: Arc<Shared>,
}

impl ReferenceServer {
    /// An empty server.
    pub fn new(config: ReferenceConfig) -> ReferenceServer {
        ReferenceServer {
            shared: Arc::new(Shared::new(config, Instant::now())),
        }
    }

    /// A router answering every rpc of the instance, environment, management and runner
    /// conversations, and journal streams (which open with `Start`). Calls are
    /// authorized by tenant before their handler runs.
    pub fn router(&self) -> Router {
        let mut router = Router::new();
        let shared = Arc::clone(&self.shared);
        router.authorize(move |ctx, _type_id| shared.config.tenants.resolve(ctx).map(drop));
        router.buffer_budget(Arc::clone(&self.shared.buffered));
        instance::routes(&mut router, &self.shared);
        environment::routes(&mut router, &self.shared);
        management::routes(&mut router, &self.shared);
        runner::routes(&mut router, &self.shared);
        journal::routes(&mut router, &self.shared);
        router
    }

    /// How much the store holds now, for tests and memory reports.
    pub fn sizes(&self) -> StoreSizes {
        self.shared.sizes()
    }
}

/// Routes the unary rpc `R` to a synchronous handler that gets the caller's tenant.
fn unary<R>(
    router: &mut Router,
    shared: &Arc<Shared>,
    handler: fn(&Shared, &str, R) -> Result<R::Response, taskwire_rpc::Status>,
) where
    R: taskwire_proto::Rpc,
    R::Response: taskwire_proto::WireMessage,
{
    let shared = Arc::clone(shared);
    router.unary(move |ctx, request: R| {
        let result = shared
            .tenant_of(&ctx)
            .and_then(|tenant| handler(&shared, &tenant, request));
        async move { result }
    });
}
