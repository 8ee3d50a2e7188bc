//! BMEnet, the network of the skip-connections lecture (DLStudio 1.0.6),
//! built the way issue 3 pins it down.
//!
//! `BMEnet(depth, skip, batchnorm, init)`, `depth` a positive multiple of 8,
//! `n = depth / 8`:
//!
//! 1. stem: conv 3->64 (3x3, pad 1), ReLU, max-pool 2 (32x32 -> 16x16)
//! 2. n x SkipBlock(64->64) at 16x16
//! 3. SkipBlock(64->64, downsample) -> 8x8
//! 4. n x SkipBlock(64->64) at 8x8
//! 5. SkipBlock(64->128) at 8x8 (conv1/bn1/ReLU only)
//! 6. n x SkipBlock(128->128) at 8x8
//! 7. SkipBlock(128->128, downsample) -> 4x4
//! 8. n x SkipBlock(128->128) at 4x4
//! 9. flatten 2048 -> fc 1000 -> ReLU -> fc 10
//!
//! Where this departs from the lecture's printed code, and why:
//! - additions are out of place (`out + identity`): the lecture's in-place
//!   `out += identity` on a ReLU output makes backward fail in current
//!   PyTorch;
//! - the 64->128 block adds the identity to both channel halves
//!   (`out[:, :64] + x`, `out[:, 64:] + x`): the printed
//!   `out[:, self.in_ch, :, :] += identity` cannot run (shape mismatch);
//!   this is what DLStudio's later versions do;
//! - the 64->128 block has no `conv2`/`bn2`: the lecture constructs one but
//!   its forward never applies it, so it would be dead weights;
//! - with `batchnorm = false` the BN layers do not exist at all (they are
//!   not replaced by identity layers with parameters).
//!
//! The module layout ([`layout`]) is plain data without libtorch, shared
//! with [`super::summary`], so the printed table and the real network cannot
//! drift apart (the tests build both and compare).

use sweep_core::InitScheme;
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// Why a network cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A depth the grid's rule ([`sweep_core::bmenet::rules::depth`])
    /// refuses, with its message.
    #[error("depth {0}")]
    BadDepth(String),
    #[error("libtorch: {0}")]
    Torch(String),
}

impl From<tch::TchError> for ModelError {
    fn from(e: tch::TchError) -> Self {
        ModelError::Torch(e.to_string())
    }
}

/// The factors that shape a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BmeConfig {
    pub depth: u32,
    pub skip: bool,
    pub batchnorm: bool,
    pub init: InitScheme,
}

impl From<&sweep_core::bmenet::BmenetTrial> for BmeConfig {
    /// The network of a (resolved) trial.
    fn from(t: &sweep_core::bmenet::BmenetTrial) -> Self {
        BmeConfig { depth: t.depth, skip: t.skip, batchnorm: t.batchnorm, init: t.init }
    }
}

/// What a SkipBlock does besides its convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// c -> c, same resolution.
    Plain,
    /// c -> c, then a 1x1 stride-2 conv halves the resolution of both the
    /// residual and the identity path.
    Downsample,
    /// c -> 2c: conv1/bn1/ReLU only; the skip adds the identity to both
    /// halves of the output channels.
    Widen,
}

/// One SkipBlock's place in the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSpec {
    /// `block01`, `block02`, ... from input to output, zero-padded so the
    /// names sort in network order.
    pub name: String,
    pub kind: BlockKind,
    pub in_ch: i64,
    pub out_ch: i64,
    /// Side of the square input feature map.
    pub in_size: i64,
    /// Side of the square output feature map.
    pub out_size: i64,
}

/// `n = depth / 8`, or an error for a depth BMEnet cannot have (by the
/// grid's own rule, [`sweep_core::bmenet::rules::depth`]).
pub fn blocks_per_section(depth: u32) -> Result<usize, ModelError> {
    sweep_core::bmenet::rules::depth(&sweep_core::Level::Int(depth.into())).map_err(ModelError::BadDepth)?;
    Ok((depth / 8) as usize)
}

