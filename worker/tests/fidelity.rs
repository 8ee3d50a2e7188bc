//! Trust the trainer: the worker's real trainer ([`TorchTrainer`], through
//! the [`Trainer`] trait) and plain PyTorch (`bench/fidelity_pytorch.py`,
//! `torch.optim.SGD` / `torch.optim.Adam`) run the same training from the
//! same initial weights on the same batches, and agree step for step.
//!
//! For each case the test
//! 1. generates a tiny synthetic CIFAR-layout dataset (no real data);
//! 2. trains it with the real trainer (`log_every = 1`, so every step's loss
//!    is a `train_loss` metric; augmentation off, since its crops come from
//!    the trainer's private RNG);
//! 3. exports the trainer's exact initial weights (as `run_trial` makes
//!    them: `tch::manual_seed(seed)`, then `BmeNet::new` on a fresh
//!    `VarStore`) as safetensors, and its batch order (`epoch_permutation`);
//! 4. replays that in PyTorch, a subprocess run with `$SWEEP_PYTHON`
//!    (missing Python or torch is a failure, not a skip);
//! 5. compares the loss of every step and the final weights (the trainer's
//!    last checkpoint, `weights.ot`, parameters and BN running statistics)
//!    within the tolerance that docs/fidelity.md derives, and on failure
//!    names the first step (or tensor) that disagrees with the max
//!    absolute and relative error.
//!
//! Both sides run libtorch with one intra-op thread: the same library, so
//! the forward and backward kernels are the same; what can differ is the
//! optimiser arithmetic (ours is written on tensors, see
//! `worker/src/torch/optim.rs`) and anything we get wrong.
#![cfg(feature = "torch")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use sweep_core::{DataConfig, InitScheme, Optimizer, TrainConfig, TrialSpec};
use sweep_worker::torch::bmenet::{BmeConfig, BmeNet};
use sweep_worker::torch::cifar;
use sweep_worker::torch::train::epoch_permutation;
use sweep_worker::torch::TorchTrainer;
use sweep_worker::trainer::{
    StopFlag, StopReason, TrainContext, TrainEvent, TrainOutcome, Trainer, TrialJob,
};
use tch::{nn, Device, Kind, Tensor};

/// libtorch's RNG and thread count are process-global: cases take turns.
static TORCH: Mutex<()> = Mutex::new(());

/// Loss tolerance: |ours - pytorch| <= LOSS_ATOL + LOSS_RTOL * |pytorch| at
/// every step (see docs/fidelity.md for why these numbers).
const LOSS_RTOL: f64 = 1e-4;
const LOSS_ATOL: f64 = 1e-5;
/// Final-weight tolerance, per tensor: max |ours - pytorch| <=
/// W_ATOL + W_RTOL * max |pytorch|.
const W_RTOL: f64 = 1e-4;
const W_ATOL: f64 = 1e-6;

#[derive(Debug, Clone)]
struct Case {
    depth: u32,
    skip: bool,
    batchnorm: bool,
    optimizer: Optimizer,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    batch_size: u32,
    train_n: usize,
    epochs: u32,
    seed: u64,
}

impl Case {
    fn name(&self) -> String {
        format!(
            "depth {} skip {} bn {} {} (seed {})",
            self.depth,
            if self.skip { "on" } else { "off" },
            if self.batchnorm { "on" } else { "off" },
            match self.optimizer {
                Optimizer::Sgd => "sgd",
                Optimizer::Adam => "adam",
            },
            self.seed
        )
    }

    fn spec(&self, data: &Path) -> TrialSpec {
        TrialSpec {
            depth: self.depth,
            skip: self.skip,
            init: InitScheme::Default,
            batchnorm: self.batchnorm,
            seed: self.seed,
            train: TrainConfig {
                epochs: self.epochs,
                batch_size: self.batch_size,
                optimizer: self.optimizer,
                lr: self.lr,
                momentum: self.momentum,
                weight_decay: self.weight_decay,
                log_every: 1,
                augment: false,
            },
            data: DataConfig {
                dataset: "cifar10".into(),
                path: data.to_owned(),
                train_subset: Some(self.train_n as u64),
                test_subset: Some(TEST_N as u64),
            },
        }
    }
}

const TEST_N: usize = 10;

