//! K BMEnets of one configuration trained as one network ("fused seeds",
//! after HFTA: Wang et al., MLSys 2021): the K seeds of a grid cell share
//! every kernel launch instead of taking turns on the device.
//!
//! Every fused tensor is the K members' tensors of the same name stacked
//! along dimension 0 (`[K * rows, ...]`), so member `k`'s slice is
//! `narrow(0, k * rows, rows)` for weights, biases, batch-norm parameters
//! and running statistics alike. The forward pass keeps the members apart:
//!
//! - activations stack the members along the channel axis (`[N, K*C, H, W]`);
//! - convolutions are grouped convolutions with `groups = K` (group `k` sees
//!   only member `k`'s channels and weights);
//! - batch norm normalises each of the `K*C` channels on its own, exactly as
//!   K separate layers of `C` channels do (running statistics included);
//! - the two linear layers are batched matrix products over the K members
//!   (`[K, N, in] x [K, in, out]`); with `K = 1` they are the plain network's
//!   `linear`, so a group of one computes what [`super::bmenet::BmeNet`] does;
//! - the output is `[K, N, 10]`: member `k`'s logits for its own batch.
//!
//! Members are built from plain networks ([`FusedNet::from_members`]) and
//! copied back into them ([`FusedNet::copy_member_into`]), so initialisation
//! (seeded per member), checkpoints and final weights are exactly those of
//! an unfused trial: a checkpoint written by a fused group resumes unfused
//! and the other way round.
//!
//! With [`Precision::Bf16`] ([`FusedNet::with_precision`]) the convolutions
//! and linear layers take bfloat16 inputs and bfloat16 copies of their
//! weights, and the activations between them stay bfloat16, as PyTorch's
//! autocast runs a network; the weights themselves, their gradients (the
//! casts are differentiable), the optimiser state, batch norm's parameters
//! and statistics and the loss stay 32-bit. tch cannot choose autocast's
//! dtype, so the casts are written here.
//!
//! Because each member's loss depends only on its own parameters, the
//! gradient of the summed losses with respect to member `k`'s slice is the
//! gradient of member `k`'s loss alone, and the optimiser's element-wise
//! update of a fused tensor is the K members' updates side by side.

use std::cell::RefCell;
use std::collections::BTreeMap;

use sweep_core::Precision;
use tch::{Kind, TchError, Tensor};

use super::bmenet::{group_names, layout, BlockKind, BlockSpec, BmeConfig, ModelError};

/// Batch-norm momentum and epsilon: tch's (and PyTorch's) defaults, which
/// the plain network uses.
const BN_MOMENTUM: f64 = 0.1;
const BN_EPS: f64 = 1e-5;

/// One fused tensor and whether the optimiser trains it.
#[derive(Debug)]
struct Fused {
    tensor: Tensor,
    trainable: bool,
    /// Rows of one member along dimension 0.
    rows: i64,
}

/// K members of one BMEnet configuration as one network.
#[derive(Debug)]
pub struct FusedNet {
    pub config: BmeConfig,
    k: i64,
    blocks: Vec<BlockSpec>,
    tensors: BTreeMap<String, Fused>,
    /// The kind convolutions and linear layers compute in.
    compute: Kind,
    /// While [`FusedNet::forward_traced`] runs: each weight layer's first
    /// call, in order.
    trace: RefCell<Option<Vec<Traced>>>,
}

/// One weight layer's call during [`FusedNet::forward_traced`]: what the
/// variance analysis needs.
#[derive(Debug)]
pub struct Traced {
    /// `stem`, `block03.conv1`, `fc2`, ...
    pub name: String,
    /// The layer's input (`[N, K*C, H, W]` or `[K, N, in]`).
    pub input: Tensor,
    /// Its output before any activation (part of the autograd graph).
    pub output: Tensor,
    /// Inputs each output sums over, and outputs each input feeds (per
    /// member: channels x kernel area).
    pub fan_in: i64,
    pub fan_out: i64,
    /// The fused weight (`[K * out, ...]`).
    pub weight: Tensor,
}

