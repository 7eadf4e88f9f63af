//! What a handler can do durably: steps, timers, calls, awakeables, state and promises.
//!
//! Each operation is a command in the invocation's journal, recorded when the method is
//! called (so the journal's order is the code's order even when futures are joined) and
//! replayed from the journal when the invocation runs again. Awaiting a result that has
//! not arrived blocks the handler; when Restate can send nothing more on this stream, the
//! invocation suspends and Restate runs it again once a result is there.
//!
//! The contexts nest as the handler kinds do: [`ObjectContext`] derefs to
//! [`SharedObjectContext`], which derefs to [`Context`]; [`WorkflowContext`] derefs to
//! [`ObjectContext`] and [`SharedWorkflowContext`] to [`SharedObjectContext`].

use std::future::Future;
use std::ops::Deref;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::journal::{AttemptFailure, Awaited, Journal, Outcome};
use crate::{HandlerError, HandlerResult, Payload, TerminalError};

/// The invocation a context belongs to, shared with the driver that runs it.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) journal: Mutex<Journal>,
    /// A result arrived, or the input closed: awaiters look again.
    pub(crate) changed: Notify,
    /// An awaiter blocked, a step ended, or the attempt failed: the driver looks again.
    pub(crate) blocked: Notify,
}

impl Shared {
    pub(crate) fn new(journal: Journal) -> Shared {
        Shared {
            journal: Mutex::new(journal),
            changed: Notify::new(),
            blocked: Notify::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Journal> {
        // Every update is complete before the lock is released, so a poisoned lock still
        // holds a consistent journal.
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The handle every context wraps.
#[derive(Clone, Debug)]
pub(crate) struct Inner(pub(crate) Arc<Shared>);

impl Inner {
    /// Ends the attempt with `failure` (the first one wins) and never returns: the
    /// driver drops the handler.
    async fn fail<T>(&self, failure: AttemptFailure) -> T {
        self.record_failure(failure);
        std::future::pending().await
    }

    fn record_failure(&self, failure: AttemptFailure) {
        let mut journal = self.0.lock();
        if journal.failure.is_none() {
            journal.failure = Some(failure);
        }
        drop(journal);
        self.0.blocked.notify_one();
    }

    /// Waits for the result of `awaited`, or the invocation's cancellation.
    async fn result(&self, awaited: Awaited) -> Result<Outcome, TerminalError> {
        let mut registered = false;
        let _unregister = Unregister {
            inner: self,
            awaited: &awaited,
        };
        loop {
            let mut changed = pin!(self.0.changed.notified());
            changed.as_mut().enable();
            {
                let mut journal = self.0.lock();
                if let Some(outcome) = journal.take_result(&awaited) {
                    return Ok(outcome);
                }
                if journal.is_cancelled() {
                    return Err(TerminalError::cancelled());
                }
                if !registered {
                    *journal.awaiting.entry(awaited.clone()).or_default() += 1;
                    registered = true;
                }
            }
            self.0.blocked.notify_one();
            changed.await;
        }
    }

    /// Waits for a completion carrying a value or a failure.
    async fn value<T: Payload>(&self, id: u32) -> Result<T, TerminalError> {
        match self.result(Awaited::Completion(id)).await? {
            Outcome::Value(bytes) => T::from_bytes(bytes),
            Outcome::Failure(failure) => Err(failure),
            Outcome::Void => T::from_bytes(Bytes::new()),
            other => Err(unexpected(&other)),
        }
    }

    fn record<T>(
        &self,
        f: impl FnOnce(&mut Journal) -> Result<T, AttemptFailure>,
    ) -> Result<T, AttemptFailure> {
        let result = f(&mut self.0.lock());
        if let Err(failure) = &result {
            self.record_failure(failure.clone());
        }
        result
    }
}

/// Takes an awaiter off the journal's list when its await ends, however it ends.
struct Unregister<'a> {
    inner: &'a Inner,
    awaited: &'a Awaited,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        let mut journal = self.inner.0.lock();
        if let Some(count) = journal.awaiting.get_mut(self.awaited) {
            *count -= 1;
            if *count == 0 {
                journal.awaiting.remove(self.awaited);
            }
        }
    }
}

fn unexpected(outcome: &Outcome) -> TerminalError {
    TerminalError::with_code(
        500,
        format!("the runtime sent an unexpected result: {outcome:?}"),
    )
}

/// Counts a step as running while its closure runs, however it ends.
struct Running<'a>(&'a Inner);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.0.lock().running_steps -= 1;
        self.0.0.blocked.notify_one();
    }
}

