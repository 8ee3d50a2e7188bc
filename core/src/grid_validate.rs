//! Validation of specs built without a file (received over gRPC, or a
//! trial handed to a worker) against the same rules the parser applies:
//! the grid's own rules (`grid_rules`) and the trainer's schema.

use crate::grid::*;
use crate::grid_parse::cell_count;
use crate::grid_rules as rules;
use crate::level::Level;
use crate::quote::{short, short_bare};
use crate::schema::{Place, Schema};

pub(crate) fn bad(key: &str) -> impl Fn(String) -> GridError + '_ {
    move |message| GridError::Spec { key: key.to_owned(), message }
}

pub(crate) fn bad_at(key: &str) -> impl Fn((usize, String)) -> GridError + '_ {
    move |(_, message)| GridError::Spec { key: key.to_owned(), message }
}

/// TOML cannot write integers above `i64::MAX`, so neither may the wire.
pub(crate) fn as_i64(key: &str, n: u64) -> Result<i64, GridError> {
    i64::try_from(n).map_err(|_| bad(key)(format!("{n} is larger than {}", i64::MAX)))
}

/// Checks a spec built without a file (e.g. received over gRPC) against the
/// same rules the parser applies.
pub(crate) fn validate_spec(spec: &GridSpec) -> Result<(), GridError> {
    let schema = spec.schema();
    rules::name(&spec.name).map_err(bad("name"))?;
    rules::seed_count(as_i64("seeds", spec.seeds.len() as u64)?).map_err(bad("seeds"))?;
    for &s in &spec.seeds {
        rules::seed(as_i64("seeds", s)?).map_err(bad("seeds"))?;
    }
    rules::distinct(&spec.seeds).map_err(bad_at("seeds"))?;

    let mut last = None;
    for f in &spec.factors {
        let key = format!("grid.{}", short_bare(&f.name));
        if schema.key(&f.name).is_some_and(|k| k.place == Place::Analysis) {
            return Err(bad(&key)("is an analysis, not a factor; set it in [analysis]".into()));
        }
        if !schema.is_factor(&f.name) {
            return Err(bad(&key)(unknown_factor(schema, &f.name)));
        }
        let order = schema.order(&f.name);
        if last.is_some_and(|p| p >= order) {
            return Err(bad(&key)("is out of order or given twice; factors follow the schema's key order".into()));
        }
        last = Some(order);
        rules::non_empty(f.levels.len()).map_err(bad(&key))?;
        for l in &f.levels {
            check_exact(schema, &f.name, l).map_err(bad(&key))?;
            if l.kind() != f.levels[0].kind() {
                return Err(bad(&key)(format!("{} among levels of another kind", l.describe())));
            }
        }
        rules::distinct(&f.levels).map_err(bad_at(&key))?;
    }
    if schema.open && spec.factors.is_empty() {
        return Err(bad("grid")("no factors; an exec grid needs at least one".into()));
    }
    for name in schema.names(Place::Factor) {
        if spec.factor(name).is_none() {
            return Err(bad(&format!("grid.{name}"))("missing; this factor is required".into()));
        }
    }
    check_settings(schema, &spec.train, |name| spec.factor(name).is_some())?;
    validate_trainer(&spec.trainer, |n| spec.factor(n).is_some() || spec.train.contains_key(n))?;
    validate_data(schema, &spec.data)?;

    rules::positive(spec.run.max_attempts.into()).map_err(bad("run.max_attempts"))?;
    let cells = cell_count(&spec.factors);
    rules::trial_count(cells, spec.seeds.len() as u64).map_err(bad("grid"))?;
    if let Some(plan) = &spec.run.adaptive {
        validate_plan(plan)?;
        rules::max_seeds(plan.max_seeds.into(), spec.seeds.len(), cells).map_err(bad("run.max_seeds"))?;
        rules::contrast(&plan.contrast, &spec.factors).map_err(bad("run.contrast"))?;
    }
    Ok(())
}

/// A seed plan's rules that need no grid.
pub(crate) fn validate_plan(plan: &crate::adaptive::SeedPlan) -> Result<(), GridError> {
    rules::target_halfwidth(plan.target_halfwidth).map_err(bad("run.target_halfwidth"))?;
    rules::max_seeds(plan.max_seeds.into(), 0, 1).map_err(bad("run.max_seeds"))?;
    if plan.contrast.is_empty() {
        return Err(bad("run.contrast")("must name a factor".into()));
    }
    Ok(())
}

