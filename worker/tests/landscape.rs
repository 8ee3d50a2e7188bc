//! The loss landscape (issue 11, `[analysis] landscape = true`) checked
//! against independent computations: at the grid's centre the loss is the
//! trained network's loss on the same images; a point off the centre is the
//! loss of a network whose weights were moved by hand along the direction;
//! directions are filter-normalised and drawn per seed; the weights are
//! restored bit for bit, also when the study is stopped.
#![cfg(feature = "torch")]

mod nets;

use std::sync::Mutex;

use nets::member;
use sweep_core::bmenet::LandscapeConfig;
use sweep_core::InitScheme;
use sweep_worker::torch::batch::Normalise;
use sweep_worker::torch::bmenet::BmeConfig;
use sweep_worker::torch::cifar;
use sweep_worker::torch::device_data::DeviceSplit;
use sweep_worker::torch::eval::evaluate_first;
use sweep_worker::torch::fused::FusedNet;
use sweep_worker::torch::landscape::{direction, sharpness, study, Landscape};
use tch::{Device, Tensor};

static TORCH: Mutex<()> = Mutex::new(());

fn snapshot(net: &FusedNet) -> Vec<(String, Tensor)> {
    net.trainable().into_iter().map(|(n, t)| (n, t.detach().copy())).collect()
}

fn unchanged(net: &FusedNet, before: &[(String, Tensor)]) {
    for ((n, t), (_, b)) in net.trainable().iter().zip(before) {
        assert_eq!((t - b).abs().max().double_value(&[]), 0.0, "{n} was not restored");
    }
}

#[test]
fn the_landscape_is_the_loss_of_the_moved_weights_and_leaves_them_as_they_were() {
    let _l = TORCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let root = cifar::generate_synthetic(dir.path(), 48, 8, 9).unwrap();
    let data = cifar::load(&root, None, None).unwrap();
    let train = DeviceSplit::new(&data.train, &Normalise::new(), Device::Cpu).unwrap();
    let cfg = BmeConfig { depth: 8, skip: true, batchnorm: true, init: InitScheme::Default };
    let (_sa, _na, va) = member(1, &cfg);
    let (_sb, _nb, vb) = member(2, &cfg);
    let net = FusedNet::from_members(&cfg, &[&va, &vb], Device::Cpu).unwrap();
    let seeds = [11u64, 12];
    let grid = LandscapeConfig { resolution: 5, span: 0.5, images: 40, dims: 2 };
    let before = snapshot(&net);
    let l = study(&net, &train, &grid, &seeds, || false).unwrap().expect("not stopped");
    unchanged(&net, &before);
    assert_eq!((l.loss.len(), l.accuracy.len()), (25, 25));
    assert!(l.loss.iter().flatten().all(|x| x.is_finite() && *x > 0.0));

    // The centre: the trained weights' loss on the same 40 images.
    let at_w = evaluate_first(&net, &train, 40, &[]).unwrap();
    for (k, e) in at_w.iter().enumerate() {
        assert_eq!(l.loss[12][k], e.loss, "member {k}: centre");
        assert_eq!(l.accuracy[12][k], e.accuracy);
    }
    // Point (i = 0, j = 2): -span along direction 1 only, by hand on a copy.
    let moved = FusedNet::from_members(&cfg, &[&va, &vb], Device::Cpu).unwrap();
    let d1 = direction(&moved, &seeds, 1).unwrap();
    {
        let _g = tch::no_grad_guard();
        for (name, t) in moved.trainable() {
            if let Some(d) = d1.get(&name) {
                t.shallow_clone().copy_(&(&t - d * 0.5));
            }
        }
    }
    let by_hand = evaluate_first(&moved, &train, 40, &[]).unwrap();
    for (k, e) in by_hand.iter().enumerate() {
        let (got, want) = (l.loss[2][k], e.loss);
        assert!((got - want).abs() <= 1e-6 * want, "member {k}: {got} vs {want} by hand");
        assert_ne!(l.loss[2][k], l.loss[12][k], "moving the weights changes the loss");
    }

    // Directions: one per convolution and linear weight, each filter at the
    // trained filter's norm; per seed (the same seed, the same direction).
    assert!(
        d1.keys().all(|n| n.ends_with(".weight")) && d1.contains_key("stem.weight") && d1.contains_key("fc2.weight")
    );
    assert!(!d1.keys().any(|n| n.contains("bn")), "batch norm gets no direction");
    for (name, d) in &d1 {
        let w = moved.trainable().into_iter().find(|(n, _)| n == name).unwrap().1;
        let rows = d.size()[0];
        let dn = d.reshape([rows, -1]).norm_scalaropt_dim(2, [1i64].as_slice(), false);
        let wn = before.iter().find(|(n, _)| n == name).unwrap().1.reshape([rows, -1]).norm_scalaropt_dim(
            2,
            [1i64].as_slice(),
            false,
        );
        let rel = ((&dn - &wn).abs() / wn.clamp_min(1e-12)).max().double_value(&[]);
        assert!(rel < 1e-4, "{name}: filter norms off by {rel}");
        assert_eq!(w.size(), d.size());
    }
    let again = direction(&net, &seeds, 1).unwrap();
    assert_eq!((&again["stem.weight"] - &d1["stem.weight"]).abs().max().double_value(&[]), 0.0);
    let other = direction(&net, &[13, 12], 1).unwrap();
    let rows = other["fc1.weight"].size()[0] / 2;
    let (m0, m1) = (other["fc1.weight"].narrow(0, 0, rows), d1["fc1.weight"].narrow(0, 0, rows));
    assert!((&m0 - &m1).abs().max().double_value(&[]) > 0.0, "another seed, another direction");
    let (m0, m1) = (other["fc1.weight"].narrow(0, rows, rows), d1["fc1.weight"].narrow(0, rows, rows));
    assert_eq!((&m0 - &m1).abs().max().double_value(&[]), 0.0, "member 1's seed is unchanged");

    // 1-D: a line of `resolution` points; a stop leaves the weights as well.
    let line = study(&net, &train, &LandscapeConfig { dims: 1, ..grid }, &seeds, || false).unwrap().unwrap();
    assert_eq!(line.loss.len(), 5);
    assert_eq!(line.loss[2], l.loss[12], "the same centre");
    let asked = std::cell::Cell::new(0);
    let stopped = study(&net, &train, &grid, &seeds, || {
        asked.set(asked.get() + 1);
        asked.get() > 3
    })
    .unwrap();
    assert!(stopped.is_none());
    unchanged(&net, &before);
}

#[test]
fn sharpness_is_the_mean_rise_at_half_the_span_on_the_axes() {
    // 5 x 5 grid: the centre is point 12; half the span is index 1 and 3.
    let mut loss = vec![vec![10.0]; 25];
    loss[12] = vec![1.0];
    for (p, v) in [(7, 2.0), (17, 4.0), (11, 3.0), (13, 5.0)] {
        loss[p] = vec![v];
    }
    let l = Landscape { accuracy: vec![vec![0.5]; 25], loss };
    let cfg = LandscapeConfig { resolution: 5, span: 1.0, images: 1, dims: 2 };
    assert_eq!(sharpness(&l, &cfg), vec![(2.0 + 4.0 + 3.0 + 5.0) / 4.0 - 1.0]);
}
