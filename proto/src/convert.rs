//! Protobuf <-> domain conversions, in both directions and for every
//! message that carries domain values: grid and trial specs, levels, trial
//! states and the analysis results. Wire input is untrusted: every
//! `TryFrom` here validates (through sweep-core's rules, their one copy),
//! and the error names the offending field.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::v1 as pb;
use sweep_core::adaptive::{Effect, Next, SeedPlan, Stop, Stratum};
use sweep_core::{
    Cell, CurveSums, DataConfig, ExecSpec, Factor, GradFlowSums, GridError, GridSpec, Level, Provenance, RunConfig,
    Settings, SweepResults, TrainerSpec, TrialResult, TrialSpec, TrialState,
};

/// A wire message that does not make a valid domain value.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConvertError {
    pub field: String,
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> ConvertError {
    ConvertError { field: field.to_owned(), message: message.into() }
}

impl From<&Level> for pb::Level {
    fn from(l: &Level) -> Self {
        use pb::level::Kind;
        pb::Level {
            kind: Some(match l {
                Level::Int(i) => Kind::Int(*i),
                Level::Float(x) => Kind::Float(*x),
                Level::Bool(b) => Kind::Flag(*b),
                Level::Str(s) => Kind::Text(s.clone()),
            }),
        }
    }
}

/// A level off the wire (`field` names it in errors): a kind must be set and
/// a float must be finite.
fn level(field: &str, l: pb::Level) -> Result<Level, ConvertError> {
    use pb::level::Kind;
    match l.kind {
        None => Err(err(field, "a level without a value")),
        Some(Kind::Int(i)) => Ok(Level::Int(i)),
        Some(Kind::Float(x)) if x.is_finite() => Ok(Level::Float(x)),
        Some(Kind::Float(x)) => Err(err(field, format!("{x} is not a finite number"))),
        Some(Kind::Flag(b)) => Ok(Level::Bool(b)),
        Some(Kind::Text(s)) => Ok(Level::Str(s)),
    }
}

fn levels_out<'a>(m: impl IntoIterator<Item = (&'a String, &'a Level)>) -> HashMap<String, pb::Level> {
    m.into_iter().map(|(k, v)| (k.clone(), v.into())).collect()
}

/// A name -> level map off the wire; `prefix` + name is the field in errors.
fn levels_in(prefix: &str, m: HashMap<String, pb::Level>) -> Result<BTreeMap<String, Level>, ConvertError> {
    m.into_iter()
        .map(|(k, v)| {
            let l = level(&format!("{prefix}{}", sweep_core::quote::short_bare(&k)), v)?;
            Ok((k, l))
        })
        .collect()
}

/// A cell as the wire carries it.
pub fn cell_to_wire(c: &Cell) -> HashMap<String, pb::Level> {
    levels_out(c.iter())
}

/// A cell off the wire (no schema check: report data names whatever the
/// sweep's factors were).
pub fn cell_from_wire(field: &str, m: HashMap<String, pb::Level>) -> Result<Cell, ConvertError> {
    Ok(Cell(levels_in(&format!("{field}."), m)?))
}

impl From<&DataConfig> for pb::DataSettings {
    fn from(d: &DataConfig) -> Self {
        pb::DataSettings {
            dataset: d.dataset.clone(),
            path: d.path.to_string_lossy().into_owned(),
            train_subset: d.train_subset,
            test_subset: d.test_subset,
        }
    }
}

impl From<pb::DataSettings> for DataConfig {
    fn from(d: pb::DataSettings) -> Self {
        DataConfig {
            dataset: d.dataset,
            path: PathBuf::from(d.path),
            train_subset: d.train_subset,
            test_subset: d.test_subset,
        }
    }
}

impl From<&GridSpec> for pb::GridSpec {
    fn from(g: &GridSpec) -> Self {
        pb::GridSpec {
            name: g.name.clone(),
            seeds: g.seeds.clone(),
            factors: g
                .factors
                .iter()
                .map(|f| pb::Factor { name: f.name.clone(), levels: f.levels.iter().map(Into::into).collect() })
                .collect(),
            train: levels_out(&g.train),
            data: Some((&g.data).into()),
            run: Some(pb::RunSettings {
                max_attempts: g.run.max_attempts,
                priority: g.run.priority,
                keep_weights: g.run.keep_weights,
                adaptive: g.run.adaptive.as_ref().map(Into::into),
            }),
            exec: exec_out(&g.trainer),
        }
    }
}

