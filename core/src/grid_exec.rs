//! The parts of a grid file that choose and configure the trainer:
//! `[trainer]`, and the factors and settings of an open schema (the exec
//! trainer's: any name, each level typed as the file writes it). The rules
//! are [`crate::exec`]'s; this file only walks the document.

use std::collections::BTreeMap;
use std::path::Path;

use toml::de::DeValue;

use crate::exec::{self, ExecSpec, TrainerSpec};
use crate::grid::{Factor, GridError, Settings};
use crate::grid_rules as rules;
use crate::level::{Level, LevelKind};
use crate::schema::Schema;
use crate::toml_doc::{describe, dotted, int, string, Doc, Table, Value};

const TRAINER_KEYS: &[&str] = &["kind", "command", "args", "env", "workdir", "timeout"];
const EXEC_ONLY: &[&str] = &["command", "args", "env", "workdir", "timeout"];

/// `[trainer]`: BMEnet when absent. Placeholders in `args` are checked
/// later, against the factors ([`check_placeholders`]).
pub(crate) fn parse_trainer(doc: &Doc, root: &Table, schema_for_hints: &Schema) -> Result<TrainerSpec, GridError> {
    let Some(t) = root.section(doc, "trainer")? else {
        return Ok(TrainerSpec::Bmenet);
    };
    t.check_keys(doc, TRAINER_KEYS, schema_for_hints)?;
    let kind = match t.get("kind") {
        None => "bmenet".to_owned(),
        Some(v) => string(doc, "trainer.kind", v)?.into_owned(),
    };
    match kind.as_str() {
        "bmenet" => {
            if let Some((k, v)) = EXEC_ONLY.iter().find_map(|k| t.get(k).map(|v| (*k, v))) {
                return Err(doc.error(
                    v.span(),
                    &dotted("trainer", k),
                    "belongs to `kind = \"exec\"`; the built-in BMEnet trainer runs no command",
                ));
            }
            Ok(TrainerSpec::Bmenet)
        }
        "exec" => parse_exec(doc, &t).map(TrainerSpec::Exec),
        other => Err(doc.error(
            t.get("kind").map_or(t.span.clone(), toml::Spanned::span),
            "trainer.kind",
            format!("unknown trainer {}; expected \"bmenet\" (the default) or \"exec\"", crate::quote::short(other)),
        )),
    }
}

fn parse_exec(doc: &Doc, t: &Table) -> Result<ExecSpec, GridError> {
    let command_v =
        t.required(doc, "command", "the program and its arguments, e.g. command = [\"python\", \"train.py\"]")?;
    let command = strings(doc, "trainer.command", command_v)?;
    let args = match t.get("args") {
        None => Vec::new(),
        Some(v) => strings(doc, "trainer.args", v)?,
    };
    let env = match t.get("env") {
        None => BTreeMap::new(),
        Some(v) => {
            let DeValue::Table(table) = v.get_ref() else {
                return Err(doc.error(
                    v.span(),
                    "trainer.env",
                    format!(
                        "expected a table of strings, e.g. env = {{ OMP_NUM_THREADS = \"1\" }}, found {}",
                        describe(v.get_ref())
                    ),
                ));
            };
            let mut env = BTreeMap::new();
            for (k, value) in table {
                let name: &str = k.get_ref();
                let key = dotted("trainer.env", &crate::quote::short_bare(name));
                exec::env_name(name).map_err(|m| doc.error(k.span(), &key, m))?;
                env.insert(name.to_owned(), string(doc, &key, value)?.into_owned());
            }
            env
        }
    };
    let workdir = match t.get("workdir") {
        None => None,
        Some(v) => {
            let text = string(doc, "trainer.workdir", v)?;
            Some(crate::grid_parse::resolve_against_grid(doc.path, Path::new(text.as_ref())))
        }
    };
    let timeout_secs = match t.get("timeout") {
        None => None,
        Some(v) => Some(
            exec::timeout(int(doc, "trainer.timeout", v)?).map_err(|m| doc.error(v.span(), "trainer.timeout", m))?,
        ),
    };
    let spec = ExecSpec { command, args, env, workdir, timeout_secs };
    // Everything but the placeholders, which need the factors.
    spec.validate(|_| true).map_err(|(key, m)| {
        doc.error(t.get(key.trim_start_matches("trainer.")).map_or(t.span.clone(), toml::Spanned::span), key, m)
    })?;
    Ok(spec)
}

