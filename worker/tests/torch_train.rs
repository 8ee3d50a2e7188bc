//! The CIFAR-10 reader and the trainer on tiny generated data: learning,
//! reproducibility, resume after a shutdown, divergence and bad input.
#![cfg(feature = "torch")]

mod drained;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use drained::drained;
use sweep_core::bmenet::BmenetTrial;
use sweep_core::{DataConfig, InitScheme, Optimizer, Precision, TrainConfig};
use sweep_worker::torch::cifar::{self, CifarError, IMAGE_BYTES, RECORD_BYTES};
use sweep_worker::torch::TorchTrainer;
use sweep_worker::trainer::{Metric, StopReason, TrainError, TrainEvent, TrainOutcome, Trainer, TrialJob};
use tch::Device;

/// libtorch's RNG is process-global, so trainings in this file (which the
/// test harness would run on parallel threads) take turns.
static TORCH: Mutex<()> = Mutex::new(());

fn pixel(label: u8, c: usize, y: usize, x: usize) -> u8 {
    ((c * 97 + y * 31 + x * 7 + label as usize * 13) % 256) as u8
}

fn image(label: u8) -> Vec<u8> {
    let mut v = vec![0u8; IMAGE_BYTES];
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                v[c * 1024 + y * 32 + x] = pixel(label, c, y, x);
            }
        }
    }
    v
}

#[test]
fn cifar_round_trip_labels_and_pixel_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.bin");
    let labels: Vec<u8> = vec![3, 0, 9, 5, 1];
    let images: Vec<Vec<u8>> = labels.iter().map(|&l| image(l)).collect();
    let n = cifar::write_cifar_bin(&path, labels.iter().zip(&images).map(|(l, i)| (*l, i.as_slice()))).unwrap();
    assert_eq!(n, 5);
    // The raw layout: label byte, then R plane, G plane, B plane, row-major.
    let raw = std::fs::read(&path).unwrap();
    assert_eq!(raw.len(), 5 * RECORD_BYTES);
    for (r, &l) in labels.iter().enumerate() {
        let rec = &raw[r * RECORD_BYTES..(r + 1) * RECORD_BYTES];
        assert_eq!(rec[0], l);
        assert_eq!(rec[1 + 2 * 1024 + 5 * 32 + 17], pixel(l, 2, 5, 17)); // blue, row 5, col 17
        assert_eq!(rec[1 + 31], pixel(l, 0, 0, 31)); // red, row 0, last column
        assert_eq!(rec[1 + 32], pixel(l, 0, 1, 0)); // red, row 1, first column
    }
    let split = cifar::read_batch_file(&path, None).unwrap();
    assert_eq!(split.labels, labels);
    for (i, img) in images.iter().enumerate() {
        assert_eq!(split.image(i), img.as_slice());
    }
    let first2 = cifar::read_batch_file(&path, Some(2)).unwrap();
    assert_eq!(first2.labels, vec![3, 0]);
    assert_eq!(first2.pixels.len(), 2 * IMAGE_BYTES);
}

