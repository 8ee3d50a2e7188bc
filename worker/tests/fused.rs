//! Fused seeds are the same training as separate runs (issue 10): K
//! BMEnets stacked into one [`FusedNet`] take the same optimiser steps as K
//! separate networks (one step: to float rounding), and a fused group
//! trained by the real trainer follows the separate runs' loss curves over
//! hundreds of steps; checkpoints cross between the two; one member's end
//! (lost lease, NaN) leaves the others' training untouched.
#![cfg(feature = "torch")]

mod drained;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use drained::{drained, Drained};
use sweep_core::bmenet::BmenetTrial;
use sweep_core::{DataConfig, InitScheme, Optimizer as OptKind, TrainConfig};
use sweep_worker::torch::bmenet::{BmeConfig, BmeNet};
use sweep_worker::torch::cifar;
use sweep_worker::torch::fused::FusedNet;
use sweep_worker::torch::optim::Optimizer;
use sweep_worker::torch::TorchTrainer;
use sweep_worker::trainer::{
    Metric, StopReason, TrainContext, TrainError, TrainEvent, TrainOutcome, Trainer, TrialJob,
};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

/// libtorch's RNG is process-global: trainings in this file take turns.
static TORCH: Mutex<()> = Mutex::new(());

type Vars = BTreeMap<String, (Tensor, bool)>;

fn plain(seed: i64, cfg: &BmeConfig) -> (nn::VarStore, BmeNet, Vars) {
    plain_of(seed, cfg, Kind::Float)
}

/// [`plain`] with its weights in `kind`.
fn plain_of(seed: i64, cfg: &BmeConfig, kind: Kind) -> (nn::VarStore, BmeNet, Vars) {
    tch::manual_seed(seed);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = BmeNet::new(&vs.root(), cfg).unwrap();
    if kind == Kind::Double {
        vs.double();
    }
    let vars = vs.variables().into_iter().map(|(n, t)| (n, (t.shallow_clone(), t.requires_grad()))).collect();
    (vs, net, vars)
}

fn trainable(vars: &Vars) -> Vec<(String, Tensor)> {
    vars.iter().filter(|(_, (_, tr))| *tr).map(|(n, (t, _))| (n.clone(), t.shallow_clone())).collect()
}

