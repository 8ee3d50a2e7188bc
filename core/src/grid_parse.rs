//! Parsing and validation behind [`GridSpec::parse`](crate::GridSpec::parse)
//! and [`GridSpec::validate`](crate::GridSpec::validate).
//!
//! The file is read into toml's spanned document tree ([`DeTable`]) and walked
//! by hand instead of being deserialised with serde: serde reports the first
//! mismatch with a position but no dotted key, cannot say "did you mean", and
//! loses the spans before the semantic checks run. Walking the tree keeps the
//! span of every value, so each error points at the value that is wrong (or at
//! the table that lacks a key).
//!
//! The semantic rules (what a valid depth, seed or learning rate is) live in
//! [`rules`] and are the only copy: the file parser calls them with spans at
//! hand, and [`validate_spec`] calls them on a spec that came over the wire.

use std::borrow::Cow;
use std::collections::HashSet;
use std::hash::Hash;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::grid::*;
use crate::level::{Level, LevelKind};
use crate::quote::{short, short_bare, truncate};
use crate::schema::{Key, Place, Schema};

type Value<'i> = Spanned<DeValue<'i>>;

const ROOT_KEYS: &[&str] = &["name", "seeds", "grid", "train", "data", "run"];
const DATA_KEYS: &[&str] = &["dataset", "path", "train_subset", "test_subset"];
const RUN_KEYS: &[&str] = &["max_attempts", "priority", "keep_weights"];

/// The tables and their keys, so an unknown key can be pointed at the table
/// where it belongs (`[train]` before `[grid]`: a setting written at the top
/// level belongs in `[train]`, though it may also be a factor).
fn sections(schema: &Schema) -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("train", schema.names(Place::Setting)),
        ("grid", schema.factor_names()),
        ("data", DATA_KEYS.to_vec()),
        ("run", RUN_KEYS.to_vec()),
    ]
}

/// The semantic rules, shared by the file parser and [`validate_spec`].
///
/// Each returns the message to show after the key. Integer rules take `i64`
/// (what TOML can express) so that negative values get the rule's own
/// message rather than a generic "out of range".
pub(crate) mod rules {
    use super::*;

