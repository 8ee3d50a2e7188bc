//! The lesion study (issue 11, `[analysis] lesion = true`), checked against
//! independent computations: a fused network with a block removed computes
//! what the plain network (tch modules, another code path) computes without
//! that block; the study's numbers are evaluations of those lesioned
//! networks; fusing seeds does not change any member's numbers; a stop
//! request ends the study early.
#![cfg(feature = "torch")]

mod nets;

use std::path::Path;
use std::sync::Mutex;

use nets::member;
use sweep_core::InitScheme;
use sweep_worker::torch::batch::Normalise;
use sweep_worker::torch::bmenet::{BmeConfig, BmeNet};
use sweep_worker::torch::cifar;
use sweep_worker::torch::device_data::DeviceSplit;
use sweep_worker::torch::eval::{evaluate, evaluate_without};
use sweep_worker::torch::fused::FusedNet;
use sweep_worker::torch::lesion::{draws, removable, study, DRAWS, MAX_REMOVED};
use tch::nn;
use tch::{Device, Kind, Tensor};

/// libtorch's RNG is process-global: networks in this file are built in turn.
static TORCH: Mutex<()> = Mutex::new(());

/// Trains `net` a few steps so its batch-norm statistics and weights are
/// not the initial ones (a lesion of an untrained network says little).
fn nudge(net: &BmeNet, vs: &nn::VarStore) {
    use tch::nn::{ModuleT, OptimizerConfig};
    let mut opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(vs, 0.01).unwrap();
    for _ in 0..3 {
        let x = Tensor::randn([16, 3, 32, 32], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(10, [16], (Kind::Int64, Device::Cpu));
        opt.backward_step(&net.forward_t(&x, true).cross_entropy_for_logits(&y));
    }
}

#[test]
fn a_fused_lesion_is_the_plain_network_without_that_block() {
    let _l = TORCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for skip in [true, false] {
        let cfg = BmeConfig { depth: 8, skip, batchnorm: true, init: InitScheme::Default };
        let (vs_a, net_a, va) = member(1, &cfg);
        let (vs_b, net_b, vb) = member(2, &cfg);
        nudge(&net_a, &vs_a);
        nudge(&net_b, &vs_b);
        let fused = FusedNet::from_members(&cfg, &[&va, &vb], Device::Cpu).unwrap();
        let blocks = removable(fused.blocks());
        assert_eq!(blocks, vec![0, 2, 4, 6], "depth 8: one plain block per section");
        let x = Tensor::randn([5, 3, 32, 32], (Kind::Float, Device::Cpu));
        let _g = tch::no_grad_guard();
        let mut sets: Vec<Vec<usize>> = blocks.iter().map(|&b| vec![b]).collect();
        sets.push(vec![]);
        sets.push(vec![0, 6]);
        for removed in sets {
            let both = fused.forward_without(&Tensor::cat(&[&x, &x], 1), false, &removed);
            for (k, net) in [&net_a, &net_b].into_iter().enumerate() {
                let want = net.forward_without(&x, false, &removed);
                let got = both.get(k as i64);
                let diff = (&got - &want).abs().max().double_value(&[]);
                let scale = want.abs().max().double_value(&[]);
                assert!(diff <= 1e-4 * scale.max(1.0), "skip={skip} removed={removed:?} member {k}: off by {diff}");
            }
        }
        // Removing a block changes the output (it is not a no-op). In train
        // mode: this barely trained plain network's eval-mode output hardly
        // depends on its input at all (batch norm's running statistics are
        // still near their initial values, so the signal fades with depth).
        let intact = net_a.forward_without(&x, true, &[]);
        let lesioned = net_a.forward_without(&x, true, &[2]);
        let moved = (&intact - &lesioned).abs().max().double_value(&[]);
        let scale = intact.abs().max().double_value(&[]);
        assert!(moved > 1e-2 * scale, "skip={skip}: removing a block moved the output by {moved} of {scale}");
    }
}

fn test_split(dir: &Path) -> DeviceSplit {
    let root = cifar::generate_synthetic(dir, 16, 60, 3).unwrap();
    let data = cifar::load(&root, None, None).unwrap();
    DeviceSplit::new(&data.test, &Normalise::new(), Device::Cpu).unwrap()
}

#[test]
fn the_study_reports_evaluations_of_the_lesioned_networks_for_each_member() {
    let _l = TORCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let test = test_split(dir.path());
    let cfg = BmeConfig { depth: 16, skip: true, batchnorm: true, init: InitScheme::Default };
    let (vs_a, net_a, va) = member(3, &cfg);
    let (vs_b, net_b, vb) = member(4, &cfg);
    nudge(&net_a, &vs_a);
    nudge(&net_b, &vs_b);
    let fused = FusedNet::from_members(&cfg, &[&va, &vb], Device::Cpu).unwrap();
    let accuracies = |net: &FusedNet, removed: &[usize]| -> Vec<f64> {
        evaluate_without(net, &test, removed).unwrap().into_iter().map(|e| e.accuracy).collect()
    };
    let intact = accuracies(&fused, &[]);
    assert_eq!(intact, evaluate(&fused, &test).unwrap().into_iter().map(|e| e.accuracy).collect::<Vec<_>>());
    let s = study(&fused, &test, &intact, || false).unwrap().expect("not stopped");

    let blocks = removable(fused.blocks());
    assert_eq!(blocks.len(), 8);
    assert_eq!(s.per_block.len(), 8);
    for ((position, acc), &b) in s.per_block.iter().zip(&blocks) {
        assert_eq!(*position, b as i64 + 1, "1-based block positions");
        assert_eq!(acc, &accuracies(&fused, &[b]));
    }
    let ks: Vec<i64> = s.per_removed.iter().map(|(k, _)| *k).collect();
    assert_eq!(ks, (0..=MAX_REMOVED as i64).collect::<Vec<_>>());
    assert_eq!(s.per_removed[0].1, intact);
    for m in 0..2 {
        let mean_single = s.per_block.iter().map(|(_, a)| a[m]).sum::<f64>() / 8.0;
        assert!((s.per_removed[1].1[m] - mean_single).abs() < 1e-12);
        for k in 2..=MAX_REMOVED {
            let sets = draws(&blocks, k);
            let want = sets.iter().map(|set| accuracies(&fused, set)[m]).sum::<f64>() / sets.len() as f64;
            assert!((s.per_removed[k].1[m] - want).abs() < 1e-12, "k={k} member {m}");
        }
    }
    assert_eq!(s.evaluations, 8 + (MAX_REMOVED - 1) * DRAWS);

    // Each member alone gets its own numbers from the fused study.
    for (k, vars) in [&va, &vb].into_iter().enumerate() {
        let alone = FusedNet::from_members(&cfg, &[vars], Device::Cpu).unwrap();
        let alone_intact = accuracies(&alone, &[]);
        let a = study(&alone, &test, &alone_intact, || false).unwrap().unwrap();
        for ((_, fused_acc), (_, alone_acc)) in s.per_block.iter().zip(&a.per_block) {
            assert_eq!(fused_acc[k], alone_acc[0], "member {k}");
        }
    }

    // A stop request ends the study before its next evaluation.
    let asked = std::cell::Cell::new(0);
    let stopped = study(&fused, &test, &intact, || {
        asked.set(asked.get() + 1);
        asked.get() > 3
    })
    .unwrap();
    assert!(stopped.is_none());
    assert_eq!(asked.get(), 4);
}
