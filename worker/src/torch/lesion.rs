//! The lesion study of Veit, Wilber & Belongie (NeurIPS 2016, "Residual
//! networks behave like ensembles of relatively shallow networks"): test
//! accuracy of the trained network with SkipBlocks replaced by the identity
//! at test time. A residual network loses little when one block goes
//! (their Figure 3) and degrades smoothly as more go (Figure 5); a plain
//! network of the same depth collapses.
//!
//! Only blocks whose input and output shapes match can be replaced by the
//! identity: the [`BlockKind::Plain`] ones (`4 * depth / 8` of them; the
//! two downsampling blocks and the widening one stay). Removing a block
//! means its output is its input, skip connection or not; batch norm keeps
//! the running statistics it was trained with, as in the paper.
//!
//! Measured for every member of a training group at once, on the test split:
//! - each removable block alone ([`Lesion::per_block`], keyed by the
//!   block's 1-based position in the network: `block05` is 5);
//! - `k` blocks at once for `k = 0..=`[`MAX_REMOVED`]
//!   ([`Lesion::per_removed`]): `k = 0` is the intact network, `k = 1` the
//!   mean over every single block, `k >= 2` the mean over [`DRAWS`] random
//!   sets of `k` blocks. The sets depend only on the depth and `k` (not the
//!   seed, skip or any other factor), so every trial of a depth loses the
//!   same blocks and the comparison between cells is paired. Where there
//!   are at most [`DRAWS`] such sets (depth 8: one set of 4), all of them.

use rand::seq::index::sample;
use rand::SeedableRng;
use tch::TchError;

use super::bmenet::{BlockKind, BlockSpec};
use super::device_data::DeviceSplit;
use super::eval::evaluate_without;
use super::fused::FusedNet;

/// The most blocks removed at once.
pub const MAX_REMOVED: usize = 4;
/// Random sets of `k >= 2` blocks per `k`.
pub const DRAWS: usize = 4;

/// Per member of the group, the test accuracies of the lesioned networks.
#[derive(Debug, Clone, PartialEq)]
pub struct Lesion {
    /// `(block position, accuracy per member)` for every removable block.
    pub per_block: Vec<(i64, Vec<f64>)>,
    /// `(k, mean accuracy per member)` for `k = 0..=MAX_REMOVED` (fewer
    /// when the network has fewer removable blocks).
    pub per_removed: Vec<(i64, Vec<f64>)>,
    /// Test-set evaluations run.
    pub evaluations: usize,
}

/// Indices (into `blocks`) of the blocks the identity can replace.
pub fn removable(blocks: &[BlockSpec]) -> Vec<usize> {
    blocks.iter().enumerate().filter(|(_, b)| b.kind == BlockKind::Plain).map(|(i, _)| i).collect()
}

/// The sets of `k` blocks removed together, from `removable`: every set
/// when there are at most [`DRAWS`] of them, else `DRAWS` distinct random
/// ones; a fixed function of `removable.len()` and `k`, each sorted.
pub fn draws(removable: &[usize], k: usize) -> Vec<Vec<usize>> {
    let n = removable.len();
    if k > n {
        return Vec::new();
    }
    // C(n, k), saturating (only compared with DRAWS).
    let count = (0..k).fold(1u128, |c, i| (c * (n - i) as u128 / (i + 1) as u128).min(u64::MAX.into()));
    if count <= DRAWS as u128 {
        return combinations(n, k).into_iter().map(|c| c.into_iter().map(|i| removable[i]).collect()).collect();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_1e51_0000 + (n as u64) * 64 + k as u64);
    let mut sets: Vec<Vec<usize>> = Vec::with_capacity(DRAWS);
    while sets.len() < DRAWS {
        let mut set: Vec<usize> = sample(&mut rng, n, k).into_iter().map(|i| removable[i]).collect();
        set.sort_unstable();
        if !sets.contains(&set) {
            sets.push(set);
        }
    }
    sets
}

/// Every `k`-subset of `0..n`, in lexicographic order.
fn combinations(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut c: Vec<usize> = (0..k).collect();
    loop {
        out.push(c.clone());
        let Some(i) = (0..k).rev().find(|&i| c[i] < n - k + i) else { return out };
        c[i] += 1;
        for j in i + 1..k {
            c[j] = c[j - 1] + 1;
        }
    }
}

/// Runs the study on `net`'s trained weights over `test`. `intact` is each
/// member's accuracy with nothing removed (the final evaluation's).
/// `stopped` is asked between evaluations: `Ok(None)` when it said stop.
pub fn study(
    net: &FusedNet,
    test: &DeviceSplit,
    intact: &[f64],
    mut stopped: impl FnMut() -> bool,
) -> Result<Option<Lesion>, TchError> {
    let blocks = removable(net.blocks());
    let members = net.members();
    let mut evaluations = 0;
    let mut accuracy = |removed: &[usize]| -> Result<Option<Vec<f64>>, TchError> {
        if stopped() {
            return Ok(None);
        }
        evaluations += 1;
        Ok(Some(evaluate_without(net, test, removed)?.into_iter().map(|e| e.accuracy).collect()))
    };
    let mut per_block = Vec::with_capacity(blocks.len());
    for &b in &blocks {
        let Some(acc) = accuracy(&[b])? else { return Ok(None) };
        per_block.push((b as i64 + 1, acc));
    }
    let mut per_removed = vec![(0, intact.to_vec())];
    if !blocks.is_empty() {
        let mean_single =
            (0..members).map(|m| per_block.iter().map(|(_, a)| a[m]).sum::<f64>() / per_block.len() as f64).collect();
        per_removed.push((1, mean_single));
    }
    for k in 2..=MAX_REMOVED.min(blocks.len()) {
        let sets = draws(&blocks, k);
        let mut sum = vec![0.0; members];
        for set in &sets {
            let Some(acc) = accuracy(set)? else { return Ok(None) };
            sum.iter_mut().zip(acc).for_each(|(s, a)| *s += a);
        }
        per_removed.push((k as i64, sum.into_iter().map(|s| s / sets.len() as f64).collect()));
    }
    Ok(Some(Lesion { per_block, per_removed, evaluations }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::torch::bmenet::layout;

    #[test]
    fn the_plain_blocks_are_removable_and_draws_are_fixed_distinct_sets() {
        let blocks = layout(32).unwrap();
        let r = removable(&blocks);
        assert_eq!(r.len(), 16);
        assert!(!r.contains(&4), "block05 (downsampling) stays");
        for k in 2..=MAX_REMOVED {
            let d = draws(&r, k);
            assert_eq!(d, draws(&r, k), "the same sets every time");
            assert_eq!(d.len(), DRAWS);
            for (i, set) in d.iter().enumerate() {
                assert_eq!(set.len(), k);
                assert!(set.windows(2).all(|w| w[0] < w[1]), "sorted, distinct: {set:?}");
                assert!(set.iter().all(|b| r.contains(b)), "{set:?}");
                assert!(!d[..i].contains(set), "no set twice: {d:?}");
            }
        }
        // Depth 8: 4 removable blocks, so C(4, 3) = 4 and C(4, 4) = 1 sets:
        // all of them.
        let r8 = removable(&layout(8).unwrap());
        assert_eq!(draws(&r8, 3), vec![vec![0, 2, 4], vec![0, 2, 6], vec![0, 4, 6], vec![2, 4, 6]]);
        assert_eq!(draws(&r8, 4), vec![vec![0, 2, 4, 6]]);
    }
}