    pub(crate) fn name(name: &str) -> Result<(), String> {
        if name.is_empty() {
            return Err("must not be empty".into());
        }
        if name.chars().count() > MAX_NAME_LEN {
            return Err(format!("is {} characters long; the limit is {MAX_NAME_LEN}", name.chars().count()));
        }
        if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
            return Err(format!("{name:?} contains {c:?}; use only letters, digits, '.', '_' and '-'"));
        }
        // Names become file and folder names and command-line arguments:
        // `.`/`..` are folders already, `.x` is hidden and `-x` reads as an
        // option. Letters, digits and '_' are the safe first characters.
        if name.starts_with(['.', '-']) {
            return Err(format!(
                "{name:?} begins with {:?}; begin with a letter, digit or '_' \
                 (names are used as file names and command-line arguments)",
                &name[..1]
            ));
        }
        Ok(())
    }

    /// The number of seeds, whether written as a count or as a list.
    pub(crate) fn seed_count(n: i64) -> Result<(), String> {
        if n < 1 {
            return Err(format!(
                "at least one seed is needed (got {n}); give a count n >= 1 \
                 (meaning seeds 0..n-1) or a non-empty list"
            ));
        }
        // Every cell runs every seed, so more seeds than trials cannot fit.
        if n as u64 > MAX_TRIALS {
            return Err(format!("{n} seeds are more than the limit of {MAX_TRIALS} trials per sweep"));
        }
        Ok(())
    }

    pub(crate) fn seed(seed: i64) -> Result<(), String> {
        if seed < 0 {
            return Err(format!("seed {seed} is negative; seeds are non-negative integers"));
        }
        Ok(())
    }

    /// A factor must have at least one level, or the grid has no cells.
    pub(crate) fn non_empty(len: usize) -> Result<(), String> {
        if len == 0 {
            return Err("is an empty list; give at least one value".into());
        }
        Ok(())
    }

    /// A repeated value would make two cells (or trials) with the same ID.
    /// On failure, returns the index of the repetition.
    pub(crate) fn distinct<T: Hash + Eq + std::fmt::Display>(values: &[T]) -> Result<(), (usize, String)> {
        let mut seen = HashSet::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            if !seen.insert(v) {
                return Err((i, format!("{v} is listed more than once")));
            }
        }
        Ok(())
    }

    /// For counts that must be at least 1 (epochs, batch size, ...).
    pub(crate) fn positive(n: i64) -> Result<(), String> {
        if n < 1 {
            return Err(format!("must be at least 1, got {n}"));
        }
        Ok(())
    }

    pub(crate) fn dataset(name: &str) -> Result<(), String> {
        if name.len() > MAX_DATASET_LEN {
            return Err(format!(
                "{} is {} bytes long; the limit is {MAX_DATASET_LEN} (expected one of: {})",
                short(name),
                name.len(),
                DATASETS.join(", ")
            ));
        }
        if !DATASETS.contains(&name) {
            return Err(format!("unknown dataset {}; expected one of: {}", short(name), DATASETS.join(", ")));
        }
        Ok(())
    }

    /// Checked both as written and once resolved against the grid's folder
    /// (the resolved form is what is sent and stored).
    pub(crate) fn data_path(path: &str) -> Result<(), String> {
        if path.is_empty() {
            return Err("must not be empty; give the folder that holds the dataset".into());
        }
        if path.len() > MAX_PATH_LEN {
            return Err(format!("{} is {} bytes long; the limit is {MAX_PATH_LEN}", short(path), path.len()));
        }
        // NUL cannot be in a path; other control characters would reach
        // logs and terminals raw.
        if let Some(c) = path.chars().find(|c| c.is_control()) {
            return Err(format!("{} contains the control character {c:?}; paths must be printable", short(path)));
        }
        Ok(())
    }

    /// Bounds the expansion, checked before any seed list is materialised.
    pub(crate) fn trial_count(cells: u64, seeds: u64) -> Result<(), String> {
        let trials = cells.saturating_mul(seeds);
        if trials > MAX_TRIALS {
            return Err(format!(
                "the grid expands to {cells} cells x {seeds} seeds = {trials} trials, \
                 more than the limit of {MAX_TRIALS}; split it into several sweeps"
            ));
        }
        Ok(())
    }
}

/// Parses and validates a grid file's text.
///
/// Required: `name`, `seeds`, the four `[grid]` factors and `data.path`.
/// Optional, with defaults: every `[train]` key (the lecture demo's settings,
/// see [`TrainConfig`]'s `Default`), `data.dataset` (`"cifar10"`),
/// `data.train_subset`/`data.test_subset` (whole dataset) and the whole
/// `[run]` table (see [`RunConfig`]'s `Default`). Float settings accept
/// integers (`weight_decay = 0`). A relative `data.path` resolves against
/// the folder of `path`, made absolute and lexically normalised.
pub(crate) fn parse(text: &str, path: &Path) -> Result<GridSpec, GridError> {
    let doc = Doc { text, path };
    let root = DeTable::parse(text).map_err(|e| doc.syntax_error(&e))?;
    let root = Table { name: "", span: 0..0, entries: root.get_ref() };
    root.check_keys(&doc, ROOT_KEYS, crate::schema())?;

    let name_v = root.required(&doc, "name", "e.g. name = \"skip-ablation\"")?;
    let name = string(&doc, "name", name_v)?;
    rules::name(&name).map_err(|m| doc.error(name_v.span(), "name", m))?;

    let seeds_v = root.required(&doc, "seeds", "e.g. seeds = [0, 1, 2] or seeds = 3")?;
    let seeds = parse_seeds(&doc, seeds_v)?;

    let schema = crate::schema();
    let grid_t = root.section(&doc, "grid")?.ok_or_else(|| {
        doc.error(
            0..0,
            "grid",
            format!("missing [grid] table with the factors {}", schema.names(Place::Factor).join(", ")),
        )
    })?;
    grid_t.check_keys(&doc, &schema.factor_names(), schema)?;
    let no_table = DeTable::new();
    let train_t = root.section(&doc, "train")?.unwrap_or(Table { name: "train", span: 0..0, entries: &no_table });
    train_t.check_keys(&doc, &schema.names(Place::Setting), schema)?;
    let (factors, train) = parse_factors_and_settings(&doc, schema, &grid_t, &train_t)?;

    let data_t = root.section(&doc, "data")?.ok_or_else(|| {
        doc.error(
            0..0,
            "data",
            "missing [data] table; at least `path` is needed, e.g. path = \"data/cifar-10-batches-bin\"",
        )
    })?;
    data_t.check_keys(&doc, DATA_KEYS, schema)?;
    let data = parse_data(&doc, &data_t)?;

    let run = match root.section(&doc, "run")? {
        Some(run_t) => {
            run_t.check_keys(&doc, RUN_KEYS, schema)?;
            parse_run(&doc, &run_t)?
        }
        None => RunConfig::default(),
    };

    let cells = cell_count(&factors);
    rules::trial_count(cells, seeds.len()).map_err(|m| doc.error(grid_t.span.clone(), "grid", m))?;

    Ok(GridSpec { name: name.into_owned(), seeds: seeds.materialise(), factors, train, data, run })
}

