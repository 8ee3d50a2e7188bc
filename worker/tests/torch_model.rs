//! BMEnet structure: parameter totals (checked against closed-form
//! formulas written out here independently of the summary code), output
//! shapes, parameter groups and initialisation spreads.
#![cfg(feature = "torch")]

use sweep_core::InitScheme;
use sweep_worker::torch::bmenet::{self, BmeConfig, BmeNet};
use sweep_worker::torch::summary::{self, model_table, param_counts};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

const DEPTHS: [u32; 4] = [8, 16, 32, 64];

fn conv(i: u64, o: u64, k: u64) -> u64 {
    i * o * k * k + o
}

/// (distinct, per call) by formula.
fn expected(depth: u32, bn: bool) -> (u64, u64) {
    let n = (depth / 8) as u64;
    let bnp = |c: u64| if bn { 2 * c } else { 0 };
    let plain64 = 2 * conv(64, 64, 3) + 2 * bnp(64);
    let plain128 = 2 * conv(128, 128, 3) + 2 * bnp(128);
    let ds64 = plain64 + conv(64, 64, 1);
    let ds128 = plain128 + conv(128, 128, 1);
    let widen = conv(64, 128, 3) + bnp(128);
    let distinct = conv(3, 64, 3)
        + 2 * n * plain64
        + ds64
        + widen
        + 2 * n * plain128
        + ds128
        + (2048 * 1000 + 1000)
        + (1000 * 10 + 10);
    (distinct, distinct + conv(64, 64, 1) + conv(128, 128, 1))
}

fn build(depth: u32, skip: bool, batchnorm: bool, init: InitScheme) -> (nn::VarStore, BmeNet) {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = BmeNet::new(&vs.root(), &BmeConfig { depth, skip, batchnorm, init }).unwrap();
    (vs, net)
}

fn trainable_numel(vs: &nn::VarStore) -> u64 {
    vs.trainable_variables().iter().map(|t| t.numel() as u64).sum()
}

#[test]
fn lecture_figures_at_depth_32() {
    assert_eq!(param_counts(32, true, true).unwrap(), (5_483_714, 5_504_386));
    assert_eq!(expected(32, true), (5_483_714, 5_504_386));
    // The lecture's 5,578,498 is ours plus the unused second 64->128 conv + BN.
    assert_eq!(5_504_386 + conv(64, 128, 3) + 256, 5_578_498);
    let t = model_table(32, true, true);
    for s in ["5,483,714", "5,504,386", "5,578,498", "Conv2d-1", "[-1, 64, 32, 32]", "Linear"] {
        assert!(t.contains(s), "table lacks {s}:\n{t}");
    }
}

#[test]
fn parameter_totals_all_configs() {
    for depth in DEPTHS {
        for skip in [true, false] {
            for bn in [true, false] {
                let want = expected(depth, bn);
                assert_eq!(param_counts(depth, skip, bn).unwrap(), want, "d={depth} s={skip} bn={bn}");
                let (vs, net) = build(depth, skip, bn, InitScheme::Default);
                assert_eq!(trainable_numel(&vs), want.0, "real net d={depth} s={skip} bn={bn}");
                // Groups hold every trainable parameter exactly once.
                let groups = net.param_groups();
                let in_groups: u64 = groups.iter().flat_map(|g| &g.params).map(|t| t.numel() as u64).sum();
                assert_eq!(in_groups, want.0);
                let names: Vec<_> = groups.iter().map(|g| g.name.clone()).collect();
                assert_eq!(names, bmenet::group_names(depth).unwrap());
                // Zero-padded block names sort in network order.
                let blocks = &names[1..names.len() - 2];
                assert!(blocks.windows(2).all(|w| w[0] < w[1]), "{blocks:?}");
                assert_eq!(names.len(), 4 * (depth as usize / 8) + 3 + 3);
                // With BN off there are no BN variables at all.
                let has_bn = vs.variables().keys().any(|k| k.contains(".bn"));
                assert_eq!(has_bn, bn);
            }
        }
    }
}

#[test]
fn bad_depth_is_an_error_not_a_panic() {
    for d in [0, 7, 12, 33] {
        assert!(param_counts(d, true, true).is_err());
        assert!(summary::try_model_table(d, true, true).is_err());
        assert!(model_table(d, true, true).contains("multiple of 8"));
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = BmeConfig { depth: d, skip: true, batchnorm: true, init: InitScheme::Default };
        assert!(BmeNet::new(&vs.root(), &cfg).is_err());
    }
}

