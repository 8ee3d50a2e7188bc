//! The BMEnet trainer's grid schema: its architecture factors (`depth`,
//! `skip`, `init`, `batchnorm`), its training settings (each may be a
//! factor), its analyses of the trained weights (`[analysis]`), their kinds,
//! defaults and rules; and [`BmenetTrial`], a trial's typed configuration,
//! made by [`resolve`].
//!
//! This module and the trainer in `sweep-worker` are the only places that
//! know these names: everything else reads a grid through [`SCHEMA`].

use serde::{Deserialize, Serialize};

use crate::grid::{DataConfig, GridError};
use crate::level::{Level, LevelKind};
use crate::schema::{DefaultLevel, Identity, Key, Place, Schema};
use crate::trial::TrialSpec;

/// The deepest network a grid may ask for (`grid.depth`). Far beyond what
/// the ablations need (64), and small enough that one trial cannot build a
/// model that exhausts a worker.
pub const MAX_DEPTH: u32 = 1024;

/// The `variance/*` metrics' step is `epoch * VARIANCE_STEPS + layer`
/// (layers numbered from 1, input to output; epoch 0 is the
/// initialisation): more steps than any network has layers (depth 1,024
/// has about 2,000). The trainer writes it, the report reads it.
pub const VARIANCE_STEPS: i64 = 10_000;

/// The analyses' metric names (all [`crate::analysis_metric::PREFIX`]ed),
/// written by the trainer and read by the report.
pub mod analysis_metrics {
    /// Accuracy with one block removed, at step = its position (from 1).
    pub const LESION_BLOCK: &str = "analysis/lesion/block";
    /// Mean accuracy with k blocks removed, at step = k (0: intact).
    pub const LESION_REMOVED: &str = "analysis/lesion/removed";
    pub const LESION_SECONDS: &str = "analysis/lesion/seconds";
    /// At step = `epoch * VARIANCE_STEPS + layer`.
    pub const VARIANCE_FORWARD: &str = "analysis/variance/forward";
    pub const VARIANCE_FORWARD_PREDICTED: &str = "analysis/variance/forward_predicted";
    pub const VARIANCE_BACKWARD: &str = "analysis/variance/backward";
    pub const VARIANCE_BACKWARD_PREDICTED: &str = "analysis/variance/backward_predicted";
    /// At step = grid point (row-major).
    pub const LANDSCAPE_LOSS: &str = "analysis/landscape/loss";
    pub const LANDSCAPE_ACCURACY: &str = "analysis/landscape/accuracy";
    pub const LANDSCAPE_SHARPNESS: &str = "analysis/landscape/sharpness";
    pub const LANDSCAPE_SECONDS: &str = "analysis/landscape/seconds";
}

/// Weight-initialisation schemes (factor `init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// libtorch's own defaults.
    Default,
    XavierUniform,
    XavierNormal,
    /// Fan-in, ReLU gain.
    KaimingUniform,
    /// Fan-in, ReLU gain.
    KaimingNormal,
}

impl InitScheme {
    pub const ALL: [InitScheme; 5] = [
        InitScheme::Default,
        InitScheme::XavierUniform,
        InitScheme::XavierNormal,
        InitScheme::KaimingUniform,
        InitScheme::KaimingNormal,
    ];
    const NAMES: [&'static str; 5] =
        ["default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl std::fmt::Display for InitScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for InitScheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InitScheme::ALL.into_iter().find(|i| i.as_str() == s).ok_or_else(|| {
            format!("unknown init scheme {}; expected one of {}", crate::quote::short(s), Self::NAMES.join(", "))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    Sgd,
    Adam,
}

impl Optimizer {
    pub fn as_str(self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Adam => "adam",
        }
    }
}

impl std::str::FromStr for Optimizer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sgd" => Ok(Optimizer::Sgd),
            "adam" => Ok(Optimizer::Adam),
            _ => Err(format!("unknown optimizer {}; expected \"sgd\" or \"adam\"", crate::quote::short(s))),
        }
    }
}