/// Seeds as written: a count is kept as a count until the size check has
/// passed, so `seeds = 9000000000` is an error rather than an allocation.
enum Seeds {
    Count(u64),
    List(Vec<u64>),
}

impl Seeds {
    fn len(&self) -> u64 {
        match self {
            Seeds::Count(n) => *n,
            Seeds::List(v) => v.len() as u64,
        }
    }

    fn materialise(self) -> Vec<u64> {
        match self {
            Seeds::Count(n) => (0..n).collect(),
            Seeds::List(v) => v,
        }
    }
}

fn parse_seeds(doc: &Doc, v: &Value) -> Result<Seeds, GridError> {
    let err = |span: Range<usize>| move |m: String| doc.error(span, "seeds", m);
    match v.get_ref() {
        DeValue::Integer(_) => {
            let n = int(doc, "seeds", v)?;
            rules::seed_count(n).map_err(err(v.span()))?;
            Ok(Seeds::Count(n as u64))
        }
        DeValue::Array(items) => {
            rules::seed_count(items.len() as i64).map_err(err(v.span()))?;
            let mut seeds = Vec::with_capacity(items.len());
            for item in items {
                let s = int(doc, "seeds", item)?;
                rules::seed(s).map_err(err(item.span()))?;
                seeds.push(s as u64);
            }
            rules::distinct(&seeds).map_err(|(i, m)| err(items[i].span())(m))?;
            Ok(Seeds::List(seeds))
        }
        other => {
            Err(doc.error(v.span(), "seeds", format!("expected a list of seeds or a count, found {}", describe(other))))
        }
    }
}

/// `[grid]` and `[train]` through the schema: every key written in `[grid]`
/// is a factor (in the schema's order), every factor-only key must be
/// there, and each setting not made a factor is taken from `[train]` or its
/// default. A key in both tables is an error naming both places.
fn parse_factors_and_settings(
    doc: &Doc,
    schema: &Schema,
    grid_t: &Table,
    train_t: &Table,
) -> Result<(Vec<Factor>, Settings), GridError> {
    if let Some((k, v)) =
        train_t.entries.iter().filter(|(k, _)| grid_t.get(k.get_ref()).is_some()).min_by_key(|(k, _)| k.span().start)
    {
        let name: &str = k.get_ref();
        let (line, column) = line_col(doc.text, grid_t.get(name).map_or(0, |g| g.span().start));
        return Err(doc.error(
            v.span(),
            &dotted("train", name),
            format!(
                "`{name}` is also a factor in [grid] (line {line}, column {column}); a key is either a factor \
                 or a fixed setting: remove one of them"
            ),
        ));
    }
    let mut factors = Vec::new();
    let mut train = Settings::new();
    for key in schema.keys {
        match (grid_t.get(key.name), key.place) {
            (Some(v), _) => factors.push(Factor { name: key.name.to_owned(), levels: factor(doc, grid_t, key, v)? }),
            (None, Place::Factor) => {
                grid_t.required(doc, key.name, &format!("give one value or a list, e.g. {}", key.example))?;
            }
            (None, Place::Setting) => {
                let level = match (train_t.get(key.name), key.default) {
                    (Some(v), _) => typed(doc, key, &dotted("train", key.name), v)?,
                    (None, Some(d)) => d.level(),
                    (None, None) => {
                        train_t.required(doc, key.name, &format!("e.g. {}", key.example))?;
                        continue;
                    }
                };
                train.insert(key.name.to_owned(), level);
            }
        }
    }
    Ok((factors, train))
}