fn make_opt(kind: OptKind, named: Vec<(String, Tensor)>) -> Optimizer {
    match kind {
        OptKind::Sgd => Optimizer::sgd(named, 0.05, 0.9, 5e-4),
        OptKind::Adam => Optimizer::adam(named, 1e-3, 5e-4),
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// One optimiser step of K = 3 members, fused and separate, for every
/// combination of skip and batch norm and both optimisers: every weight,
/// running statistic, loss and gradient norm agrees to rounding.
///
/// In f64: grouped and plain kernels sum in different orders, and in f32
/// that alone moved a batch-norm bias gradient (a sum of 1024 terms that
/// nearly cancel) by 0.8% of its size on one CPU and 0.1% on another, so an
/// f32 bound would measure the CPU's kernels, not the fusing. In f64 the
/// same differences are about 1e-16; what is left is the fused loss head,
/// which `FusedNet::member_losses` computes in f32 (about 1e-7), magnified
/// by that cancellation: the bounds below are 1e-5 for gradients and 1e-6
/// for SGD's weights. (The trajectory test below is in f32, the trainer's
/// precision, and takes every step from the same state.)
#[test]
fn fused_steps_equal_separate_steps() {
    let _l = TORCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for (skip, batchnorm, opt_kind) in [
        (true, true, OptKind::Sgd),
        (false, true, OptKind::Sgd),
        (true, false, OptKind::Adam),
        (false, false, OptKind::Adam),
    ] {
        let cfg = BmeConfig { depth: 8, skip, batchnorm, init: InitScheme::Default };
        let seeds = [1i64, 2, 3];
        let members: Vec<_> = seeds.iter().map(|&s| plain_of(s, &cfg, Kind::Double)).collect();
        let vars: Vec<&Vars> = members.iter().map(|m| &m.2).collect();
        let fused = FusedNet::from_members(&cfg, &vars, Device::Cpu).unwrap();
        assert_eq!(fused.members(), 3);
        let mut fused_opt = make_opt(opt_kind, fused.trainable());
        let mut opts: Vec<Optimizer> = members.iter().map(|m| make_opt(opt_kind, trainable(&m.2))).collect();
        tch::manual_seed(99);
        {
            let xs: Vec<Tensor> = (0..3).map(|_| Tensor::randn([4, 3, 32, 32], (Kind::Double, Device::Cpu))).collect();
            let ys: Vec<Tensor> = (0..3).map(|_| Tensor::randint(10, [4], (Kind::Int64, Device::Cpu))).collect();
            // Separate.
            let mut separate_losses = Vec::new();
            let mut separate_norms = Vec::new();
            for (k, (_, net, _)) in members.iter().enumerate() {
                let loss = net.forward_t(&xs[k], true).cross_entropy_for_logits(&ys[k]);
                opts[k].zero_grad();
                loss.backward();
                separate_losses.push(loss.double_value(&[]));
                let norms: Vec<f64> = net
                    .param_groups()
                    .iter()
                    .map(|g| {
                        g.params
                            .iter()
                            .map(|p| p.grad().square().sum(Kind::Double).double_value(&[]))
                            .sum::<f64>()
                            .sqrt()
                    })
                    .collect();
                separate_norms.push(norms);
                opts[k].step().unwrap();
            }
            // Fused.
            let logits = fused.forward_t(&Tensor::cat(&xs, 1), true);
            assert_eq!(logits.size(), vec![3, 4, 10]);
            let losses = FusedNet::member_losses(&logits, &Tensor::stack(&ys, 0)).unwrap();
            fused_opt.zero_grad();
            losses.sum(Kind::Float).backward();
            let fused_norms = fused.grad_norms().unwrap();
            // Gradients, member by member (the separate ones are still there:
            // a step does not clear them), each relative to its own size or,
            // for one that is zero but for rounding (a bias right before
            // batch norm), to a hundredth of the member's largest gradient.
            let largest: Vec<f64> = members
                .iter()
                .map(|m| {
                    trainable(&m.2).iter().map(|(_, t)| t.grad().abs().max().double_value(&[])).fold(0.0, f64::max)
                })
                .collect();
            for (name, t) in fused.trainable() {
                let g = t.grad();
                let rows = g.size()[0] / 3;
                for (k, m) in members.iter().enumerate() {
                    let sep = m.2[&name].0.grad();
                    let scale = sep.abs().max().double_value(&[]).max(1e-2 * largest[k]);
                    let d = max_abs_diff(&g.narrow(0, k as i64 * rows, rows), &sep) / scale;
                    // 1e-5: see the test's doc.
                    assert!(
                        d <= 1e-5,
                        "skip={skip} bn={batchnorm}: member {k} gradient of {name} differs by {d} of its largest value"
                    );
                }
            }
            fused_opt.step().unwrap();
            let ctx = format!("skip={skip} bn={batchnorm} {opt_kind:?}");
            for k in 0..3 {
                let l = losses.double_value(&[k as i64]);
                assert!(
                    (l - separate_losses[k]).abs() <= 1e-5 * separate_losses[k].abs(),
                    "{ctx}: loss {l} vs {}",
                    separate_losses[k]
                );
                for (g, (a, b)) in fused_norms[k].iter().zip(&separate_norms[k]).enumerate() {
                    assert!((a - b).abs() <= 1e-4 * b.abs() + 1e-7, "{ctx}: member {k} group {g} grad norm {a} vs {b}");
                }
                for (name, (t, _)) in &members[k].2 {
                    // One step: SGD's weights move by lr times the
                    // gradients above, so they agree to 1e-6 of their size.
                    // Adam's first step moves every weight by about lr
                    // whatever its gradient's size, so a weight whose
                    // gradient is at rounding level may step either way.
                    let scale = t.abs().max().double_value(&[]).max(1e-3);
                    let bound = match opt_kind {
                        OptKind::Sgd => 1e-6 * scale,
                        OptKind::Adam => 2.5e-3,
                    };
                    let d = max_abs_diff(&fused.slice(name, k).unwrap(), t);
                    assert!(d <= bound, "{ctx}: member {k} {name} differs by {d} (bound {bound})");
                }
            }
        }
    }
}

fn stacked_state(opts: &[Optimizer]) -> std::collections::HashMap<String, Tensor> {
    let per: Vec<std::collections::HashMap<String, Tensor>> =
        opts.iter().map(|o| o.state_tensors().into_iter().collect()).collect();
    per[0].keys().map(|n| (n.clone(), Tensor::cat(&per.iter().map(|m| &m[n]).collect::<Vec<_>>(), 0))).collect()
}

/// Along a 200-step trajectory of two separate runs (SGD with momentum and
/// weight decay), the fused step taken from the separate runs' exact state
/// (weights, running statistics, momentum) agrees with their next step to
/// float rounding at every point: the fused training is the same map, step
/// after step. Free-running curves can only drift apart as far as rounding
/// differences drive any two runs of that map apart, and batch-4 training
/// amplifies them: at lr 0.01 two separate runs that differ only in the
/// order of the four images within each batch (mathematically the same
/// training) are far apart within 30 steps (docs/fused-seeds.md).
#[test]
fn every_fused_step_along_a_trajectory_equals_the_separate_step() {
    let _l = TORCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let cfg = BmeConfig { depth: 8, skip: true, batchnorm: true, init: InitScheme::Default };
    let members: Vec<_> = [11i64, 12].iter().map(|&s| plain(s, &cfg)).collect();
    let mk = |named| Optimizer::sgd(named, 0.001, 0.9, 5e-4);
    let mut opts: Vec<Optimizer> = members.iter().map(|m| mk(trainable(&m.2))).collect();
    tch::manual_seed(5);
    let images = Tensor::randn([64, 3, 32, 32], (Kind::Float, Device::Cpu));
    let labels = Tensor::randint(10, [64], (Kind::Int64, Device::Cpu));
    let mut worst: Vec<f64> = Vec::new();
    for step in 0..200i64 {
        let vars: Vec<&Vars> = members.iter().map(|m| &m.2).collect();
        let fused = FusedNet::from_members(&cfg, &vars, Device::Cpu).unwrap();
        let mut fused_opt = mk(fused.trainable());
        fused_opt.load_state(&stacked_state(&opts), opts[0].steps()).unwrap();
        let batch = |k: i64| {
            let at = ((step + 7 * k) * 4) % 64;
            (images.narrow(0, at, 4), labels.narrow(0, at, 4))
        };
        let (xs, ys): (Vec<Tensor>, Vec<Tensor>) = (0..2).map(batch).unzip();
        let losses =
            FusedNet::member_losses(&fused.forward_t(&Tensor::cat(&xs, 1), true), &Tensor::stack(&ys, 0)).unwrap();
        fused_opt.zero_grad();
        losses.sum(Kind::Float).backward();
        fused_opt.step().unwrap();
        let mut w = 0f64;
        for (k, (_, net, vars)) in members.iter().enumerate() {
            let loss = net.forward_t(&xs[k], true).cross_entropy_for_logits(&ys[k]);
            opts[k].zero_grad();
            loss.backward();
            opts[k].step().unwrap();
            for (name, (t, _)) in vars {
                let scale = t.abs().max().double_value(&[]).max(1e-2);
                w = w.max(max_abs_diff(&fused.slice(name, k).unwrap(), t) / scale);
            }
        }
        worst.push(w);
    }
    let mut sorted = worst.clone();
    sorted.sort_by(f64::total_cmp);
    let (median, p95, max) = (sorted[100], sorted[190], sorted[199]);
    // Measured on this machine: median 1e-7, 95th percentile 5e-6, largest
    // 2e-4 (a step where some pre-activation sits within rounding of
    // ReLU's kink or a max-pool tie and the two kernels take different
    // branches: that unit's gradient contribution, lr x its gradient,
    // moves). Mixed members would show gaps of order 1 from the first step.
    assert!(median <= 1e-6 && p95 <= 5e-5 && max <= 2e-3, "median {median:e} p95 {p95:e} max {max:e}: {worst:?}");
}

/// A NaN in one member's weights stays in that member: the others' losses
/// and gradients are finite and unchanged.
#[test]
fn a_nan_member_does_not_touch_the_others() {
    let _l = TORCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let cfg = BmeConfig { depth: 8, skip: true, batchnorm: true, init: InitScheme::Default };
    let members: Vec<_> = [5i64, 6, 7].iter().map(|&s| plain(s, &cfg)).collect();
    let vars: Vec<&Vars> = members.iter().map(|m| &m.2).collect();
    tch::manual_seed(3);
    let x = Tensor::randn([4, 9, 32, 32], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [3, 4], (Kind::Int64, Device::Cpu));
    let run = |poison: bool| {
        let fused = FusedNet::from_members(&cfg, &vars, Device::Cpu).unwrap();
        if poison {
            let _g = tch::no_grad_guard();
            let _ = fused.slice("block02.conv1.weight", 1).unwrap().fill_(f64::NAN);
        }
        let losses = FusedNet::member_losses(&fused.forward_t(&x, true), &y).unwrap();
        losses.sum(Kind::Float).backward();
        (Vec::<f64>::try_from(&losses.to_kind(Kind::Double)).unwrap(), fused.grad_norms().unwrap())
    };
    let (clean, clean_norms) = run(false);
    let (poisoned, poisoned_norms) = run(true);
    assert!(poisoned[1].is_nan());
    for k in [0, 2] {
        assert_eq!(clean[k], poisoned[k], "member {k}'s loss changed");
        assert_eq!(clean_norms[k], poisoned_norms[k], "member {k}'s gradients changed");
        assert!(poisoned_norms[k].iter().all(|v| v.is_finite()));
    }
}

// ------------------------------------------------ through the real trainer

fn dataset() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fused-synthetic");
        cifar::generate_synthetic(&d, 64, 32, 17).unwrap();
        d
    })
}

