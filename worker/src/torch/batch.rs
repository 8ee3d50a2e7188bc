//! Batch assembly: which images a batch holds and how their bytes become
//! the network's input.
//!
//! - pixels scaled to [0, 1], then normalised with mean 0.5, std 0.5;
//! - shuffled every epoch ([`epoch_permutation`]);
//! - optional augmentation: a random 32x32 crop of the image zero-padded by
//!   4 pixels, and a horizontal flip with probability 1/2.
//!
//! Every random choice comes from a Rust RNG seeded from (seed, epoch,
//! batch) ([`derived_rng`]), never from libtorch's RNG, so a trial resumed
//! mid-epoch draws exactly what an uninterrupted one would. Each augmented
//! image draws its [`Crop`] in a fixed order (dy, dx, flip).
//!
//! Training and evaluation build their batches on the device from a
//! device-resident copy of the data ([`super::device_data`]); [`make_batch`]
//! builds the same batch on the host, one image at a time, and is the
//! reference the device path is tested against bit for bit.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tch::{Device, TchError, Tensor};

use super::cifar::{CifarSplit, IMAGE_BYTES};

/// A 64-bit mix (SplitMix64 finaliser) so nearby (seed, epoch, batch)
/// triples give unrelated RNG streams.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The RNG of batch `batch` of `epoch` (crops and flips); `batch =
/// u64::MAX` is the epoch's shuffle.
pub fn derived_rng(seed: u64, epoch: u32, batch: u64) -> StdRng {
    StdRng::seed_from_u64(mix(mix(mix(seed) ^ epoch as u64) ^ batch))
}

/// The order of training images in `epoch`.
pub fn epoch_permutation(seed: u64, epoch: u32, n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut derived_rng(seed, epoch, u64::MAX));
    idx
}

/// `(x / 255 - 0.5) / 0.5` for every byte value.
pub struct Normalise([f32; 256]);

impl Normalise {
    pub fn new() -> Self {
        let mut t = [0f32; 256];
        for (i, v) in t.iter_mut().enumerate() {
            *v = ((i as f32 / 255.0) - 0.5) / 0.5;
        }
        Normalise(t)
    }
}

impl Normalise {
    /// The normalised value of every byte, indexed by the byte.
    pub fn table(&self) -> &[f32; 256] {
        &self.0
    }
}

impl Default for Normalise {
    fn default() -> Self {
        Self::new()
    }
}

/// One image's augmentation: the crop's offset `(dy, dx)` (each in
/// `-4..=4`) into the 4-pixel zero-padded image, and whether the crop is
/// then flipped horizontally. Output pixel `(y, x)` is padded pixel
/// `(y + dy + 4, x' + dx + 4)` with `x' = 31 - x` when flipped, else `x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Crop {
    pub dy: i64,
    pub dx: i64,
    pub flip: bool,
}

impl Crop {
    /// No crop, no flip: the image as it is.
    pub const NONE: Crop = Crop { dy: 0, dx: 0, flip: false };

    /// Draws one image's augmentation: dy, then dx, then flip. This order
    /// is what checkpoints and reproducibility rely on; do not change it.
    pub fn draw(rng: &mut StdRng) -> Crop {
        let dy: i64 = rng.random_range(0..=8) - 4;
        let dx: i64 = rng.random_range(0..=8) - 4;
        let flip: bool = rng.random_bool(0.5);
        Crop { dy, dx, flip }
    }
}

/// The augmentation of each of `n` images, in image order (each drawn by
/// [`Crop::draw`]): what a batch of `n` augmented images draws from `rng`.
pub fn draw_crops(rng: &mut StdRng, n: usize) -> Vec<Crop> {
    (0..n).map(|_| Crop::draw(rng)).collect()
}

/// Builds an input batch (N, 3, 32, 32) float and its labels (N) int64 on
/// `device` from the images `idx` of `split`. With `augment`, each image is
/// cropped at a random offset from its 4-pixel zero-padded version (pad
/// value: pixel 0, as torchvision's `RandomCrop(32, padding=4)` pads before
/// `ToTensor`) and flipped horizontally with probability 1/2 ([`Crop`],
/// drawn by [`draw_crops`]).
///
/// The host-side reference for [`super::device_data::DeviceSplit::batch`],
/// which training and evaluation use: same images, same draws, same bits.
pub fn make_batch(
    split: &CifarSplit,
    idx: &[usize],
    augment: Option<&mut StdRng>,
    norm: &Normalise,
    device: Device,
) -> Result<(Tensor, Tensor), TchError> {
    let crops = augment.map(|r| draw_crops(r, idx.len()));
    make_batch_with(split, idx, crops.as_deref(), norm, device)
}

/// [`make_batch`] with each image's augmentation given (`crops[k]` for
/// `idx[k]`; `None`: no augmentation). Panics when an index is out of range
/// or `crops` is shorter than `idx`.
pub fn make_batch_with(
    split: &CifarSplit,
    idx: &[usize],
    crops: Option<&[Crop]>,
    norm: &Normalise,
    device: Device,
) -> Result<(Tensor, Tensor), TchError> {
    let table = &norm.0;
    let mut xs = vec![0f32; idx.len() * IMAGE_BYTES];
    let mut ys = Vec::with_capacity(idx.len());
    let zero = table[0];
    for (k, &i) in idx.iter().enumerate() {
        let src = split.image(i);
        let dst = &mut xs[k * IMAGE_BYTES..(k + 1) * IMAGE_BYTES];
        ys.push(split.labels[i] as i64);
        match crops {
            None => {
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = table[*s as usize];
                }
            }
            Some(crops) => {
                let Crop { dy, dx, flip } = crops[k];
                for c in 0..3 {
                    for y in 0..32i64 {
                        let sy = y + dy;
                        for x in 0..32i64 {
                            let xx = if flip { 31 - x } else { x };
                            let sx = xx + dx;
                            let v = if (0..32).contains(&sy) && (0..32).contains(&sx) {
                                table[src[(c * 1024 + sy * 32 + sx) as usize] as usize]
                            } else {
                                zero
                            };
                            dst[(c * 1024 + y * 32 + x) as usize] = v;
                        }
                    }
                }
            }
        }
    }
    let n = idx.len() as i64;
    let x = Tensor::f_from_slice(&xs).and_then(|t| t.f_view([n, 3, 32, 32])).and_then(|t| t.f_to_device(device))?;
    let y = Tensor::f_from_slice(&ys).and_then(|t| t.f_to_device(device))?;
    Ok((x, y))
}