/// One value for `key`, of its kind (floats accept integers), checked by
/// its rule; errors point at the value.
fn typed(doc: &Doc, key: &Key, dotted_key: &str, v: &Value) -> Result<Level, GridError> {
    let level = match key.kind {
        LevelKind::Int => Level::Int(int(doc, dotted_key, v)?),
        LevelKind::Float => Level::Float(float(doc, dotted_key, v)?),
        LevelKind::Bool => Level::Bool(boolean(doc, dotted_key, v)?),
        LevelKind::Str => Level::Str(string(doc, dotted_key, v)?.into_owned()),
    };
    (key.rule)(&level).map_err(|m| doc.error(v.span(), dotted_key, m))?;
    Ok(level)
}

fn parse_data(doc: &Doc, t: &Table) -> Result<DataConfig, GridError> {
    let dataset = match t.get("dataset") {
        None => DATASETS[0].to_owned(),
        Some(v) => {
            let s = string(doc, "data.dataset", v)?;
            rules::dataset(&s).map_err(|m| doc.error(v.span(), "data.dataset", m))?;
            s.into_owned()
        }
    };
    let path_v = t.required(doc, "path", "e.g. path = \"data/cifar-10-batches-bin\"")?;
    let data_path = string(doc, "data.path", path_v)?;
    rules::data_path(&data_path).map_err(|m| doc.error(path_v.span(), "data.path", m))?;
    let subset = |name: &str| -> Result<Option<u64>, GridError> {
        let key = dotted("data", name);
        match t.get(name) {
            None => Ok(None),
            Some(v) => {
                let n = int(doc, &key, v)?;
                rules::positive(n).map_err(|m| doc.error(v.span(), &key, m))?;
                Ok(Some(n as u64))
            }
        }
    };
    let resolved = resolve_data_path(doc.path, Path::new(data_path.as_ref()));
    rules::data_path(&resolved.to_string_lossy())
        .map_err(|m| doc.error(path_v.span(), "data.path", format!("resolved against the grid file's folder, {m}")))?;
    Ok(DataConfig {
        dataset,
        path: resolved,
        train_subset: subset("train_subset")?,
        test_subset: subset("test_subset")?,
    })
}

fn parse_run(doc: &Doc, t: &Table) -> Result<RunConfig, GridError> {
    let d = RunConfig::default();
    let max_attempts = match t.get("max_attempts") {
        None => d.max_attempts,
        Some(v) => {
            let n = int(doc, "run.max_attempts", v)?;
            rules::positive(n).map_err(|m| doc.error(v.span(), "run.max_attempts", m))?;
            to_u32(doc, "run.max_attempts", v, n)?
        }
    };
    let priority = match t.get("priority") {
        None => d.priority,
        Some(v) => {
            let n = int(doc, "run.priority", v)?;
            i32::try_from(n).map_err(|_| {
                doc.error(v.span(), "run.priority", format!("{n} is out of range ({} to {})", i32::MIN, i32::MAX))
            })?
        }
    };
    let keep_weights = match t.get("keep_weights") {
        None => d.keep_weights,
        Some(v) => boolean(doc, "run.keep_weights", v)?,
    };
    Ok(RunConfig { max_attempts, priority, keep_weights })
}