#[test]
fn cifar_errors_name_file_and_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.bin");
    let img = image(1);
    cifar::write_cifar_bin(&path, [(1u8, img.as_slice()), (2, img.as_slice())]).unwrap();
    // Truncate: the second record loses its last 100 bytes.
    let mut raw = std::fs::read(&path).unwrap();
    raw.truncate(2 * RECORD_BYTES - 100);
    std::fs::write(&path, &raw).unwrap();
    let err = cifar::read_batch_file(&path, None).unwrap_err();
    assert!(matches!(err, CifarError::Truncated { record: 1, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("t.bin") && msg.contains("record 1"), "{msg}");
    // A label out of range, in record 1.
    let mut raw = std::fs::read(&path).unwrap();
    raw.truncate(RECORD_BYTES);
    raw.extend_from_slice(&raw.clone());
    raw[RECORD_BYTES] = 10;
    std::fs::write(&path, &raw).unwrap();
    let err = cifar::read_batch_file(&path, None).unwrap_err();
    assert!(matches!(err, CifarError::BadLabel { record: 1, label: 10, .. }), "{err:?}");
    // Writing refuses bad records instead of producing a bad file.
    assert!(cifar::write_cifar_bin(&path, [(11u8, img.as_slice())]).is_err());
    assert!(cifar::write_cifar_bin(&path, [(1u8, &img[..100])]).is_err());
    // Missing data.
    let err = cifar::load(dir.path(), None, None).unwrap_err();
    assert!(matches!(err, CifarError::NotFound { .. }), "{err:?}");
}

#[test]
fn cifar_folder_forms_subsets_and_cache() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(cifar::BATCHES_DIR);
    cifar::generate_synthetic(&root, 23, 7, 5).unwrap();
    let all = cifar::load(&root, None, None).unwrap();
    assert_eq!((all.train.len(), all.test.len()), (23, 7));
    // A parent folder holding cifar-10-batches-bin/ works too.
    let via_parent = cifar::load(dir.path(), None, None).unwrap();
    assert_eq!(via_parent.train, all.train);
    // Subsets take the first records across files in order (5 per file here).
    let sub = cifar::load(&root, Some(12), Some(3)).unwrap();
    assert_eq!(sub.train.labels, all.train.labels[..12]);
    assert_eq!(sub.train.pixels, all.train.pixels[..12 * IMAGE_BYTES]);
    assert_eq!(sub.test.labels, all.test.labels[..3]);
    // Same seed, same bytes; the cache hands out one shared copy.
    let again = dir.path().join("again");
    cifar::generate_synthetic(&again, 23, 7, 5).unwrap();
    assert_eq!(cifar::load(&again, None, None).unwrap().train, all.train);
    let a = cifar::load_cached(&root, Some(12), None).unwrap();
    let b = cifar::load_cached(dir.path(), Some(12), None).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
}

#[test]
fn cifar_tar_gz_is_unpacked_once() {
    if std::process::Command::new("tar").arg("--version").output().is_err() {
        eprintln!("no tar on this machine; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    cifar::generate_synthetic(&src.join(cifar::BATCHES_DIR), 10, 5, 9).unwrap();
    let archive = dir.path().join(cifar::ARCHIVE);
    let ok = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .arg(cifar::BATCHES_DIR)
        .status()
        .unwrap();
    assert!(ok.success());
    let cache = dir.path().join("cache");
    std::env::set_var("SWEEP_CACHE_DIR", &cache);
    let root = cifar::resolve_root(&archive).unwrap();
    assert!(root.starts_with(&cache), "{root:?}");
    let data = cifar::load(&archive, None, None).unwrap();
    assert_eq!(data.train, cifar::load(&src, None, None).unwrap().train);
    // A folder with only the archive in it resolves to the same cache.
    let only = dir.path().join("only");
    std::fs::create_dir(&only).unwrap();
    std::fs::rename(&archive, only.join(cifar::ARCHIVE)).unwrap();
    assert!(cifar::resolve_root(&only).is_ok());
}

// ---------------------------------------------------------------- training

fn dataset() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        // Under target/tmp, regenerated (same bytes) on every run.
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("torch-train-synthetic");
        cifar::generate_synthetic(&d, 120, 40, 11).unwrap();
        d
    })
}

/// A typed trial; [`job`] turns it into the generic spec the trainer gets.
fn spec(seed: u64, epochs: u32) -> BmenetTrial {
    BmenetTrial {
        depth: 8,
        skip: true,
        init: InitScheme::Default,
        batchnorm: true,
        seed,
        train: TrainConfig {
            epochs,
            batch_size: 8,
            optimizer: Optimizer::Sgd,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0,
            log_every: 3,
            augment: true,
            precision: Precision::Fp32,
        },
        analyses: Default::default(),
        data: DataConfig {
            dataset: "cifar10".into(),
            path: dataset().to_owned(),
            train_subset: None,
            test_subset: None,
        },
    }
}

/// A job whose coordinator vouches for any checkpoint step of store "s".
fn job(trial: BmenetTrial, ckpt: &Path) -> TrialJob {
    TrialJob {
        trial_id: "t".into(),
        spec: trial.spec(),
        attempt: 1,
        checkpoint_dir: ckpt.to_owned(),
        store_id: "s".into(),
        resume_step: Some(i64::MAX),
        keep_weights: false,
    }
}

