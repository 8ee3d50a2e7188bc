//! `sweep report`'s options and the value the effects are computed on.

use std::path::PathBuf;

use serde::Serialize;
use sweep_core::TrialResult;

use crate::Format;

/// The value the effects are computed on (the cell table always shows test
/// accuracy and train loss).
#[derive(Clone, Copy, clap::ValueEnum, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub(crate) enum Measure {
    /// Test accuracy after the last epoch.
    TestAccuracy,
    /// Mean training loss of the last logged window.
    TrainLoss,
    /// Test loss after the last epoch.
    TestLoss,
    /// Best test accuracy over the epochs.
    BestTestAccuracy,
}

impl Measure {
    pub(crate) fn value(self, t: &TrialResult) -> Option<f64> {
        match self {
            Measure::TestAccuracy => t.final_test_accuracy,
            Measure::TrainLoss => t.final_train_loss,
            Measure::TestLoss => t.final_test_loss,
            Measure::BestTestAccuracy => t.best_test_accuracy,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Measure::TestAccuracy => "final test accuracy (%)",
            Measure::TrainLoss => "final train loss",
            Measure::TestLoss => "final test loss",
            Measure::BestTestAccuracy => "best test accuracy (%)",
        }
    }

    /// File-name stem of the metric-vs-factor picture (`accuracy-vs-depth`).
    pub(crate) fn stem(self) -> &'static str {
        match self {
            Measure::TestAccuracy => "accuracy",
            Measure::TrainLoss => "train-loss",
            Measure::TestLoss => "test-loss",
            Measure::BestTestAccuracy => "best-accuracy",
        }
    }

    /// Accuracies are shown in percent (effects in percentage points):
    /// (scale, digits, unit).
    pub(crate) fn scale(self) -> (f64, usize, &'static str) {
        match self {
            Measure::TestAccuracy | Measure::BestTestAccuracy => (100.0, 2, " pp"),
            Measure::TrainLoss | Measure::TestLoss => (1.0, 4, ""),
        }
    }
}

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
    /// The value the effects are computed on.
    #[arg(long, value_enum, default_value_t = Measure::TestAccuracy)]
    pub metric: Measure,
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
            metric: Measure::TestAccuracy,
            by: Vec::new(),
            x: None,
            at: Vec::new(),
            html: None,
            out: None,
            intervals: IntervalArg::Auto,
        }
    }
}