/// SGD with momentum and weight decay, or Adam with weight decay, on every
/// skip x batch-norm cell.
fn cases(depth: u32, train_n: usize, batch_size: u32, epochs: u32, adam_too: bool) -> Vec<Case> {
    let mut out = Vec::new();
    let mut seed = depth as u64 * 100;
    for skip in [true, false] {
        for batchnorm in [true, false] {
            let opts: &[Optimizer] = if adam_too {
                &[Optimizer::Sgd, Optimizer::Adam]
            } else if skip == batchnorm {
                &[Optimizer::Sgd]
            } else {
                &[Optimizer::Adam]
            };
            for &optimizer in opts {
                seed += 1;
                let (lr, momentum, weight_decay) = match optimizer {
                    Optimizer::Sgd => (0.01, 0.9, 5e-4),
                    Optimizer::Adam => (1e-3, 0.0, 1e-4),
                };
                out.push(Case {
                    depth,
                    skip,
                    batchnorm,
                    optimizer,
                    lr,
                    momentum,
                    weight_decay,
                    batch_size,
                    train_n,
                    epochs,
                    seed,
                });
            }
        }
    }
    out
}

fn dataset() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fidelity-synthetic");
        cifar::generate_synthetic(&d, 60, TEST_N, 8).unwrap();
        d
    })
}

/// The Python that runs the PyTorch side: `$SWEEP_PYTHON`, else the active
/// virtualenv's, else `python3`. It must import torch: this test is not
/// skipped when it cannot run, it fails and says why.
fn python() -> PathBuf {
    let py = std::env::var_os("SWEEP_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("VIRTUAL_ENV").map(|v| PathBuf::from(v).join("bin").join("python"))
        })
        .unwrap_or_else(|| PathBuf::from("python3"));
    let probe = Command::new(&py)
        .args(["-c", "import torch; print(torch.__version__)"])
        .output();
    match probe {
        Ok(o) if o.status.success() => py,
        Ok(o) => panic!(
            "the fidelity test needs PyTorch: {} cannot import torch ({}).\n\
             Set SWEEP_PYTHON to a Python with torch 2.11 (source scripts/env.sh).",
            py.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!(
            "the fidelity test needs PyTorch: cannot run {} ({e}).\n\
             Set SWEEP_PYTHON to a Python with torch 2.11 (source scripts/env.sh).",
            py.display()
        ),
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("bench")
        .join("fidelity_pytorch.py")
}

/// What our trainer did: the loss of every step (index = step - 1) and how
/// it ended.
struct Ours {
    outcome: TrainOutcome,
    losses: Vec<f64>,
}

/// Runs the real trainer with a context whose channel is drained on another
/// thread (every `train_loss` kept). `stop_after`: ask it to stop (as on
/// SIGTERM) once that step's loss is in.
fn run_ours(spec: &TrialSpec, ckpt: &Path, stop_after: Option<i64>) -> Ours {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let stop = StopFlag::new();
    let flag = stop.clone();
    let drain = std::thread::spawn(move || {
        let mut losses: Vec<(i64, f64)> = Vec::new();
        while let Some(ev) = rx.blocking_recv() {
            if let TrainEvent::Metric(m) = ev {
                if m.name == "train_loss" {
                    if stop_after.is_some_and(|s| m.step >= s) {
                        flag.stop(StopReason::Shutdown);
                    }
                    losses.push((m.step, m.value));
                }
            }
            // Flush requests are answered by dropping their sender.
        }
        losses
    });
    let ctx = TrainContext::new(tx, stop);
    let job = TrialJob {
        trial_id: "fidelity".into(),
        spec: spec.clone(),
        attempt: 1,
        checkpoint_dir: ckpt.to_owned(),
    };
    let mut trainer = TorchTrainer::new(Device::Cpu, None);
    let outcome = trainer
        .train(&job, &ctx)
        .unwrap_or_else(|e| panic!("our trainer failed: {e}"));
    drop(ctx);
    let steps = drain.join().unwrap();
    for (i, (step, _)) in steps.iter().enumerate() {
        assert_eq!(*step, i as i64 + 1, "train_loss steps are not 1, 2, ...");
    }
    Ours {
        outcome,
        losses: steps.into_iter().map(|(_, v)| v).collect(),
    }
}

fn bme_config(spec: &TrialSpec) -> BmeConfig {
    BmeConfig {
        depth: spec.depth,
        skip: spec.skip,
        batchnorm: spec.batchnorm,
        init: spec.init,
    }
}

/// The trainer's initial weights, made the way `run_trial` makes them.
fn export_init(spec: &TrialSpec, path: &Path) {
    tch::manual_seed(spec.seed as i64);
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = BmeNet::new(&vs.root(), &bme_config(spec)).unwrap();
    vs.save(path).unwrap();
}

/// The weights of the newest checkpoint in `ckpt` (all VarStore variables:
/// parameters and BN running statistics).
fn checkpoint_weights(spec: &TrialSpec, ckpt: &Path) -> HashMap<String, Tensor> {
    let newest = std::fs::read_dir(ckpt)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_prefix("ckpt-")
                .and_then(|s| s.parse::<i64>().ok())
                .map(|step| (step, name))
        })
        .max()
        .expect("the trainer wrote no checkpoint");
    let mut vs = nn::VarStore::new(Device::Cpu);
    let _net = BmeNet::new(&vs.root(), &bme_config(spec)).unwrap();
    vs.load(ckpt.join(newest.1).join("weights.ot")).unwrap();
    vs.variables()
}