fn strings(doc: &Doc, key: &str, v: &Value) -> Result<Vec<String>, GridError> {
    let DeValue::Array(items) = v.get_ref() else {
        return Err(doc.error(v.span(), key, format!("expected a list of strings, found {}", describe(v.get_ref()))));
    };
    items.iter().map(|item| string(doc, key, item).map(std::borrow::Cow::into_owned)).collect()
}

/// The placeholders of `args` against the grid's factors and settings;
/// the error points at `[trainer] args`.
pub(crate) fn check_placeholders(
    doc: &Doc,
    root: &Table,
    trainer: &TrainerSpec,
    factors: &[Factor],
    train: &Settings,
) -> Result<(), GridError> {
    let TrainerSpec::Exec(spec) = trainer else {
        return Ok(());
    };
    let known = |n: &str| factors.iter().any(|f| f.name == n) || train.contains_key(n);
    spec.validate(known).map_err(|(key, m)| {
        let span = root
            .section(doc, "trainer")
            .ok()
            .flatten()
            .and_then(|t| t.get("args").map(toml::Spanned::span))
            .unwrap_or(0..0);
        doc.error(span, key, m)
    })
}

/// `[grid]` and `[train]` of an open schema: every `[grid]` key a factor
/// (kept in name order), every `[train]` key a fixed setting, each name
/// and level by the schema's rules. A factor's levels are one kind
/// (integers among floats are read as floats).
pub(crate) fn parse_open(
    doc: &Doc,
    schema: &Schema,
    grid_t: &Table,
    train_t: &Table,
) -> Result<(Vec<Factor>, Settings), GridError> {
    let mut factors = Vec::new();
    for (k, v) in grid_t.entries {
        let name: &str = k.get_ref();
        let key = dotted("grid", &crate::quote::short_bare(name));
        if train_t.get(name).is_some() {
            return Err(doc.error(
                k.span(),
                &key,
                format!("`{name}` is also in [train]; a key is either a factor or a fixed setting: remove one of them"),
            ));
        }
        schema.check(name, Level::Bool(false)).map_err(|m| doc.error(k.span(), &key, m))?;
        let items: &[Value] = match v.get_ref() {
            DeValue::Array(a) => a,
            _ => std::slice::from_ref(v),
        };
        rules::non_empty(items.len()).map_err(|m| doc.error(v.span(), &key, m))?;
        let mut levels =
            items.iter().map(|item| open_level(doc, schema, name, &key, item)).collect::<Result<Vec<_>, _>>()?;
        if levels.iter().any(|l| l.kind() == LevelKind::Float) {
            levels = levels.into_iter().map(|l| l.clone().coerce(LevelKind::Float).unwrap_or(l)).collect();
        }
        if let Some(i) = levels.iter().position(|l| l.kind() != levels[0].kind()) {
            return Err(doc.error(
                items[i].span(),
                &key,
                format!(
                    "{} among levels of {}; one factor's levels are one kind",
                    levels[i].describe(),
                    levels[0].kind().describe()
                ),
            ));
        }
        rules::distinct(&levels).map_err(|(i, m)| doc.error(items[i].span(), &key, m))?;
        factors.push(Factor { name: name.to_owned(), levels });
    }
    if factors.is_empty() {
        return Err(doc.error(grid_t.span.clone(), "grid", "no factors; give at least one, e.g. lr = [0.01, 0.1]"));
    }
    factors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut train = Settings::new();
    for (k, v) in train_t.entries {
        let name: &str = k.get_ref();
        let key = dotted("train", &crate::quote::short_bare(name));
        schema.check(name, Level::Bool(false)).map_err(|m| doc.error(k.span(), &key, m))?;
        train.insert(name.to_owned(), open_level(doc, schema, name, &key, v)?);
    }
    Ok((factors, train))
}

/// One level as the file writes it: integer, float, boolean or string.
fn open_level(doc: &Doc, schema: &Schema, name: &str, key: &str, v: &Value) -> Result<Level, GridError> {
    let level = match v.get_ref() {
        DeValue::Integer(_) => Level::Int(int(doc, key, v)?),
        DeValue::Float(_) => Level::Float(crate::toml_doc::float(doc, key, v)?),
        DeValue::Boolean(b) => Level::Bool(*b),
        DeValue::String(s) => Level::Str(s.as_ref().to_owned()),
        other => {
            return Err(doc.error(
                v.span(),
                key,
                format!("expected an integer, a number, a boolean or a string, found {}", describe(other)),
            ))
        }
    };
    schema.check(name, level).map_err(|m| doc.error(v.span(), key, m))
}
