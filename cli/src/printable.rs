//! One rule for text that comes from elsewhere (the coordinator's answers and
//! error messages, worker IDs, trial errors, worker logs) before it reaches a
//! terminal: control characters, the ESC that starts ANSI sequences among
//! them, and the Unicode direction overrides are shown escaped (`\u{1b}`,
//! `\n`), so nothing a worker or coordinator sends can move the cursor,
//! recolour, clear or retitle the user's terminal, or fake output lines.

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every character that could act on a terminal escaped.
pub(crate) fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(acts_on_terminal) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if acts_on_terminal(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Multi-line text (an error message of ours that quotes others' text):
/// [`printable`] line by line, keeping the line breaks.
pub(crate) fn printable_lines(s: &str) -> String {
    s.split('\n').map(|l| printable(l.strip_suffix('\r').unwrap_or(l))).collect::<Vec<_>>().join("\n")
}

/// At most `max` characters of `s` (whole characters), with how much was left out.
pub(crate) fn clip(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((cut, _)) => Cow::Owned(format!("{}... ({} more bytes)", &s[..cut], s.len() - cut)),
    }
}

/// The log writer (stderr): tracing writes each event in one call, which
/// quotes what workers and clients sent (a worker ID, a failure reason);
/// everything in it but the final line break is escaped. (Log colours are
/// therefore off: they are escape sequences too.)
pub(crate) struct EscapedStderr;

impl std::io::Write for EscapedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write_all(log_event(buf).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn log_event(buf: &[u8]) -> String {
    let text = String::from_utf8_lossy(buf);
    match text.strip_suffix('\n') {
        Some(body) => format!("{}\n", printable(body)),
        None => printable(&text).into_owned(),
    }
}

fn acts_on_terminal(c: char) -> bool {
    // C0 controls (ESC included), DEL and the C1 controls (CSI, OSC, ...),
    // then the bidirectional marks and overrides.
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_escapes_and_controls_are_shown_not_obeyed() {
        assert_eq!(printable("local-0"), "local-0");
        assert!(matches!(printable("plain ± ü"), Cow::Borrowed(_)));
        assert_eq!(printable("a\u{1b}[31mred\u{1b}[0m"), "a\\u{1b}[31mred\\u{1b}[0m");
        assert_eq!(printable("x\ny\rz\t\u{7}\u{7f}\u{9b}"), "x\\ny\\rz\\t\\u{7}\\u{7f}\\u{9b}");
        assert_eq!(printable("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(printable_lines("one\u{1b}]0;title\u{7}\ntwo\r\n"), "one\\u{1b}]0;title\\u{7}\ntwo\n");
    }

    #[test]
    fn log_events_keep_only_their_final_line_break() {
        assert_eq!(log_event(b"reason=\x1b[2J\nfake line\n"), "reason=\\u{1b}[2J\\nfake line\n");
        assert_eq!(log_event(b"no newline"), "no newline");
    }

    #[test]
    fn clip_cuts_on_characters() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("ääää", 2), "ää... (4 more bytes)");
    }
}
