//! One invocation's journal, with no I/O: what was replayed, what the handler records,
//! which results have arrived, and what goes out.
//!
//! Every command the handler makes is checked against the journal Restate sent while
//! there are stored commands left (replay): the same type at the same index, the same
//! identifying fields (a step's name, a state key, a call's target), or the attempt
//! ends with `JOURNAL_MISMATCH` (570). Past the stored journal, commands are new and are
//! sent. Results (notifications) are kept by completion id or signal until the handler
//! awaits them, whether they were replayed or arrive later.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use bytes::Bytes;

use crate::codec::Frame;
use crate::generated::registry::{Message, MessageType};
use crate::protocol::{self, start_message::StateEntry};
use crate::{TerminalError, v6};

/// The code of an `ErrorMessage` for a journal the handler's code does not replay.
pub const JOURNAL_MISMATCH: u32 = 570;
/// The code of an `ErrorMessage` for a message the state machine did not expect.
pub const PROTOCOL_VIOLATION: u32 = 571;

/// The first signal index of awakeables; lower ones are built in (1 is cancellation).
pub(crate) const FIRST_USER_SIGNAL: u32 = 17;
/// The built-in cancellation signal.
pub(crate) const CANCEL_SIGNAL: u32 = 1;

/// What a result is waited for by.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Awaited {
    Completion(u32),
    Signal(u32),
    Named(String),
}

/// A result as it arrived.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    Void,
    Value(Bytes),
    Failure(TerminalError),
    InvocationId(String),
    StateKeys(Vec<Bytes>),
}

/// Why an attempt ends with an `ErrorMessage` rather than an output.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AttemptFailure {
    pub(crate) code: u32,
    pub(crate) message: String,
    pub(crate) command_index: Option<u32>,
    pub(crate) command_type: Option<u16>,
    pub(crate) command_name: Option<String>,
    /// Overrides Restate's next retry delay, in milliseconds.
    pub(crate) next_retry_delay_ms: Option<u64>,
}

