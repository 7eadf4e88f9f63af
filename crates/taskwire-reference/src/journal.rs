//! The journal conversation, with the server as the invocation side: one built-in durable
//! handler, the *greeter*, run against the journal the runtime streams.
//!
//! The greeter makes four entries:
//!
//! | index | entry | what it does |
//! |---|---|---|
//! | 0 | `InputEntry` | the name to greet (sent or replayed by the runtime) |
//! | 1 | `RunEntry` "compose" | computes [`greeting`]; waits for the runtime's `EntryAck` |
//! | 2 | `SleepEntry` "wait" | a durable timer of [`GREETER_SLEEP`]; waits for its `Completion` |
//! | 3 | `OutputEntry` "greeting" | returns the greeting, then `End` |
//!
//! When the timer's result has not arrived within `journal_suspend_after` (or the runtime
//! closes its side first), the greeter ends the stream with `Suspension` naming entry 2.
//! The runtime then opens a new stream that replays entries 0–2, the timer's result
//! included, and the greeter finishes without computing anything twice. A replayed entry
//! of another type than the greeter makes is answered with `Error` code 570
//! (`JOURNAL_MISMATCH`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use taskwire_proto::journal::v1::{
    End, EntryAck, Error, Failure, InputEntry, JournalErrorCode, OutputEntry, RunEntry, SleepEntry,
    Start, Suspension, completion, output_entry, run_entry, sleep_entry,
};
use taskwire_proto::registry::JournalMessage;
use taskwire_proto::{MessageSet, WireMessage};
use taskwire_rpc::journal::{JournalRole, JournalValidator};
use taskwire_rpc::{CallContext, RequestStream, ResponseSink, Router, Status};

use crate::store::Shared;

/// How long the greeter's durable timer (entry 2) waits.
pub const GREETER_SLEEP: Duration = Duration::from_millis(300);

/// The greeter's result for `name`: `Hello, NAME!`.
pub fn greeting(name: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(name.len() + 8);
    out.extend_from_slice(b"Hello, ");
    out.extend_from_slice(name);
    out.push(b'!');
    out.into()
}

pub(crate) fn routes(router: &mut Router, shared: &Arc<Shared>) {
    let s = Arc::clone(shared);
    router.bidi::<Start, JournalMessage, _, _>(move |ctx, incoming, outgoing| {
        let suspend_after = s.config.journal_suspend_after;
        greeter(ctx, incoming, outgoing, suspend_after)
    });
}

/// The runtime's side of the stream, validated as it arrives.
struct Runtime {
    incoming: RequestStream<JournalMessage>,
    validator: JournalValidator,
    closed: bool,
}

impl Runtime {
    async fn next(&mut self) -> Result<Option<JournalMessage>, Status> {
        if self.closed {
            return Ok(None);
        }
        let message = self.incoming.message().await?;
        match &message {
            Some(message) => self.validator.observe(message)?,
            None => self.closed = true,
        }
        Ok(message)
    }
}

/// The invocation's side: what the greeter sends.
struct Invocation {
    outgoing: ResponseSink<JournalMessage>,
}

impl Invocation {
    async fn send(&self, message: impl Into<JournalMessage>) -> Result<(), Status> {
        self.outgoing.send(message).await
    }

    async fn mismatch(
        &self,
        index: u32,
        expected: &str,
        found: &JournalMessage,
    ) -> Result<(), Status> {
        self.send(Error {
            code: JournalErrorCode::JournalMismatch as u32,
            message: format!(
                "journal entry {index} is a {}, but the greeter makes a {expected} there",
                found.name()
            ),
            related_entry_index: Some(index),
            related_entry_name: None,
            related_entry_type: Some(u32::from(found.type_id())),
            ..Error::default()
        })
        .await
    }
}