/// The SkipBlocks of a network of `depth`, from input to output
/// (`4 * depth/8 + 3` of them).
pub fn layout(depth: u32) -> Result<Vec<BlockSpec>, ModelError> {
    let n = blocks_per_section(depth)?;
    let total = 4 * n + 3;
    let width = total.to_string().len().max(2);
    let mut specs = Vec::with_capacity(total);
    let mut push = |kind, in_ch, out_ch, in_size, out_size| {
        let name = format!("block{:0width$}", specs.len() + 1);
        specs.push(BlockSpec { name, kind, in_ch, out_ch, in_size, out_size });
    };
    for _ in 0..n {
        push(BlockKind::Plain, 64, 64, 16, 16);
    }
    push(BlockKind::Downsample, 64, 64, 16, 8);
    for _ in 0..n {
        push(BlockKind::Plain, 64, 64, 8, 8);
    }
    push(BlockKind::Widen, 64, 128, 8, 8);
    for _ in 0..n {
        push(BlockKind::Plain, 128, 128, 8, 8);
    }
    push(BlockKind::Downsample, 128, 128, 8, 4);
    for _ in 0..n {
        push(BlockKind::Plain, 128, 128, 4, 4);
    }
    Ok(specs)
}

/// The gradient-norm groups in network order: `stem`, every block, `fc1`,
/// `fc2`.
pub fn group_names(depth: u32) -> Result<Vec<String>, ModelError> {
    let mut names = vec!["stem".to_owned()];
    names.extend(layout(depth)?.into_iter().map(|b| b.name));
    names.push("fc1".to_owned());
    names.push("fc2".to_owned());
    Ok(names)
}

/// The weight initialisation for a conv/linear weight with the given fans.
///
/// `Default` is what PyTorch/libtorch modules do on construction
/// (`kaiming_uniform_(a = sqrt(5))`, i.e. U(+-1/sqrt(fan_in))). It is set
/// explicitly because tch's own layer defaults differ (Kaiming with ReLU
/// gain for weights, zero conv biases, BN weights U(0, 1)) and the lecture's
/// runs used PyTorch's.
pub fn weight_init(scheme: InitScheme, fan_in: i64, fan_out: i64) -> nn::Init {
    let fi = fan_in.max(1) as f64;
    let fo = fan_out.max(1) as f64;
    match scheme {
        InitScheme::Default => {
            let b = 1.0 / fi.sqrt();
            nn::Init::Uniform { lo: -b, up: b }
        }
        InitScheme::XavierUniform => {
            let b = (6.0 / (fi + fo)).sqrt();
            nn::Init::Uniform { lo: -b, up: b }
        }
        InitScheme::XavierNormal => nn::Init::Randn { mean: 0.0, stdev: (2.0 / (fi + fo)).sqrt() },
        InitScheme::KaimingUniform => {
            let b = (6.0 / fi).sqrt();
            nn::Init::Uniform { lo: -b, up: b }
        }
        InitScheme::KaimingNormal => nn::Init::Randn { mean: 0.0, stdev: (2.0 / fi).sqrt() },
    }
}

/// Bias initialisation: PyTorch's U(+-1/sqrt(fan_in)) for `Default`, zero
/// for every other scheme.
pub fn bias_init(scheme: InitScheme, fan_in: i64) -> nn::Init {
    match scheme {
        InitScheme::Default => {
            let b = 1.0 / (fan_in.max(1) as f64).sqrt();
            nn::Init::Uniform { lo: -b, up: b }
        }
        _ => nn::Init::Const(0.0),
    }
}

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, init: InitScheme) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding: k / 2,
        ws_init: weight_init(init, cin * k * k, cout * k * k),
        bs_init: bias_init(init, cin * k * k),
        ..Default::default()
    };
    nn::conv2d(p, cin, cout, k, cfg)
}