/// 64 images at batch 4 are 16 steps an epoch.
fn trial(seed: u64, epochs: u32) -> BmenetTrial {
    BmenetTrial {
        depth: 8,
        skip: true,
        init: InitScheme::Default,
        batchnorm: true,
        seed,
        // The lecture's settings (SGD, lr 1e-4, momentum 0.9) at batch 4.
        train: TrainConfig { epochs, batch_size: 4, log_every: 8, augment: true, ..TrainConfig::default() },
        analyses: Default::default(),
        data: DataConfig {
            dataset: "cifar10".into(),
            path: dataset().to_owned(),
            train_subset: None,
            test_subset: None,
        },
    }
}

fn job(t: &BmenetTrial, dir: &Path) -> TrialJob {
    TrialJob {
        trial_id: format!("seed-{}", t.seed),
        spec: t.spec(),
        attempt: 1,
        checkpoint_dir: dir.join(format!("seed-{}", t.seed)),
        store_id: "s".into(),
        resume_step: Some(i64::MAX),
        keep_weights: false,
    }
}

type Run = (Result<TrainOutcome, TrainError>, Vec<Metric>);

/// Trains `jobs` as one group (`fused`) or one by one, each with its own
/// drained context and stop rule.
fn train(jobs: Vec<(TrialJob, Drained)>, fused: bool) -> Vec<Run> {
    let mut trainer = TorchTrainer::new(Device::Cpu, None);
    let (pairs, drains): (Vec<(TrialJob, TrainContext)>, Vec<_>) =
        jobs.into_iter().map(|(j, d)| ((j, d.ctx), d.drain)).unzip();
    let results =
        if fused { trainer.train_group(&pairs) } else { pairs.iter().map(|(j, c)| trainer.train(j, c)).collect() };
    drop(pairs);
    results.into_iter().zip(drains).map(|(r, d)| (r, d.join().unwrap())).collect()
}

