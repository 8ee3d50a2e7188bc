//! `sweep report`'s options and the value the effects are computed on.

use std::path::PathBuf;

use serde::Serialize;
use sweep_core::TrialResult;

use crate::Format;

/// The value the effects are computed on (the cell table always shows test
/// accuracy and train loss).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Measure {
    /// Test accuracy after the last epoch.
    TestAccuracy,
    /// Mean training loss of the last logged window.
    TrainLoss,
    /// Test loss after the last epoch.
    TestLoss,
    /// Best test accuracy over the epochs.
    BestTestAccuracy,
    /// A final value an exec command reported (`{"final": {NAME: ...}}`).
    /// The name lives for the whole command (`sweep report` runs once), so
    /// the measure stays `Copy` like the built-in ones.
    Final(&'static str),
}

impl std::str::FromStr for Measure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "test_accuracy" | "test-accuracy" => Measure::TestAccuracy,
            "train_loss" | "train-loss" => Measure::TrainLoss,
            "test_loss" | "test-loss" => Measure::TestLoss,
            "best_test_accuracy" | "best-test-accuracy" => Measure::BestTestAccuracy,
            other => {
                if other.is_empty() || other.len() > sweep_core::point::METRIC_NAME_MAX {
                    return Err(format!("a metric name is 1 to {} bytes", sweep_core::point::METRIC_NAME_MAX));
                }
                Measure::Final(Box::leak(other.to_owned().into_boxed_str()))
            }
        })
    }
}

impl Serialize for Measure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl Measure {
    /// The measure of a report without `--metric`: test accuracy when
    /// some trial has it, else the first final value an exec command
    /// reported, else test accuracy (and the report says none has it).
    pub(crate) fn default_for(trials: &[TrialResult]) -> Measure {
        if trials.iter().any(|t| t.final_test_accuracy.is_some()) {
            return Measure::TestAccuracy;
        }
        match trials.iter().flat_map(|t| t.finals.keys()).min() {
            Some(name) => name.parse().unwrap_or(Measure::TestAccuracy),
            None => Measure::TestAccuracy,
        }
    }

    pub(crate) fn value(self, t: &TrialResult) -> Option<f64> {
        match self {
            Measure::TestAccuracy => t.final_test_accuracy,
            Measure::TrainLoss => t.final_train_loss,
            Measure::TestLoss => t.final_test_loss,
            Measure::BestTestAccuracy => t.best_test_accuracy,
            Measure::Final(name) => t.finals.get(name).copied(),
        }
    }

    /// The name `--metric` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Measure::TestAccuracy => "test_accuracy",
            Measure::TrainLoss => "train_loss",
            Measure::TestLoss => "test_loss",
            Measure::BestTestAccuracy => "best_test_accuracy",
            Measure::Final(name) => name,
        }
    }

    pub(crate) fn label(self) -> String {
        match self {
            Measure::TestAccuracy => "final test accuracy (%)".into(),
            Measure::TrainLoss => "final train loss".into(),
            Measure::TestLoss => "final test loss".into(),
            Measure::BestTestAccuracy => "best test accuracy (%)".into(),
            Measure::Final(name) if is_accuracy(name) => format!("final {name} (%)"),
            Measure::Final(name) => format!("final {name}"),
        }
    }

    /// File-name stem of the metric-vs-factor picture (`accuracy-vs-depth`).
    pub(crate) fn stem(self) -> String {
        match self {
            Measure::TestAccuracy => "accuracy".into(),
            Measure::TrainLoss => "train-loss".into(),
            Measure::TestLoss => "test-loss".into(),
            Measure::BestTestAccuracy => "best-accuracy".into(),
            Measure::Final(name) => {
                name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
            }
        }
    }

    /// Accuracies are shown in percent (effects in percentage points):
    /// (scale, digits, unit).
    pub(crate) fn scale(self) -> (f64, usize, &'static str) {
        match self {
            Measure::TestAccuracy | Measure::BestTestAccuracy => (100.0, 2, " pp"),
            Measure::Final(name) if is_accuracy(name) => (100.0, 2, " pp"),
            Measure::TrainLoss | Measure::TestLoss | Measure::Final(_) => (1.0, 4, ""),
        }
    }
}

use sweep_core::point::is_accuracy;

/// `sweep report`'s options.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct ReportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Baseline level of a factor for its effects, e.g. `skip=off` or
    /// `optimizer=sgd` (default: each factor's first level: the smallest
    /// number, off, or the first of a string factor's levels). Comma-separated
    /// or repeated. The factors named here are the report's focus: their
    /// effect at each level of every other factor, and paired comparisons on
    /// shared seeds (default focus: the trainer's, `skip` for BMEnet, when the
    /// sweep varies it; else the first factor that varies).
    #[arg(long, value_delimiter = ',', value_name = "FACTOR=LEVEL")]
    pub baseline: Vec<String>,
    /// The value the effects are computed on: test_accuracy, train_loss,
    /// test_loss, best_test_accuracy, or any final value an exec command
    /// reported (`{"final": {"f1": 0.7}}` gives `--metric f1`). Default:
    /// test_accuracy when the trials have it, else the first final value
    /// by name.
    #[arg(long, value_name = "METRIC")]
    pub metric: Option<Measure>,
    /// Group the table by these factors (means of cell means over the
    /// others), e.g. `--by depth,skip`. Default: one row per cell.
    #[arg(long, value_delimiter = ',', value_name = "FACTORS")]
    pub by: Vec<String>,
    /// The ordered factor on the x axis of the metric picture, e.g. `--x lr`
    /// (default: the trainer's, `depth` for BMEnet, when the sweep varies
    /// it; else the first numeric factor that varies). Float factors whose
    /// levels span two decades or more are drawn on a log scale.
    #[arg(long, value_name = "FACTOR")]
    pub x: Option<String>,
    /// Hold a factor at a level in the loss-curve and gradient-flow
    /// pictures, e.g. `--at depth=32` (default: the x factor's largest level
    /// with curves for every focus level, every other factor its first).
    #[arg(long, value_delimiter = ',', value_name = "FACTOR=LEVEL")]
    pub at: Vec<String>,
    /// Write one self-contained HTML page (tables and pictures) to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write the pictures (PNG and SVG) and the tables as CSV into DIR.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Intervals of effects and group means. `auto`: blocked on seed (the
    /// contrast computed within each seed, Student's t over the seeds)
    /// wherever every cell it uses ran the same seeds, which is right when
    /// cells share seed numbers (a seed fixes the initialisation and data
    /// order, so cells are correlated through it); independent (Welch)
    /// elsewhere. `independent`: always Welch over cell means, as reports
    /// before blocked intervals were.
    #[arg(long, value_enum, default_value_t = IntervalArg::Auto)]
    pub intervals: IntervalArg,
}

/// `--intervals`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IntervalArg {
    Auto,
    Independent,
}

impl IntervalArg {
    pub(crate) fn option(self) -> sweep_core::effects::Intervals {
        match self {
            IntervalArg::Auto => sweep_core::effects::Intervals::Auto,
            IntervalArg::Independent => sweep_core::effects::Intervals::Independent,
        }
    }
}

impl Default for ReportArgs {
    fn default() -> Self {
        ReportArgs {
            format: Format::Table,
            baseline: Vec::new(),
            metric: None,
            by: Vec::new(),
            x: None,
            at: Vec::new(),
            html: None,
            out: None,
            intervals: IntervalArg::Auto,
        }
    }
}