#[test]
fn output_shapes_match_summary() {
    let _g = tch::no_grad_guard();
    tch::manual_seed(0);
    for depth in DEPTHS {
        for skip in [true, false] {
            for bn in [true, false] {
                let (_vs, net) = build(depth, skip, bn, InitScheme::Default);
                let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
                for train in [false, true] {
                    assert_eq!(net.forward_t(&x, train).size(), vec![2, 10]);
                }
                let rows = summary::layer_rows(depth, skip, bn).unwrap();
                let trace = net.trace(&x, false);
                for (name, t) in &trace {
                    // The summary's last row of a group is that group's output.
                    let row = rows.iter().rev().find(|r| &r.group == name).unwrap();
                    let mut want = row.shape.clone();
                    want[0] = 2;
                    assert_eq!(&t.size(), &want, "d={depth} {name}");
                }
            }
        }
    }
}

#[test]
fn gradients_reach_every_group() {
    tch::manual_seed(1);
    for skip in [true, false] {
        let (_vs, net) = build(8, skip, true, InitScheme::Default);
        let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 3]);
        net.forward_t(&x, true).cross_entropy_for_logits(&y).backward();
        for g in net.param_groups() {
            let n: f64 = g.params.iter().map(|p| p.grad().square().sum(Kind::Double).double_value(&[])).sum();
            assert!(n > 0.0 && n.is_finite(), "group {} has no gradient", g.name);
        }
    }
}

fn std_of(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).std(true).double_value(&[])
}

fn mean_of(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).mean(Kind::Double).double_value(&[])
}

#[test]
fn init_schemes_have_expected_spread() {
    tch::manual_seed(7);
    // block04 is the 64->128 conv of a depth-8 net: fan_in 576, fan_out 1152,
    // so Xavier (both fans) and Kaiming (fan_in) are told apart.
    let cases: [(&str, f64, f64); 3] = [
        ("block04.conv1.weight", 64.0 * 9.0, 128.0 * 9.0),
        ("block05.conv1.weight", 128.0 * 9.0, 128.0 * 9.0),
        ("fc1.weight", 2048.0, 1000.0),
    ];
    for init in InitScheme::ALL {
        let (vs, _net) = build(8, true, true, init);
        let vars = vs.variables();
        for (name, fan_in, fan_out) in cases {
            let w = &vars[name];
            let theory = match init {
                InitScheme::Default => 1.0 / (3.0 * fan_in).sqrt(),
                InitScheme::XavierUniform | InitScheme::XavierNormal => (2.0 / (fan_in + fan_out)).sqrt(),
                InitScheme::KaimingUniform | InitScheme::KaimingNormal => (2.0 / fan_in).sqrt(),
            };
            let s = std_of(w);
            assert!((s / theory - 1.0).abs() < 0.03, "{init} {name}: std {s} vs {theory}");
            assert!(mean_of(w).abs() < 0.05 * theory, "{init} {name}: mean {}", mean_of(w));
            let max = w.abs().max().double_value(&[]);
            match init {
                InitScheme::Default | InitScheme::XavierUniform | InitScheme::KaimingUniform => {
                    // Uniform: bounded by sqrt(3) std.
                    assert!(max <= 3f64.sqrt() * theory * 1.0001, "{init} {name}: max {max}");
                }
                _ => assert!(max > 3f64.sqrt() * theory, "{init} {name}: normal tails expected"),
            }
            let bias = &vars[&name.replace("weight", "bias")];
            if init == InitScheme::Default {
                let bound = 1.0 / fan_in.sqrt();
                let bmax = bias.abs().max().double_value(&[]);
                assert!(bmax > 0.0 && bmax <= bound * 1.0001, "{name}: bias max {bmax}");
            } else {
                assert_eq!(bias.abs().max().double_value(&[]), 0.0, "{init} {name}: bias not 0");
            }
        }
        for (k, v) in &vars {
            if k.contains(".bn") && k.ends_with(".weight") {
                assert_eq!(v.min().double_value(&[]), 1.0, "{init} {k}");
                assert_eq!(v.max().double_value(&[]), 1.0, "{init} {k}");
            }
            if k.contains(".bn") && k.ends_with(".bias") {
                assert_eq!(v.abs().max().double_value(&[]), 0.0, "{init} {k}");
            }
        }
    }
}
