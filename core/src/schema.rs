//! [`Schema`]: the keys a trainer understands, with their kinds, defaults,
//! labels and rules. The grid parser, the wire conversion and the worker
//! all check levels through it, so each rule has one home (the trainer's
//! schema module, e.g. [`crate::bmenet`]).

use crate::level::{Level, LevelKind};

/// Where a key may be written in `grid.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Only in `[grid]`, always (an architecture factor such as `depth`):
    /// one level holds it fixed.
    Factor,
    /// In `[train]` as a fixed setting (with a default), or in `[grid]` as
    /// a factor, never both.
    Setting,
    /// Only in `[analysis]`, with a default: work done on a trial's trained
    /// weights (e.g. a lesion study), never a factor. Stored with the fixed
    /// settings.
    Analysis,
}

/// Whether a setting at its default is part of a trial's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// Always in a trial's settings, default or not (every key that
    /// existed when trial IDs were first published).
    Always,
    /// Left out of a trial's settings while at its default, so adding the
    /// key to the schema keeps the ID of every trial made before it existed
    /// (a grid that does not name it gets the same trials, resumed, not
    /// re-run). Given any other value, it is in the settings like any key.
    OmittedAtDefault,
}

/// A default value, written as a constant.
#[derive(Debug, Clone, Copy)]
pub enum DefaultLevel {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(&'static str),
}

impl DefaultLevel {
    pub fn level(self) -> Level {
        match self {
            DefaultLevel::Int(i) => Level::Int(i),
            DefaultLevel::Float(x) => Level::Float(x),
            DefaultLevel::Bool(b) => Level::Bool(b),
            DefaultLevel::Str(s) => Level::Str(s.to_owned()),
        }
    }
}

/// One key a trainer understands.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub place: Place,
    pub kind: LevelKind,
    /// Short name in labels (`bn` for `batchnorm`).
    pub label: &'static str,
    /// For string keys with a fixed set of values: those values in display
    /// order (the first is a factor's default baseline).
    pub choices: &'static [&'static str],
    /// The value of a [`Place::Setting`] key left out of `[train]`.
    pub default: Option<DefaultLevel>,
    /// Whether the key is in a trial's settings at its default.
    pub identity: Identity,
    /// A boolean key this one only means something with (`landscape` for
    /// `landscape_resolution`): given without it on, it is an error, not
    /// silently ignored.
    pub requires: Option<&'static str>,
    /// Shown when the key is missing, e.g. `depth = [8, 16, 32, 64]`.
    pub example: &'static str,
    /// The key's rule, given a level of the right kind.
    pub rule: fn(&Level) -> Result<(), String>,
}

impl Key {
    /// This key, meaningful only with the boolean key `name` on.
    pub const fn requiring(self, name: &'static str) -> Key {
        Key { requires: Some(name), ..self }
    }
}

/// The keys of one trainer, in display order.
#[derive(Debug)]
pub struct Schema {
    /// The trainer's name, e.g. `bmenet`.
    pub trainer: &'static str,
    pub keys: &'static [Key],
    /// The report's focus factor when present and no `--baseline` names one.
    pub default_focus: &'static str,
    /// The picture's x axis when present and no `--x` names one.
    pub default_x: &'static str,
    /// The setting that counts epochs (progress shows `epoch E/N`).
    pub epochs_key: &'static str,
    /// Any name may be a factor or setting, with any kind of level
    /// (`keys` is empty): the exec trainer's schema ([`crate::exec`]).
    /// Its names and levels follow [`crate::exec::key_name`] and
    /// [`crate::exec::level`].
    pub open: bool,
}

impl Schema {
    /// A trial's epoch count (0 when its trainer has none).
    pub fn epochs_of(&self, spec: &crate::TrialSpec) -> u32 {
        spec.level(self.epochs_key).and_then(Level::as_int).map_or(0, |n| n.clamp(0, u32::MAX.into()) as u32)
    }

