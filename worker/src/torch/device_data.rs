//! A split of the data resident on the training device, and batches built
//! there (issue 10): the images live on the device as one uint8 tensor, and
//! each batch is gathered, augmented and normalised with tensor ops, so a
//! step costs no host-side pixel loop and no host-to-device copy of a float
//! batch, only that of a few int64s per image.
//!
//! A batch is bit for bit what the host-side reference
//! [`super::batch::make_batch`] builds from the same images and the same
//! RNG: the random draws stay on the host, in the same order
//! ([`super::batch::draw_crops`]), and only their results travel; the
//! device only selects bytes (index_select, gather) and looks each byte up
//! in the same 256-entry f32 table ([`Normalise`]). No arithmetic touches a
//! pixel value, so no device rounds differently from the host (a division
//! by 255 on CUDA, for one, is a multiplication by its reciprocal).
//!
//! One copy per training group ([`super::group`]): made when the group
//! starts, freed when it ends.

use rand::rngs::StdRng;
use tch::{Device, Kind, TchError, Tensor};

use super::batch::{draw_crops, Crop, Normalise};
use super::cifar::CifarSplit;

/// Zero padding around each image, the largest crop offset.
const PAD: i64 = 4;
/// Image side.
const SIDE: i64 = 32;
/// Padded image side.
const PADDED: i64 = SIDE + 2 * PAD;

/// One split on one device.
///
/// The images are kept zero-padded, `[N, 3, 40, 40]` uint8, rather than as
/// they are (`[N, 3, 32, 32]`): a crop is then two gathers with in-range
/// indices, with no masking of the border, and one copy serves both the
/// augmented and the plain batches (a plain batch is the centre `32 x 32`).
/// The price is 56 % more device memory than the bare bytes: 240 MB for
/// CIFAR-10's 50,000 training images, 48 MB for its 10,000 test images.
pub struct DeviceSplit {
    /// `[N, 3, 40, 40]` uint8, each image at the centre, zeros around.
    pixels: Tensor,
    /// `[N]` int64.
    labels: Tensor,
    /// `[256]` f32: [`Normalise`]'s table.
    table: Tensor,
    /// `[1, 32]` int64: `0..32`.
    arange: Tensor,
    len: usize,
    device: Device,
}

