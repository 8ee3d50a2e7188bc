//! Plain BMEnets for the trainer's numeric tests: built from a seed, with
//! their variables by name, as the fused network takes them.
#![allow(dead_code)]

use std::collections::BTreeMap;

use sweep_worker::torch::bmenet::{BmeConfig, BmeNet};
use tch::nn;
use tch::{Device, Tensor};

/// A network's variables by name: (tensor, trainable).
pub(crate) type Vars = BTreeMap<String, (Tensor, bool)>;

/// A plain network of `cfg` on the CPU, initialised from `seed` (callers
/// hold a lock: libtorch's generator is process-wide).
pub(crate) fn member(seed: i64, cfg: &BmeConfig) -> (nn::VarStore, BmeNet, Vars) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = BmeNet::new(&vs.root(), cfg).unwrap();
    let vars = vs.variables().into_iter().map(|(n, t)| (n, (t.shallow_clone(), t.requires_grad()))).collect();
    (vs, net, vars)
}
