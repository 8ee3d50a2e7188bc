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

use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use toml::de::{DeTable, DeValue};

use crate::adaptive::SeedPlan;
use crate::grid::*;
use crate::grid_rules as rules;
use crate::level::{Level, LevelKind};
use crate::schema::{Key, Place, Schema};
use crate::toml_doc::{boolean, describe, dotted, float, int, line_col, string, to_u32, Doc, Table, Value};

const ROOT_KEYS: &[&str] = &["name", "seeds", "trainer", "grid", "train", "analysis", "data", "run"];
const DATA_KEYS: &[&str] = &["dataset", "path", "train_subset", "test_subset"];
const RUN_KEYS: &[&str] = &["max_attempts", "priority", "keep_weights", "target_halfwidth", "max_seeds", "contrast"];

/// The tables and their keys, so an unknown key can be pointed at the table
/// where it belongs (`[train]` before `[grid]`: a setting written at the top
/// level belongs in `[train]`, though it may also be a factor).
pub(crate) fn sections(schema: &Schema) -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("train", schema.names(Place::Setting)),
        ("grid", schema.factor_names()),
        ("analysis", schema.names(Place::Analysis)),
        ("data", DATA_KEYS.to_vec()),
        ("run", RUN_KEYS.to_vec()),
    ]
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

    let trainer = crate::grid_exec::parse_trainer(&doc, &root, crate::schema())?;
    let schema = trainer.schema();
    let grid_t = root.section(&doc, "grid")?.ok_or_else(|| {
        let needed = if schema.open {
            "at least one factor, e.g. lr = [0.01, 0.1]".to_owned()
        } else {
            format!("the factors {}", schema.names(Place::Factor).join(", "))
        };
        doc.error(0..0, "grid", format!("missing [grid] table with {needed}"))
    })?;
    let no_table = DeTable::new();
    let train_t = root.section(&doc, "train")?.unwrap_or(Table { name: "train", span: 0..0, entries: &no_table });
    let analysis = root.section(&doc, "analysis")?;
    let (factors, train) = if schema.open {
        if let Some(t) = analysis {
            return Err(doc.error(
                t.span,
                "analysis",
                "analyses run inside the built-in BMEnet trainer; an exec trainer's command does its own",
            ));
        }
        crate::grid_exec::parse_open(&doc, schema, &grid_t, &train_t)?
    } else {
        grid_t.check_keys(&doc, &schema.factor_names(), schema)?;
        train_t.check_keys(&doc, &schema.names(Place::Setting), schema)?;
        let analysis_t = analysis.unwrap_or(Table { name: "analysis", span: 0..0, entries: &no_table });
        analysis_t.check_keys(&doc, &schema.names(Place::Analysis), schema)?;
        parse_factors_and_settings(&doc, schema, &grid_t, [&train_t, &analysis_t])?
    };
    crate::grid_exec::check_placeholders(&doc, &root, &trainer, &factors, &train)?;

    let data = match root.section(&doc, "data")? {
        Some(data_t) => {
            data_t.check_keys(&doc, DATA_KEYS, schema)?;
            parse_data(&doc, &data_t, schema)?
        }
        None if schema.open => DataConfig::none(),
        None => {
            return Err(doc.error(
                0..0,
                "data",
                "missing [data] table; at least `path` is needed, e.g. path = \"data/cifar-10-batches-bin\"",
            ))
        }
    };

    let cells = cell_count(&factors);
    rules::trial_count(cells, seeds.len()).map_err(|m| doc.error(grid_t.span.clone(), "grid", m))?;

    let run = match root.section(&doc, "run")? {
        Some(run_t) => {
            run_t.check_keys(&doc, RUN_KEYS, schema)?;
            parse_run(&doc, &run_t, schema, &factors, seeds.len())?
        }
        None => RunConfig::default(),
    };

    Ok(GridSpec { name: name.into_owned(), seeds: seeds.materialise(), factors, train, data, run, trainer })
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

