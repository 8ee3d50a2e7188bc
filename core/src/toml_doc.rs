//! The spanned TOML document a grid file is read into, and the helpers that
//! turn its values into typed values or `FILE:LINE:COLUMN` errors with a
//! dotted key and, for an unknown key, a "did you mean".

use std::borrow::Cow;
use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::grid::GridError;
use crate::grid_parse::sections;
use crate::quote::{short_bare, truncate};
use crate::schema::{Place, Schema};

pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// The text and file name, to turn spans into `file:line:column` errors.
pub(crate) struct Doc<'a> {
    pub(crate) text: &'a str,
    pub(crate) path: &'a Path,
}

impl Doc<'_> {
    pub(crate) fn error(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> GridError {
        let (line, column) = line_col(self.text, span.start);
        GridError::Invalid { path: self.path.to_owned(), line, column, key: key.to_owned(), message: message.into() }
    }

    pub(crate) fn syntax_error(&self, e: &toml::de::Error) -> GridError {
        let offset = e.span().map_or(0, |s| s.start);
        // toml's messages are sometimes several lines; errors here are one.
        let message = e.message().trim().replace('\n', "; ");
        let message = truncate(&message, 200);
        self.error(offset..offset, &key_at(self.text, offset), format!("invalid TOML: {message}"))
    }
}

/// One table of the document: its dotted name ("" for the root), where it is
/// defined (for "missing key" errors) and its entries.
pub(crate) struct Table<'a, 'i> {
    pub(crate) name: &'static str,
    pub(crate) span: Range<usize>,
    pub(crate) entries: &'a DeTable<'i>,
}

impl<'a, 'i> Table<'a, 'i> {
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value<'i>> {
        self.entries.get(key)
    }

    pub(crate) fn required(&self, doc: &Doc, key: &str, hint: &str) -> Result<&'a Value<'i>, GridError> {
        self.get(key).ok_or_else(|| {
            let place = if self.name.is_empty() { String::new() } else { format!(" in [{}]", self.name) };
            doc.error(
                self.span.clone(),
                &dotted(self.name, key),
                format!("missing required key `{key}`{place}; {hint}"),
            )
        })
    }

    /// A sub-table of the root; `None` when absent.
    pub(crate) fn section(&self, doc: &Doc, name: &'static str) -> Result<Option<Table<'a, 'i>>, GridError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        match v.get_ref() {
            DeValue::Table(entries) => Ok(Some(Table { name, span: v.span(), entries })),
            other => Err(doc.error(v.span(), name, format!("expected a table ([{name}]), found {}", describe(other)))),
        }
    }

    /// Rejects the first key (in file order) that is not in `allowed`.
    pub(crate) fn check_keys(&self, doc: &Doc, allowed: &[&str], schema: &Schema) -> Result<(), GridError> {
        let first_unknown = self
            .entries
            .iter()
            .filter(|(k, _)| !allowed.contains(&k.get_ref().as_ref()))
            .min_by_key(|(k, _)| k.span().start);
        let Some((key, _)) = first_unknown else {
            return Ok(());
        };
        let name: &str = key.get_ref();
        let place = if self.name.is_empty() { "at the top level".to_owned() } else { format!("in [{}]", self.name) };
        let hint = unknown_key_hint(schema, self.name, name, allowed);
        let shown = short_bare(name);
        Err(doc.error(key.span(), &dotted(self.name, &shown), format!("unknown key `{shown}` {place}; {hint}")))
    }
}

/// The longest key (in bytes) that gets a "did you mean" suggestion, and
/// the longest candidate compared with it.
pub(crate) const MAX_SUGGEST_LEN: usize = 64;

/// Where an unknown key probably should have gone: a close spelling in the
/// same table, or the table where that key exists.
pub(crate) fn unknown_key_hint(schema: &Schema, table: &str, key: &str, allowed: &[&str]) -> String {
    if let Some((home, _)) = sections(schema).into_iter().find(|(s, keys)| *s != table && keys.contains(&key)) {
        return if table == "grid" {
            format!(
                "`{key}` is a [{home}] setting, not a grid factor; the factors are {} and any [train] key",
                schema.names(Place::Factor).join(", ")
            )
        } else if table.is_empty() {
            format!("`{key}` belongs in [{home}]; move it below the [{home}] header")
        } else {
            format!("`{key}` belongs in [{home}], not [{table}]")
        };
    }
    // The edit distance is quadratic: only short keys get a suggestion (a
    // typo of a real key is short anyway), against short candidates.
    if key.len() > MAX_SUGGEST_LEN {
        return format!("expected one of: {}", allowed.join(", "));
    }
    let lower = key.to_lowercase();
    let closest = allowed.iter().filter(|a| a.len() <= MAX_SUGGEST_LEN).map(|a| (edit_distance(&lower, a), *a)).min();
    match closest {
        Some((d, a)) if d <= (a.len() / 3).max(1) => format!("did you mean `{a}`?"),
        _ => format!("expected one of: {}", allowed.join(", ")),
    }
}