fn exec_out(t: &TrainerSpec) -> Option<pb::ExecTrainer> {
    match t {
        TrainerSpec::Bmenet => None,
        TrainerSpec::Exec(e) => Some(pb::ExecTrainer {
            command: e.command.clone(),
            args: e.args.clone(),
            env: e.env.clone().into_iter().collect(),
            workdir: e.workdir.as_ref().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(),
            timeout_secs: e.timeout_secs.unwrap_or(0),
        }),
    }
}

/// The trainer (its rules are checked with the spec it belongs to).
fn exec_in(e: Option<pb::ExecTrainer>) -> TrainerSpec {
    match e {
        None => TrainerSpec::Bmenet,
        Some(e) => TrainerSpec::Exec(ExecSpec {
            command: e.command,
            args: e.args,
            env: e.env.into_iter().collect(),
            workdir: (!e.workdir.is_empty()).then(|| PathBuf::from(e.workdir)),
            timeout_secs: (e.timeout_secs != 0).then_some(e.timeout_secs),
        }),
    }
}

impl TryFrom<pb::GridSpec> for GridSpec {
    type Error = ConvertError;
    fn try_from(g: pb::GridSpec) -> Result<Self, ConvertError> {
        let run = g.run.ok_or_else(|| err("run", "missing"))?;
        let factors = g
            .factors
            .into_iter()
            .map(|f| {
                let field = format!("grid.{}", sweep_core::quote::short_bare(&f.name));
                let levels = f.levels.into_iter().map(|l| level(&field, l)).collect::<Result<_, _>>()?;
                Ok(Factor { name: f.name, levels })
            })
            .collect::<Result<Vec<_>, ConvertError>>()?;
        let spec = GridSpec {
            name: g.name,
            seeds: g.seeds,
            factors,
            train: levels_in("train.", g.train)?,
            data: g.data.ok_or_else(|| err("data", "missing"))?.into(),
            run: RunConfig {
                max_attempts: run.max_attempts,
                priority: run.priority,
                keep_weights: run.keep_weights,
                adaptive: run.adaptive.map(Into::into),
            },
            trainer: exec_in(g.exec),
        };
        spec.validate().map_err(|e| from_grid_error("", e))?;
        Ok(spec)
    }
}

impl From<&TrialSpec> for pb::TrialSpec {
    fn from(t: &TrialSpec) -> Self {
        pb::TrialSpec {
            cell: cell_to_wire(&t.cell),
            train: levels_out(&t.train),
            seed: t.seed,
            data: Some((&t.data).into()),
            exec: exec_out(&t.trainer),
        }
    }
}

impl TryFrom<pb::TrialSpec> for TrialSpec {
    type Error = ConvertError;
    fn try_from(t: pb::TrialSpec) -> Result<Self, ConvertError> {
        let train: Settings = levels_in("spec.train.", t.train)?;
        let spec = TrialSpec {
            cell: cell_from_wire("spec.cell", t.cell)?,
            train,
            data: t.data.ok_or_else(|| err("spec.data", "missing"))?.into(),
            seed: t.seed,
            trainer: exec_in(t.exec),
        };
        // The schema's rules (every key once, each valid), the seed and the
        // data settings, from their one copy in sweep-core.
        spec.validate().map_err(|e| from_grid_error("spec.", e))?;
        Ok(spec)
    }
}

/// A core validation error as a field error (`prefix` + the spec's key).
fn from_grid_error(prefix: &str, e: GridError) -> ConvertError {
    match e {
        GridError::Spec { key, message } => err(&format!("{prefix}{key}"), message),
        other => {
            let field = prefix.trim_end_matches('.');
            err(if field.is_empty() { "spec" } else { field }, other.to_string())
        }
    }
}

impl From<TrialState> for pb::TrialState {
    fn from(s: TrialState) -> Self {
        match s {
            TrialState::Queued => pb::TrialState::Queued,
            TrialState::Running => pb::TrialState::Running,
            TrialState::Succeeded => pb::TrialState::Succeeded,
            TrialState::Diverged => pb::TrialState::Diverged,
            TrialState::Failed => pb::TrialState::Failed,
            TrialState::Cancelled => pb::TrialState::Cancelled,
        }
    }
}