/// Checks one trial's spec (e.g. an assignment received by a worker): every
/// schema key exactly once, as a cell level or a fixed setting, each valid;
/// the seed; the data settings. Keys are `depth` for factor-only keys and
/// `train.lr` for settings, wherever they are given.
pub(crate) fn validate_trial(t: &crate::TrialSpec) -> Result<(), GridError> {
    let schema = t.schema();
    let key_of = |name: &str| match schema.key(name).map(|k| k.place) {
        Some(Place::Setting | Place::Analysis) => format!("{}.{}", schema.table_of(name), short_bare(name)),
        _ => short_bare(name),
    };
    for (name, l) in t.cell.iter() {
        if schema.key(name).is_some_and(|k| k.place == Place::Analysis) {
            return Err(bad(&key_of(name))("is an analysis, not a factor".into()));
        }
        if !schema.is_factor(name) {
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
    validate_trainer(&t.trainer, |n| t.level(n).is_some())?;
    rules::seed(as_i64("seed", t.seed)?).map_err(bad("seed"))?;
    validate_data(schema, &t.data)
}

/// An exec trainer's rules, its placeholders against `known` names.
fn validate_trainer(trainer: &crate::TrainerSpec, known: impl Fn(&str) -> bool) -> Result<(), GridError> {
    match trainer {
        crate::TrainerSpec::Bmenet => Ok(()),
        crate::TrainerSpec::Exec(e) => e.validate(known).map_err(|(key, m)| bad(key)(m)),
    }
}

/// Fixed settings: each a known `[train]` or `[analysis]` key, not also a
/// factor, valid, and not a default the schema omits; and every such key
/// that is not a factor present, unless the schema omits it at its default.
fn check_settings(schema: &Schema, train: &Settings, is_factor: impl Fn(&str) -> bool) -> Result<(), GridError> {
    for (name, l) in train {
        let key = format!("{}.{}", schema.table_of(name), short_bare(name));
        if !schema.is_setting(name) {
            let mut known = schema.names(Place::Setting);
            known.extend(schema.names(Place::Analysis));
            return Err(bad(&key)(format!("unknown setting; expected one of: {}", known.join(", "))));
        }
        if is_factor(name) {
            return Err(bad(&key)("is both a factor and a fixed setting; a key is either one or the other".into()));
        }
        check_exact(schema, name, l).map_err(bad(&key))?;
        if schema.omitted(name, l) {
            let shown = match l {
                Level::Str(s) => short(s),
                other => other.to_string(),
            };
            return Err(bad(&key)(format!(
                "{shown} is the default, which a trial's settings leave out (so the IDs of trials made before \
                 `{name}` existed stay the same); leave it out"
            )));
        }
    }
    if let Some((name, message)) = schema.unmet_requirement(train) {
        return Err(bad(&format!("{}.{name}", schema.table_of(name)))(message));
    }
    for name in schema.names(Place::Setting).into_iter().chain(schema.names(Place::Analysis)) {
        let omitted_default = schema.default_of(name).is_some_and(|d| schema.omitted(name, &d));
        if !is_factor(name) && !train.contains_key(name) && !omitted_default {
            let key = format!("{}.{name}", schema.table_of(name));
            return Err(bad(&key)("missing; give it as a setting or a factor".into()));
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
    if schema.open {
        return crate::exec::key_name(name).err().unwrap_or_else(|| format!("{} is not a factor", short(name)));
    }
    format!("unknown factor {}; {} understands: {}", short(name), schema.trainer, schema.factor_names().join(", "))
}

fn validate_data(schema: &Schema, d: &DataConfig) -> Result<(), GridError> {
    rules::dataset(&d.dataset).map_err(bad("data.dataset"))?;
    if d.is_none() {
        if !schema.open {
            return Err(bad("data.dataset")(format!("the {} trainer needs a dataset", schema.trainer)));
        }
        if *d != DataConfig::none() {
            return Err(bad("data.path")("has no meaning with `dataset = \"none\"`".into()));
        }
        return Ok(());
    }
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