/// A handler's address: a service and handler, and the key of an object or workflow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The service, object or workflow.
    pub service: String,
    /// The handler.
    pub handler: String,
    /// The key, for objects and workflows.
    pub key: Option<String>,
}

impl Target {
    /// A service's handler.
    pub fn service(service: &str, handler: &str) -> Target {
        Target {
            service: service.to_owned(),
            handler: handler.to_owned(),
            key: None,
        }
    }

    /// An object's or workflow's handler, for `key`.
    pub fn keyed(service: &str, key: &str, handler: &str) -> Target {
        Target {
            service: service.to_owned(),
            handler: handler.to_owned(),
            key: Some(key.to_owned()),
        }
    }

    pub(crate) fn is(&self, service: &str, handler: &str, key: &str) -> bool {
        self.service == service
            && self.handler == handler
            && self.key.as_deref().unwrap_or("") == key
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}/{}/{}", self.service, key, self.handler),
            None => write!(f, "{}/{}", self.service, self.handler),
        }
    }
}

fn millis_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A service handler's context: what every handler can do.
#[derive(Clone, Debug)]
pub struct Context {
    pub(crate) inner: Inner,
}

impl Context {
    pub(crate) fn new(inner: Inner) -> Context {
        Context { inner }
    }

    /// The invocation's id (`inv_...`).
    pub fn invocation_id(&self) -> String {
        self.inner.0.lock().debug_id.clone()
    }

    /// Runs `step` once per journal: its result is stored, and a replay returns the stored
    /// result without running it. A retryable error ends the attempt (Restate retries and
    /// the step runs again); a terminal one is stored and returned.
    pub fn run<T, F, Fut>(
        &self,
        name: &str,
        step: F,
    ) -> impl Future<Output = Result<T, TerminalError>> + Send + use<T, F, Fut>
    where
        T: Payload,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = HandlerResult<T>> + Send,
    {
        let inner = self.inner.clone();
        let recorded = inner.record(|journal| journal.run(name));
        let name = name.to_owned();
        async move {
            let Ok(id) = recorded else {
                return std::future::pending().await;
            };
            let stored = inner.0.lock().take_result(&Awaited::Completion(id));
            if let Some(stored) = stored {
                return match stored {
                    Outcome::Value(bytes) => T::from_bytes(bytes),
                    Outcome::Failure(failure) => Err(failure),
                    other => Err(unexpected(&other)),
                };
            }
            let result = {
                inner.0.lock().running_steps += 1;
                let _running = Running(&inner);
                step().await
            };
            let proposed = match result {
                Ok(value) => value.to_bytes(),
                Err(HandlerError::Terminal(failure)) => Err(failure),
                Err(error) => {
                    let mut failure = AttemptFailure::retryable(
                        &error,
                        Some(crate::MessageType::RunCommand.code()),
                        Some(name.clone()),
                    );
                    failure.message = format!("step {name:?} failed: {}", failure.message);
                    return inner.fail(failure).await;
                }
            };
            inner.0.lock().propose_run(id, proposed);
            inner.0.blocked.notify_one();
            inner.value::<T>(id).await
        }
    }

    /// Waits `duration` durably: the invocation may suspend meanwhile, and a replay that
    /// comes after the timer fired does not wait again.
    pub fn sleep(
        &self,
        duration: Duration,
    ) -> impl Future<Output = Result<(), TerminalError>> + Send + use<> {
        let inner = self.inner.clone();
        let wake = millis_since_epoch(SystemTime::now() + duration);
        let recorded = inner.record(|journal| journal.sleep(wake, ""));
        async move {
            let Ok(id) = recorded else {
                return std::future::pending().await;
            };
            inner.result(Awaited::Completion(id)).await.map(|_| ())
        }
    }

    /// Calls `target` with `input` and waits for its answer.
    pub fn call<I: Payload, O: Payload>(
        &self,
        target: &Target,
        input: &I,
    ) -> impl Future<Output = Result<O, TerminalError>> + Send + use<I, O> {
        let inner = self.inner.clone();
        let recorded = input
            .to_bytes()
            .map(|parameter| inner.record(|journal| journal.call(target, parameter)));
        async move {
            match recorded {
                Err(failure) => Err(failure),
                Ok(Err(_)) => std::future::pending().await,
                Ok(Ok(id)) => inner.value::<O>(id).await,
            }
        }
    }