/// A trial state off the wire (the raw enum value, as prost keeps it).
pub fn trial_state(field: &str, raw: i32) -> Result<TrialState, ConvertError> {
    match pb::TrialState::try_from(raw) {
        Ok(pb::TrialState::Queued) => Ok(TrialState::Queued),
        Ok(pb::TrialState::Running) => Ok(TrialState::Running),
        Ok(pb::TrialState::Succeeded) => Ok(TrialState::Succeeded),
        Ok(pb::TrialState::Diverged) => Ok(TrialState::Diverged),
        Ok(pb::TrialState::Failed) => Ok(TrialState::Failed),
        Ok(pb::TrialState::Cancelled) => Ok(TrialState::Cancelled),
        Ok(pb::TrialState::Unspecified) | Err(_) => Err(err(field, format!("unknown trial state {raw}"))),
    }
}

impl From<&Provenance> for pb::Provenance {
    fn from(p: &Provenance) -> Self {
        pb::Provenance {
            code_version: p.code_version.clone(),
            libtorch: p.libtorch.clone(),
            device_name: p.device_name.clone(),
            dataset_sha256: p.dataset_sha256.clone(),
        }
    }
}

/// Unchecked: the coordinator bounds what it stores (`bounds::provenance`).
impl From<pb::Provenance> for Provenance {
    fn from(p: pb::Provenance) -> Self {
        Provenance {
            code_version: p.code_version,
            libtorch: p.libtorch,
            device_name: p.device_name,
            dataset_sha256: p.dataset_sha256,
        }
    }
}

impl From<&CurveSums> for pb::CurveAggregate {
    fn from(c: &CurveSums) -> Self {
        pb::CurveAggregate {
            cell: cell_to_wire(&c.cell),
            metric: c.metric.clone(),
            step: c.step,
            n: c.n,
            sum: c.sum,
            sum_sq: c.sum_sq,
        }
    }
}

impl TryFrom<pb::CurveAggregate> for CurveSums {
    type Error = ConvertError;
    fn try_from(c: pb::CurveAggregate) -> Result<Self, ConvertError> {
        Ok(CurveSums {
            cell: cell_from_wire("curves.cell", c.cell)?,
            metric: c.metric,
            step: c.step,
            n: c.n,
            sum: c.sum,
            sum_sq: c.sum_sq,
        })
    }
}

impl From<&GradFlowSums> for pb::GradFlowAggregate {
    fn from(g: &GradFlowSums) -> Self {
        pb::GradFlowAggregate {
            cell: cell_to_wire(&g.cell),
            block: g.block.clone(),
            last: g.last,
            n: g.n,
            sum: g.sum,
            sum_sq: g.sum_sq,
            mean_step: g.mean_step,
        }
    }
}

impl TryFrom<pb::GradFlowAggregate> for GradFlowSums {
    type Error = ConvertError;
    fn try_from(g: pb::GradFlowAggregate) -> Result<Self, ConvertError> {
        Ok(GradFlowSums {
            cell: cell_from_wire("grad_flow.cell", g.cell)?,
            block: g.block,
            last: g.last,
            n: g.n,
            sum: g.sum,
            sum_sq: g.sum_sq,
            mean_step: g.mean_step,
        })
    }
}

/// A trial's shared part as the wire's [`pb::TrialContext`] keys it: the
/// `Arc`s by address (a sweep's trials share them; two equal values in
/// different `Arc`s only cost a second context) and the small fields by
/// value.
type ContextKey<'a> = (*const sweep_core::Cell, *const Settings, *const Provenance, &'a str, &'a str, u32, &'a str);

fn context_key(t: &TrialResult) -> ContextKey<'_> {
    (
        std::sync::Arc::as_ptr(&t.cell),
        std::sync::Arc::as_ptr(&t.settings),
        std::sync::Arc::as_ptr(&t.provenance),
        &t.cell_key,
        &t.device,
        t.threads,
        &t.trainer,
    )
}

fn context_to_wire(t: &TrialResult) -> pb::TrialContext {
    pb::TrialContext {
        cell: cell_to_wire(&t.cell),
        cell_key: t.cell_key.clone(),
        settings: levels_out(t.settings.as_ref()),
        trainer: t.trainer.clone(),
        device: t.device.clone(),
        threads: t.threads,
        provenance: (!t.provenance.is_empty()).then(|| t.provenance.as_ref().into()),
    }
}