/// The number format of the forward and backward passes (`precision`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// 32-bit floats throughout.
    #[default]
    Fp32,
    /// Convolutions and linear layers in bfloat16 (as PyTorch's autocast
    /// runs them); weights, optimiser state, batch-norm statistics and the
    /// loss stay 32-bit.
    Bf16,
}

impl Precision {
    const NAMES: [&'static str; 2] = ["fp32", "bf16"];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("unknown precision {}; expected \"fp32\" or \"bf16\"", crate::quote::short(s))),
        }
    }
}

/// How one trial trains: every `[train]` key, from the fixed settings and
/// the trial's factor levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: u32,
    pub batch_size: u32,
    pub optimizer: Optimizer,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Batches between logged mean training losses.
    pub log_every: u32,
    pub augment: bool,
    /// Absent from settings stored before the key existed: 32-bit.
    #[serde(default)]
    pub precision: Precision,
}

/// The lecture demo's settings (6 epochs, batch size 4, SGD with lr 1e-4
/// and momentum 0.9, no weight decay, a logged loss every 2000 batches, no
/// augmentation, 32-bit floats): the defaults of [`SCHEMA`]'s settings.
impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 6,
            batch_size: 4,
            optimizer: Optimizer::Sgd,
            lr: 1e-4,
            momentum: 0.9,
            weight_decay: 0.0,
            log_every: 2000,
            augment: false,
            precision: Precision::Fp32,
        }
    }
}

impl TrainConfig {
    /// The settings as levels, keyed by `[train]` key, as a trial carries
    /// them (a key that [`SCHEMA`] omits at its default is left out there).
    pub fn levels(&self) -> crate::Settings {
        [
            ("epochs", Level::Int(self.epochs.into())),
            ("batch_size", Level::Int(self.batch_size.into())),
            ("optimizer", Level::Str(self.optimizer.as_str().into())),
            ("lr", Level::Float(self.lr)),
            ("momentum", Level::Float(self.momentum)),
            ("weight_decay", Level::Float(self.weight_decay)),
            ("log_every", Level::Int(self.log_every.into())),
            ("augment", Level::Bool(self.augment)),
            ("precision", Level::Str(self.precision.as_str().into())),
        ]
        .into_iter()
        .filter(|(k, v)| !SCHEMA.omitted(k, v))
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// What the trainer measures on a trial's trained weights (`[analysis]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analyses {
    /// Veit et al.'s lesion study: test accuracy with SkipBlocks replaced
    /// by the identity, one at a time and several at once.
    pub lesion: bool,
    /// Glorot & Bengio's variance propagation: per layer, the measured
    /// variance of activations and back-propagated gradients next to the
    /// lecture's equations, at initialisation and after each epoch.
    pub variance: bool,
    /// Li et al.'s loss landscape around the trained weights.
    pub landscape: Option<LandscapeConfig>,
}

/// The loss-landscape grid (`[analysis] landscape = true` and its
/// `landscape_*` keys).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LandscapeConfig {
    /// Points along each direction (odd, so the trained weights are one).
    pub resolution: u32,
    /// The grid spans `-span..=span` along each direction (in units of the
    /// filter-normalised direction).
    pub span: f64,
    /// Training images the loss is evaluated on (the first ones).
    pub images: u32,
    /// 1 (a curve) or 2 (a surface).
    pub dims: u32,
}

impl LandscapeConfig {
    /// The defaults (Li et al.'s figures use 51 points over [-1, 1]; 21
    /// keeps a 2-D surface at 441 evaluations).
    pub const DEFAULT: LandscapeConfig = LandscapeConfig { resolution: 21, span: 1.0, images: 2560, dims: 2 };

