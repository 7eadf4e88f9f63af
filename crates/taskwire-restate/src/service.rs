//! Services, virtual objects and workflows, and the endpoint that holds them.
//!
//! ```
//! use taskwire_restate::{Context, Endpoint, HandlerResult, Json, ObjectContext, Service, SharedObjectContext, VirtualObject};
//!
//! async fn greet(ctx: Context, Json(name): Json<String>) -> HandlerResult<Json<String>> {
//!     Ok(Json(format!("Hello, {name}!")))
//! }
//! async fn add(ctx: ObjectContext, Json(delta): Json<i64>) -> HandlerResult<Json<i64>> {
//!     let count = ctx.get::<Json<i64>>("count").await?.map_or(0, |Json(n)| n) + delta;
//!     ctx.set("count", &Json(count))?;
//!     Ok(Json(count))
//! }
//! async fn get(ctx: SharedObjectContext, _: ()) -> HandlerResult<Json<i64>> {
//!     Ok(Json(ctx.get::<Json<i64>>("count").await?.map_or(0, |Json(n)| n)))
//! }
//!
//! let endpoint = Endpoint::builder()
//!     .bind(Service::new("Greeter").handler("greet", greet))
//!     .bind(VirtualObject::new("Counter").exclusive("add", add).shared("get", get))
//!     .build()?;
//! assert_eq!(endpoint.services().count(), 2);
//! # Ok::<(), taskwire_restate::EndpointError>(())
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt as _;
use futures::future::BoxFuture;

use crate::context::{
    Context, ObjectContext, SharedObjectContext, SharedWorkflowContext, WorkflowContext,
};
use crate::{EndpointError, HandlerError, HandlerResult, Payload};

/// What kind of service: decides the handlers' context and how Restate runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// Stateless handlers; any number run at once.
    Service,
    /// Keyed state; exclusive handlers run one at a time per key, shared ones alongside.
    VirtualObject,
    /// A keyed object whose `run` handler runs once per key, with durable promises.
    Workflow,
}

impl ServiceKind {
    pub(crate) fn manifest_name(self) -> &'static str {
        match self {
            ServiceKind::Service => "SERVICE",
            ServiceKind::VirtualObject => "VIRTUAL_OBJECT",
            ServiceKind::Workflow => "WORKFLOW",
        }
    }
}

/// How a handler of an object or workflow runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerKind {
    /// A service's handler.
    Plain,
    /// One at a time per key, and may write state.
    Exclusive,
    /// Alongside others on the same key; reads state only.
    Shared,
    /// A workflow's run: once per key.
    Workflow,
}

impl HandlerKind {
    pub(crate) fn manifest_name(self) -> Option<&'static str> {
        match self {
            HandlerKind::Plain => None,
            HandlerKind::Exclusive => Some("EXCLUSIVE"),
            HandlerKind::Shared => Some("SHARED"),
            HandlerKind::Workflow => Some("WORKFLOW"),
        }
    }
}

/// A handler with its types erased: the invocation's context, and its input bytes.
pub(crate) type ErasedHandler = Arc<
    dyn Fn(crate::context::Inner, Bytes) -> BoxFuture<'static, HandlerResult<Bytes>> + Send + Sync,
>;

/// One handler as the endpoint keeps it.
#[derive(Clone)]
pub(crate) struct HandlerDef {
    pub(crate) name: String,
    pub(crate) kind: HandlerKind,
    pub(crate) input_content_type: Option<&'static str>,
    pub(crate) output_content_type: Option<&'static str>,
    pub(crate) run: ErasedHandler,
}

impl std::fmt::Debug for HandlerDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerDef")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

fn erase<C, I, O, F, Fut>(make: fn(crate::context::Inner) -> C, handler: F) -> ErasedHandler
where
    C: Send + 'static,
    I: Payload,
    O: Payload,
    F: Fn(C, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult<O>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |inner, input| {
        let handler = Arc::clone(&handler);
        async move {
            let input = I::from_bytes(input).map_err(HandlerError::Terminal)?;
            let output = handler(make(inner), input).await?;
            output.to_bytes().map_err(HandlerError::Terminal)
        }
        .boxed()
    })
}

