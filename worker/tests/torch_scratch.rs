#![cfg(feature = "torch")]
use sweep_core::{DataConfig, InitScheme, Optimizer, TrainConfig, TrialSpec};
use sweep_worker::torch::{cifar, TorchTrainer};
use sweep_worker::trainer::*;
#[test]
fn scratch() {
    let d = std::env::temp_dir().join("scratch-data");
    cifar::generate_synthetic(&d, 120, 40, 11).unwrap();
    for (lr, mom, opt, aug, bs) in [(0.01, 0.9, Optimizer::Sgd, false, 4u32), (0.003, 0.9, Optimizer::Sgd, false, 4), (0.02, 0.0, Optimizer::Sgd, false, 8), (0.0001, 0.0, Optimizer::Adam, false, 8), (0.0003, 0.0, Optimizer::Adam, false, 8)] {
        let spec = TrialSpec { depth: 8, skip: true, init: InitScheme::Default, batchnorm: true, seed: 1,
            train: TrainConfig { epochs: 1, batch_size: bs, optimizer: opt, lr, momentum: mom, weight_decay: 0.0, log_every: 5, augment: aug },
            data: DataConfig { dataset: "cifar10".into(), path: d.clone(), train_subset: None, test_subset: None } };
        let ck = tempfile::tempdir().unwrap();
        let job = TrialJob { trial_id: "t".into(), spec, attempt: 1, checkpoint_dir: ck.path().to_owned() };
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let h = std::thread::spawn(move || { let mut v = vec![]; while let Some(e) = rx.blocking_recv() { if let TrainEvent::Metric(m) = e { if m.name == "train_loss" || m.name.starts_with("test_") { v.push((m.name, (m.value * 1000.0).round() / 1000.0)); } } } v });
        let ctx = TrainContext::new(tx, StopFlag::new());
        let r = TorchTrainer::new(tch::Device::Cpu, None).train(&job, &ctx);
        drop(ctx);
        eprintln!("lr {lr} mom {mom} {opt:?}: {:?} {:?}", r.is_ok(), h.join().unwrap());
    }
}