/// A factor's levels: one value (held fixed) or a non-empty list of
/// distinct values, each of the key's kind and valid by its rule.
fn factor(doc: &Doc, table: &Table, key: &Key, v: &Value) -> Result<Vec<Level>, GridError> {
    let dotted_key = dotted(table.name, key.name);
    let items: &[Value] = match v.get_ref() {
        DeValue::Array(a) => a,
        _ => std::slice::from_ref(v),
    };
    rules::non_empty(items.len()).map_err(|m| doc.error(v.span(), &dotted_key, m))?;
    let levels = items.iter().map(|item| typed(doc, key, &dotted_key, item)).collect::<Result<Vec<_>, _>>()?;
    rules::distinct(&levels).map_err(|(i, m)| doc.error(items[i].span(), &dotted_key, m))?;
    Ok(levels)
}

fn cell_count(factors: &[Factor]) -> u64 {
    factors.iter().fold(1u64, |acc, f| acc.saturating_mul(f.levels.len() as u64))
}

/// The text and file name, to turn spans into `file:line:column` errors.
struct Doc<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Doc<'_> {
    fn error(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> GridError {
        let (line, column) = line_col(self.text, span.start);
        GridError::Invalid { path: self.path.to_owned(), line, column, key: key.to_owned(), message: message.into() }
    }

    fn syntax_error(&self, e: &toml::de::Error) -> GridError {
        let offset = e.span().map_or(0, |s| s.start);
        // toml's messages are sometimes several lines; errors here are one.
        let message = e.message().trim().replace('\n', "; ");
        let message = truncate(&message, 200);
        self.error(offset..offset, &key_at(self.text, offset), format!("invalid TOML: {message}"))
    }
}

/// One table of the document: its dotted name ("" for the root), where it is
/// defined (for "missing key" errors) and its entries.
struct Table<'a, 'i> {
    name: &'static str,
    span: Range<usize>,
    entries: &'a DeTable<'i>,
}

impl<'a, 'i> Table<'a, 'i> {
    fn get(&self, key: &str) -> Option<&'a Value<'i>> {
        self.entries.get(key)
    }

    fn required(&self, doc: &Doc, key: &str, hint: &str) -> Result<&'a Value<'i>, GridError> {
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
    fn section(&self, doc: &Doc, name: &'static str) -> Result<Option<Table<'a, 'i>>, GridError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        match v.get_ref() {
            DeValue::Table(entries) => Ok(Some(Table { name, span: v.span(), entries })),
            other => Err(doc.error(v.span(), name, format!("expected a table ([{name}]), found {}", describe(other)))),
        }
    }

