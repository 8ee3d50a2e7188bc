//! The sweep's design as its trials show it: which factors it has, their
//! levels in display order, and how a level is written and read on the
//! command line. Nothing here knows a factor by name; defaults come from
//! the trainer's schema.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use sweep_core::{Cell, Level, Schema, TrialResult};

/// One factor of the sweep and the levels its trials have.
#[derive(Debug, Clone)]
pub(crate) struct DesignFactor {
    pub name: String,
    /// In display order (a string factor's declared choices first, then
    /// numbers ascending, off before on).
    pub levels: Vec<Level>,
}

/// The factors of a sweep, in the schema's key order.
#[derive(Debug, Clone)]
pub(crate) struct Design {
    pub factors: Vec<DesignFactor>,
    pub schema: &'static Schema,
}

impl Design {
    pub(crate) fn of(trials: &[TrialResult]) -> Design {
        let schema = sweep_core::schema();
        let mut levels: BTreeMap<&str, BTreeSet<&Level>> = BTreeMap::new();
        for t in trials {
            for (name, level) in t.cell.iter() {
                levels.entry(name).or_default().insert(level);
            }
        }
        let mut factors: Vec<DesignFactor> = levels
            .into_iter()
            .map(|(name, set)| {
                let mut levels: Vec<Level> = set.into_iter().cloned().collect();
                levels.sort_by_key(|l| schema.level_rank(name, l));
                DesignFactor { name: name.to_owned(), levels }
            })
            .collect();
        factors.sort_by_key(|f| (schema.position(&f.name), f.name.clone()));
        Design { factors, schema }
    }

    pub(crate) fn names(&self) -> Vec<&str> {
        self.factors.iter().map(|f| f.name.as_str()).collect()
    }

    pub(crate) fn factor(&self, name: &str) -> Option<&DesignFactor> {
        self.factors.iter().find(|f| f.name == name)
    }

    pub(crate) fn varies(&self, name: &str) -> bool {
        self.factor(name).is_some_and(|f| f.levels.len() > 1)
    }

    /// A level as the effects code keys it (its plain text) back to how
    /// people read it (`on`/`off` for booleans).
    pub(crate) fn show(&self, factor: &str, level: &str) -> String {
        self.factor(factor)
            .and_then(|f| f.levels.iter().find(|l| l.to_string() == level))
            .map_or_else(|| level.to_owned(), Level::display)
    }

    /// `factor=level` pairs in display order.
    pub(crate) fn show_at(&self, at: &BTreeMap<String, String>) -> String {
        let mut parts: Vec<(usize, String)> = at
            .iter()
            .map(|(f, l)| {
                let pos = self.factors.iter().position(|x| &x.name == f).unwrap_or(usize::MAX);
                (pos, format!("{f}={}", self.show(f, l)))
            })
            .collect();
        parts.sort();
        parts.into_iter().map(|(_, s)| s).collect::<Vec<_>>().join(" ")
    }

    /// A cell as `name=level ...` in display order.
    pub(crate) fn cell_name(&self, cell: &Cell) -> String {
        self.factors
            .iter()
            .filter_map(|f| cell.get(&f.name).map(|l| format!("{}={}", f.name, l.display())))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The cell's levels in factor order, as the effects code keys them.
    pub(crate) fn level_texts(&self, cell: &Cell) -> Vec<String> {
        self.factors.iter().map(|f| cell.get(&f.name).map(Level::to_string).unwrap_or_default()).collect()
    }

    /// Reads `FACTOR=LEVEL` (`flag` names the option in errors); the level
    /// is read as the factor's kind (`on`/`off` for booleans) and returned as
    /// the effects code keys it.
    pub(crate) fn parse_assignment(&self, flag: &str, text: &str) -> anyhow::Result<(String, String)> {
        let example = self.factors.first().map_or_else(
            || "FACTOR=LEVEL".to_owned(),
            |f| format!("{}={}", f.name, f.levels.first().map(Level::display).unwrap_or_default()),
        );
        let (f, l) =
            text.split_once('=').with_context(|| format!("{flag} {text:?}: expected FACTOR=LEVEL, e.g. {example}"))?;
        let factor = self.known(flag, text, f.trim())?;
        let kind = factor.levels.first().map_or(sweep_core::LevelKind::Str, Level::kind);
        let level = Level::parse_as(l, kind).map_err(|m| anyhow::anyhow!("{flag} {text:?}: {m}"))?;
        Ok((factor.name.clone(), level.to_string()))
    }

    /// The factor `name`, or an error listing the sweep's factors.
    pub(crate) fn known(&self, flag: &str, text: &str, name: &str) -> anyhow::Result<&DesignFactor> {
        self.factor(name)
            .with_context(|| format!("{flag} {text:?}: unknown factor {name:?} (factors: {})", self.names().join(", ")))
    }

    /// The focus factors: those named by `--baseline`, else the schema's
    /// default when the sweep varies it, else the first that varies.
    pub(crate) fn focus(&self, baselines: &BTreeMap<String, String>) -> Vec<String> {
        if !baselines.is_empty() {
            return baselines.keys().cloned().collect();
        }
        if self.varies(self.schema.default_focus) {
            return vec![self.schema.default_focus.to_owned()];
        }
        self.factors.iter().find(|f| f.levels.len() > 1).map(|f| vec![f.name.clone()]).unwrap_or_default()
    }

    /// The picture's x factor: `--x`, else the schema's default when the
    /// sweep varies it, else the first numeric factor that varies.
    pub(crate) fn x_factor(&self, x: Option<&str>) -> anyhow::Result<Option<&DesignFactor>> {
        if let Some(name) = x {
            let f = self.known("--x", name, name)?;
            if f.levels.iter().any(|l| l.as_f64().is_none()) {
                anyhow::bail!("--x {name:?}: the x axis needs an ordered (numeric) factor; {name} has levels {}", {
                    f.levels.iter().map(Level::display).collect::<Vec<_>>().join(", ")
                });
            }
            return Ok(Some(f));
        }
        if self.varies(self.schema.default_x) {
            return Ok(self.factor(self.schema.default_x));
        }
        Ok(self.factors.iter().find(|f| f.levels.len() > 1 && f.levels.iter().all(|l| l.as_f64().is_some())))
    }
}

/// Sort key of a cell row: each factor's level in display order, except
/// that booleans list `on` first (the treatment before its ablation).
pub(super) fn row_order(design: &Design, cell: &Cell) -> Vec<Level> {
    design
        .factors
        .iter()
        .map(|f| match cell.get(&f.name) {
            Some(Level::Bool(b)) => Level::Bool(!b),
            Some(l) => l.clone(),
            None => Level::Str(String::new()),
        })
        .collect()
}