/// Runs a trial with a context whose events are drained on another thread
/// ([`drained`]); `stop_when` may set the stop flag when it sees an event.
fn run(
    job: &TrialJob,
    stop_when: impl Fn(&TrainEvent) -> Option<StopReason> + Send + 'static,
) -> (Result<TrainOutcome, TrainError>, Vec<Metric>) {
    let d = drained(stop_when);
    let mut trainer = TorchTrainer::new(Device::Cpu, None);
    let r = trainer.train(job, &d.ctx);
    (r, d.finish())
}

fn series<'a>(ms: &'a [Metric], name: &str) -> Vec<&'a Metric> {
    ms.iter().filter(|m| m.name == name).collect()
}

/// Every metric except the timing one, as comparable tuples.
fn comparable(ms: &[Metric]) -> Vec<(String, i64, u32, f64)> {
    ms.iter().filter(|m| m.name != "images_per_sec").map(|m| (m.name.clone(), m.step, m.epoch, m.value)).collect()
}

#[test]
fn one_epoch_lowers_the_loss_and_reports_everything() {
    let _l = TORCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let ck = tempfile::tempdir().unwrap();
    // Adam learns this set fast enough for one short epoch to show it (SGD
    // with momentum is exercised by the resume test).
    let mut s = spec(1, 1);
    s.train.optimizer = Optimizer::Adam;
    s.train.lr = 3e-4;
    s.train.augment = false;
    let (r, ms) = run(&job(s, ck.path()), |_| None);
    let TrainOutcome::Succeeded(summary) = r.unwrap() else { panic!("not succeeded") };
    let losses: Vec<f64> = series(&ms, "train_loss").iter().map(|m| m.value).collect();
    // 120 images / batch 8 = 15 batches, logged every 3.
    assert_eq!(losses.len(), 5, "{losses:?}");
    assert_eq!(series(&ms, "train_loss").last().unwrap().step, 15);
    let first = losses[0];
    let last = (losses[3] + losses[4]) / 2.0;
    assert!(last < first * 0.8, "loss did not go down: {losses:?}");
    // Test metrics, per epoch.
    let acc = series(&ms, "test_accuracy");
    assert_eq!(acc.len(), 1);
    assert!((0.0..=1.0).contains(&acc[0].value));
    assert_eq!(summary.final_test_accuracy, Some(acc[0].value));
    assert_eq!(summary.best_test_accuracy, Some(acc[0].value));
    assert_eq!(summary.final_train_loss, Some(losses[4]));
    assert!(series(&ms, "images_per_sec")[0].value > 0.0);
    // Gradient norms for every group at every logging step.
    let groups = sweep_worker::torch::bmenet::group_names(8).unwrap();
    for g in &groups {
        let s = series(&ms, &format!("grad_norm/{g}"));
        assert_eq!(s.len(), 5, "{g}");
        assert!(s.iter().all(|m| m.value.is_finite() && m.value > 0.0), "{g}");
    }
    // The confusion matrix counts every test image once.
    let conf: f64 = ms.iter().filter(|m| m.name.starts_with("confusion/")).map(|m| m.value).sum();
    assert_eq!(conf, 40.0);
    assert_eq!(ms.iter().filter(|m| m.name.starts_with("confusion/")).count(), 100);
    assert_eq!(ms.iter().filter(|m| m.name.starts_with("class_accuracy/")).count(), 10);
    // A checkpoint was written.
    assert!(std::fs::read_dir(ck.path())
        .unwrap()
        .any(|e| { e.unwrap().file_name().to_string_lossy().starts_with("ckpt-") }));
}