    /// Rejects the first key (in file order) that is not in `allowed`.
    fn check_keys(&self, doc: &Doc, allowed: &[&str], schema: &Schema) -> Result<(), GridError> {
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
const MAX_SUGGEST_LEN: usize = 64;

/// Where an unknown key probably should have gone: a close spelling in the
/// same table, or the table where that key exists.
fn unknown_key_hint(schema: &Schema, table: &str, key: &str, allowed: &[&str]) -> String {
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
fn edit_distance(a: &str, b: &str) -> usize {
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

fn dotted(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

/// A value's type, with the value itself when short, for "expected X, found Y".
fn describe(v: &DeValue) -> String {
    match v {
        DeValue::String(s) if s.chars().count() <= 40 => format!("the string {s:?}"),
        DeValue::Integer(i) => format!("the integer {i}"),
        DeValue::Float(f) => format!("the float {f}"),
        DeValue::Boolean(b) => format!("the boolean {b}"),
        other => format!("a{} {}", if other.is_array() { "n" } else { "" }, other.type_str()),
    }
}

fn wrong_type(doc: &Doc, key: &str, v: &Value, expected: &str) -> GridError {
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

fn int(doc: &Doc, key: &str, v: &Value) -> Result<i64, GridError> {
    match v.get_ref() {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .map_err(|_| doc.error(v.span(), key, format!("{i} does not fit in a 64-bit integer"))),
        _ => Err(wrong_type(doc, key, v, "an integer")),
    }
}

fn to_u32(doc: &Doc, key: &str, v: &Value, n: i64) -> Result<u32, GridError> {
    u32::try_from(n).map_err(|_| doc.error(v.span(), key, format!("{n} is too large; the limit is {}", u32::MAX)))
}

/// A float setting; integers are accepted since `weight_decay = 0` is natural.
fn float(doc: &Doc, key: &str, v: &Value) -> Result<f64, GridError> {
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

fn boolean(doc: &Doc, key: &str, v: &Value) -> Result<bool, GridError> {
    v.get_ref().as_bool().ok_or_else(|| wrong_type(doc, key, v, "a boolean (true or false)"))
}

fn string<'v>(doc: &Doc, key: &str, v: &'v Value) -> Result<Cow<'v, str>, GridError> {
    match v.get_ref() {
        DeValue::String(s) => Ok(Cow::Borrowed(s.as_ref())),
        _ => Err(wrong_type(doc, key, v, "a string")),
    }
}

/// 1-based line and column (in characters) of a byte offset, tolerating
/// offsets past the end or inside a character.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
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
fn key_at(text: &str, offset: usize) -> String {
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

/// Resolves a data path against the grid file's folder and normalises it
/// lexically (`.` dropped, `..` popped), without touching the filesystem:
/// the data may live on the workers, not where the grid is submitted.
fn resolve_data_path(grid_file: &Path, data: &Path) -> PathBuf {
    let base = grid_file.parent().unwrap_or(Path::new(""));
    let joined = base.join(data);
    // `absolute` only consults the working directory; if even that fails,
    // a relative (but normalised) path is the best left to offer.
    let absolute = std::path::absolute(&joined).unwrap_or(joined);
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                // `..` at the root stays at the root; in a relative path that
                // cannot be popped further it is kept.
                let poppable = matches!(out.components().next_back(), Some(Component::Normal(_)));
                if poppable {
                    out.pop();
                } else if !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn bad(key: &str) -> impl Fn(String) -> GridError + '_ {
    move |message| GridError::Spec { key: key.to_owned(), message }
}

fn bad_at(key: &str) -> impl Fn((usize, String)) -> GridError + '_ {
    move |(_, message)| GridError::Spec { key: key.to_owned(), message }
}

/// TOML cannot write integers above `i64::MAX`, so neither may the wire.
fn as_i64(key: &str, n: u64) -> Result<i64, GridError> {
    i64::try_from(n).map_err(|_| bad(key)(format!("{n} is larger than {}", i64::MAX)))
}

/// Checks a spec built without a file (e.g. received over gRPC) against the
/// same rules the parser applies.
pub(crate) fn validate_spec(spec: &GridSpec) -> Result<(), GridError> {
    let schema = crate::schema();
    rules::name(&spec.name).map_err(bad("name"))?;
    rules::seed_count(as_i64("seeds", spec.seeds.len() as u64)?).map_err(bad("seeds"))?;
    for &s in &spec.seeds {
        rules::seed(as_i64("seeds", s)?).map_err(bad("seeds"))?;
    }
    rules::distinct(&spec.seeds).map_err(bad_at("seeds"))?;

    let mut last = None;
    for f in &spec.factors {
        let key = format!("grid.{}", short_bare(&f.name));
        let position = schema.position(&f.name);
        if position == usize::MAX {
            return Err(bad(&key)(unknown_factor(schema, &f.name)));
        }
        if last.is_some_and(|p| p >= position) {
            return Err(bad(&key)("is out of order or given twice; factors follow the schema's key order".into()));
        }
        last = Some(position);
        rules::non_empty(f.levels.len()).map_err(bad(&key))?;
        for l in &f.levels {
            check_exact(schema, &f.name, l).map_err(bad(&key))?;
        }
        rules::distinct(&f.levels).map_err(bad_at(&key))?;
    }
    for name in schema.names(Place::Factor) {
        if spec.factor(name).is_none() {
            return Err(bad(&format!("grid.{name}"))("missing; this factor is required".into()));
        }
    }
    check_settings(schema, &spec.train, |name| spec.factor(name).is_some())?;
    validate_data(&spec.data)?;

    rules::positive(spec.run.max_attempts.into()).map_err(bad("run.max_attempts"))?;
    rules::trial_count(cell_count(&spec.factors), spec.seeds.len() as u64).map_err(bad("grid"))
}

/// Checks one trial's spec (e.g. an assignment received by a worker): every
/// schema key exactly once, as a cell level or a fixed setting, each valid;
/// the seed; the data settings. Keys are `depth` for factor-only keys and
/// `train.lr` for settings, wherever they are given.
pub(crate) fn validate_trial(t: &crate::TrialSpec) -> Result<(), GridError> {
    let schema = crate::schema();
    let key_of = |name: &str| match schema.key(name).map(|k| k.place) {
        Some(Place::Setting) => format!("train.{}", short_bare(name)),
        _ => short_bare(name),
    };
    for (name, l) in t.cell.iter() {
        if schema.key(name).is_none() {
            return Err(bad(&key_of(name))(unknown_factor(schema, name)));
        }
        check_exact(schema, name, l).map_err(bad(&key_of(name)))?;
    }
    for name in schema.names(Place::Factor) {
        if t.cell.get(name).is_none() {
            return Err(bad(name)("missing from the trial's cell".into()));
        }
    }
    check_settings(schema, &t.train, |name| t.cell.get(name).is_some())?;
    rules::seed(as_i64("seed", t.seed)?).map_err(bad("seed"))?;
    validate_data(&t.data)
}

/// Fixed settings: each a known `[train]` key, not also a factor, valid;
/// and every `[train]` key that is not a factor present.
fn check_settings(schema: &Schema, train: &Settings, is_factor: impl Fn(&str) -> bool) -> Result<(), GridError> {
    for (name, l) in train {
        let key = format!("train.{}", short_bare(name));
        match schema.key(name) {
            Some(k) if k.place == Place::Setting => {}
            _ => {
                let known = schema.names(Place::Setting).join(", ");
                return Err(bad(&key)(format!("unknown setting; expected one of: {known}")));
            }
        }
        if is_factor(name) {
            return Err(bad(&key)("is both a factor and a fixed setting; a key is either one or the other".into()));
        }
        check_exact(schema, name, l).map_err(bad(&key))?;
    }
    for name in schema.names(Place::Setting) {
        if !is_factor(name) && !train.contains_key(name) {
            return Err(bad(&format!("train.{name}"))("missing; give it as a setting or a factor".into()));
        }
    }
    Ok(())
}

/// A level already of the key's kind (the wire carries typed values) and
/// valid by its rule.
fn check_exact(schema: &Schema, name: &str, level: &Level) -> Result<(), String> {
    let expected = schema.key(name).map(|k| k.kind);
    schema.check(name, level.clone())?;
    match expected {
        Some(kind) if kind != level.kind() => Err(format!("expected {}, found {}", kind.describe(), level.describe())),
        _ => Ok(()),
    }
}

fn unknown_factor(schema: &Schema, name: &str) -> String {
    format!("unknown factor {}; {} understands: {}", short(name), schema.trainer, schema.factor_names().join(", "))
}

fn validate_data(d: &DataConfig) -> Result<(), GridError> {
    rules::dataset(&d.dataset).map_err(bad("data.dataset"))?;
    // A path that is not UTF-8 cannot have come from a grid file.
    let path = d
        .path
        .to_str()
        .ok_or_else(|| bad("data.path")(format!("{} is not valid UTF-8", short(&d.path.to_string_lossy()))))?;
    rules::data_path(path).map_err(bad("data.path"))?;
    for (key, subset) in [("data.train_subset", d.train_subset), ("data.test_subset", d.test_subset)] {
        if let Some(n) = subset {
            rules::positive(as_i64(key, n)?).map_err(bad(key))?;
        }
    }
    Ok(())
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
    fn data_paths_resolve_lexically() {
        let p = resolve_data_path(Path::new("/a/b/grid.toml"), Path::new("../data/./x"));
        assert_eq!(p, PathBuf::from("/a/data/x"));
        let p = resolve_data_path(Path::new("/a/grid.toml"), Path::new("/abs/../y"));
        assert_eq!(p, PathBuf::from("/y"));
        let p = resolve_data_path(Path::new("/grid.toml"), Path::new("../../z"));
        assert_eq!(p, PathBuf::from("/z"));
        let p = resolve_data_path(Path::new("grid.toml"), Path::new("d"));
        assert!(p.is_absolute() && p.ends_with("d"), "{p:?}");
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