impl AttemptFailure {
    /// The failure a retryable handler error ends an attempt with.
    pub(crate) fn retryable(
        error: &crate::HandlerError,
        command_type: Option<u16>,
        command_name: Option<String>,
    ) -> AttemptFailure {
        let delay = match error {
            crate::HandlerError::RetryAfter { delay, .. } => u64::try_from(delay.as_millis()).ok(),
            _ => None,
        };
        AttemptFailure {
            code: 500,
            message: error.to_string(),
            command_index: None,
            command_type,
            command_name,
            next_retry_delay_ms: delay,
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> AttemptFailure {
        AttemptFailure {
            code: PROTOCOL_VIOLATION,
            message: message.into(),
            command_index: None,
            command_type: None,
            command_name: None,
            next_retry_delay_ms: None,
        }
    }

    pub(crate) fn to_message(&self) -> protocol::ErrorMessage {
        protocol::ErrorMessage {
            code: self.code,
            message: self.message.clone(),
            related_command_index: self.command_index,
            related_command_type: self.command_type.map(u32::from),
            related_command_name: self.command_name.clone(),
            next_retry_delay: self.next_retry_delay_ms,
            ..Default::default()
        }
    }
}

/// The state a virtual object's or workflow's invocation sees.
#[derive(Debug, Default)]
struct State {
    /// Known values; `None` is known to be absent.
    values: HashMap<Bytes, Option<Bytes>>,
    /// Whether keys missing from `values` may still exist (so reading them asks Restate).
    partial: bool,
}

/// One invocation's journal.
#[derive(Debug)]
pub(crate) struct Journal {
    /// `StartMessage.id`.
    pub(crate) id: Bytes,
    /// `StartMessage.debug_id`, the `inv_...` id.
    pub(crate) debug_id: String,
    /// The object's or workflow's key.
    pub(crate) key: String,
    /// Stored commands not yet replayed, in order.
    replay: VecDeque<Frame>,
    /// The index of the next command (the input is 0).
    next_index: u32,
    next_completion: u32,
    next_signal: u32,
    results: HashMap<Awaited, Outcome>,
    cancelled: bool,
    state: State,
    /// What the handler is blocked on now.
    pub(crate) awaiting: BTreeMap<Awaited, usize>,
    /// Steps whose closures are running.
    pub(crate) running_steps: usize,
    /// Set when the attempt must end with an error.
    pub(crate) failure: Option<AttemptFailure>,
    /// Whether Restate can send no more results on this stream.
    pub(crate) input_closed: bool,
    /// Frames to send.
    pub(crate) outgoing: Vec<Frame>,
    /// Whether the output command was recorded.
    pub(crate) output_recorded: bool,
}

impl Journal {
    /// A journal from `start` and the stored entries that followed it. The first stored
    /// command must be the input, which is returned.
    pub(crate) fn new(
        start: &protocol::StartMessage,
        entries: Vec<Frame>,
    ) -> Result<(Journal, protocol::InputCommandMessage), AttemptFailure> {
        let mut journal = Journal {
            id: start.id.clone(),
            debug_id: start.debug_id.clone(),
            key: start.key.clone(),
            replay: VecDeque::new(),
            next_index: 0,
            next_completion: 1,
            next_signal: FIRST_USER_SIGNAL,
            results: HashMap::new(),
            cancelled: false,
            state: State {
                values: start
                    .state_map
                    .iter()
                    .map(|StateEntry { key, value }| (key.clone(), Some(value.clone())))
                    .collect(),
                partial: start.partial_state,
            },
            awaiting: BTreeMap::new(),
            running_steps: 0,
            failure: None,
            input_closed: false,
            outgoing: Vec::new(),
            output_recorded: false,
        };
        for frame in entries {
            journal.add_entry(frame)?;
        }
        let input: protocol::InputCommandMessage = journal
            .replayed(
                MessageType::InputCommand,
                "the input",
                |_: &protocol::InputCommandMessage| true,
            )?
            .ok_or_else(|| {
                AttemptFailure::protocol("the journal does not start with an InputCommand")
            })?;
        Ok((journal, input))
    }

    /// A stored entry: a command to replay, or a result to keep.
    fn add_entry(&mut self, frame: Frame) -> Result<(), AttemptFailure> {
        let code = frame.message_type.code();
        match code {
            0x0400..=0x7FFF => {
                self.replay.push_back(frame);
                Ok(())
            }
            _ => self.notify(&frame),
        }
    }

    /// A result Restate sent (replayed or new).
    pub(crate) fn notify(&mut self, frame: &Frame) -> Result<(), AttemptFailure> {
        let message = frame
            .decode(usize::MAX)
            .map_err(|e| AttemptFailure::protocol(format!("an undecodable result: {e}")))?;
        use protocol::*;
        let outcome =
            |_: bool, value: Option<&Value>, failure: Option<&Failure>| match (value, failure) {
                (Some(value), _) => Outcome::Value(value.content.clone()),
                (None, Some(failure)) => Outcome::Failure(TerminalError::from_failure(failure)),
                (None, None) => Outcome::Void,
            };
        let (id, result) = match &message {
            Message::GetLazyStateCompletionNotification(n) => (
                n.completion_id,
                match &n.result {
                    Some(get_lazy_state_completion_notification_message::Result::Value(v)) => {
                        Outcome::Value(v.content.clone())
                    }
                    _ => Outcome::Void,
                },
            ),
            Message::GetLazyStateKeysCompletionNotification(n) => (
                n.completion_id,
                Outcome::StateKeys(
                    n.state_keys
                        .as_ref()
                        .map(|k| k.keys.clone())
                        .unwrap_or_default(),
                ),
            ),
            Message::GetPromiseCompletionNotification(n) => (
                n.completion_id,
                match &n.result {
                    Some(get_promise_completion_notification_message::Result::Value(v)) => {
                        outcome(false, Some(v), None)
                    }
                    Some(get_promise_completion_notification_message::Result::Failure(f)) => {
                        outcome(false, None, Some(f))
                    }
                    None => Outcome::Void,
                },
            ),
            Message::PeekPromiseCompletionNotification(n) => (
                n.completion_id,
                match &n.result {
                    Some(peek_promise_completion_notification_message::Result::Value(v)) => {
                        outcome(false, Some(v), None)
                    }
                    Some(peek_promise_completion_notification_message::Result::Failure(f)) => {
                        outcome(false, None, Some(f))
                    }
                    _ => Outcome::Void,
                },
            ),
            Message::CompletePromiseCompletionNotification(n) => (
                n.completion_id,
                match &n.result {
                    Some(complete_promise_completion_notification_message::Result::Failure(f)) => {
                        outcome(false, None, Some(f))
                    }
                    _ => Outcome::Void,
                },
            ),
            Message::SleepCompletionNotification(n) => (n.completion_id, Outcome::Void),
            Message::CallInvocationIdCompletionNotification(n) => (
                n.completion_id,
                Outcome::InvocationId(n.invocation_id.clone()),
            ),
            Message::CallCompletionNotification(n) => (
                n.completion_id,
                match &n.result {
                    Some(call_completion_notification_message::Result::Value(v)) => {
                        outcome(false, Some(v), None)
                    }
                    Some(call_completion_notification_message::Result::Failure(f)) => {
                        outcome(false, None, Some(f))
                    }
                    None => Outcome::Void,
                },
            ),
            Message::RunCompletionNotification(n) => (
                n.completion_id,
                match &n.result {
                    Some(run_completion_notification_message::Result::Value(v)) => {
                        outcome(false, Some(v), None)
                    }
                    Some(run_completion_notification_message::Result::Failure(f)) => {
                        outcome(false, None, Some(f))
                    }
                    None => Outcome::Void,
                },
            ),
            Message::AttachInvocationCompletionNotification(n) => (
                n.completion_id,
                match &n.result {
                    Some(attach_invocation_completion_notification_message::Result::Value(v)) => {
                        outcome(false, Some(v), None)
                    }
                    Some(attach_invocation_completion_notification_message::Result::Failure(f)) => {
                        outcome(false, None, Some(f))
                    }
                    None => Outcome::Void,
                },
            ),
            Message::GetInvocationOutputCompletionNotification(n) => (
                n.completion_id,
                match &n.result {
                    Some(get_invocation_output_completion_notification_message::Result::Value(
                        v,
                    )) => outcome(false, Some(v), None),
                    Some(
                        get_invocation_output_completion_notification_message::Result::Failure(f),
                    ) => outcome(false, None, Some(f)),
                    _ => Outcome::Void,
                },
            ),
            Message::SignalNotification(n) => {
                let result = match &n.result {
                    Some(signal_notification_message::Result::Value(v)) => {
                        outcome(false, Some(v), None)
                    }
                    Some(signal_notification_message::Result::Failure(f)) => {
                        outcome(false, None, Some(f))
                    }
                    _ => Outcome::Void,
                };
                let awaited = match &n.signal_id {
                    Some(signal_notification_message::SignalId::Idx(CANCEL_SIGNAL)) => {
                        self.cancelled = true;
                        return Ok(());
                    }
                    Some(signal_notification_message::SignalId::Idx(idx)) => Awaited::Signal(*idx),
                    Some(signal_notification_message::SignalId::Name(name)) => {
                        Awaited::Named(name.clone())
                    }
                    None => return Err(AttemptFailure::protocol("a signal without an id")),
                };
                self.results.insert(awaited, result);
                return Ok(());
            }
            // V7 only; a V5/V6 runtime never sends one.
            Message::ProposeRunCompletionAck(_) => return Ok(()),
            other => {
                return Err(AttemptFailure::protocol(format!(
                    "unexpected {} from the runtime",
                    other.message_type().name().unwrap_or("message")
                )));
            }
        };
        self.results.insert(Awaited::Completion(id), result);
        Ok(())
    }

    /// Whether a cancellation arrived.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// Takes the result for `awaited`, if it arrived.
    pub(crate) fn take_result(&mut self, awaited: &Awaited) -> Option<Outcome> {
        self.results.remove(awaited)
    }

    /// The next stored command if there is one: it must be of type `ty` and pass
    /// `matches`, or the attempt fails with a journal mismatch. `None` past the stored
    /// journal. Either way the command takes the next index.
    fn replayed<M: prost::Message + Default>(
        &mut self,
        ty: MessageType,
        what: &str,
        matches: impl FnOnce(&M) -> bool,
    ) -> Result<Option<M>, AttemptFailure> {
        let index = self.next_index;
        self.next_index += 1;
        let Some(frame) = self.replay.pop_front() else {
            return Ok(None);
        };
        if frame.message_type != ty {
            return Err(self.mismatch(
                index,
                ty,
                what,
                format!("the journal has {}", type_name(frame.message_type)),
            ));
        }
        let message = M::decode(frame.body)
            .map_err(|e| AttemptFailure::protocol(format!("stored command {index}: {e}")))?;
        if !matches(&message) {
            return Err(self.mismatch(index, ty, what, "the journal's differs".to_owned()));
        }
        Ok(Some(message))
    }

    fn mismatch(&self, index: u32, ty: MessageType, what: &str, found: String) -> AttemptFailure {
        AttemptFailure {
            code: JOURNAL_MISMATCH,
            message: format!(
                "journal mismatch at command {index}: the handler made {} ({what}), but {found}",
                type_name(ty)
            ),
            command_index: Some(index),
            command_type: Some(ty.code()),
            command_name: None,
            next_retry_delay_ms: None,
        }
    }

    fn completion_id(&mut self) -> u32 {
        let id = self.next_completion;
        self.next_completion += 1;
        id
    }

    /// Keeps the counter past an id the journal used.
    fn saw_completion(&mut self, id: u32) {
        self.next_completion = self.next_completion.max(id + 1);
    }

    fn send(&mut self, message: Message) {
        self.outgoing.push(Frame::new(&message));
    }

    /// Replays or records a command with one completion id, returning the id.
    fn completable<M: prost::Message + Default + Into<Message>>(
        &mut self,
        ty: MessageType,
        what: &str,
        id_of: impl Fn(&M) -> u32,
        matches: impl FnOnce(&M) -> bool,
        build: impl FnOnce(u32) -> M,
    ) -> Result<u32, AttemptFailure> {
        match self.replayed(ty, what, matches)? {
            Some(stored) => {
                let id = id_of(&stored);
                self.saw_completion(id);
                Ok(id)
            }
            None => {
                let id = self.completion_id();
                self.send(build(id).into());
                Ok(id)
            }
        }
    }

    /// A step: `RunCommand`. Returns its completion id; its result is already known if
    /// the step completed in an earlier attempt.
    pub(crate) fn run(&mut self, name: &str) -> Result<u32, AttemptFailure> {
        self.completable(
            MessageType::RunCommand,
            &format!("run {name:?}"),
            |m: &protocol::RunCommandMessage| m.result_completion_id,
            |m| m.name == name,
            |id| protocol::RunCommandMessage {
                result_completion_id: id,
                name: name.to_owned(),
            },
        )
    }

    /// The result a step's closure produced, proposed for the journal.
    pub(crate) fn propose_run(&mut self, id: u32, result: Result<Bytes, TerminalError>) {
        use protocol::propose_run_completion_message::Result as R;
        self.send(Message::ProposeRunCompletion(
            protocol::ProposeRunCompletionMessage {
                result_completion_id: id,
                result: Some(match result {
                    Ok(value) => R::Value(value),
                    Err(failure) => R::Failure(failure.to_failure()),
                }),
            },
        ));
    }

    /// A durable timer: `SleepCommand` waking at `wake_up_ms` (ms since the epoch).
    pub(crate) fn sleep(&mut self, wake_up_ms: u64, name: &str) -> Result<u32, AttemptFailure> {
        self.completable(
            MessageType::SleepCommand,
            "sleep",
            |m: &protocol::SleepCommandMessage| m.result_completion_id,
            |m| m.name == name,
            |id| protocol::SleepCommandMessage {
                wake_up_time: wake_up_ms,
                result_completion_id: id,
                name: name.to_owned(),
            },
        )
    }

    /// Reads state: `Ok(Err(value))` when known now, `Ok(Ok(id))` when Restate answers.
    pub(crate) fn get_state(
        &mut self,
        key: &Bytes,
    ) -> Result<Result<u32, Option<Bytes>>, AttemptFailure> {
        use protocol::get_eager_state_command_message::Result as Eager;
        let index = self.next_index;
        let stored = self.replay.front().map(|f| f.message_type);
        match stored {
            Some(MessageType::GetEagerStateCommand) => {
                let m: protocol::GetEagerStateCommandMessage = self
                    .replayed(
                        MessageType::GetEagerStateCommand,
                        "get state",
                        |m: &protocol::GetEagerStateCommandMessage| m.key == key,
                    )?
                    .expect("a stored command was there");
                Ok(Err(match m.result {
                    Some(Eager::Value(v)) => Some(v.content),
                    _ => None,
                }))
            }
            Some(MessageType::GetLazyStateCommand) => {
                let m: protocol::GetLazyStateCommandMessage = self
                    .replayed(
                        MessageType::GetLazyStateCommand,
                        "get state",
                        |m: &protocol::GetLazyStateCommandMessage| m.key == key,
                    )?
                    .expect("a stored command was there");
                self.saw_completion(m.result_completion_id);
                Ok(Ok(m.result_completion_id))
            }
            Some(other) => {
                self.next_index += 1;
                Err(self.mismatch(
                    index,
                    MessageType::GetEagerStateCommand,
                    "get state",
                    format!("the journal has {}", type_name(other)),
                ))
            }
            None => {
                self.next_index += 1;
                let known = self.state.values.get(key).cloned();
                match known {
                    Some(value) => {
                        self.send(Message::GetEagerStateCommand(
                            protocol::GetEagerStateCommandMessage {
                                key: key.clone(),
                                result: Some(match &value {
                                    Some(v) => Eager::Value(protocol::Value { content: v.clone() }),
                                    None => Eager::Void(protocol::Void {}),
                                }),
                                name: String::new(),
                            },
                        ));
                        Ok(Err(value))
                    }
                    None if !self.state.partial => {
                        self.send(Message::GetEagerStateCommand(
                            protocol::GetEagerStateCommandMessage {
                                key: key.clone(),
                                result: Some(Eager::Void(protocol::Void {})),
                                name: String::new(),
                            },
                        ));
                        Ok(Err(None))
                    }
                    None => {
                        let id = self.completion_id();
                        self.send(Message::GetLazyStateCommand(
                            protocol::GetLazyStateCommandMessage {
                                key: key.clone(),
                                result_completion_id: id,
                                name: String::new(),
                            },
                        ));
                        Ok(Ok(id))
                    }
                }
            }
        }
    }

    /// Remembers a value Restate read lazily.
    pub(crate) fn learned_state(&mut self, key: &Bytes, value: Option<Bytes>) {
        self.state.values.insert(key.clone(), value);
    }

    /// Lists state keys: `Ok(Err(keys))` when known now, `Ok(Ok(id))` when Restate answers.
    pub(crate) fn state_keys(&mut self) -> Result<Result<u32, Vec<Bytes>>, AttemptFailure> {
        let index = self.next_index;
        match self.replay.front().map(|f| f.message_type) {
            Some(MessageType::GetEagerStateKeysCommand) => {
                let m: protocol::GetEagerStateKeysCommandMessage = self
                    .replayed(
                        MessageType::GetEagerStateKeysCommand,
                        "state keys",
                        |_: &protocol::GetEagerStateKeysCommandMessage| true,
                    )?
                    .expect("a stored command was there");
                Ok(Err(m.value.map(|k| k.keys).unwrap_or_default()))
            }
            Some(MessageType::GetLazyStateKeysCommand) => {
                let m: protocol::GetLazyStateKeysCommandMessage = self
                    .replayed(
                        MessageType::GetLazyStateKeysCommand,
                        "state keys",
                        |_: &protocol::GetLazyStateKeysCommandMessage| true,
                    )?
                    .expect("a stored command was there");
                self.saw_completion(m.result_completion_id);
                Ok(Ok(m.result_completion_id))
            }
            Some(other) => {
                self.next_index += 1;
                Err(self.mismatch(
                    index,
                    MessageType::GetEagerStateKeysCommand,
                    "state keys",
                    format!("the journal has {}", type_name(other)),
                ))
            }
            None if !self.state.partial => {
                self.next_index += 1;
                let mut keys: Vec<Bytes> = self
                    .state
                    .values
                    .iter()
                    .filter(|(_, v)| v.is_some())
                    .map(|(k, _)| k.clone())
                    .collect();
                keys.sort();
                self.send(Message::GetEagerStateKeysCommand(
                    protocol::GetEagerStateKeysCommandMessage {
                        value: Some(protocol::StateKeys { keys: keys.clone() }),
                        name: String::new(),
                    },
                ));
                Ok(Err(keys))
            }
            None => {
                self.next_index += 1;
                let id = self.completion_id();
                self.send(Message::GetLazyStateKeysCommand(
                    protocol::GetLazyStateKeysCommandMessage {
                        result_completion_id: id,
                        name: String::new(),
                    },
                ));
                Ok(Ok(id))
            }
        }
    }

    /// Writes state.
    pub(crate) fn set_state(&mut self, key: Bytes, value: Bytes) -> Result<(), AttemptFailure> {
        let replayed = self.replayed(
            MessageType::SetStateCommand,
            "set state",
            |m: &protocol::SetStateCommandMessage| m.key == key,
        )?;
        if replayed.is_none() {
            self.send(Message::SetStateCommand(protocol::SetStateCommandMessage {
                key: key.clone(),
                value: Some(protocol::Value {
                    content: value.clone(),
                }),
                name: String::new(),
            }));
        }
        self.state.values.insert(key, Some(value));
        Ok(())
    }

    /// Clears one key.
    pub(crate) fn clear_state(&mut self, key: Bytes) -> Result<(), AttemptFailure> {
        let replayed = self.replayed(
            MessageType::ClearStateCommand,
            "clear state",
            |m: &protocol::ClearStateCommandMessage| m.key == key,
        )?;
        if replayed.is_none() {
            self.send(Message::ClearStateCommand(
                protocol::ClearStateCommandMessage {
                    key: key.clone(),
                    name: String::new(),
                },
            ));
        }
        self.state.values.insert(key, None);
        Ok(())
    }

    /// Clears every key.
    pub(crate) fn clear_all_state(&mut self) -> Result<(), AttemptFailure> {
        let replayed = self.replayed(
            MessageType::ClearAllStateCommand,
            "clear all state",
            |_: &protocol::ClearAllStateCommandMessage| true,
        )?;
        if replayed.is_none() {
            self.send(Message::ClearAllStateCommand(
                protocol::ClearAllStateCommandMessage {
                    name: String::new(),
                },
            ));
        }
        self.state = State {
            values: HashMap::new(),
            partial: false,
        };
        Ok(())
    }

    /// Calls another handler: returns the completion id of its result.
    pub(crate) fn call(
        &mut self,
        target: &crate::Target,
        parameter: Bytes,
    ) -> Result<u32, AttemptFailure> {
        let what = format!("call {target}");
        match self.replayed(
            MessageType::CallCommand,
            &what,
            |m: &protocol::CallCommandMessage| target.is(&m.service_name, &m.handler_name, &m.key),
        )? {
            Some(stored) => {
                self.saw_completion(stored.invocation_id_notification_idx);
                self.saw_completion(stored.result_completion_id);
                Ok(stored.result_completion_id)
            }
            None => {
                let invocation_id = self.completion_id();
                let result = self.completion_id();
                self.send(Message::CallCommand(protocol::CallCommandMessage {
                    service_name: target.service.clone(),
                    handler_name: target.handler.clone(),
                    parameter,
                    key: target.key.clone().unwrap_or_default(),
                    invocation_id_notification_idx: invocation_id,
                    result_completion_id: result,
                    ..Default::default()
                }));
                Ok(result)
            }
        }
    }

    /// Sends to another handler without waiting for it, at `invoke_ms` (0: now).
    pub(crate) fn send_one_way(
        &mut self,
        target: &crate::Target,
        parameter: Bytes,
        invoke_ms: u64,
    ) -> Result<(), AttemptFailure> {
        let what = format!("send {target}");
        match self.replayed(
            MessageType::OneWayCallCommand,
            &what,
            |m: &protocol::OneWayCallCommandMessage| {
                target.is(&m.service_name, &m.handler_name, &m.key)
            },
        )? {
            Some(stored) => self.saw_completion(stored.invocation_id_notification_idx),
            None => {
                let invocation_id = self.completion_id();
                self.send(Message::OneWayCallCommand(
                    protocol::OneWayCallCommandMessage {
                        service_name: target.service.clone(),
                        handler_name: target.handler.clone(),
                        parameter,
                        invoke_time: invoke_ms,
                        key: target.key.clone().unwrap_or_default(),
                        invocation_id_notification_idx: invocation_id,
                        ..Default::default()
                    },
                ));
            }
        }
        Ok(())
    }

    /// A new awakeable: its signal index. Nothing is journaled; the index sequence is
    /// deterministic, so a replay finds the same one.
    pub(crate) fn awakeable(&mut self) -> u32 {
        let index = self.next_signal;
        self.next_signal += 1;
        index
    }

    /// Resolves or rejects another invocation's awakeable.
    pub(crate) fn complete_awakeable(
        &mut self,
        id: &str,
        result: Result<Bytes, TerminalError>,
    ) -> Result<(), AttemptFailure> {
        use protocol::complete_awakeable_command_message::Result as R;
        let replayed = self.replayed(
            MessageType::CompleteAwakeableCommand,
            "complete awakeable",
            |m: &protocol::CompleteAwakeableCommandMessage| m.awakeable_id == id,
        )?;
        if replayed.is_none() {
            self.send(Message::CompleteAwakeableCommand(
                protocol::CompleteAwakeableCommandMessage {
                    awakeable_id: id.to_owned(),
                    result: Some(match result {
                        Ok(value) => R::Value(protocol::Value { content: value }),
                        Err(failure) => R::Failure(failure.to_failure()),
                    }),
                    name: String::new(),
                },
            ));
        }
        Ok(())
    }

    /// A workflow promise: waits for it (`GetPromiseCommand`), or reads it without waiting
    /// (`PeekPromiseCommand`).
    pub(crate) fn promise(&mut self, key: &str, peek: bool) -> Result<u32, AttemptFailure> {
        if peek {
            self.completable(
                MessageType::PeekPromiseCommand,
                &format!("peek promise {key:?}"),
                |m: &protocol::PeekPromiseCommandMessage| m.result_completion_id,
                |m| m.key == key,
                |id| protocol::PeekPromiseCommandMessage {
                    key: key.to_owned(),
                    result_completion_id: id,
                    name: String::new(),
                },
            )
        } else {
            self.completable(
                MessageType::GetPromiseCommand,
                &format!("promise {key:?}"),
                |m: &protocol::GetPromiseCommandMessage| m.result_completion_id,
                |m| m.key == key,
                |id| protocol::GetPromiseCommandMessage {
                    key: key.to_owned(),
                    result_completion_id: id,
                    name: String::new(),
                },
            )
        }
    }

    /// Completes a workflow promise.
    pub(crate) fn complete_promise(
        &mut self,
        key: &str,
        result: Result<Bytes, TerminalError>,
    ) -> Result<u32, AttemptFailure> {
        use protocol::complete_promise_command_message::Completion as C;
        self.completable(
            MessageType::CompletePromiseCommand,
            &format!("complete promise {key:?}"),
            |m: &protocol::CompletePromiseCommandMessage| m.result_completion_id,
            |m| m.key == key,
            |id| protocol::CompletePromiseCommandMessage {
                key: key.to_owned(),
                completion: Some(match result {
                    Ok(value) => C::CompletionValue(protocol::Value { content: value }),
                    Err(failure) => C::CompletionFailure(failure.to_failure()),
                }),
                result_completion_id: id,
                name: String::new(),
            },
        )
    }

    /// The invocation's result: `OutputCommand`, then `End`.
    pub(crate) fn output(
        &mut self,
        result: Result<Bytes, TerminalError>,
    ) -> Result<(), AttemptFailure> {
        use protocol::output_command_message::Result as R;
        let replayed = self.replayed(
            MessageType::OutputCommand,
            "output",
            |_: &protocol::OutputCommandMessage| true,
        )?;
        if replayed.is_none() {
            self.send(Message::OutputCommand(protocol::OutputCommandMessage {
                result: Some(match result {
                    Ok(value) => R::Value(protocol::Value { content: value }),
                    Err(failure) => R::Failure(failure.to_failure()),
                }),
                name: String::new(),
            }));
        }
        self.output_recorded = true;
        self.send(Message::End(protocol::EndMessage {}));
        Ok(())
    }

    /// Ends the attempt with an error.
    pub(crate) fn error(&mut self, failure: &AttemptFailure) {
        self.send(Message::Error(failure.to_message()));
    }

    /// Ends the attempt waiting for what the handler awaits, and cancellation.
    pub(crate) fn suspend(&mut self) {
        let mut suspension = v6::SuspensionMessage::default();
        let mut signals: HashSet<u32> = HashSet::from([CANCEL_SIGNAL]);
        for awaited in self.awaiting.keys() {
            match awaited {
                Awaited::Completion(id) => suspension.waiting_completions.push(*id),
                Awaited::Signal(idx) => {
                    signals.insert(*idx);
                }
                Awaited::Named(name) => suspension.waiting_named_signals.push(name.clone()),
            }
        }
        suspension.waiting_signals = signals.into_iter().collect();
        suspension.waiting_signals.sort_unstable();
        self.send(Message::Suspension(suspension));
    }
}

fn type_name(ty: MessageType) -> String {
    ty.name()
        .map_or_else(|| format!("type {:#06x}", ty.code()), str::to_owned)
}
