//! The one error type every subcommand returns, and how it is reported.

use std::fmt::Display;
use std::io::{self, Write};

/// Why a subcommand failed. `main` prints it as one line on stderr and exits with code 1.
///
/// It deliberately does not implement [`std::error::Error`], so that any error converts
/// into it with `?` (through its message).
#[derive(Debug)]
pub(crate) enum CliError {
    /// A failure with no position in the input: `error: MESSAGE`.
    Message(String),
    /// A bad frame: `error at byte OFFSET: MESSAGE`, where `OFFSET` is where the frame
    /// starts in the input.
    AtByte {
        /// The byte offset of the start of the bad frame.
        offset: u64,
        /// What was wrong with it.
        message: String,
    },
    /// Standard output could not be written, for example because the reader of a pipe
    /// went away.
    Stdout(io::Error),
}

impl CliError {
    /// A failure described by `message`.
    pub(crate) fn msg(message: impl Display) -> Self {
        CliError::Message(message.to_string())
    }

    /// A bad frame starting at byte `offset` of the input.
    pub(crate) fn at_byte(offset: u64, message: impl Display) -> Self {
        CliError::AtByte {
            offset,
            message: message.to_string(),
        }
    }

    /// Whether the failure is only that the reader of standard output went away (as with
    /// `taskwire decode big.bin | head`): not worth an error message.
    pub(crate) fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Stdout(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// The one line `main` prints on stderr.
    pub(crate) fn line(&self) -> String {
        let line = match self {
            CliError::Message(message) => format!("error: {message}"),
            CliError::AtByte { offset, message } => format!("error at byte {offset}: {message}"),
            CliError::Stdout(e) => format!("error: cannot write to standard output: {e}"),
        };
        // One line, whatever the message: some library messages quote multi-line input.
        line.replace(['\r', '\n'], " ")
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(error: E) -> Self {
        CliError::msg(error)
    }
}

/// Writes `text` and a newline to standard output in one write, so that a closed pipe is
/// an error ([`CliError::Stdout`]) rather than the panic `println!` would raise.
pub(crate) fn print_line(text: impl Display) -> Result<(), CliError> {
    let mut line = text.to_string();
    line.push('\n');
    io::stdout()
        .lock()
        .write_all(line.as_bytes())
        .map_err(CliError::Stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_single_lines_with_the_right_prefix() {
        assert_eq!(CliError::msg("no such file").line(), "error: no such file");
        assert_eq!(
            CliError::at_byte(12, "unsupported frame version 2").line(),
            "error at byte 12: unsupported frame version 2"
        );
        assert_eq!(CliError::msg("a\nb\r\nc").line(), "error: a b  c");
    }

    #[test]
    fn only_a_broken_stdout_pipe_is_quiet() {
        let broken = CliError::Stdout(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(broken.is_broken_pipe());
        assert!(!CliError::Stdout(io::Error::from(io::ErrorKind::Other)).is_broken_pipe());
        assert!(!CliError::from(io::Error::from(io::ErrorKind::BrokenPipe)).is_broken_pipe());
    }
}
