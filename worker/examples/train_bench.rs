//! Training speed of the real trainer ([`TorchTrainer`]), for
//! `bench/train_speed.sh`.
//!
//! Runs one trial of `--epochs` epochs (default 2) over the first `--images`
//! training images and prints the last epoch's `images_per_sec` metric as one
//! JSON line. The first epoch is warm-up (allocator, oneDNN primitive
//! caches), so with the default the figure is steady-state; the timer
//! covers the training batches only (not evaluation or checkpointing), which
//! is what `bench/bmenet_pytorch.py` measures too.
//!
//! ```text
//! cargo run --release -p sweep-worker --example train_bench -- \
//!     --depth 32 --batch 4 --images 400 --threads 2 [--data DIR]
//! ```
//! Without `--data` (or when it holds no CIFAR-10) a synthetic set is
//! generated in a temporary folder.

use std::path::PathBuf;

use clap::Parser;
use sweep_core::bmenet::BmenetTrial;
use sweep_core::{DataConfig, InitScheme, Optimizer, TrainConfig};
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
    let trial = BmenetTrial {
        depth: args.depth,
        skip: !args.no_skip,
        init: InitScheme::Default,
        batchnorm: !args.no_batchnorm,
        seed: 1,
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
        },
        data: DataConfig {
            dataset: "cifar10".into(),
            path: data.clone(),
            train_subset: Some(args.images),
            test_subset: Some(100),
        },
    };
    let job = TrialJob {
        trial_id: "bench".into(),
        spec: trial.spec(),
        attempt: 1,
        checkpoint_dir: tmp.join("ckpt"),
        store_id: "bench".into(),
        resume_step: None,
        keep_weights: false,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let drain = std::thread::spawn(move || {
        let mut ips = Vec::new();
        while let Some(ev) = rx.blocking_recv() {
            if let TrainEvent::Metric(m) = ev {
                if m.name == "images_per_sec" {
                    ips.push(m.value);
                }
            }
        }
        ips
    });
    let ctx = TrainContext::new(tx, StopFlag::new());
    let mut trainer = TorchTrainer::new(tch::Device::Cpu, None);
    let outcome = trainer.train(&job, &ctx)?;
    drop(ctx);
    let ips = drain.join().map_err(|_| "metric thread panicked")?;
    let _ = std::fs::remove_dir_all(&tmp);
    if !matches!(outcome, TrainOutcome::Succeeded(_)) {
        return Err(format!("trial did not succeed: {outcome:?}").into());
    }
    let last = ips.last().copied().ok_or("no images_per_sec metric")?;
    println!(
        "{{\"impl\": \"rust-tch\", \"depth\": {}, \"batch\": {}, \"images\": {}, \"threads\": {}, \
         \"data\": \"{}\", \"images_per_sec\": {:.2}, \"per_epoch\": {:?}}}",
        args.depth,
        args.batch,
        args.images,
        tch::get_num_threads(),
        data.display(),
        last,
        ips.iter().map(|v| (v * 100.0).round() / 100.0).collect::<Vec<_>>()
    );
    Ok(())
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("sweep-train-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