    /// The landscape a trial's fixed settings ask for (its `[analysis]`
    /// keys, defaults filled in): `None` when `landscape` is off or a key
    /// is not of its kind (validated settings always are).
    pub fn of(settings: &crate::Settings) -> Option<LandscapeConfig> {
        let get = |n: &str| settings.get(n).cloned().or_else(|| SCHEMA.default_of(n));
        if !get("landscape")?.as_bool()? {
            return None;
        }
        let int = |n: &str| get(n)?.as_int().and_then(|i| u32::try_from(i).ok());
        Some(LandscapeConfig {
            resolution: int("landscape_resolution")?,
            span: get("landscape_span")?.as_f64()?,
            images: int("landscape_images")?,
            dims: int("landscape_dims")?,
        })
    }

    /// Grid points in all.
    pub fn points(&self) -> u64 {
        u64::from(self.resolution).pow(self.dims)
    }

    /// The coordinate of grid index `i` along a direction.
    pub fn coordinate(&self, i: u32) -> f64 {
        let r = f64::from(self.resolution - 1).max(1.0);
        -self.span + 2.0 * self.span * f64::from(i) / r
    }
}

impl Analyses {
    /// The analyses as levels, as a trial carries them (those off are left
    /// out: [`SCHEMA`] omits every analysis at its default).
    pub fn levels(&self) -> crate::Settings {
        let l = self.landscape.unwrap_or(LandscapeConfig::DEFAULT);
        [
            ("lesion", Level::Bool(self.lesion)),
            ("variance", Level::Bool(self.variance)),
            ("landscape", Level::Bool(self.landscape.is_some())),
            ("landscape_resolution", Level::Int(l.resolution.into())),
            ("landscape_span", Level::Float(l.span)),
            ("landscape_images", Level::Int(l.images.into())),
            ("landscape_dims", Level::Int(l.dims.into())),
        ]
        .into_iter()
        .filter(|(k, v)| !SCHEMA.omitted(k, v))
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// One trial, typed: what the BMEnet trainer builds and trains.
#[derive(Debug, Clone, PartialEq)]
pub struct BmenetTrial {
    pub depth: u32,
    pub skip: bool,
    pub init: InitScheme,
    pub batchnorm: bool,
    pub seed: u64,
    pub train: TrainConfig,
    pub analyses: Analyses,
    pub data: DataConfig,
}

impl BmenetTrial {
    /// The generic spec of this trial, every architecture key in the cell
    /// and every `[train]` key a fixed setting: the inverse of [`resolve`]
    /// (for callers that start from a typed trial, e.g. benchmarks and
    /// tests of the trainer).
    pub fn spec(&self) -> TrialSpec {
        let cell = [
            ("depth", Level::Int(self.depth.into())),
            ("skip", Level::Bool(self.skip)),
            ("init", Level::Str(self.init.as_str().into())),
            ("batchnorm", Level::Bool(self.batchnorm)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut settings = self.train.levels();
        settings.extend(self.analyses.levels());
        TrialSpec {
            cell,
            train: settings,
            data: self.data.clone(),
            seed: self.seed,
            trainer: crate::TrainerSpec::Bmenet,
        }
    }
}

/// Checks a trial against [`SCHEMA`] and types it.
pub fn resolve(spec: &TrialSpec) -> Result<BmenetTrial, GridError> {
    if !spec.trainer.is_bmenet() {
        return Err(GridError::Spec {
            key: "trainer.kind".into(),
            message: format!("this trial is for the {} trainer, not BMEnet", spec.trainer.kind()),
        });
    }
    spec.validate()?;
    // Validated: every key has a level, or is a setting at its default.
    let get = |name: &str| {
        spec.level(name).cloned().or_else(|| SCHEMA.default_of(name)).expect("validated: every key has a level")
    };
    let int = |name: &str| get(name).as_int().expect("validated: an integer") as u32;
    let float = |name: &str| get(name).as_f64().expect("validated: a number");
    let flag = |name: &str| get(name).as_bool().expect("validated: a boolean");
    let text = |name: &str| get(name).as_str().expect("validated: a string").to_owned();
    let bad = |key: &str, message: String| GridError::Spec { key: key.into(), message };
    Ok(BmenetTrial {
        depth: int("depth"),
        skip: flag("skip"),
        init: text("init").parse().map_err(|m| bad("init", m))?,
        batchnorm: flag("batchnorm"),
        seed: spec.seed,
        train: TrainConfig {
            epochs: int("epochs"),
            batch_size: int("batch_size"),
            optimizer: text("optimizer").parse().map_err(|m| bad("train.optimizer", m))?,
            lr: float("lr"),
            momentum: float("momentum"),
            weight_decay: float("weight_decay"),
            log_every: int("log_every"),
            augment: flag("augment"),
            precision: text("precision").parse().map_err(|m| bad("train.precision", m))?,
        },
        analyses: Analyses {
            lesion: flag("lesion"),
            variance: flag("variance"),
            landscape: LandscapeConfig::of(&spec.train),
        },
        data: spec.data.clone(),
    })
}

/// The rules of BMEnet's keys (one copy; [`SCHEMA`] points at them).
pub mod rules {
    use super::*;

    pub fn depth(l: &Level) -> Result<(), String> {
        let depth = l.as_int().unwrap_or(0);
        if depth <= 0 || depth % 8 != 0 {
            return Err(format!("{depth} is not a positive multiple of 8 (e.g. 8, 16, 32, 64)"));
        }
        if depth > i64::from(MAX_DEPTH) {
            return Err(format!("{depth} is deeper than the limit of {MAX_DEPTH} layers"));
        }
        Ok(())
    }

    /// Counts that must be at least 1 and fit in 32 bits (epochs, ...).
    pub fn positive_u32(l: &Level) -> Result<(), String> {
        let n = l.as_int().unwrap_or(0);
        crate::grid_rules::positive(n)?;
        if n > i64::from(u32::MAX) {
            return Err(format!("{n} is too large; the limit is {}", u32::MAX));
        }
        Ok(())
    }

    pub fn lr(l: &Level) -> Result<(), String> {
        let lr = l.as_f64().unwrap_or(f64::NAN);
        if !(lr.is_finite() && lr > 0.0) {
            return Err(format!("must be a positive finite number, got {lr}"));
        }
        Ok(())
    }

    pub fn momentum(l: &Level) -> Result<(), String> {
        let m = l.as_f64().unwrap_or(f64::NAN);
        if !(m.is_finite() && (0.0..1.0).contains(&m)) {
            return Err(format!("must be at least 0 and less than 1, got {m}"));
        }
        Ok(())
    }

    pub fn weight_decay(l: &Level) -> Result<(), String> {
        let wd = l.as_f64().unwrap_or(f64::NAN);
        if !(wd.is_finite() && wd >= 0.0) {
            return Err(format!("must be a finite number >= 0, got {wd}"));
        }
        Ok(())
    }

    pub fn init(l: &Level) -> Result<(), String> {
        l.as_str().unwrap_or_default().parse::<InitScheme>().map(|_| ())
    }

    pub fn optimizer(l: &Level) -> Result<(), String> {
        l.as_str().unwrap_or_default().parse::<Optimizer>().map(|_| ())
    }

    pub fn precision(l: &Level) -> Result<(), String> {
        l.as_str().unwrap_or_default().parse::<Precision>().map(|_| ())
    }

    pub fn landscape_resolution(l: &Level) -> Result<(), String> {
        let n = l.as_int().unwrap_or(0);
        if !(3..=101).contains(&n) || n % 2 == 0 {
            return Err(format!("must be odd and 3 to 101 (the trained weights are the middle point), got {n}"));
        }
        Ok(())
    }

    pub fn landscape_span(l: &Level) -> Result<(), String> {
        let s = l.as_f64().unwrap_or(f64::NAN);
        if !(s.is_finite() && s > 0.0 && s <= 100.0) {
            return Err(format!("must be a number above 0 and at most 100, got {s}"));
        }
        Ok(())
    }

    pub fn landscape_images(l: &Level) -> Result<(), String> {
        let n = l.as_int().unwrap_or(0);
        if !(1..=1_000_000).contains(&n) {
            return Err(format!("must be 1 to 1000000, got {n}"));
        }
        Ok(())
    }

    pub fn landscape_dims(l: &Level) -> Result<(), String> {
        match l.as_int() {
            Some(1 | 2) => Ok(()),
            other => Err(format!("must be 1 (a curve) or 2 (a surface), got {}", other.unwrap_or(0))),
        }
    }

    pub fn any(_: &Level) -> Result<(), String> {
        Ok(())
    }
}

const fn key(
    name: &'static str,
    place: Place,
    kind: LevelKind,
    default: Option<DefaultLevel>,
    example: &'static str,
    rule: fn(&Level) -> Result<(), String>,
) -> Key {
    Key {
        name,
        place,
        kind,
        label: name,
        choices: &[],
        default,
        identity: Identity::Always,
        requires: None,
        example,
        rule,
    }
}

/// An `[analysis]` key: never a factor, left out of a trial at its default.
const fn analysis(
    name: &'static str,
    kind: LevelKind,
    default: DefaultLevel,
    example: &'static str,
    rule: fn(&Level) -> Result<(), String>,
) -> Key {
    Key { identity: Identity::OmittedAtDefault, ..key(name, Place::Analysis, kind, Some(default), example, rule) }
}

/// BMEnet's keys in display order: the four architecture factors, then the
/// `[train]` settings.
pub static SCHEMA: Schema = Schema {
    trainer: "bmenet",
    keys: &[
        key("depth", Place::Factor, LevelKind::Int, None, "depth = [8, 16, 32, 64]", rules::depth),
        key("skip", Place::Factor, LevelKind::Bool, None, "skip = [true, false]", rules::any),
        Key {
            choices: &InitScheme::NAMES,
            ..key("init", Place::Factor, LevelKind::Str, None, "init = [\"default\", \"kaiming_normal\"]", rules::init)
        },
        Key {
            label: "bn",
            ..key("batchnorm", Place::Factor, LevelKind::Bool, None, "batchnorm = [true, false]", rules::any)
        },
        key("epochs", Place::Setting, LevelKind::Int, Some(DefaultLevel::Int(6)), "epochs = 6", rules::positive_u32),
        key(
            "batch_size",
            Place::Setting,
            LevelKind::Int,
            Some(DefaultLevel::Int(4)),
            "batch_size = 4",
            rules::positive_u32,
        ),
        Key {
            choices: &["sgd", "adam"],
            ..key(
                "optimizer",
                Place::Setting,
                LevelKind::Str,
                Some(DefaultLevel::Str("sgd")),
                "optimizer = \"sgd\"",
                rules::optimizer,
            )
        },
        key("lr", Place::Setting, LevelKind::Float, Some(DefaultLevel::Float(1e-4)), "lr = 1e-4", rules::lr),
        key(
            "momentum",
            Place::Setting,
            LevelKind::Float,
            Some(DefaultLevel::Float(0.9)),
            "momentum = 0.9",
            rules::momentum,
        ),
        key(
            "weight_decay",
            Place::Setting,
            LevelKind::Float,
            Some(DefaultLevel::Float(0.0)),
            "weight_decay = 0",
            rules::weight_decay,
        ),
        key(
            "log_every",
            Place::Setting,
            LevelKind::Int,
            Some(DefaultLevel::Int(2000)),
            "log_every = 2000",
            rules::positive_u32,
        ),
        key("augment", Place::Setting, LevelKind::Bool, Some(DefaultLevel::Bool(false)), "augment = false", rules::any),
        // Added after trial IDs were published: at "fp32" a trial leaves it
        // out, so grids from before it keep their trials.
        Key {
            choices: &Precision::NAMES,
            identity: Identity::OmittedAtDefault,
            ..key(
                "precision",
                Place::Setting,
                LevelKind::Str,
                Some(DefaultLevel::Str("fp32")),
                "precision = \"bf16\"",
                rules::precision,
            )
        },
        analysis("lesion", LevelKind::Bool, DefaultLevel::Bool(false), "lesion = true", rules::any),
        analysis("variance", LevelKind::Bool, DefaultLevel::Bool(false), "variance = true", rules::any),
        analysis("landscape", LevelKind::Bool, DefaultLevel::Bool(false), "landscape = true", rules::any),
        analysis(
            "landscape_resolution",
            LevelKind::Int,
            DefaultLevel::Int(21),
            "landscape_resolution = 21",
            rules::landscape_resolution,
        )
        .requiring("landscape"),
        analysis(
            "landscape_span",
            LevelKind::Float,
            DefaultLevel::Float(1.0),
            "landscape_span = 1.0",
            rules::landscape_span,
        )
        .requiring("landscape"),
        analysis(
            "landscape_images",
            LevelKind::Int,
            DefaultLevel::Int(2560),
            "landscape_images = 2560",
            rules::landscape_images,
        )
        .requiring("landscape"),
        analysis("landscape_dims", LevelKind::Int, DefaultLevel::Int(2), "landscape_dims = 2", rules::landscape_dims)
            .requiring("landscape"),
    ],
    default_focus: "skip",
    default_x: "depth",
    epochs_key: "epochs",
    open: false,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_defaults_are_the_train_config_defaults() {
        let from_schema: crate::Settings = SCHEMA
            .keys
            .iter()
            .filter(|k| k.place == Place::Setting)
            .filter_map(|k| k.default.map(|d| (k.name.to_owned(), d.level())))
            .filter(|(k, v)| !SCHEMA.omitted(k, v))
            .collect();
        assert_eq!(from_schema, TrainConfig::default().levels());
        assert!(!from_schema.contains_key("precision"), "fp32 is left out of a trial's settings");
        let bf16 = TrainConfig { precision: Precision::Bf16, ..TrainConfig::default() };
        assert_eq!(bf16.levels().get("precision"), Some(&Level::Str("bf16".into())));
    }

    #[test]
    fn a_key_omitted_at_its_default_has_one_and_is_never_factor_only() {
        for k in SCHEMA.keys.iter().filter(|k| k.identity == Identity::OmittedAtDefault) {
            assert!(k.default.is_some(), "{}: no default to omit", k.name);
            assert_ne!(k.place, Place::Factor, "{}: a factor-only key is always in the cell", k.name);
        }
    }

    #[test]
    fn settings_stored_before_precision_existed_read_as_fp32() {
        let mut old = serde_json::to_value(TrainConfig::default()).unwrap();
        old.as_object_mut().unwrap().remove("precision");
        let read: TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!(read, TrainConfig::default());
    }

    #[test]
    fn spec_is_the_inverse_of_resolve() {
        let trial = BmenetTrial {
            depth: 16,
            skip: false,
            init: InitScheme::KaimingNormal,
            batchnorm: true,
            seed: 3,
            train: TrainConfig { optimizer: Optimizer::Adam, lr: 1e-3, ..TrainConfig::default() },
            analyses: Default::default(),
            data: DataConfig { dataset: "cifar10".into(), path: "/d".into(), train_subset: Some(8), test_subset: None },
        };
        assert_eq!(resolve(&trial.spec()).unwrap(), trial);
        let bf16 = BmenetTrial { train: TrainConfig { precision: Precision::Bf16, ..trial.train.clone() }, ..trial };
        assert_eq!(resolve(&bf16.spec()).unwrap(), bf16);
        let lesion = BmenetTrial {
            analyses: Analyses {
                lesion: true,
                variance: true,
                landscape: Some(LandscapeConfig { resolution: 5, ..LandscapeConfig::DEFAULT }),
            },
            ..bf16
        };
        assert_eq!(lesion.spec().train.get("lesion"), Some(&Level::Bool(true)));
        assert_eq!(resolve(&lesion.spec()).unwrap(), lesion);
    }
}