impl FusedNet {
    /// Stacks the variables of `members` (each a plain network's
    /// `VarStore::variables()`, all of the same configuration) onto
    /// `device`. Trainable variables come out as fresh leaves that require
    /// gradients; running statistics do not.
    pub fn from_members(
        config: &BmeConfig,
        members: &[&BTreeMap<String, (Tensor, bool)>],
        device: tch::Device,
    ) -> Result<FusedNet, ModelError> {
        let first = members.first().ok_or_else(|| ModelError::Torch("a fused network needs one member".into()))?;
        let _guard = tch::no_grad_guard();
        let mut tensors = BTreeMap::new();
        for (name, (t0, trainable)) in *first {
            let mut parts = Vec::with_capacity(members.len());
            for (i, m) in members.iter().enumerate() {
                let (t, _) = m.get(name).ok_or_else(|| ModelError::Torch(format!("member {i} lacks {name}")))?;
                if t.size() != t0.size() {
                    return Err(ModelError::Torch(format!(
                        "member {i}: {name} has shape {:?}, not {:?}",
                        t.size(),
                        t0.size()
                    )));
                }
                parts.push(t.f_to_device(device)?);
            }
            let tensor = Tensor::f_cat(&parts, 0)?.f_detach()?.set_requires_grad(*trainable);
            let rows = t0.size().first().copied().unwrap_or(1);
            tensors.insert(name.clone(), Fused { tensor, trainable: *trainable, rows });
        }
        Ok(FusedNet {
            config: *config,
            k: members.len() as i64,
            blocks: layout(config.depth)?,
            tensors,
            compute: Kind::Float,
            trace: RefCell::new(None),
        })
    }

    /// The network computing at `precision` (32-bit unless told).
    pub fn with_precision(mut self, precision: Precision) -> FusedNet {
        self.compute = match precision {
            Precision::Fp32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        };
        self
    }

    /// `t` in the compute kind: itself at 32 bits, else a differentiable
    /// cast.
    fn low(&self, t: &Tensor) -> Tensor {
        if self.compute == Kind::Float {
            t.shallow_clone()
        } else {
            t.to_kind(self.compute)
        }
    }

    /// Members in the group.
    pub fn members(&self) -> usize {
        self.k as usize
    }

    /// The SkipBlocks, input to output.
    pub fn blocks(&self) -> &[BlockSpec] {
        &self.blocks
    }

    /// The trainable fused tensors by name (shallow clones), in name order:
    /// what the optimiser updates.
    pub fn trainable(&self) -> Vec<(String, Tensor)> {
        self.tensors.iter().filter(|(_, f)| f.trainable).map(|(n, f)| (n.clone(), f.tensor.shallow_clone())).collect()
    }

    /// Member `k`'s slice of the fused tensor `name` (a view).
    pub fn slice(&self, name: &str, k: usize) -> Result<Tensor, TchError> {
        let f = self.tensors.get(name).ok_or_else(|| TchError::Kind(format!("no fused tensor {name}")))?;
        f.tensor.f_narrow(0, k as i64 * f.rows, f.rows)
    }

    /// Member `k`'s slice of `fused` (a fused tensor of the same layout as
    /// the variable `name`, e.g. its optimiser state).
    pub fn slice_like(&self, name: &str, fused: &Tensor, k: usize) -> Result<Tensor, TchError> {
        let f = self.tensors.get(name).ok_or_else(|| TchError::Kind(format!("no fused tensor {name}")))?;
        fused.f_narrow(0, k as i64 * f.rows, f.rows)
    }

    /// Copies member `k`'s weights and running statistics into `vars` (a
    /// plain network's variables: same names), e.g. before its checkpoint.
    pub fn copy_member_into(&self, k: usize, vars: &BTreeMap<String, (Tensor, bool)>) -> Result<(), TchError> {
        let _guard = tch::no_grad_guard();
        for (name, (dst, _)) in vars {
            let mut dst = dst.shallow_clone();
            dst.f_copy_(&self.slice(name, k)?)?;
        }
        Ok(())
    }