async fn greeter(
    _ctx: CallContext,
    incoming: RequestStream<JournalMessage>,
    outgoing: ResponseSink<JournalMessage>,
    suspend_after: Duration,
) -> Result<(), Status> {
    let mut runtime = Runtime {
        incoming,
        validator: JournalValidator::new(JournalRole::Runtime),
        closed: false,
    };
    let out = Invocation { outgoing };
    let Some(JournalMessage::Start(start)) = runtime.next().await? else {
        return Err(Status::protocol_violation(
            "a journal stream opens with Start",
        ));
    };
    // The replayed journal: `known_entries` entries, or just the new InputEntry.
    let replayed = start.known_entries.max(1);
    let mut journal = Vec::new();
    while journal.len() < replayed as usize {
        match runtime.next().await? {
            Some(entry) => journal.push(entry),
            None => {
                return Err(Status::protocol_violation(format!(
                    "the runtime announced {} entries and closed after {}",
                    start.known_entries,
                    journal.len()
                )));
            }
        }
    }

    // Entry 0: the input.
    let name = match &journal[0] {
        JournalMessage::InputEntry(InputEntry { value, .. }) => value.clone(),
        other => return out.mismatch(0, InputEntry::NAME, other).await,
    };

    // Entry 1: a side effect whose result is journaled before the code goes on.
    let composed = match journal.get(1) {
        Some(JournalMessage::RunEntry(RunEntry {
            result: Some(run_entry::Result::Value(value)),
            ..
        })) => value.clone(),
        Some(other) => return out.mismatch(1, RunEntry::NAME, other).await,
        None => {
            let value = greeting(&name);
            out.send(RunEntry {
                name: "compose".into(),
                result: Some(run_entry::Result::Value(value.clone())),
            })
            .await?;
            loop {
                match runtime.next().await? {
                    Some(JournalMessage::EntryAck(EntryAck { entry_index: 1 })) => break,
                    Some(_) => {}
                    // The runtime went away before the side effect was durable: suspend on
                    // it, so the next attempt replays from the stored journal.
                    None => {
                        return out
                            .send(Suspension {
                                entry_indexes: vec![1],
                            })
                            .await;
                    }
                }
            }
            value
        }
    };

    // Entry 2: a durable timer.
    match journal.get(2) {
        Some(JournalMessage::SleepEntry(SleepEntry {
            result: Some(sleep_entry::Result::Empty(_)),
            ..
        })) => {}
        Some(JournalMessage::SleepEntry(SleepEntry {
            result: Some(sleep_entry::Result::Failure(failure)),
            ..
        })) => return finish(&out, output_entry::Result::Failure(failure.clone())).await,
        Some(JournalMessage::SleepEntry(SleepEntry { result: None, .. })) => {
            match timer(&mut runtime, 2, suspend_after).await? {
                Timer::Fired => {}
                Timer::Failed(failure) => {
                    return finish(&out, output_entry::Result::Failure(failure)).await;
                }
                Timer::Pending => {
                    return out
                        .send(Suspension {
                            entry_indexes: vec![2],
                        })
                        .await;
                }
            }
        }
        Some(other) => return out.mismatch(2, SleepEntry::NAME, other).await,
        None => {
            let wake = SystemTime::now() + GREETER_SLEEP;
            out.send(SleepEntry {
                wake_up_time: Some(wake.into()),
                name: "wait".into(),
                result: None,
            })
            .await?;
            match timer(&mut runtime, 2, suspend_after).await? {
                Timer::Fired => {}
                Timer::Failed(failure) => {
                    return finish(&out, output_entry::Result::Failure(failure)).await;
                }
                Timer::Pending => {
                    return out
                        .send(Suspension {
                            entry_indexes: vec![2],
                        })
                        .await;
                }
            }
        }
    }

    // Entry 3: the result.
    finish(&out, output_entry::Result::Value(composed)).await
}

async fn finish(out: &Invocation, result: output_entry::Result) -> Result<(), Status> {
    out.send(OutputEntry {
        name: "greeting".into(),
        result: Some(result),
    })
    .await?;
    out.send(End {}).await
}

/// What became of a durable timer the greeter waits on.
enum Timer {
    Fired,
    Failed(Failure),
    /// No result yet: suspend.
    Pending,
}

/// Waits for the `Completion` of timer entry `index`; [`Timer::Pending`] if nothing came
/// within `suspend_after`, or the runtime closed its side first.
async fn timer(
    runtime: &mut Runtime,
    index: u32,
    suspend_after: Duration,
) -> Result<Timer, Status> {
    let give_up = Instant::now() + suspend_after;
    loop {
        let next = tokio::time::timeout_at(give_up.into(), runtime.next()).await;
        match next {
            Err(_) | Ok(Ok(None)) => return Ok(Timer::Pending),
            Ok(Err(status)) => return Err(status),
            Ok(Ok(Some(JournalMessage::Completion(completion))))
                if completion.entry_index == index =>
            {
                return match completion.result {
                    Some(completion::Result::Empty(_)) => Ok(Timer::Fired),
                    Some(completion::Result::Failure(failure)) => Ok(Timer::Failed(failure)),
                    other => Err(Status::protocol_violation(format!(
                        "entry {index} is a SleepEntry, which completes with empty or failure, not {other:?}"
                    ))),
                };
            }
            Ok(Ok(Some(_))) => {}
        }
    }
}