    /// Sends `input` to `target` without waiting for it, after `delay` if given.
    pub fn send<I: Payload>(
        &self,
        target: &Target,
        input: &I,
        delay: Option<Duration>,
    ) -> Result<(), TerminalError> {
        let parameter = input.to_bytes()?;
        let at = delay.map_or(0, |delay| millis_since_epoch(SystemTime::now() + delay));
        // A journal mismatch ends the attempt; the handler is stopped at its next await.
        let _ = self
            .inner
            .record(|journal| journal.send_one_way(target, parameter, at));
        Ok(())
    }

    /// A new awakeable: an id to hand to someone else, and the future of the value they
    /// resolve it with (through Restate's `/restate/awakeables/{id}/resolve`, or
    /// [`resolve_awakeable`](Self::resolve_awakeable)).
    pub fn awakeable<T: Payload>(
        &self,
    ) -> (
        String,
        impl Future<Output = Result<T, TerminalError>> + Send + use<T>,
    ) {
        let inner = self.inner.clone();
        let (index, id) = {
            let mut journal = inner.0.lock();
            let index = journal.awakeable();
            let mut raw = journal.id.to_vec();
            raw.extend_from_slice(&index.to_be_bytes());
            (
                index,
                format!(
                    "sign_1{}",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
                ),
            )
        };
        let future = async move {
            match inner.result(Awaited::Signal(index)).await? {
                Outcome::Value(bytes) => T::from_bytes(bytes),
                Outcome::Failure(failure) => Err(failure),
                Outcome::Void => T::from_bytes(Bytes::new()),
                other => Err(unexpected(&other)),
            }
        };
        (id, future)
    }

    /// Resolves the awakeable `id` (of any invocation) with `value`.
    pub fn resolve_awakeable<T: Payload>(&self, id: &str, value: &T) -> Result<(), TerminalError> {
        let value = value.to_bytes()?;
        let _ = self
            .inner
            .record(|journal| journal.complete_awakeable(id, Ok(value)));
        Ok(())
    }

    /// Rejects the awakeable `id` with `failure`.
    pub fn reject_awakeable(&self, id: &str, failure: TerminalError) {
        let _ = self
            .inner
            .record(|journal| journal.complete_awakeable(id, Err(failure)));
    }
}

/// A shared handler's context on a virtual object: the object's key and its state, read
/// only.
#[derive(Clone, Debug)]
pub struct SharedObjectContext {
    base: Context,
}

impl Deref for SharedObjectContext {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.base
    }
}

impl SharedObjectContext {
    pub(crate) fn new(inner: Inner) -> SharedObjectContext {
        SharedObjectContext {
            base: Context::new(inner),
        }
    }

    /// The object's key.
    pub fn key(&self) -> String {
        self.inner.0.lock().key.clone()
    }

    /// The value of `key`, if set.
    pub fn get<T: Payload>(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<T>, TerminalError>> + Send + use<T> {
        let inner = self.inner.clone();
        let key = Bytes::copy_from_slice(key.as_bytes());
        let recorded = inner.record(|journal| journal.get_state(&key));
        async move {
            match recorded {
                Err(_) => std::future::pending().await,
                Ok(Err(known)) => known.map(T::from_bytes).transpose(),
                Ok(Ok(id)) => {
                    let value = match inner.result(Awaited::Completion(id)).await? {
                        Outcome::Value(bytes) => Some(bytes),
                        Outcome::Void => None,
                        other => return Err(unexpected(&other)),
                    };
                    inner.0.lock().learned_state(&key, value.clone());
                    value.map(T::from_bytes).transpose()
                }
            }
        }
    }

    /// The keys that have values.
    pub fn state_keys(
        &self,
    ) -> impl Future<Output = Result<Vec<String>, TerminalError>> + Send + use<> {
        let inner = self.inner.clone();
        let recorded = inner.record(Journal::state_keys);
        async move {
            let keys = match recorded {
                Err(_) => return std::future::pending().await,
                Ok(Err(keys)) => keys,
                Ok(Ok(id)) => match inner.result(Awaited::Completion(id)).await? {
                    Outcome::StateKeys(keys) => keys,
                    other => return Err(unexpected(&other)),
                },
            };
            Ok(keys
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect())
        }
    }
}

/// An exclusive handler's context on a virtual object: state read and written.
#[derive(Clone, Debug)]
pub struct ObjectContext {
    base: SharedObjectContext,
}

impl Deref for ObjectContext {
    type Target = SharedObjectContext;
    fn deref(&self) -> &SharedObjectContext {
        &self.base
    }
}

impl ObjectContext {
    pub(crate) fn new(inner: Inner) -> ObjectContext {
        ObjectContext {
            base: SharedObjectContext::new(inner),
        }
    }