fn def<I: Payload, O: Payload>(name: &str, kind: HandlerKind, run: ErasedHandler) -> HandlerDef {
    HandlerDef {
        name: name.to_owned(),
        kind,
        input_content_type: I::CONTENT_TYPE,
        output_content_type: O::CONTENT_TYPE,
        run,
    }
}

/// Options of a service, announced in the manifest (Restate applies them). Unset ones
/// take the server's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ServiceOptions {
    /// How long an invocation may stay idle before Restate asks it to suspend.
    pub inactivity_timeout: Option<Duration>,
    /// How long after that Restate waits before it aborts the attempt.
    pub abort_timeout: Option<Duration>,
    /// The first retry delay (manifest v4).
    pub retry_initial_interval: Option<Duration>,
    /// The most attempts (manifest v4).
    pub retry_max_attempts: Option<u32>,
}

/// A service, virtual object or workflow: a name and its handlers.
#[derive(Clone, Debug)]
pub struct ServiceDef {
    pub(crate) name: String,
    pub(crate) kind: ServiceKind,
    pub(crate) handlers: Vec<HandlerDef>,
    pub(crate) options: ServiceOptions,
}

impl ServiceDef {
    fn new(name: &str, kind: ServiceKind) -> ServiceDef {
        ServiceDef {
            name: name.to_owned(),
            kind,
            handlers: Vec::new(),
            options: ServiceOptions::default(),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its kind.
    pub fn kind(&self) -> ServiceKind {
        self.kind
    }

    /// Its handlers' names.
    pub fn handler_names(&self) -> impl Iterator<Item = &str> {
        self.handlers.iter().map(|h| h.name.as_str())
    }
}

macro_rules! builder_common {
    ($ty:ident) => {
        impl $ty {
            /// Sets the options announced for it.
            #[must_use]
            pub fn options(mut self, options: ServiceOptions) -> Self {
                self.0.options = options;
                self
            }
        }

        impl From<$ty> for ServiceDef {
            fn from(service: $ty) -> ServiceDef {
                service.0
            }
        }
    };
}

/// A stateless service.
#[derive(Clone, Debug)]
pub struct Service(ServiceDef);

impl Service {
    /// A service named `name`.
    pub fn new(name: &str) -> Service {
        Service(ServiceDef::new(name, ServiceKind::Service))
    }

    /// Adds a handler.
    #[must_use]
    pub fn handler<I, O, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        I: Payload,
        O: Payload,
        F: Fn(Context, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<O>> + Send + 'static,
    {
        let run = erase(Context::new, handler);
        self.0
            .handlers
            .push(def::<I, O>(name, HandlerKind::Plain, run));
        self
    }
}
builder_common!(Service);

/// A virtual object: handlers keyed by object, with state per key.
#[derive(Clone, Debug)]
pub struct VirtualObject(ServiceDef);

impl VirtualObject {
    /// A virtual object named `name`.
    pub fn new(name: &str) -> VirtualObject {
        VirtualObject(ServiceDef::new(name, ServiceKind::VirtualObject))
    }

    /// Adds an exclusive handler: one at a time per key; may write state.
    #[must_use]
    pub fn exclusive<I, O, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        I: Payload,
        O: Payload,
        F: Fn(ObjectContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<O>> + Send + 'static,
    {
        let run = erase(ObjectContext::new, handler);
        self.0
            .handlers
            .push(def::<I, O>(name, HandlerKind::Exclusive, run));
        self
    }

    /// Adds a shared handler: runs alongside others on the same key; reads state only.
    #[must_use]
    pub fn shared<I, O, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        I: Payload,
        O: Payload,
        F: Fn(SharedObjectContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<O>> + Send + 'static,
    {
        let run = erase(SharedObjectContext::new, handler);
        self.0
            .handlers
            .push(def::<I, O>(name, HandlerKind::Shared, run));
        self
    }
}
builder_common!(VirtualObject);

/// A workflow: a `run` handler that runs once per key, shared handlers beside it, and
/// durable promises between them.
#[derive(Clone, Debug)]
pub struct Workflow(ServiceDef);

impl Workflow {
    /// A workflow named `name`.
    pub fn new(name: &str) -> Workflow {
        Workflow(ServiceDef::new(name, ServiceKind::Workflow))
    }

    /// Sets the workflow's run handler (one per workflow).
    #[must_use]
    pub fn run<I, O, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        I: Payload,
        O: Payload,
        F: Fn(WorkflowContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<O>> + Send + 'static,
    {
        let run = erase(WorkflowContext::new, handler);
        self.0
            .handlers
            .push(def::<I, O>(name, HandlerKind::Workflow, run));
        self
    }

    /// Adds a shared handler, which can read state and complete promises.
    #[must_use]
    pub fn shared<I, O, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        I: Payload,
        O: Payload,
        F: Fn(SharedWorkflowContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<O>> + Send + 'static,
    {
        let run = erase(SharedWorkflowContext::new, handler);
        self.0
            .handlers
            .push(def::<I, O>(name, HandlerKind::Shared, run));
        self
    }
}
builder_common!(Workflow);

/// The services an endpoint serves.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub(crate) services: BTreeMap<String, ServiceDef>,
}

/// Collects services into an [`Endpoint`].
#[derive(Debug, Default)]
pub struct EndpointBuilder {
    services: Vec<ServiceDef>,
}

impl Endpoint {
    /// An empty builder.
    pub fn builder() -> EndpointBuilder {
        EndpointBuilder::default()
    }

    /// The services.
    pub fn services(&self) -> impl Iterator<Item = &ServiceDef> {
        self.services.values()
    }

    pub(crate) fn handler(
        &self,
        service: &str,
        handler: &str,
    ) -> Option<(&ServiceDef, &HandlerDef)> {
        let service = self.services.get(service)?;
        let handler = service.handlers.iter().find(|h| h.name == handler)?;
        Some((service, handler))
    }
}

/// Whether `name` fits the manifest's pattern for service and handler names.
fn valid_name(name: &str, dots: bool) -> bool {
    let mut chars = name.chars();
    let first_ok = match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => true,
        Some('_') => chars
            .clone()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric()),
        _ => false,
    };
    first_ok
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || (dots && (c == '.' || c == '-')))
}

impl EndpointBuilder {
    /// Adds a service, virtual object or workflow.
    #[must_use]
    pub fn bind(mut self, service: impl Into<ServiceDef>) -> Self {
        self.services.push(service.into());
        self
    }

    /// The endpoint. Refuses names Restate would refuse, a name used twice, and a
    /// workflow without exactly one run handler.
    pub fn build(self) -> Result<Endpoint, EndpointError> {
        let mut services = BTreeMap::new();
        for service in self.services {
            if !valid_name(&service.name, true) {
                return Err(EndpointError::Definition(format!(
                    "service name {:?} is not a letter (or `_` and an alphanumeric) followed by letters, digits, `_`, `.` or `-`",
                    service.name
                )));
            }
            let mut seen = std::collections::BTreeSet::new();
            for handler in &service.handlers {
                if !valid_name(&handler.name, false) || !seen.insert(&handler.name) {
                    return Err(EndpointError::Definition(format!(
                        "handler {:?} of {:?}: invalid or given twice",
                        handler.name, service.name
                    )));
                }
            }
            let runs = service
                .handlers
                .iter()
                .filter(|h| h.kind == HandlerKind::Workflow)
                .count();
            if service.kind == ServiceKind::Workflow && runs != 1 {
                return Err(EndpointError::Definition(format!(
                    "workflow {:?} has {runs} run handlers; it needs exactly one",
                    service.name
                )));
            }
            if services.insert(service.name.clone(), service).is_some() {
                return Err(EndpointError::Definition(
                    "a service name is given twice".into(),
                ));
            }
        }
        Ok(Endpoint { services })
    }
}
