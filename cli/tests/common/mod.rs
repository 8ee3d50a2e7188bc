//! Grid files shared by the CLI tests.
#![allow(dead_code)]

/// A small grid for `sweep run` with the simulated trainer: depth 8 and 16
/// x skip on/off, `seeds` seeds, 2 epochs of 4 batches.
pub fn small_grid(name: &str, seeds: u32) -> String {
    format!(
        r#"
name = "{name}"
seeds = {seeds}
[grid]
depth = [8, 16]
skip = [true, false]
init = "default"
batchnorm = true
[train]
epochs = 2
batch_size = 4
log_every = 2
[data]
path = "data"
train_subset = 16
"#
    )
}