fn curve(ms: &[Metric], name: &str) -> Vec<(i64, f64)> {
    ms.iter().filter(|m| m.name == name).map(|m| (m.step, m.value)).collect()
}

/// How far a free-running fused curve may be from the separate run's.
/// The first logged window (8 steps) agrees to 0.1% or better; after that, batch-4
/// training amplifies rounding differences (see the trajectory test above:
/// each step is the same map), and at the lecture's lr 1e-4 on this set the
/// curves stay within about 3% over 96 steps; 10% still catches members
/// that mix (gaps of order 1).
const FIRST_WINDOW_TOLERANCE: f64 = 5e-3;
const CURVE_TOLERANCE: f64 = 0.1;

fn assert_close(fused: &[(i64, f64)], separate: &[(i64, f64)], what: &str) {
    assert_eq!(fused.len(), separate.len(), "{what}: {fused:?} vs {separate:?}");
    assert!(!fused.is_empty(), "{what}: no points");
    for (i, ((sf, vf), (ss, vs))) in fused.iter().zip(separate).enumerate() {
        assert_eq!(sf, ss, "{what}");
        let tol = if i == 0 { FIRST_WINDOW_TOLERANCE } else { CURVE_TOLERANCE };
        assert!((vf - vs).abs() <= tol * vs.abs().max(1e-3), "{what} at step {sf}: fused {vf} vs separate {vs}");
    }
}