    fn get(&self, name: &str) -> &Tensor {
        // Every name below comes from the same layout the members were
        // built with, so a miss is a bug in this file.
        match self.tensors.get(name) {
            Some(f) => &f.tensor,
            None => panic!("fused BMEnet has no tensor {name}"),
        }
    }

    fn conv(&self, x: &Tensor, prefix: &str, stride: i64, padding: i64) -> Tensor {
        let weight = self.get(&format!("{prefix}.weight"));
        let w = self.low(weight);
        let b = self.low(self.get(&format!("{prefix}.bias")));
        let out = x.conv2d(&w, Some(b), [stride, stride], [padding, padding], [1, 1], self.k);
        let s = weight.size();
        let area = s[2] * s[3];
        self.record(prefix, x, &out, (s[1] * area, s[0] / self.k * area), weight);
        out
    }

    /// Adds a layer's first call to the trace, while one is taken.
    fn record(&self, name: &str, input: &Tensor, output: &Tensor, (fan_in, fan_out): (i64, i64), weight: &Tensor) {
        if let Some(trace) = self.trace.borrow_mut().as_mut() {
            if trace.iter().all(|t| t.name != name) {
                trace.push(Traced {
                    name: name.to_owned(),
                    input: input.shallow_clone(),
                    output: output.shallow_clone(),
                    fan_in,
                    fan_out,
                    weight: weight.shallow_clone(),
                });
            }
        }
    }

    /// [`Self::forward_t`], also returning every weight layer's input and
    /// output ([`Traced`]) in call order (a layer called twice, the skip
    /// path's downsampler, is recorded once).
    pub fn forward_traced(&self, xs: &Tensor, train: bool) -> (Tensor, Vec<Traced>) {
        *self.trace.borrow_mut() = Some(Vec::new());
        let logits = self.forward_t(xs, train);
        let trace = self.trace.borrow_mut().take().unwrap_or_default();
        (logits, trace)
    }

    /// Batch norm of a 32-bit or bfloat16 `x` (libtorch normalises a
    /// bfloat16 input with 32-bit parameters and statistics, as autocast
    /// does), in `x`'s kind.
    fn bn(&self, x: Tensor, prefix: &str, train: bool) -> Tensor {
        if !self.config.batchnorm {
            return x;
        }
        Tensor::batch_norm(
            &x,
            Some(self.get(&format!("{prefix}.weight"))),
            Some(self.get(&format!("{prefix}.bias"))),
            Some(self.get(&format!("{prefix}.running_mean"))),
            Some(self.get(&format!("{prefix}.running_var"))),
            train,
            BN_MOMENTUM,
            BN_EPS,
            true,
        )
    }

    /// `[K, N, in] -> [K, N, out]`, member by member.
    fn linear(&self, x: &Tensor, prefix: &str) -> Tensor {
        let weight = self.get(&format!("{prefix}.weight"));
        let w = self.low(weight);
        let b = self.low(self.get(&format!("{prefix}.bias")));
        let s = weight.size();
        let out = s[0] / self.k;
        let y = if self.k == 1 {
            x.squeeze_dim(0).linear(&w, Some(b)).unsqueeze(0)
        } else {
            let wt = w.view([self.k, out, -1]).transpose(1, 2);
            b.view([self.k, 1, out]).baddbmm(x, &wt, 1.0, 1.0)
        };
        self.record(prefix, x, &y, (s[1], out), weight);
        y
    }

    fn block(&self, x: &Tensor, spec: &BlockSpec, train: bool) -> Tensor {
        let p = spec.name.as_str();
        let mut out = self.bn(self.conv(x, &format!("{p}.conv1"), 1, 1), &format!("{p}.bn1"), train).relu();
        if spec.kind != BlockKind::Widen {
            out = self.bn(self.conv(&out, &format!("{p}.conv2"), 1, 1), &format!("{p}.bn2"), train).relu();
        }
        let skip = self.config.skip;
        let mut identity = x.shallow_clone();
        if spec.kind == BlockKind::Downsample {
            out = self.conv(&out, &format!("{p}.downsampler"), 2, 0);
            if skip {
                identity = self.conv(&identity, &format!("{p}.downsampler"), 2, 0);
            }
        }
        if !skip {
            return out;
        }
        if spec.kind == BlockKind::Widen {
            // Member k's output channels are [lo half | hi half], each
            // getting member k's identity.
            let s = out.size();
            let (n, h, w) = (s[0], s[2], s[3]);
            let c = spec.in_ch;
            let sum = out.view([n, self.k, 2, c, h, w]) + identity.view([n, self.k, 1, c, h, w]);
            sum.view([n, self.k * 2 * c, h, w])
        } else {
            out + identity
        }
    }

