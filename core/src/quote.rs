//! Quoting untrusted text in error messages: at most a short prefix.
//!
//! A grid file or a wire message may carry a key or value of megabytes; an
//! error that echoes it whole costs that much again per copy (and floods the
//! terminal). Every message that quotes user text goes through [`short`].

/// The most characters of a value an error message quotes.
pub const QUOTE_CHARS: usize = 60;

/// `s` quoted (Rust debug escaping, so control characters are shown, not
/// sent), or for longer text its first [`QUOTE_CHARS`] characters followed by
/// `… (N bytes)`. Linear in the quoted prefix, not in `s`.
pub fn short(s: &str) -> String {
    match s.char_indices().nth(QUOTE_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

/// Like [`short`] but without the quotes, for text shown inside backticks
/// (keys). Control characters are still escaped.
pub fn short_bare(s: &str) -> String {
    let q = short(s);
    match q.strip_prefix('"') {
        Some(rest) => match rest.rsplit_once('"') {
            Some((inner, tail)) => format!("{inner}{tail}"),
            None => q,
        },
        None => q,
    }
}

/// `s` as is when at most `max` characters, else its first `max`
/// characters and `… (N bytes)`; no escaping (for text that is ours, such
/// as a parser's message, that may embed a piece of the input).
pub fn truncate(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => s.into(),
        Some((cut, _)) => format!("{}… ({} bytes)", &s[..cut], s.len()).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_quoted_whole() {
        assert_eq!(short("sgd"), "\"sgd\"");
        assert_eq!(short_bare("depht"), "depht");
        assert_eq!(short("a\u{1b}[2J"), "\"a\\u{1b}[2J\"");
    }

    #[test]
    fn long_text_is_cut_with_its_size() {
        let long = "é".repeat(1000);
        let q = short(&long);
        assert_eq!(q, format!("{:?}… (2000 bytes)", "é".repeat(QUOTE_CHARS)));
        assert_eq!(short_bare(&"k".repeat(100)), format!("{}… (100 bytes)", "k".repeat(60)));
        assert_eq!(truncate("a \"b\"", 10), "a \"b\"");
        assert_eq!(truncate("abcdef", 3), "abc… (6 bytes)");
    }
}
