//! Training speed of the real trainer ([`TorchTrainer`]), for
//! `bench/train_speed.sh`.
//!
//! Runs one trial (or, with `--fuse K`, the K seeds 1..=K of one cell as a
//! fused group, through the trainer's `train_group`) of `--epochs` epochs
//! (default 2) over the first `--images` training images and prints the
//! last epoch's training images per second as one JSON line: with K > 1
//! the group's, K times each member's own `images_per_sec` metric (every
//! member sees every batch step of the group). The first epoch is warm-up (allocator, oneDNN primitive
//! caches), so with the default the figure is steady-state; the timer
//! covers the training batches only (not evaluation or checkpointing), which
//! is what `bench/bmenet_pytorch.py` measures too.
//!
//! ```text
//! cargo run --release -p sweep-worker --example train_bench -- \
//!     --depth 32 --batch 4 --images 400 --threads 2 [--fuse 4] [--device cuda:0] [--data DIR]
//! ```
//! Without `--data` (or when it holds no CIFAR-10) a synthetic set is
//! generated in a temporary folder.

use std::path::PathBuf;

use clap::Parser;
use sweep_core::bmenet::BmenetTrial;
use sweep_core::{DataConfig, InitScheme, Optimizer, Precision, TrainConfig};
use sweep_worker::torch::{cifar, TorchTrainer};
use sweep_worker::trainer::{StopFlag, TrainContext, TrainEvent, TrainOutcome, Trainer, TrialJob};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 8)]
    depth: u32,
    #[arg(long, default_value_t = 4)]
    batch: u32,
    /// Training images per epoch.
    #[arg(long, default_value_t = 1000)]
    images: u64,
    #[arg(long, default_value_t = 2)]
    epochs: u32,
    /// libtorch intra-op threads (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    #[arg(long)]
    no_skip: bool,
    #[arg(long)]
    no_batchnorm: bool,
    /// Seeds trained as one fused group.
    #[arg(long, default_value_t = 1)]
    fuse: u64,
    /// `cpu` or `cuda[:N]`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// `fp32` or `bf16` (the grid's `[train] precision`).
    #[arg(long, default_value = "fp32")]
    precision: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    let tmp = tempfile_dir()?;
    let data = match &args.data {
        Some(d) if cifar::resolve_root(d).is_ok() => d.clone(),
        _ => {
            let n = args.images as usize;
            cifar::generate_synthetic(&tmp.join("data"), n, 100, 1)?
        }
    };
    let device = sweep_worker::torch::parse_device(&args.device)?;
    let precision: Precision = args.precision.parse()?;
    let mut jobs = Vec::new();
    let mut drains = Vec::new();
    for seed in 1..=args.fuse.max(1) {
        let trial = BmenetTrial {
            depth: args.depth,
            skip: !args.no_skip,
            init: InitScheme::Default,
            batchnorm: !args.no_batchnorm,
            seed,
            train: TrainConfig {
                epochs: args.epochs,
                batch_size: args.batch,
                optimizer: Optimizer::Sgd,
                lr: args.lr,
                momentum: 0.9,
                weight_decay: 0.0,
                // No logging step inside the timed epochs: the PyTorch script
                // computes no gradient norms either.
                log_every: u32::MAX,
                augment: false,
                precision,
            },
            analyses: Default::default(),
            data: DataConfig {
                dataset: "cifar10".into(),
                path: data.clone(),
                train_subset: Some(args.images),
                test_subset: Some(100),
            },
        };
        let job = TrialJob {
            trial_id: format!("bench-{seed}"),
            spec: trial.spec(),
            attempt: 1,
            checkpoint_dir: tmp.join(format!("ckpt-{seed}")),
            store_id: "bench".into(),
            resume_step: None,
            keep_weights: false,
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        drains.push(std::thread::spawn(move || {
            let mut ips = Vec::new();
            while let Some(ev) = rx.blocking_recv() {
                match ev {
                    TrainEvent::Metric(m) if m.name == "images_per_sec" => ips.push(m.value),
                    TrainEvent::Barrier { ack, .. } => {
                        let _ = ack.0.send(true);
                    }
                    _ => {}
                }
            }
            ips
        }));
        jobs.push((job, TrainContext::new(tx, StopFlag::new())));
    }
    let mut trainer = TorchTrainer::new(device, None);
    let outcomes = trainer.train_group(&jobs);
    drop(jobs);
    let mut group_ips = Vec::new();
    for (outcome, drain) in outcomes.into_iter().zip(drains) {
        let ips = drain.join().map_err(|_| "metric thread panicked")?;
        if !matches!(outcome, Ok(TrainOutcome::Succeeded(_))) {
            return Err(format!("trial did not succeed: {outcome:?}").into());
        }
        group_ips = ips;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let k = args.fuse.max(1) as f64;
    let last = group_ips.last().copied().ok_or("no images_per_sec metric")? * k;
    println!(
        "{{\"impl\": \"rust-tch\", \"depth\": {}, \"batch\": {}, \"images\": {}, \"threads\": {}, \
         \"fuse\": {}, \"device\": \"{}\", \"data\": \"{}\", \"images_per_sec\": {:.2}, \"per_epoch\": {:?}}}",
        args.depth,
        args.batch,
        args.images,
        tch::get_num_threads(),
        args.fuse.max(1),
        args.device,
        data.display(),
        last,
        group_ips.iter().map(|v| (v * k * 100.0).round() / 100.0).collect::<Vec<_>>()
    );
    Ok(())
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("sweep-train-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