    /// Member `k`'s logits for its own images: `xs` is `[N, K*3, 32, 32]`
    /// (member `k`'s batch in channels `3k..3k+3`), the result `[K, N, 10]`
    /// (32-bit at any precision).
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.forward_without(xs, train, &[])
    }

    /// [`Self::forward_t`] with the blocks at indices `removed` (into
    /// [`Self::blocks`]) replaced by the identity: each passes its input
    /// on unchanged (a lesion; only blocks whose input and output shapes
    /// match can go).
    pub fn forward_without(&self, xs: &Tensor, train: bool, removed: &[usize]) -> Tensor {
        let mut x = self.conv(&self.low(xs), "stem", 1, 1).relu().max_pool2d_default(2);
        for (i, spec) in self.blocks.iter().enumerate() {
            if !removed.contains(&i) {
                x = self.block(&x, spec, train);
            }
        }
        let n = x.size()[0];
        let x = x.view([n, self.k, 2048]).transpose(0, 1);
        let h = self.linear(&x, "fc1").relu();
        self.linear(&h, "fc2").to_kind(Kind::Float)
    }

    /// Each member's mean cross-entropy over its batch: `logits [K, N, 10]`,
    /// `labels [K, N]` -> `[K]`.
    pub fn member_losses(logits: &Tensor, labels: &Tensor) -> Result<Tensor, TchError> {
        let s = logits.size();
        let (k, n) = (s[0], s[1]);
        logits
            .f_reshape([k * n, -1])?
            .f_log_softmax(-1, Kind::Float)?
            .f_nll_loss::<Tensor>(&labels.f_reshape([k * n])?, None, tch::Reduction::None, -100)?
            .f_view([k, n])?
            .f_mean_dim(1, false, Kind::Float)
    }

    /// The L2 norm of the current gradient over each gradient-norm group
    /// (`stem`, blocks, `fc1`, `fc2`), per member, read back in one
    /// transfer: `result[k][g]`.
    pub fn grad_norms(&self) -> Result<Vec<Vec<f64>>, TchError> {
        let _guard = tch::no_grad_guard();
        let groups = group_names(self.config.depth).map_err(|e| TchError::Kind(e.to_string()))?;
        let mut per_group = Vec::with_capacity(groups.len());
        for g in &groups {
            let prefix = format!("{g}.");
            let mut acc: Option<Tensor> = None;
            for (name, f) in &self.tensors {
                if !f.trainable || !name.starts_with(&prefix) {
                    continue;
                }
                let grad = f.tensor.f_grad()?;
                if !grad.defined() {
                    continue;
                }
                let sq = grad.f_view([self.k, -1])?.f_square()?.f_sum_dim_intlist(1, false, Kind::Float)?;
                acc = Some(match acc {
                    None => sq,
                    Some(a) => a.f_add(&sq)?,
                });
            }
            let device = self.tensors.values().next().map_or(tch::Device::Cpu, |f| f.tensor.device());
            per_group.push(match acc {
                Some(a) => a,
                None => Tensor::f_zeros([self.k], (Kind::Float, device))?,
            });
        }
        // [G, K] -> [K, G]
        let all = Tensor::f_stack(&per_group, 0)?
            .f_sqrt()?
            .f_transpose(0, 1)?
            .f_contiguous()?
            .f_to_kind(Kind::Double)?
            .f_to_device(tch::Device::Cpu)?;
        let flat = Vec::<f64>::try_from(&all.f_view([-1])?)?;
        Ok(flat.chunks(groups.len()).map(<[f64]>::to_vec).collect())
    }
}