fn trial_to_wire(t: &TrialResult, context: u32) -> pb::TrialFinal {
    pb::TrialFinal {
        seed: t.seed,
        state: pb::TrialState::from(t.state).into(),
        final_train_loss: t.final_train_loss,
        final_test_loss: t.final_test_loss,
        final_test_accuracy: t.final_test_accuracy,
        best_test_accuracy: t.best_test_accuracy,
        wall_seconds: t.wall_seconds,
        diverged_step: t.diverged_step,
        train_images_used: t.train_images_used,
        finals: t.finals.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        trial_id: t.trial_id.clone(),
        context,
    }
}

impl From<&SweepResults> for pb::AnalyzeResponse {
    fn from(r: &SweepResults) -> Self {
        let mut index: std::collections::HashMap<ContextKey<'_>, u32> = std::collections::HashMap::new();
        let mut contexts = Vec::new();
        let trials = r
            .trials
            .iter()
            .map(|t| {
                let context = *index.entry(context_key(t)).or_insert_with(|| {
                    contexts.push(context_to_wire(t));
                    (contexts.len() - 1) as u32
                });
                trial_to_wire(t, context)
            })
            .collect();
        pb::AnalyzeResponse {
            sweep_id: r.sweep_id.clone(),
            trials,
            contexts,
            curves: r.curves.iter().map(Into::into).collect(),
            grad_flow: r.grad_flow.iter().map(Into::into).collect(),
            adaptive: r.adaptive.as_ref().map(Into::into),
            strata: r.strata.iter().map(Into::into).collect(),
        }
    }
}

/// A [`pb::TrialContext`] read once, shared by every trial that names it.
struct Context {
    cell: std::sync::Arc<sweep_core::Cell>,
    cell_key: String,
    settings: std::sync::Arc<Settings>,
    trainer: String,
    device: String,
    threads: u32,
    provenance: std::sync::Arc<Provenance>,
}

impl TryFrom<pb::TrialContext> for Context {
    type Error = ConvertError;
    fn try_from(c: pb::TrialContext) -> Result<Self, ConvertError> {
        Ok(Context {
            cell: std::sync::Arc::new(cell_from_wire("contexts.cell", c.cell)?),
            cell_key: c.cell_key,
            settings: std::sync::Arc::new(levels_in("contexts.settings.", c.settings)?),
            trainer: if c.trainer.is_empty() { "bmenet".to_owned() } else { c.trainer },
            device: c.device,
            threads: c.threads,
            provenance: std::sync::Arc::new(c.provenance.map(Into::into).unwrap_or_default()),
        })
    }
}

fn trial_from_wire(t: pb::TrialFinal, contexts: &[Context]) -> Result<TrialResult, ConvertError> {
    let c = contexts.get(t.context as usize).ok_or_else(|| {
        err("trials.context", format!("{} names no context (the answer has {})", t.context, contexts.len()))
    })?;
    Ok(TrialResult {
        trial_id: t.trial_id,
        cell: c.cell.clone(),
        cell_key: c.cell_key.clone(),
        seed: t.seed,
        state: trial_state("trials.state", t.state)?,
        final_train_loss: t.final_train_loss,
        final_test_loss: t.final_test_loss,
        final_test_accuracy: t.final_test_accuracy,
        best_test_accuracy: t.best_test_accuracy,
        wall_seconds: t.wall_seconds,
        device: c.device.clone(),
        threads: c.threads,
        diverged_step: t.diverged_step,
        train_images_used: t.train_images_used,
        settings: c.settings.clone(),
        provenance: c.provenance.clone(),
        trainer: c.trainer.clone(),
        finals: t.finals.into_iter().collect(),
    })
}