#[test]
fn same_seed_same_curve_and_resume_continues_exactly() {
    let _l = TORCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut s = spec(3, 2);
    s.data.train_subset = Some(32);
    s.data.test_subset = Some(10);
    s.train.log_every = 2;

    let a_dir = tempfile::tempdir().unwrap();
    let (ra, a) = run(&job(s.clone(), a_dir.path()), |_| None);
    assert!(matches!(ra.unwrap(), TrainOutcome::Succeeded(_)));
    let b_dir = tempfile::tempdir().unwrap();
    let (rb, b) = run(&job(s.clone(), b_dir.path()), |_| None);
    assert!(matches!(rb.unwrap(), TrainOutcome::Succeeded(_)));
    assert_eq!(comparable(&a), comparable(&b), "same seed, different curve");

    let mut other = s.clone();
    other.seed = 4;
    other.train.epochs = 1;
    let o_dir = tempfile::tempdir().unwrap();
    let (_, o) = run(&job(other, o_dir.path()), |_| None);
    assert_ne!(series(&a, "train_loss")[0].value, series(&o, "train_loss")[0].value);

    // Stop (as on SIGTERM) once epoch 1 is evaluated, then run the same
    // trial again on the same checkpoint folder.
    let c_dir = tempfile::tempdir().unwrap();
    let j = job(s.clone(), c_dir.path());
    let (r1, part1) = run(&j, |ev| match ev {
        TrainEvent::Metric(m) if m.name == "test_accuracy" && m.epoch == 1 => Some(StopReason::Shutdown),
        _ => None,
    });
    assert!(matches!(r1.unwrap(), TrainOutcome::Stopped(StopReason::Shutdown)));
    assert!(series(&part1, "test_accuracy").len() == 1);
    let (r2, part2) = run(&j, |_| None);
    assert!(matches!(r2.unwrap(), TrainOutcome::Succeeded(_)));
    // The second attempt starts with epoch 2 and repeats no step.
    let last1 = part1.iter().map(|m| m.step).max().unwrap();
    let first_train2 = series(&part2, "train_loss")[0];
    assert_eq!(first_train2.epoch, 2);
    assert!(first_train2.step > last1);
    let keys1: HashSet<(String, i64)> = part1.iter().map(|m| (m.name.clone(), m.step)).collect();
    for m in &part2 {
        assert!(!keys1.contains(&(m.name.clone(), m.step)), "re-emitted {} at {}", m.name, m.step);
    }
    // And together they are the uninterrupted run, number for number
    // (weights, BN statistics and momentum were all restored).
    let mut joined = part1.clone();
    joined.extend(part2);
    assert_eq!(comparable(&joined), comparable(&a));
}