fn batch_norm(p: nn::Path, c: i64, on: bool) -> Option<nn::BatchNorm> {
    on.then(|| {
        let cfg =
            nn::BatchNormConfig { ws_init: nn::Init::Const(1.0), bs_init: nn::Init::Const(0.0), ..Default::default() };
        nn::batch_norm2d(p, c, cfg)
    })
}

fn linear(p: nn::Path, i: i64, o: i64, init: InitScheme) -> nn::Linear {
    let cfg = nn::LinearConfig { ws_init: weight_init(init, i, o), bs_init: Some(bias_init(init, i)), bias: true };
    nn::linear(p, i, o, cfg)
}

/// One SkipBlock: conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> ReLU (the
/// second half absent in a widening block), optional downsampling of both
/// paths, then `+ identity` when skip is on.
#[derive(Debug)]
pub struct SkipBlock {
    pub spec: BlockSpec,
    skip: bool,
    conv1: nn::Conv2D,
    bn1: Option<nn::BatchNorm>,
    conv2: Option<nn::Conv2D>,
    bn2: Option<nn::BatchNorm>,
    downsampler: Option<nn::Conv2D>,
}

/// Builds one SkipBlock under `p` (parameters `p.conv1.weight`, ...).
pub fn skip_block(p: nn::Path, spec: &BlockSpec, cfg: &BmeConfig) -> SkipBlock {
    let (cin, cout) = (spec.in_ch, spec.out_ch);
    let conv1 = conv(&p / "conv1", cin, cout, 3, 1, cfg.init);
    let bn1 = batch_norm(&p / "bn1", cout, cfg.batchnorm);
    let (conv2, bn2) = if spec.kind == BlockKind::Widen {
        (None, None)
    } else {
        (Some(conv(&p / "conv2", cout, cout, 3, 1, cfg.init)), batch_norm(&p / "bn2", cout, cfg.batchnorm))
    };
    let downsampler = (spec.kind == BlockKind::Downsample).then(|| conv(&p / "downsampler", cin, cout, 1, 2, cfg.init));
    SkipBlock { spec: spec.clone(), skip: cfg.skip, conv1, bn1, conv2, bn2, downsampler }
}

impl SkipBlock {
    /// The trainable tensors of this block (shallow clones: same storage and
    /// gradients as the ones the optimiser updates).
    pub fn parameters(&self) -> Vec<Tensor> {
        let mut v = conv_params(&self.conv1);
        v.extend(self.bn1.iter().flat_map(bn_params));
        v.extend(self.conv2.iter().flat_map(conv_params));
        v.extend(self.bn2.iter().flat_map(bn_params));
        v.extend(self.downsampler.iter().flat_map(conv_params));
        v
    }
}

fn conv_params(c: &nn::Conv2D) -> Vec<Tensor> {
    std::iter::once(c.ws.shallow_clone()).chain(c.bs.iter().map(tch::Tensor::shallow_clone)).collect()
}

fn bn_params(b: &nn::BatchNorm) -> Vec<Tensor> {
    b.ws.iter().chain(b.bs.iter()).map(tch::Tensor::shallow_clone).collect()
}

fn linear_params(l: &nn::Linear) -> Vec<Tensor> {
    std::iter::once(l.ws.shallow_clone()).chain(l.bs.iter().map(tch::Tensor::shallow_clone)).collect()
}

impl ModuleT for SkipBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut out = xs.apply(&self.conv1).apply_opt_t(&self.bn1, train).relu();
        if let Some(conv2) = &self.conv2 {
            out = out.apply(conv2).apply_opt_t(&self.bn2, train).relu();
        }
        let mut identity = xs.shallow_clone();
        if let Some(ds) = &self.downsampler {
            out = out.apply(ds);
            // The identity is only downsampled when it is used: without
            // skip it would be computed and thrown away.
            if self.skip {
                identity = identity.apply(ds);
            }
        }
        if !self.skip {
            return out;
        }
        if self.spec.kind == BlockKind::Widen {
            let c = self.spec.in_ch;
            let lo = out.narrow(1, 0, c) + &identity;
            let hi = out.narrow(1, c, c) + &identity;
            Tensor::cat(&[lo, hi], 1)
        } else {
            out + identity
        }
    }
}

