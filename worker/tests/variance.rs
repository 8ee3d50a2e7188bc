//! The variance analysis (issue 11, `[analysis] variance = true`) checked
//! against independent computations: the first layer's input variance is
//! the batch's; the prediction for the second layer follows Eq. 5 from a
//! stem with known weights (every weight +a or -a: variance a^2, fan-in 27);
//! the gradient variance at the last layer is that of (softmax - one-hot)/N
//! computed by hand from the plain network's logits; members of a fused
//! group get exactly what they get alone; and measuring changes nothing.
#![cfg(feature = "torch")]

mod nets;

use std::sync::Mutex;

use nets::member;
use sweep_core::InitScheme;
use sweep_worker::torch::batch::Normalise;
use sweep_worker::torch::bmenet::BmeConfig;
use sweep_worker::torch::cifar;
use sweep_worker::torch::device_data::DeviceSplit;
use sweep_worker::torch::fused::FusedNet;
use sweep_worker::torch::variance::{measure, BATCH};
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

static TORCH: Mutex<()> = Mutex::new(());

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

#[test]
fn variances_match_independent_computations_and_the_lecture_s_equation() {
    let _l = TORCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let root = cifar::generate_synthetic(dir.path(), 80, 8, 5).unwrap();
    let data = cifar::load(&root, None, None).unwrap();
    let train = DeviceSplit::new(&data.train, &Normalise::new(), Device::Cpu).unwrap();

    let cfg = BmeConfig { depth: 8, skip: true, batchnorm: false, init: InitScheme::Default };
    let (_va_store, net_a, va) = member(1, &cfg);
    let (_vb_store, _net_b, vb) = member(2, &cfg);
    let a = 0.05;
    {
        let _g = tch::no_grad_guard();
        let mut w = va["stem.weight"].0.shallow_clone();
        let n = w.numel() as i64;
        let signs = Tensor::arange(n, (Kind::Float, Device::Cpu)).remainder(2.0) * 2.0 - 1.0;
        w.copy_(&(signs * a).view(w.size().as_slice()));
    }
    let fused = FusedNet::from_members(&cfg, &[&va, &vb], Device::Cpu).unwrap();
    let v = measure(&fused, &train).unwrap();
    assert_eq!(v.len(), 2, "one series per member");
    // Depth 8: stem, 15 block convolutions (4 plain blocks x 2, 2 downsampling
    // blocks x 3, the widening block's 1), fc1, fc2.
    assert_eq!(v[0].len(), 18);

    let order: Vec<usize> = (0..BATCH).collect();
    let (x, y) = train.batch(&order, None).unwrap();
    let var_x = x.to_kind(Kind::Double).var(false).double_value(&[]);
    assert!(rel(v[0][0].forward, var_x) < 1e-9, "{} vs {var_x}", v[0][0].forward);
    assert!(rel(v[0][0].forward_predicted, var_x) < 1e-9);
    let predicted = var_x * 27.0 * a * a;
    // 1e-6: the weights are f32, so a is 0.05 to f32 rounding.
    assert!(rel(v[0][1].forward_predicted, predicted) < 1e-6, "{} vs {predicted}", v[0][1].forward_predicted);

    let logits = net_a.forward_t(&x, false).to_kind(Kind::Double);
    let onehot = y.one_hot(10).to_kind(Kind::Double);
    let grad = (logits.softmax(-1, Kind::Double) - onehot) / BATCH as f64;
    let want = grad.var(false).double_value(&[]);
    let got = v[0][17].backward;
    assert!(rel(got, want) < 1e-4, "dL/dlogits variance {got} vs {want}");
    assert!(rel(v[0][17].backward_predicted, got) < 1e-12, "Eq. 6 starts from the last layer's measured value");
    assert!(v[0].iter().all(|l| l.forward > 0.0 && l.backward > 0.0));
    // Eq. 6 one layer back: fc2's fan-out (10 outputs) times its weight
    // variance, from the plain network's fc2 weights.
    let fc2 = va["fc2.weight"].0.to_kind(Kind::Double).var(false).double_value(&[]);
    let want = v[0][17].backward * 10.0 * fc2;
    assert!(rel(v[0][16].backward_predicted, want) < 1e-9, "{} vs {want}", v[0][16].backward_predicted);
    // Eq. 5 one layer on: the second layer's fan-in times its weight variance.
    let w1 = va["block01.conv1.weight"].0.to_kind(Kind::Double).var(false).double_value(&[]);
    let want = v[0][1].forward_predicted * 64.0 * 9.0 * w1;
    assert!(rel(v[0][2].forward_predicted, want) < 1e-9, "{} vs {want}", v[0][2].forward_predicted);

    for (k, vars) in [&va, &vb].into_iter().enumerate() {
        let alone = measure(&FusedNet::from_members(&cfg, &[vars], Device::Cpu).unwrap(), &train).unwrap();
        for (l, (f, s)) in v[k].iter().zip(&alone[0]).enumerate() {
            for (got, want) in [
                (f.forward, s.forward),
                (f.backward, s.backward),
                (f.forward_predicted, s.forward_predicted),
                (f.backward_predicted, s.backward_predicted),
            ] {
                assert!(rel(got, want) < 1e-4, "member {k} layer {l}: {got} fused vs {want} alone");
            }
        }
    }
    for (name, t) in fused.trainable() {
        assert!(!t.grad().defined(), "{name}: measuring left a gradient behind");
    }
}