#[test]
fn a_blown_up_loss_ends_as_diverged() {
    let _l = TORCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut s = spec(5, 1);
    s.train.lr = 1e12;
    s.train.log_every = 1;
    s.batchnorm = false;
    s.data.train_subset = Some(48);
    s.data.test_subset = Some(10);
    let ck = tempfile::tempdir().unwrap();
    let (r, ms) = run(&job(s, ck.path()), |_| None);
    match r.unwrap() {
        TrainOutcome::Diverged(sum) => {
            // No non-finite number leaves the trainer: the divergence step
            // is reported instead of the NaN loss.
            assert_eq!(sum.final_train_loss, None);
            assert!(ms.iter().all(|m| m.value.is_finite()), "{ms:?}");
            let d = series(&ms, "diverged_step");
            assert_eq!(d.len(), 1, "{ms:?}");
            assert_eq!(d[0].value, d[0].step as f64);
            assert!(d[0].step >= 1 && d[0].step <= 48 / 8);
            assert!(series(&ms, "train_loss").iter().all(|m| m.step < d[0].step));
        }
        other => panic!("expected Diverged, got {other:?} with {:?}", series(&ms, "train_loss")),
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let _l = TORCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let ck = tempfile::tempdir().unwrap();
    let mut s = spec(1, 1);
    s.data.path = ck.path().join("nowhere");
    let (r, _) = run(&job(s, ck.path()), |_| None);
    assert!(matches!(r, Err(TrainError::Data(_))), "{r:?}");

    let mut s = spec(1, 1);
    s.depth = 12;
    let (r, _) = run(&job(s, ck.path()), |_| None);
    assert!(matches!(r, Err(TrainError::Model(_))), "{r:?}");

    let mut s = spec(1, 1);
    s.train.batch_size = 0;
    let (r, _) = run(&job(s, ck.path()), |_| None);
    assert!(r.is_err());

    // A checkpoint folder of another trial is refused, not silently used.
    let other = tempfile::tempdir().unwrap();
    let mut s = spec(1, 1);
    s.data.train_subset = Some(8);
    s.data.test_subset = Some(4);
    let (r, _) = run(&job(s.clone(), other.path()), |_| None);
    assert!(r.is_ok());
    s.seed = 2;
    let (r, _) = run(&job(s, other.path()), |_| None);
    assert!(matches!(r, Err(TrainError::Checkpoint(_))), "{r:?}");
}

fn ckpt_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn checkpoints_resume_only_when_the_store_vouches_and_final_weights_are_kept() {
    let _l = TORCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut s = spec(3, 1);
    s.data.train_subset = Some(16);
    s.data.test_subset = Some(8);
    s.train.log_every = 1;
    s.train.augment = false;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // keep_weights: the final weights and their spec stay next to the
    // checkpoint, which records its store and trial.
    let mut j = job(s.clone(), d);
    j.keep_weights = true;
    let (r, first) = run(&j, |_| None);
    assert!(matches!(r.unwrap(), TrainOutcome::Succeeded(_)));
    assert_eq!(ckpt_names(d), vec!["ckpt-000000000002".to_owned(), "final".to_owned()]);
    assert!(d.join("final/weights.ot").metadata().unwrap().len() > 0);
    let fin: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("final/meta.json")).unwrap()).unwrap();
    assert_eq!(fin["trial_id"], "t");
    assert_eq!(fin["spec"], s.spec().canonical());
    let meta_path = d.join("ckpt-000000000002/meta.json");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    assert_eq!((meta["store_id"].as_str(), meta["trial_id"].as_str()), (Some("s"), Some("t")));
    assert_eq!(meta["version"], 2);
    assert_eq!(series(&first, "train_loss").len(), 2);

    // The same folder seen from another database: ignored, deleted, and the
    // trial trains from scratch (the very same curve: same seed).
    let mut other = job(s.clone(), d);
    other.store_id = "another-db".into();
    let (r, again) = run(&other, |_| None);
    assert!(matches!(r.unwrap(), TrainOutcome::Succeeded(_)));
    assert_eq!(comparable(&again), comparable(&first));
    assert_eq!(ckpt_names(d), vec!["ckpt-000000000002".to_owned()], "the old folder (final/ too) was deleted");

    // This database vouches for no checkpoint (a fresh one), or only for an
    // older step: ignored as well.
    for vouched in [None, Some(1)] {
        let mut j = job(s.clone(), d);
        j.store_id = "another-db".into();
        j.resume_step = vouched;
        let (r, ms) = run(&j, |_| None);
        assert!(matches!(r.unwrap(), TrainOutcome::Succeeded(_)));
        assert_eq!(comparable(&ms), comparable(&first), "vouched {vouched:?}");
    }

    // A checkpoint of an older format: ignored with a log line, not an error.
    let meta_path = d.join("ckpt-000000000002/meta.json");
    let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["version"] = 1.into();
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let mut j = job(s.clone(), d);
    j.store_id = "another-db".into();
    let (r, ms) = run(&j, |_| None);
    assert!(matches!(r.unwrap(), TrainOutcome::Succeeded(_)), "an old format must not fail the trial");
    assert_eq!(comparable(&ms), comparable(&first));

    // Vouched by this database: resumed (from the final checkpoint, so no
    // training step is repeated).
    let (r, ms) = run(&j, |_| None);
    assert!(matches!(r.unwrap(), TrainOutcome::Succeeded(_)));
    assert!(series(&ms, "train_loss").is_empty(), "{ms:?}");
}

#[test]
fn a_subset_larger_than_the_data_is_reported() {
    let _l = TORCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut s = spec(2, 1);
    s.train.batch_size = 40;
    s.data.train_subset = Some(1000);
    s.data.test_subset = Some(1000);
    let dir = tempfile::tempdir().unwrap();
    let (r, ms) = run(&job(s.clone(), dir.path()), |_| None);
    assert!(matches!(r.unwrap(), TrainOutcome::Succeeded(_)));
    let used = series(&ms, "train_images_used");
    assert_eq!(used.len(), 1, "{ms:?}");
    assert_eq!(used[0].value, 120.0);
    assert_eq!(series(&ms, "test_images_used")[0].value, 40.0);
    // Not reported when the data holds what was asked for.
    s.data.train_subset = Some(80);
    s.data.test_subset = None;
    let dir = tempfile::tempdir().unwrap();
    let (_, ms) = run(&job(s, dir.path()), |_| None);
    assert!(series(&ms, "train_images_used").is_empty() && series(&ms, "test_images_used").is_empty());
}