    pub fn key(&self, name: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.name == name)
    }

    /// The default of setting `name` (`None` for a factor-only or unknown
    /// key).
    pub fn default_of(&self, name: &str) -> Option<Level> {
        self.key(name).and_then(|k| k.default).map(DefaultLevel::level)
    }

    /// Whether setting `name` at `level` stays out of a trial's settings
    /// (an [`Identity::OmittedAtDefault`] key at its default).
    pub fn omitted(&self, name: &str, level: &Level) -> bool {
        self.key(name)
            .is_some_and(|k| k.identity == Identity::OmittedAtDefault && k.default.is_some_and(|d| d.level() == *level))
    }

    /// The error of a fixed setting given without the key it requires
    /// (`settings` as a trial stores them): `(key, message)`.
    pub fn unmet_requirement(&self, settings: &crate::Settings) -> Option<(&'static str, String)> {
        self.keys.iter().filter(|k| settings.contains_key(k.name)).find_map(|k| {
            let needed = k.requires?;
            let on = settings.get(needed).and_then(Level::as_bool).unwrap_or(false);
            (!on).then(|| (k.name, format!("has no effect without `{needed} = true`; add it, or remove this key")))
        })
    }

    /// The order factors are kept in (expansion and display): the
    /// schema's key order, or by name for an open schema.
    pub fn order<'a>(&self, name: &'a str) -> (usize, &'a str) {
        if self.open {
            (0, name)
        } else {
            (self.position(name), "")
        }
    }

    /// Whether `name` may be a fixed setting (`[train]` or `[analysis]`).
    pub fn is_setting(&self, name: &str) -> bool {
        self.open || self.key(name).is_some_and(|k| matches!(k.place, Place::Setting | Place::Analysis))
    }

    /// Whether `name` may be a factor.
    pub fn is_factor(&self, name: &str) -> bool {
        if self.open {
            crate::exec::key_name(name).is_ok()
        } else {
            self.key(name).is_some_and(|k| k.place != Place::Analysis)
        }
    }

    /// Display position of a key (unknown names sort last).
    pub fn position(&self, name: &str) -> usize {
        self.keys.iter().position(|k| k.name == name).unwrap_or(usize::MAX)
    }

    /// The key's short label, or the name itself.
    pub fn label<'a>(&self, name: &'a str) -> &'a str {
        match self.key(name) {
            Some(k) => k.label,
            None => name,
        }
    }

    /// Names of the keys written at `place`.
    pub fn names(&self, place: Place) -> Vec<&'static str> {
        self.keys.iter().filter(|k| k.place == place).map(|k| k.name).collect()
    }

    /// Every key that may be a factor (all but the analyses), for
    /// "expected one of".
    pub fn factor_names(&self) -> Vec<&'static str> {
        self.keys.iter().filter(|k| k.place != Place::Analysis).map(|k| k.name).collect()
    }

    /// The table a fixed setting is written in: `train` or `analysis`.
    pub fn table_of(&self, name: &str) -> &'static str {
        match self.key(name).map(|k| k.place) {
            Some(Place::Analysis) => "analysis",
            _ => "train",
        }
    }

    /// Checks `level` for the key `name`: known key, right kind (an integer
    /// is accepted for a float), the key's rule. Returns the level as the
    /// key's kind. The message is what follows the key in an error.
    pub fn check(&self, name: &str, level: Level) -> Result<Level, String> {
        if self.open {
            crate::exec::key_name(name)?;
            crate::exec::level(&level)?;
            return Ok(level);
        }
        let key = self.key(name).ok_or_else(|| {
            format!(
                "unknown factor {}; {} understands: {}",
                crate::quote::short(name),
                self.trainer,
                self.factor_names().join(", ")
            )
        })?;
        // A non-finite float gets the key's own words when its rule refuses
        // it (`train.lr: must be a positive finite number, got inf`), as a
        // grid file's `lr = inf` does; `coerce` refuses it in any case.
        if key.kind == LevelKind::Float && matches!(level, Level::Float(x) if !x.is_finite()) {
            (key.rule)(&level)?;
        }
        let level = level.coerce(key.kind)?;
        (key.rule)(&level)?;
        Ok(level)
    }

    /// A sort key for levels of factor `name` in display order: a string
    /// key's declared choices first (in their order), otherwise the levels'
    /// own order (numbers ascending, off before on).
    pub fn level_rank(&self, name: &str, level: &Level) -> (usize, Level) {
        let declared = self.key(name).and_then(|k| match level {
            Level::Str(s) => k.choices.iter().position(|c| c == s),
            _ => None,
        });
        (declared.unwrap_or(usize::MAX), level.clone())
    }
}