impl DeviceSplit {
    /// Copies `split` to `device`, with `norm`'s table.
    pub fn new(split: &CifarSplit, norm: &Normalise, device: Device) -> Result<Self, TchError> {
        let n = split.len() as i64;
        let pixels = Tensor::f_from_slice(&split.pixels)?
            .f_view([n, 3, SIDE, SIDE])?
            .f_to_device(device)?
            .f_constant_pad_nd([PAD, PAD, PAD, PAD])?;
        let labels: Vec<i64> = split.labels.iter().map(|&l| i64::from(l)).collect();
        Ok(DeviceSplit {
            pixels,
            labels: Tensor::f_from_slice(&labels)?.f_to_device(device)?,
            table: Tensor::f_from_slice(norm.table())?.f_to_device(device)?,
            arange: Tensor::f_arange(SIDE, (Kind::Int64, device))?.f_view([1, SIDE])?,
            len: split.len(),
            device,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The input batch `[B, 3, 32, 32]` f32 and its labels `[B]` int64 of
    /// images `idx`, on the device; with `augment`, each image cropped and
    /// flipped as [`super::batch::make_batch`] would with that RNG (the
    /// same draws, so the RNG ends where it would).
    pub fn batch(&self, idx: &[usize], augment: Option<&mut StdRng>) -> Result<(Tensor, Tensor), TchError> {
        let crops = augment.map(|r| draw_crops(r, idx.len()));
        self.batch_with(idx, crops.as_deref())
    }

    /// [`Self::batch`] with each image's augmentation given (`crops[k]` for
    /// `idx[k]`; `None`: none). An index out of range or a `crops` of
    /// another length is an error (checked on the host: on CUDA an
    /// out-of-range index would be a device-side assertion).
    pub fn batch_with(&self, idx: &[usize], crops: Option<&[Crop]>) -> Result<(Tensor, Tensor), TchError> {
        if let Some(&i) = idx.iter().find(|&&i| i >= self.len) {
            return Err(TchError::Shape(format!("image {i} of a split of {}", self.len)));
        }
        if let Some(c) = crops.filter(|c| c.len() != idx.len()) {
            return Err(TchError::Shape(format!("{} crops for {} images", c.len(), idx.len())));
        }
        let b = idx.len() as i64;
        // Everything the host sends, in one copy: the image indices, then
        // per augmented image the first padded row, the first padded column
        // and the column step (-1 when flipped).
        let mut params: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
        if let Some(crops) = crops {
            params.extend(crops.iter().map(|c| c.dy + PAD));
            params.extend(crops.iter().map(|c| if c.flip { SIDE - 1 + c.dx + PAD } else { c.dx + PAD }));
            params.extend(crops.iter().map(|c| if c.flip { -1 } else { 1 }));
        }
        let params = Tensor::f_from_slice(&params)?.f_to_device(self.device)?;
        let index = params.f_narrow(0, 0, b)?;
        let images = self.pixels.f_index_select(0, &index)?;
        let labels = self.labels.f_index_select(0, &index)?;
        let bytes = match crops {
            None => images.f_narrow(2, PAD, SIDE)?.f_narrow(3, PAD, SIDE)?,
            Some(_) => {
                let per_image = |k: i64| params.f_narrow(0, k * b, b).and_then(|t| t.f_view([b, 1]));
                let (row0, col0, step) = (per_image(1)?, per_image(2)?, per_image(3)?);
                // Output row y reads padded row row0 + y; output column x
                // reads padded column col0 + step * x.
                let rows = self.arange.f_add(&row0)?.f_view([b, 1, SIDE, 1])?.f_expand([b, 3, SIDE, PADDED], false)?;
                let cols = col0
                    .f_addcmul(&step, &self.arange)?
                    .f_view([b, 1, 1, SIDE])?
                    .f_expand([b, 3, SIDE, SIDE], false)?;
                images.f_gather(2, &rows, false)?.f_gather(3, &cols, false)?
            }
        };
        let x = self
            .table
            .f_index_select(0, &bytes.f_to_kind(Kind::Int64)?.f_reshape([-1])?)?
            .f_view([b, 3, SIDE, SIDE])?;
        Ok((x, labels))
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::torch::batch::{derived_rng, epoch_permutation, make_batch, make_batch_with};
    use crate::torch::cifar::IMAGE_BYTES;

    /// `n` images of random bytes (every byte value likely present, 0 and
    /// 255 forced) with random labels.
    fn split(n: usize, seed: u64) -> CifarSplit {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut pixels: Vec<u8> = (0..n * IMAGE_BYTES).map(|_| rng.random()).collect();
        pixels[0] = 0;
        pixels[1] = 255;
        let labels = (0..n).map(|_| rng.random_range(0..10)).collect();
        CifarSplit { labels, pixels }
    }

    fn assert_same(what: &str, (x, y): (Tensor, Tensor), (rx, ry): (Tensor, Tensor)) {
        assert_eq!(x.kind(), rx.kind(), "{what}: input kind");
        assert_eq!(x.size(), rx.size(), "{what}: input shape");
        assert_eq!(y.kind(), ry.kind(), "{what}: label kind");
        assert!(x.equal(&rx), "{what}: inputs differ");
        assert!(y.equal(&ry), "{what}: labels differ");
        // Bit for bit, not merely ==: compare the f32 bit patterns.
        let bits = |t: &Tensor| -> Vec<u32> {
            Vec::<f32>::try_from(&t.reshape([-1])).unwrap().into_iter().map(f32::to_bits).collect()
        };
        assert_eq!(bits(&x), bits(&rx), "{what}: input bits differ");
    }

    #[test]
    fn device_batches_match_the_host_reference() {
        let (n, device, norm) = (29, Device::Cpu, Normalise::new());
        let data = split(n, 7);
        let on_device = DeviceSplit::new(&data, &norm, device).unwrap();
        assert_eq!(on_device.len(), n);
        for seed in [0u64, 1, 42, 12_345] {
            let order = epoch_permutation(seed, 1, n);
            for bs in [1usize, 4, 7] {
                for b in 0..n.div_ceil(bs).min(5) as u64 {
                    let idx = &order[b as usize * bs..((b as usize + 1) * bs).min(n)];
                    let what = format!("seed {seed}, batch size {bs}, batch {b}");
                    let got = on_device.batch(idx, None).unwrap();
                    let want = make_batch(&data, idx, None, &norm, device).unwrap();
                    assert_same(&format!("{what}, plain"), got, want);

                    let (mut r1, mut r2) = (derived_rng(seed, 1, b), derived_rng(seed, 1, b));
                    let got = on_device.batch(idx, Some(&mut r1)).unwrap();
                    let want = make_batch(&data, idx, Some(&mut r2), &norm, device).unwrap();
                    assert_same(&format!("{what}, augmented"), got, want);
                    assert_eq!(r1.random::<u64>(), r2.random::<u64>(), "{what}: the RNGs end apart");
                }
            }
        }
    }

    #[test]
    fn every_crop_and_flip_matches_the_host_reference() {
        let (n, device, norm) = (5, Device::Cpu, Normalise::new());
        let data = split(n, 3);
        let on_device = DeviceSplit::new(&data, &norm, device).unwrap();
        let mut crops = Vec::new();
        for dy in -4..=4 {
            for dx in -4..=4 {
                for flip in [false, true] {
                    crops.push(Crop { dy, dx, flip });
                }
            }
        }
        assert_eq!(crops.len(), 162);
        let idx: Vec<usize> = (0..crops.len()).map(|k| (k * 3) % n).collect();
        let got = on_device.batch_with(&idx, Some(&crops)).unwrap();
        let want = make_batch_with(&data, &idx, Some(&crops), &norm, device).unwrap();
        assert_same("all crops", got, want);
        // One image at a time too (a batch of one takes the same path).
        for (k, c) in crops.iter().enumerate() {
            let got = on_device.batch_with(&idx[k..=k], Some(std::slice::from_ref(c))).unwrap();
            let want = make_batch_with(&data, &idx[k..=k], Some(std::slice::from_ref(c)), &norm, device).unwrap();
            assert_same(&format!("{c:?}"), got, want);
        }
        // The identity crop is the plain batch.
        let plain = vec![Crop::NONE; idx.len()];
        assert_same(
            "identity crop",
            on_device.batch_with(&idx, Some(&plain)).unwrap(),
            on_device.batch_with(&idx, None).unwrap(),
        );
    }

    #[test]
    fn draws_cover_every_crop_and_flip() {
        // The draws the tests above replay reach every combination.
        let mut seen = std::collections::HashSet::new();
        let mut rng = derived_rng(9, 0, 0);
        for c in draw_crops(&mut rng, 5_000) {
            assert!((-4..=4).contains(&c.dy) && (-4..=4).contains(&c.dx), "{c:?}");
            seen.insert(c);
        }
        assert_eq!(seen.len(), 162);
    }

    #[test]
    fn bad_indices_are_errors_not_panics() {
        let norm = Normalise::new();
        let on_device = DeviceSplit::new(&split(3, 1), &norm, Device::Cpu).unwrap();
        assert!(on_device.batch(&[0, 3], None).is_err());
        assert!(on_device.batch_with(&[0, 1], Some(&[Crop::NONE])).is_err());
        let empty = DeviceSplit::new(&CifarSplit::default(), &norm, Device::Cpu).unwrap();
        assert!(empty.is_empty());
        assert!(empty.batch(&[0], None).is_err());
    }
}