impl TryFrom<pb::AnalyzeResponse> for SweepResults {
    type Error = ConvertError;
    fn try_from(r: pb::AnalyzeResponse) -> Result<Self, ConvertError> {
        if r.contexts.is_empty() && !r.trials.is_empty() {
            // A coordinator from before contexts sends each trial's cell in
            // fields this client no longer reads.
            return Err(err(
                "contexts",
                "the answer's trials name no contexts: the coordinator is older than this client; \
                 upgrade it (the coordinator and `sweep` go together)",
            ));
        }
        let contexts: Vec<Context> = r.contexts.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?;
        Ok(SweepResults {
            sweep_id: r.sweep_id,
            trials: r.trials.into_iter().map(|t| trial_from_wire(t, &contexts)).collect::<Result<_, _>>()?,
            curves: r.curves.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?,
            grad_flow: r.grad_flow.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?,
            adaptive: r
                .adaptive
                .map(|p| {
                    let plan = SeedPlan::from(p);
                    plan.validate().map(|()| plan).map_err(|e| from_grid_error("adaptive.", e))
                })
                .transpose()?,
            strata: r.strata.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?,
        })
    }
}

impl From<&SeedPlan> for pb::SeedPlan {
    fn from(p: &SeedPlan) -> Self {
        pb::SeedPlan { target_halfwidth: p.target_halfwidth, max_seeds: p.max_seeds, contrast: p.contrast.clone() }
    }
}

/// Unchecked: the grid (or the report's own check) validates it.
impl From<pb::SeedPlan> for SeedPlan {
    fn from(p: pb::SeedPlan) -> Self {
        SeedPlan { target_halfwidth: p.target_halfwidth, max_seeds: p.max_seeds, contrast: p.contrast }
    }
}

impl From<&Stratum> for pb::Stratum {
    fn from(s: &Stratum) -> Self {
        use pb::StratumState as W;
        pb::Stratum {
            at: cell_to_wire(&s.at),
            seeds: s.seeds.iter().copied().collect(),
            state: match s.next {
                Next::Waiting => W::Waiting,
                Next::SeedDue(_) => W::SeedDue,
                Next::Stopped(Stop::Resolved) => W::Resolved,
                Next::Stopped(Stop::BelowTarget) => W::BelowTarget,
                Next::Stopped(Stop::MaxSeeds) => W::MaxSeeds,
                Next::Stopped(Stop::NoPairs) => W::NoPairs,
            } as i32,
            baseline: Some((&s.baseline).into()),
            effects: s
                .effects
                .iter()
                .map(|e| pb::StratumEffect {
                    level: Some((&e.level).into()),
                    pairs: e.pairs,
                    estimate: e.estimate,
                    ci95_lo: e.ci95.map(|c| c.0),
                    ci95_hi: e.ci95.map(|c| c.1),
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::Stratum> for Stratum {
    type Error = ConvertError;
    fn try_from(s: pb::Stratum) -> Result<Self, ConvertError> {
        use pb::StratumState as W;
        let seeds: std::collections::BTreeSet<u64> = s.seeds.into_iter().collect();
        let next = match W::try_from(s.state) {
            Ok(W::Waiting) => Next::Waiting,
            Ok(W::SeedDue) => Next::SeedDue(sweep_core::adaptive::next_seed(&seeds)),
            Ok(W::Resolved) => Next::Stopped(Stop::Resolved),
            Ok(W::BelowTarget) => Next::Stopped(Stop::BelowTarget),
            Ok(W::MaxSeeds) => Next::Stopped(Stop::MaxSeeds),
            Ok(W::NoPairs) => Next::Stopped(Stop::NoPairs),
            Ok(W::Unspecified) | Err(_) => return Err(err("stratum.state", format!("unknown state {}", s.state))),
        };
        let effects = s
            .effects
            .into_iter()
            .map(|e| {
                let ci95 = match (e.ci95_lo, e.ci95_hi) {
                    (Some(lo), Some(hi)) => Some((lo, hi)),
                    _ => None,
                };
                Ok(Effect {
                    level: level(
                        "stratum.effect.level",
                        e.level.ok_or_else(|| err("stratum.effect.level", "missing"))?,
                    )?,
                    pairs: e.pairs,
                    estimate: e.estimate,
                    ci95,
                })
            })
            .collect::<Result<_, ConvertError>>()?;
        Ok(Stratum {
            at: cell_from_wire("stratum.at.", s.at)?,
            seeds,
            baseline: level("stratum.baseline", s.baseline.ok_or_else(|| err("stratum.baseline", "missing"))?)?,
            effects,
            next,
        })
    }
}

impl From<ConvertError> for tonic::Status {
    fn from(e: ConvertError) -> tonic::Status {
        tonic::Status::invalid_argument(e.to_string())
    }
}