/// `[grid]`, `[train]` and `[analysis]` through the schema: every key
/// written in `[grid]` is a factor (in the schema's order), every
/// factor-only key must be there, and each setting not made a factor is
/// taken from `[train]` (an analysis from `[analysis]`) or its default
/// (left out where the schema omits it at its default). A key in both
/// `[grid]` and `[train]` is an error naming both places.
fn parse_factors_and_settings(
    doc: &Doc,
    schema: &Schema,
    grid_t: &Table,
    [train_t, analysis_t]: [&Table; 2],
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
            (None, place @ (Place::Setting | Place::Analysis)) => {
                let table = if place == Place::Setting { train_t } else { analysis_t };
                let level = match (table.get(key.name), key.default) {
                    (Some(v), _) => typed(doc, key, &dotted(table.name, key.name), v)?,
                    (None, Some(d)) => d.level(),
                    (None, None) => {
                        table.required(doc, key.name, &format!("e.g. {}", key.example))?;
                        continue;
                    }
                };
                if !schema.omitted(key.name, &level) {
                    train.insert(key.name.to_owned(), level);
                }
            }
        }
    }
    if let Some((name, message)) = schema.unmet_requirement(&train) {
        let table = if schema.key(name).is_some_and(|k| k.place == Place::Analysis) { analysis_t } else { train_t };
        let span = table.get(name).map_or(table.span.clone(), toml::Spanned::span);
        return Err(doc.error(span, &dotted(table.name, name), message));
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

fn parse_data(doc: &Doc, t: &Table, schema: &Schema) -> Result<DataConfig, GridError> {
    let dataset = match t.get("dataset") {
        None => DATASETS[0].to_owned(),
        Some(v) => {
            let s = string(doc, "data.dataset", v)?;
            rules::dataset(&s).map_err(|m| doc.error(v.span(), "data.dataset", m))?;
            s.into_owned()
        }
    };
    if dataset == crate::grid::NO_DATASET {
        if !schema.open {
            let span = t.get("dataset").map_or(t.span.clone(), toml::Spanned::span);
            return Err(doc.error(span, "data.dataset", "the BMEnet trainer trains on \"cifar10\""));
        }
        if let Some((k, v)) = t.entries.iter().find(|(k, _)| k.get_ref() != "dataset") {
            return Err(doc.error(
                v.span(),
                &dotted("data", k.get_ref()),
                "has no meaning with `dataset = \"none\"`; remove it, or name the dataset",
            ));
        }
        return Ok(DataConfig::none());
    }
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
    let resolved = resolve_against_grid(doc.path, Path::new(data_path.as_ref()));
    rules::data_path(&resolved.to_string_lossy())
        .map_err(|m| doc.error(path_v.span(), "data.path", format!("resolved against the grid file's folder, {m}")))?;
    Ok(DataConfig {
        dataset,
        path: resolved,
        train_subset: subset("train_subset")?,
        test_subset: subset("test_subset")?,
    })
}

fn parse_run(
    doc: &Doc,
    t: &Table,
    schema: &Schema,
    factors: &[Factor],
    planned_seeds: u64,
) -> Result<RunConfig, GridError> {
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
    let adaptive = parse_seed_plan(doc, t, schema, factors, planned_seeds)?;
    Ok(RunConfig { max_attempts, priority, keep_weights, adaptive })
}

/// `target_halfwidth` turns adaptive seeds on and needs `max_seeds`;
/// `contrast` defaults to the schema's focus factor. `max_seeds` or
/// `contrast` without `target_halfwidth` is an error, not ignored.
fn parse_seed_plan(
    doc: &Doc,
    t: &Table,
    schema: &Schema,
    factors: &[Factor],
    planned_seeds: u64,
) -> Result<Option<SeedPlan>, GridError> {
    let Some(target_v) = t.get("target_halfwidth") else {
        if let Some((name, v)) = ["max_seeds", "contrast"].iter().find_map(|k| t.get(k).map(|v| (*k, v))) {
            return Err(doc.error(
                v.span(),
                &dotted("run", name),
                "has no effect without `target_halfwidth` (adaptive seeds); add it, or remove this key",
            ));
        }
        return Ok(None);
    };
    let target_halfwidth = float(doc, "run.target_halfwidth", target_v)?;
    rules::target_halfwidth(target_halfwidth).map_err(|m| doc.error(target_v.span(), "run.target_halfwidth", m))?;
    let max_v = t.required(doc, "max_seeds", "adaptive seeds need a bound, e.g. max_seeds = 10")?;
    let max_seeds = int(doc, "run.max_seeds", max_v)?;
    rules::max_seeds(max_seeds, planned_seeds as usize, cell_count(factors))
        .map_err(|m| doc.error(max_v.span(), "run.max_seeds", m))?;
    let contrast = match t.get("contrast") {
        Some(v) => {
            let name = string(doc, "run.contrast", v)?;
            rules::contrast(&name, factors).map_err(|m| doc.error(v.span(), "run.contrast", m))?;
            name.into_owned()
        }
        None if schema.default_focus.is_empty() => {
            return Err(doc.error(
                target_v.span(),
                "run.contrast",
                "adaptive seeds need `contrast`: the factor whose effect must reach the target width",
            ));
        }
        None => {
            rules::contrast(schema.default_focus, factors).map_err(|m| {
                doc.error(
                    target_v.span(),
                    "run.contrast",
                    format!("not given, and the default (the report's focus) {m}; set `contrast`"),
                )
            })?;
            schema.default_focus.to_owned()
        }
    };
    Ok(Some(SeedPlan { target_halfwidth, max_seeds: to_u32(doc, "run.max_seeds", max_v, max_seeds)?, contrast }))
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

pub(crate) fn cell_count(factors: &[Factor]) -> u64 {
    factors.iter().fold(1u64, |acc, f| acc.saturating_mul(f.levels.len() as u64))
}

/// Resolves a path (data, an exec trainer's workdir) against the grid
/// file's folder and normalises it lexically (`.` dropped, `..` popped),
/// without touching the filesystem: it may live on the workers, not where
/// the grid is submitted.
pub(crate) fn resolve_against_grid(grid_file: &Path, data: &Path) -> PathBuf {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_paths_resolve_lexically() {
        let p = resolve_against_grid(Path::new("/a/b/grid.toml"), Path::new("../data/./x"));
        assert_eq!(p, PathBuf::from("/a/data/x"));
        let p = resolve_against_grid(Path::new("/a/grid.toml"), Path::new("/abs/../y"));
        assert_eq!(p, PathBuf::from("/y"));
        let p = resolve_against_grid(Path::new("/grid.toml"), Path::new("../../z"));
        assert_eq!(p, PathBuf::from("/z"));
        let p = resolve_against_grid(Path::new("grid.toml"), Path::new("d"));
        assert!(p.is_absolute() && p.ends_with("d"), "{p:?}");
    }
}