    /// Sets `key` to `value`.
    pub fn set<T: Payload>(&self, key: &str, value: &T) -> Result<(), TerminalError> {
        let value = value.to_bytes()?;
        let key = Bytes::copy_from_slice(key.as_bytes());
        let _ = self.inner.record(|journal| journal.set_state(key, value));
        Ok(())
    }

    /// Removes `key`.
    pub fn clear(&self, key: &str) {
        let key = Bytes::copy_from_slice(key.as_bytes());
        let _ = self.inner.record(|journal| journal.clear_state(key));
    }

    /// Removes every key.
    pub fn clear_all(&self) {
        let _ = self.inner.record(Journal::clear_all_state);
    }
}

/// What workflow contexts add: durable promises, shared by the run handler and the
/// workflow's shared handlers.
fn promise<T: Payload>(
    inner: &Inner,
    name: &str,
    peek: bool,
) -> impl Future<Output = Result<Option<T>, TerminalError>> + Send + use<T> {
    let inner = inner.clone();
    let recorded = inner.record(|journal| journal.promise(name, peek));
    async move {
        let Ok(id) = recorded else {
            return std::future::pending().await;
        };
        match inner.result(Awaited::Completion(id)).await? {
            Outcome::Value(bytes) => T::from_bytes(bytes).map(Some),
            Outcome::Failure(failure) => Err(failure),
            Outcome::Void => Ok(None),
            other => Err(unexpected(&other)),
        }
    }
}

fn complete_promise(
    inner: &Inner,
    name: &str,
    result: Result<Bytes, TerminalError>,
) -> impl Future<Output = Result<(), TerminalError>> + Send + use<> {
    let inner = inner.clone();
    let recorded = inner.record(|journal| journal.complete_promise(name, result));
    async move {
        let Ok(id) = recorded else {
            return std::future::pending().await;
        };
        match inner.result(Awaited::Completion(id)).await? {
            Outcome::Failure(failure) => Err(failure),
            _ => Ok(()),
        }
    }
}

macro_rules! promises {
    ($ty:ident) => {
        impl $ty {
            /// Waits until the workflow's promise `name` is resolved, and returns its value.
            pub async fn promise<T: Payload>(&self, name: &str) -> Result<T, TerminalError> {
                promise::<T>(&self.inner, name, false)
                    .await?
                    .ok_or_else(|| {
                        TerminalError::with_code(500, "the promise resolved without a value")
                    })
            }

            /// The promise's value if it is resolved already.
            pub fn peek_promise<T: Payload>(
                &self,
                name: &str,
            ) -> impl Future<Output = Result<Option<T>, TerminalError>> + Send + use<T> {
                promise::<T>(&self.inner, name, true)
            }

            /// Resolves the promise `name`; fails if it was completed already.
            pub fn resolve_promise<T: Payload>(
                &self,
                name: &str,
                value: &T,
            ) -> impl Future<Output = Result<(), TerminalError>> + Send + use<T> {
                let result = value.to_bytes();
                let inner = self.inner.clone();
                let name = name.to_owned();
                async move { complete_promise(&inner, &name, Ok(result?)).await }
            }

            /// Rejects the promise `name`.
            pub fn reject_promise(
                &self,
                name: &str,
                failure: TerminalError,
            ) -> impl Future<Output = Result<(), TerminalError>> + Send + use<> {
                complete_promise(&self.inner, name, Err(failure))
            }
        }
    };
}

/// A workflow's run handler context: the object's state, and its promises.
#[derive(Clone, Debug)]
pub struct WorkflowContext {
    base: ObjectContext,
}

impl Deref for WorkflowContext {
    type Target = ObjectContext;
    fn deref(&self) -> &ObjectContext {
        &self.base
    }
}

impl WorkflowContext {
    pub(crate) fn new(inner: Inner) -> WorkflowContext {
        WorkflowContext {
            base: ObjectContext::new(inner),
        }
    }
}
promises!(WorkflowContext);

/// A workflow's shared handler context: state read only, and the promises.
#[derive(Clone, Debug)]
pub struct SharedWorkflowContext {
    base: SharedObjectContext,
}

impl Deref for SharedWorkflowContext {
    type Target = SharedObjectContext;
    fn deref(&self) -> &SharedObjectContext {
        &self.base
    }
}

impl SharedWorkflowContext {
    pub(crate) fn new(inner: Inner) -> SharedWorkflowContext {
        SharedWorkflowContext {
            base: SharedObjectContext::new(inner),
        }
    }
}
promises!(SharedWorkflowContext);
