//! How a command fails: an exit code and an error, printed once per cause.

use crate::printable::{clip, printable_lines};

/// Most characters printed of one cause of an error (a grid value or a
/// coordinator message can be megabytes long).
const MAX_CAUSE_CHARS: usize = 1000;

/// A failure with its exit code: 2 for bad input (a grid file that does not
/// validate), 1 for everything else, 128 + N after signal N.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let error = e.into();
        let code = if error.downcast_ref::<sweep_core::GridError>().is_some() { 2 } else { 1 };
        Failure { code, error }
    }
}

impl Failure {
    pub fn with_code(code: u8, error: anyhow::Error) -> Failure {
        Failure { code, error }
    }

    /// The message for stderr (see [`chain_text`]).
    pub fn message(&self) -> String {
        chain_text(&self.error)
    }
}

/// The error and its causes, `outer: inner: innermost`, each cause once:
/// many error types already quote their source in their own message
/// (`database: {0}` over a `#[source]`), so anyhow's `{:#}` would print it
/// again, two to four times down a chain. A cause whose text an outer one
/// already contains is left out. Each cause is clipped and escaped.
pub(crate) fn chain_text(error: &anyhow::Error) -> String {
    let mut shown: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || shown.iter().any(|s| s.contains(text)) {
            continue;
        }
        shown.push(text.to_owned());
    }
    shown.iter().map(|s| printable_lines(&clip(s, MAX_CAUSE_CHARS))).collect::<Vec<_>>().join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Inner {
        #[error("database: {0}")]
        Db(#[from] std::io::Error),
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "unable to open database file");
        let e = anyhow::Error::new(Inner::Db(io)).context("opening sqlite://x.db");
        assert_eq!(chain_text(&e), "opening sqlite://x.db: database: unable to open database file");
        // A plain chain keeps every link.
        let e = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(chain_text(&e), "outer: middle: inner");
    }

    #[test]
    fn long_and_hostile_causes_are_clipped_and_escaped() {
        let e = anyhow::anyhow!("\u{1b}[2J{}", "x".repeat(5000)).context("reading grid.toml");
        let text = chain_text(&e);
        assert!(text.len() < 1200, "{}", text.len());
        assert!(!text.contains('\u{1b}'));
        assert!(text.starts_with("reading grid.toml: \\u{1b}[2Jxxx"), "{}", &text[..40]);
    }
}