/// What PyTorch did.
struct Theirs {
    losses: Vec<Option<f64>>,
    weights: Option<HashMap<String, Tensor>>,
}

/// Replays `spec` in PyTorch from `init` with the trainer's batch order.
fn run_pytorch(
    spec: &TrialSpec,
    init: &Path,
    dir: &Path,
    n: usize,
    max_steps: Option<i64>,
    threads: i64,
) -> Theirs {
    let perms: Vec<Vec<usize>> = (1..=spec.train.epochs)
        .map(|e| epoch_permutation(spec.seed, e, n))
        .collect();
    let losses_out = dir.join("pytorch-losses.json");
    let weights_out = dir.join("pytorch-final.safetensors");
    let manifest = serde_json::json!({
        "depth": spec.depth,
        "skip": spec.skip,
        "batchnorm": spec.batchnorm,
        "optimizer": match spec.train.optimizer { Optimizer::Sgd => "sgd", Optimizer::Adam => "adam" },
        "lr": spec.train.lr,
        "momentum": spec.train.momentum,
        "weight_decay": spec.train.weight_decay,
        "batch_size": spec.train.batch_size,
        "threads": threads,
        "data": cifar::resolve_root(&spec.data.path).unwrap(),
        "train_subset": n,
        "init": init,
        "permutations": perms,
        "max_steps": max_steps,
        "losses_out": losses_out,
        "weights_out": if max_steps.is_none() { Some(&weights_out) } else { None },
    });
    let mpath = dir.join("manifest.json");
    std::fs::write(&mpath, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let out = Command::new(python())
        .arg(script())
        .arg("--manifest")
        .arg(&mpath)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}",
        script().display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&losses_out).unwrap()).unwrap();
    let losses = v["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64())
        .collect();
    let weights = max_steps
        .is_none()
        .then(|| Tensor::read_safetensors(&weights_out).unwrap().into_iter().collect());
    Theirs { losses, weights }
}

/// Largest errors seen in one comparison.
#[derive(Debug, Default, Clone, Copy)]
struct Errors {
    max_abs: f64,
    max_rel: f64,
}

impl Errors {
    fn add(&mut self, ours: f64, theirs: f64) {
        let abs = (ours - theirs).abs();
        self.max_abs = self.max_abs.max(abs);
        if theirs != 0.0 {
            self.max_rel = self.max_rel.max(abs / theirs.abs());
        }
    }
}

/// Step-by-step loss comparison: Err names the first step outside the
/// tolerance and a few around it.
fn compare_losses(ours: &[f64], theirs: &[Option<f64>]) -> Result<Errors, String> {
    if ours.len() != theirs.len() {
        return Err(format!(
            "ours logged {} steps, PyTorch trained {}",
            ours.len(),
            theirs.len()
        ));
    }
    let mut e = Errors::default();
    let mut first_bad = None;
    for (i, (&a, b)) in ours.iter().zip(theirs).enumerate() {
        let Some(b) = *b else {
            first_bad.get_or_insert(i);
            continue;
        };
        e.add(a, b);
        if (a - b).abs() > LOSS_ATOL + LOSS_RTOL * b.abs() || !a.is_finite() {
            first_bad.get_or_insert(i);
        }
    }
    match first_bad {
        None => Ok(e),
        Some(i) => {
            let rows: Vec<String> = (i.saturating_sub(2)..(i + 3).min(ours.len()))
                .map(|k| {
                    format!(
                        "  step {:>4}: ours {:.9}  pytorch {}{}",
                        k + 1,
                        ours[k],
                        theirs[k].map_or("non-finite".into(), |v| format!("{v:.9}")),
                        if k == i { "  <- first disagreement" } else { "" }
                    )
                })
                .collect();
            Err(format!(
                "loss disagrees from step {} on (tolerance {LOSS_ATOL:e} + {LOSS_RTOL:e} x |loss|; \
                 over all steps max abs error {:.3e}, max rel error {:.3e}):\n{}",
                i + 1,
                e.max_abs,
                e.max_rel,
                rows.join("\n")
            ))
        }
    }
}

