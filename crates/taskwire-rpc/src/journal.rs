//! The order rules of a journal stream, checked as messages pass.
//!
//! A journal session is a bidirectional stream. The runtime (the side that opens it)
//! sends `Start` first and exactly once, then replayed entries, completions and acks. The
//! invocation (the side that runs user code) sends new entries and ends with exactly one
//! of `End`, `Suspension` (naming at least one entry index) or `Error`, after which it
//! sends nothing. Any other order is a `PROTOCOL_VIOLATION`.

use taskwire_proto::MessageSet;
use taskwire_proto::registry::JournalMessage;

use crate::Status;

/// Which side's messages a validator checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalRole {
    /// The side that opens the stream with `Start`.
    Runtime,
    /// The side that runs the invocation and ends the stream.
    Invocation,
}

/// Checks one direction of a journal stream.
///
/// ```
/// use taskwire_proto::journal::v1::{End, OutputEntry};
/// use taskwire_proto::registry::JournalMessage;
/// use taskwire_rpc::journal::{JournalRole, JournalValidator};
///
/// let mut invocation = JournalValidator::new(JournalRole::Invocation);
/// invocation.observe(&JournalMessage::from(OutputEntry::default())).unwrap();
/// invocation.observe(&JournalMessage::from(End::default())).unwrap();
/// assert!(invocation.observe(&JournalMessage::from(End::default())).is_err(), "nothing after End");
/// invocation.finish().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct JournalValidator {
    role: JournalRole,
    seen: u64,
    ended_by: Option<&'static str>,
}

impl JournalValidator {
    /// A validator for the messages `role` sends.
    pub fn new(role: JournalRole) -> JournalValidator {
        JournalValidator {
            role,
            seen: 0,
            ended_by: None,
        }
    }

    /// Checks the next message.
    pub fn observe(&mut self, message: &JournalMessage) -> Result<(), Status> {
        let index = self.seen;
        self.seen += 1;
        let violation = |what: String| {
            Err(Status::protocol_violation(format!(
                "journal message {index}: {what}"
            )))
        };
        if let Some(end) = self.ended_by {
            return violation(format!(
                "{} after {end}, which ends the stream",
                message.name()
            ));
        }
        let is_start = matches!(message, JournalMessage::Start(_));
        let terminal = match message {
            JournalMessage::End(_) => Some("End"),
            JournalMessage::Error(_) => Some("Error"),
            JournalMessage::Suspension(suspension) => {
                if suspension.entry_indexes.is_empty() {
                    return violation("a Suspension must name at least one entry index".into());
                }
                Some("Suspension")
            }
            _ => None,
        };
        match self.role {
            JournalRole::Runtime => {
                if index == 0 && !is_start {
                    return violation(format!(
                        "the stream must open with Start, not {}",
                        message.name()
                    ));
                }
                if index > 0 && is_start {
                    return violation("a second Start".into());
                }
                if let Some(end) = terminal {
                    return violation(format!("{end} is sent by the invocation, not the runtime"));
                }
            }
            JournalRole::Invocation => {
                if is_start {
                    return violation("Start is sent by the runtime, not the invocation".into());
                }
                self.ended_by = terminal;
            }
        }
        Ok(())
    }

    /// Checks the end of the stream: an invocation must have sent End, Suspension or
    /// Error; a runtime must have sent Start.
    pub fn finish(&self) -> Result<(), Status> {
        match self.role {
            JournalRole::Invocation if self.ended_by.is_none() => Err(Status::protocol_violation(
                "the journal stream ended without End, Suspension or Error",
            )),
            JournalRole::Runtime if self.seen == 0 => Err(Status::protocol_violation(
                "the journal stream ended before Start",
            )),
            _ => Ok(()),
        }
    }

    /// Whether the invocation has ended the stream.
    pub fn is_ended(&self) -> bool {
        self.ended_by.is_some()
    }
}

#[cfg(test)]
mod tests {
    use taskwire_proto::journal::v1::{End, Error, InputEntry, Start, Suspension};

    use super::*;

    fn m(message: impl Into<JournalMessage>) -> JournalMessage {
        message.into()
    }

    #[test]
    fn an_invocation_ends_with_exactly_one_terminal_message() {
        for terminal in [
            m(End::default()),
            m(Error::default()),
            m(Suspension {
                entry_indexes: vec![3],
            }),
        ] {
            let mut v = JournalValidator::new(JournalRole::Invocation);
            v.observe(&m(InputEntry::default())).unwrap();
            v.observe(&terminal).unwrap();
            v.finish().unwrap();
            assert!(v.observe(&m(End::default())).is_err());
        }
        let v = JournalValidator::new(JournalRole::Invocation);
        assert!(
            v.finish().is_err(),
            "a stream without a terminal message is a violation"
        );
    }

    #[test]
    fn an_empty_suspension_is_a_violation() {
        let mut v = JournalValidator::new(JournalRole::Invocation);
        let status = v
            .observe(&m(Suspension {
                entry_indexes: vec![],
            }))
            .unwrap_err();
        assert_eq!(status.code(), crate::StatusCode::ProtocolViolation);
    }

    #[test]
    fn the_runtime_opens_with_one_start_and_never_ends_the_stream() {
        let mut v = JournalValidator::new(JournalRole::Runtime);
        assert!(
            v.clone().observe(&m(InputEntry::default())).is_err(),
            "must open with Start"
        );
        v.observe(&m(Start::default())).unwrap();
        v.observe(&m(InputEntry::default())).unwrap();
        assert!(
            v.clone().observe(&m(Start::default())).is_err(),
            "a second Start"
        );
        assert!(
            v.observe(&m(End::default())).is_err(),
            "End comes from the invocation"
        );
    }
}