/// Named trainable tensors of one gradient-norm group.
#[derive(Debug)]
pub struct ParamGroup {
    /// `stem`, `block01`.., `fc1`, `fc2`.
    pub name: String,
    pub params: Vec<Tensor>,
}

/// The whole network.
#[derive(Debug)]
pub struct BmeNet {
    pub config: BmeConfig,
    stem: nn::Conv2D,
    blocks: Vec<SkipBlock>,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl BmeNet {
    /// Builds the network under `p`: parameters are named `stem.*`,
    /// `block01.conv1.*`, ..., `fc1.*`, `fc2.*`. Initial values come from
    /// libtorch's global RNG (seed it with `tch::manual_seed` first for a
    /// reproducible network).
    pub fn new(p: &nn::Path, cfg: &BmeConfig) -> Result<BmeNet, ModelError> {
        let specs = layout(cfg.depth)?;
        let stem = conv(p / "stem", 3, 64, 3, 1, cfg.init);
        let blocks = specs.iter().map(|s| skip_block(p / s.name.as_str(), s, cfg)).collect();
        let fc1 = linear(p / "fc1", 2048, 1000, cfg.init);
        let fc2 = linear(p / "fc2", 1000, 10, cfg.init);
        Ok(BmeNet { config: *cfg, stem, blocks, fc1, fc2 })
    }

    pub fn blocks(&self) -> &[SkipBlock] {
        &self.blocks
    }

    /// The gradient-norm groups, input to output: `stem`, every SkipBlock,
    /// `fc1`, `fc2`. Together they hold every trainable parameter once.
    pub fn param_groups(&self) -> Vec<ParamGroup> {
        let mut g = vec![ParamGroup { name: "stem".into(), params: conv_params(&self.stem) }];
        g.extend(self.blocks.iter().map(|b| ParamGroup { name: b.spec.name.clone(), params: b.parameters() }));
        g.push(ParamGroup { name: "fc1".into(), params: linear_params(&self.fc1) });
        g.push(ParamGroup { name: "fc2".into(), params: linear_params(&self.fc2) });
        g
    }

    /// The output after each group (stem, blocks, fc1, fc2) for an input
    /// batch; for tests and the summary cross-check.
    pub fn trace(&self, xs: &Tensor, train: bool) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        let mut x = xs.apply(&self.stem).relu().max_pool2d_default(2);
        out.push(("stem".to_owned(), x.shallow_clone()));
        for b in &self.blocks {
            x = x.apply_t(b, train);
            out.push((b.spec.name.clone(), x.shallow_clone()));
        }
        x = x.reshape([-1, 2048]).apply(&self.fc1).relu();
        out.push(("fc1".to_owned(), x.shallow_clone()));
        x = x.apply(&self.fc2);
        out.push(("fc2".to_owned(), x));
        out
    }
}

impl BmeNet {
    /// The forward pass with the blocks at indices `removed` replaced by
    /// the identity (a lesion; the reference the fused network's lesions
    /// are tested against).
    pub fn forward_without(&self, xs: &Tensor, train: bool, removed: &[usize]) -> Tensor {
        let mut x = xs.apply(&self.stem).relu().max_pool2d_default(2);
        for (i, b) in self.blocks.iter().enumerate() {
            if !removed.contains(&i) {
                x = x.apply_t(b, train);
            }
        }
        x.reshape([-1, 2048]).apply(&self.fc1).relu().apply(&self.fc2)
    }
}

impl ModuleT for BmeNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.forward_without(xs, train, &[])
    }
}