/// 6 epochs x 16 steps = 96 steps of three seeds, fused vs separate, through
/// the real trainer: each member its own data order, metrics and result.
#[test]
fn a_fused_group_trains_like_separate_runs() {
    let _l = TORCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let seeds = [1u64, 2, 3];
    let dir_f = tempfile::tempdir().unwrap();
    let dir_s = tempfile::tempdir().unwrap();
    let fused = train(seeds.iter().map(|&s| (job(&trial(s, 6), dir_f.path()), drained(|_| None))).collect(), true);
    let separate = train(seeds.iter().map(|&s| (job(&trial(s, 6), dir_s.path()), drained(|_| None))).collect(), false);
    for (k, ((rf, mf), (rs, ms))) in fused.iter().zip(&separate).enumerate() {
        assert!(matches!(rf, Ok(TrainOutcome::Succeeded(_))), "fused member {k}: {rf:?}");
        assert!(matches!(rs, Ok(TrainOutcome::Succeeded(_))), "separate {k}: {rs:?}");
        let loss = curve(mf, "train_loss");
        assert_eq!(loss.len(), 12, "96 steps logged every 8");
        assert_close(&loss, &curve(ms, "train_loss"), &format!("seed {} train_loss", seeds[k]));
        assert_close(&curve(mf, "test_loss"), &curve(ms, "test_loss"), &format!("seed {} test_loss", seeds[k]));
        assert_close(&curve(mf, "grad_norm/block03"), &curve(ms, "grad_norm/block03"), "grad_norm/block03");
    }
    // Different seeds really are different trainings.
    assert_ne!(curve(&fused[0].1, "train_loss")[0].1, curve(&fused[1].1, "train_loss")[0].1);
}

/// A fused group is stopped (as on SIGTERM) after epoch 1; each member
/// resumes unfused from the checkpoint the group wrote and ends where an
/// uninterrupted separate run ends. Meanwhile, a member that loses its
/// lease mid-epoch ends alone: the others' curves are exactly those of the
/// group without that loss.
#[test]
fn checkpoints_cross_between_fused_and_separate_and_members_end_alone() {
    let _l = TORCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let seeds = [4u64, 5];
    let dir = tempfile::tempdir().unwrap();
    let stop_after_epoch_1 = |ev: &TrainEvent| match ev {
        TrainEvent::Metric(m) if m.name == "test_accuracy" && m.epoch == 1 => Some(StopReason::Shutdown),
        _ => None,
    };
    let part1 =
        train(seeds.iter().map(|&s| (job(&trial(s, 3), dir.path()), drained(stop_after_epoch_1))).collect(), true);
    for (r, _) in &part1 {
        assert!(matches!(r, Ok(TrainOutcome::Stopped(StopReason::Shutdown))), "{r:?}");
    }
    let part2 = train(seeds.iter().map(|&s| (job(&trial(s, 3), dir.path()), drained(|_| None))).collect(), false);
    let other = tempfile::tempdir().unwrap();
    let whole = train(seeds.iter().map(|&s| (job(&trial(s, 3), other.path()), drained(|_| None))).collect(), false);
    for k in 0..2 {
        assert!(matches!(part2[k].0, Ok(TrainOutcome::Succeeded(_))), "{:?}", part2[k].0);
        let resumed = curve(&part2[k].1, "train_loss");
        assert_eq!(resumed.first().map(|p| p.0), Some(24), "resumed at epoch 2");
        let tail: Vec<_> = curve(&whole[k].1, "train_loss").into_iter().filter(|p| p.0 > 16).collect();
        assert_close(&resumed, &tail, "resumed train_loss");
    }

    // Member 0 loses its lease at step 24; member 1 trains on.
    let lose_at_24 = |ev: &TrainEvent| match ev {
        TrainEvent::Metric(m) if m.name == "train_loss" && m.step == 24 => Some(StopReason::LeaseLost),
        _ => None,
    };
    let d1 = tempfile::tempdir().unwrap();
    let both = train(seeds.iter().map(|&s| (job(&trial(s, 3), d1.path()), drained(|_| None))).collect(), true);
    let d2 = tempfile::tempdir().unwrap();
    let jobs = vec![
        (job(&trial(seeds[0], 3), d2.path()), drained(lose_at_24)),
        (job(&trial(seeds[1], 3), d2.path()), drained(|_| None)),
    ];
    let one_lost = train(jobs, true);
    assert!(matches!(one_lost[0].0, Ok(TrainOutcome::Stopped(StopReason::LeaseLost))), "{:?}", one_lost[0].0);
    assert!(curve(&one_lost[0].1, "train_loss").iter().all(|p| p.0 <= 24));
    assert!(matches!(one_lost[1].0, Ok(TrainOutcome::Succeeded(_))), "{:?}", one_lost[1].0);
    assert_eq!(curve(&one_lost[1].1, "train_loss"), curve(&both[1].1, "train_loss"));
    assert_eq!(curve(&one_lost[1].1, "test_accuracy"), curve(&both[1].1, "test_accuracy"));
}