/// Per-tensor final-weight comparison: Err lists every tensor outside the
/// tolerance (worst first) or a name present on one side only.
fn compare_weights(
    ours: &HashMap<String, Tensor>,
    theirs: &HashMap<String, Tensor>,
) -> Result<Errors, String> {
    let mut problems = Vec::new();
    let mut names: Vec<&String> = ours.keys().collect();
    names.sort();
    for n in theirs.keys() {
        if !ours.contains_key(n) {
            problems.push((f64::INFINITY, format!("  {n}: only in PyTorch's weights")));
        }
    }
    let mut total = Errors::default();
    for n in names {
        let Some(b) = theirs.get(n) else {
            problems.push((f64::INFINITY, format!("  {n}: only in our checkpoint")));
            continue;
        };
        let a = &ours[n];
        if a.size() != b.size() {
            problems.push((
                f64::INFINITY,
                format!("  {n}: shape {:?} vs PyTorch {:?}", a.size(), b.size()),
            ));
            continue;
        }
        if a.numel() == 0 {
            continue;
        }
        let a = a.to_kind(Kind::Double);
        let b = b.to_kind(Kind::Double);
        let abs = (&a - &b).abs().max().double_value(&[]);
        let scale = b.abs().max().double_value(&[]);
        let rel = if scale > 0.0 { abs / scale } else { abs };
        total.max_abs = total.max_abs.max(abs);
        total.max_rel = total.max_rel.max(rel);
        if !(abs <= W_ATOL + W_RTOL * scale) {
            problems.push((
                rel,
                format!("  {n}: max abs error {abs:.3e}, relative to max |w| = {scale:.3e}: {rel:.3e}"),
            ));
        }
    }
    if problems.is_empty() {
        return Ok(total);
    }
    problems.sort_by(|x, y| y.0.total_cmp(&x.0));
    let shown: Vec<String> = problems.iter().take(8).map(|p| p.1.clone()).collect();
    Err(format!(
        "{} of {} final tensors disagree (tolerance {W_ATOL:e} + {W_RTOL:e} x max|w|):\n{}",
        problems.len(),
        ours.len(),
        shown.join("\n")
    ))
}

/// Runs every case, prints one line per case, and fails with every
/// disagreement found.
fn check(cases: &[Case]) {
    let _l = TORCH.lock().unwrap_or_else(|p| p.into_inner());
    tch::set_num_threads(1);
    let data = dataset();
    let mut failures = Vec::new();
    for case in cases {
        let started = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let spec = case.spec(data);
        let ckpt = dir.path().join("ckpt");
        let ours = run_ours(&spec, &ckpt, None);
        assert!(
            matches!(ours.outcome, TrainOutcome::Succeeded(_)),
            "{}: our trainer ended {:?}",
            case.name(),
            ours.outcome
        );
        let bs = case.batch_size as usize;
        let expected = case.epochs as usize * case.train_n.div_ceil(bs);
        assert_eq!(ours.losses.len(), expected, "{}: steps", case.name());
        let init = dir.path().join("init.safetensors");
        export_init(&spec, &init);
        let theirs = run_pytorch(&spec, &init, dir.path(), case.train_n, None, 1);
        let loss = compare_losses(&ours.losses, &theirs.losses);
        let weights = compare_weights(
            &checkpoint_weights(&spec, &ckpt),
            theirs.weights.as_ref().unwrap(),
        );
        let fmt = |r: &Result<Errors, String>| match r {
            Ok(e) => format!("max abs {:.2e} rel {:.2e}", e.max_abs, e.max_rel),
            Err(_) => "DISAGREES".into(),
        };
        eprintln!(
            "{:<36} {:>3} steps  loss {:.4} -> {:.4}  loss: {}  weights: {}  ({:.1} s)",
            case.name(),
            ours.losses.len(),
            ours.losses[0],
            ours.losses[ours.losses.len() - 1],
            fmt(&loss),
            fmt(&weights),
            started.elapsed().as_secs_f64()
        );
        for (what, r) in [("loss", loss), ("final weights", weights)] {
            if let Err(msg) = r {
                failures.push(format!("{} -- {what}: {msg}", case.name()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "our trainer and PyTorch disagree:\n{}",
        failures.join("\n\n")
    );
}

/// Depth 8: every skip x batch-norm cell, SGD (momentum 0.9, weight decay
/// 5e-4) and Adam (weight decay 1e-4); 44 images in batches of 8 (the last
/// batch of each epoch holds 4), 3 epochs: 18 steps per case.
#[test]
fn depth8_matches_pytorch_step_for_step() {
    check(&cases(8, 44, 8, 3, true));
}

/// Depth 32 (19 SkipBlocks): every skip x batch-norm cell, SGD on two and
/// Adam on the other two; 20 images in batches of 8, 2 epochs: 6 steps.
#[test]
fn depth32_matches_pytorch_step_for_step() {
    check(&cases(32, 20, 8, 2, false));
}