/// Optimal-string-alignment distance: Levenshtein plus adjacent swaps, the
/// commonest typo (`depht`).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

pub(crate) fn dotted(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

/// A value's type, with the value itself when short, for "expected X, found Y".
pub(crate) fn describe(v: &DeValue) -> String {
    match v {
        DeValue::String(s) if s.chars().count() <= 40 => format!("the string {s:?}"),
        DeValue::Integer(i) => format!("the integer {i}"),
        DeValue::Float(f) => format!("the float {f}"),
        DeValue::Boolean(b) => format!("the boolean {b}"),
        other => format!("a{} {}", if other.is_array() { "n" } else { "" }, other.type_str()),
    }
}

pub(crate) fn wrong_type(doc: &Doc, key: &str, v: &Value, expected: &str) -> GridError {
    let mut message = format!("expected {expected}, found {}", describe(v.get_ref()));
    // `depth = "8"` is the classic: say how to fix it.
    if let DeValue::String(s) = v.get_ref() {
        let s = s.trim();
        let numeric = s.parse::<f64>().is_ok() && expected.contains("number")
            || s.parse::<i64>().is_ok() && expected.contains("integer")
            || matches!(s, "true" | "false") && expected.contains("boolean");
        if numeric {
            message.push_str("; remove the quotes");
        }
    }
    doc.error(v.span(), key, message)
}

pub(crate) fn int(doc: &Doc, key: &str, v: &Value) -> Result<i64, GridError> {
    match v.get_ref() {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .map_err(|_| doc.error(v.span(), key, format!("{i} does not fit in a 64-bit integer"))),
        _ => Err(wrong_type(doc, key, v, "an integer")),
    }
}

pub(crate) fn to_u32(doc: &Doc, key: &str, v: &Value, n: i64) -> Result<u32, GridError> {
    u32::try_from(n).map_err(|_| doc.error(v.span(), key, format!("{n} is too large; the limit is {}", u32::MAX)))
}

/// A float setting; integers are accepted since `weight_decay = 0` is natural.
pub(crate) fn float(doc: &Doc, key: &str, v: &Value) -> Result<f64, GridError> {
    match v.get_ref() {
        DeValue::Integer(_) => Ok(int(doc, key, v)? as f64),
        DeValue::Float(f) => {
            let x: f64 = f.as_str().parse().map_err(|_| doc.error(v.span(), key, format!("{f} is not a number")))?;
            if x.is_infinite() && !f.as_str().contains("inf") {
                return Err(doc.error(v.span(), key, format!("{f} is out of range")));
            }
            Ok(x)
        }
        _ => Err(wrong_type(doc, key, v, "a number")),
    }
}

pub(crate) fn boolean(doc: &Doc, key: &str, v: &Value) -> Result<bool, GridError> {
    v.get_ref().as_bool().ok_or_else(|| wrong_type(doc, key, v, "a boolean (true or false)"))
}

pub(crate) fn string<'v>(doc: &Doc, key: &str, v: &'v Value) -> Result<Cow<'v, str>, GridError> {
    match v.get_ref() {
        DeValue::String(s) => Ok(Cow::Borrowed(s.as_ref())),
        _ => Err(wrong_type(doc, key, v, "a string")),
    }
}

/// 1-based line and column (in characters) of a byte offset, tolerating
/// offsets past the end or inside a character.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Best-effort dotted key for a syntax error: the `key =` on the error's line
/// under the last `[table]` header above it. Empty when there is none; a
/// guess is only offered when the line plainly assigns a key.
pub(crate) fn key_at(text: &str, offset: usize) -> String {
    let (line_no, _) = line_col(text, offset);
    let mut table = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if i + 1 == line_no {
            let bare =
                |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            return match line.split_once('=') {
                Some((k, _)) if bare(k.trim()) => dotted(&short_bare(&table), &short_bare(k.trim())),
                _ => String::new(),
            };
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = header.trim_matches(|c: char| c == '[' || c.is_whitespace()).to_owned();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_and_tolerates_bad_offsets() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab\ncd", 99), (2, 3));
        assert_eq!(line_col("é\nx", 1), (1, 1)); // inside 'é'
        assert_eq!(line_col("éa", 2), (1, 2));
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("batchsize", "batch_size"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("depht", "depth"), 1);
    }

    #[test]
    fn syntax_error_key_guess() {
        assert_eq!(key_at("a = 1\n[train]\nlr = 1e-4.\n", 16), "train.lr");
        assert_eq!(key_at("[[x]]\n???\n", 7), "");
    }
}
