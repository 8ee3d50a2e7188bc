//! Slots (issue 10): several trainings at once on one device, admitted by
//! its free memory; running out of memory beside other trainings is the
//! device's fault, not the trial's.
//!
//! A real coordinator over real gRPC on loopback. The memory tests run the
//! worker daemon in this process, so that a fake GPU (a memory probe and
//! an allocator that fails like CUDA's) can stand in for a real one; the
//! trainer is the simulated test double, wrapped to allocate on that fake
//! GPU while it trains. The last test runs the real `sweep-worker` binary.

mod common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sweep_core::TrialState;
use sweep_worker::daemon::{self, WorkerConfig};
use sweep_worker::memory::{DeviceMemory, KeepFree, MemoryProbe};
use sweep_worker::simulated::SimulatedTrainer;
use sweep_worker::trainer::{TrainContext, TrainError, TrainOutcome, Trainer, TrainerFactory, TrialJob};

const MIB: u64 = 1 << 20;

/// Eight seeds of one cell; each trial is 2 epochs of 4 batches, a
/// progress report after every batch.
fn seeds_grid(max_attempts: u32) -> String {
    format!(
        r#"
name = "slots"
seeds = 8
[grid]
depth = 8
skip = true
init = "default"
batchnorm = true
[train]
epochs = 2
batch_size = 4
log_every = 1
[data]
path = "data"
train_subset = 16
[run]
max_attempts = {max_attempts}
"#
    )
}

/// A GPU's memory as the tests see it: what trainings (and "other
/// processes") hold, and the peaks reached.
#[derive(Debug, Default)]
struct FakeGpu {
    total: u64,
    used: AtomicU64,
    peak_used: AtomicU64,
    running: AtomicUsize,
    peak_running: AtomicUsize,
    ooms: AtomicUsize,
    /// Reads of the free memory so far.
    reads: AtomicUsize,
    /// "Another process" takes this many bytes right after the given read.
    grab_after_read: Option<(usize, u64)>,
}

impl FakeGpu {
    fn new(total: u64) -> Arc<FakeGpu> {
        Arc::new(FakeGpu { total, ..Default::default() })
    }

    fn free_bytes(&self) -> u64 {
        let free = self.total - self.used.load(Ordering::SeqCst);
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((after, bytes)) = self.grab_after_read {
            if n == after {
                self.used.fetch_add(bytes, Ordering::SeqCst);
            }
        }
        free
    }

    /// Takes `bytes`, or fails the way CUDA's allocator does.
    fn alloc(&self, bytes: u64) -> Result<(), TrainError> {
        let r = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| (u + bytes <= self.total).then_some(u + bytes));
        match r {
            Ok(before) => {
                self.peak_used.fetch_max(before + bytes, Ordering::SeqCst);
                Ok(())
            }
            Err(_) => {
                self.ooms.fetch_add(1, Ordering::SeqCst);
                Err(TrainError::from_libtorch(&format!("CUDA out of memory. Tried to allocate {} MiB", bytes / MIB)))
            }
        }
    }

    fn free(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct Probe(Arc<FakeGpu>);

impl MemoryProbe for Probe {
    fn free_bytes(&self) -> Result<u64, String> {
        Ok(self.0.free_bytes())
    }
}

/// The simulated trainer, holding `takes` bytes of the fake GPU while it
/// trains and estimating `estimate` per trial beforehand.
struct GpuTrainer {
    gpu: Arc<FakeGpu>,
    inner: SimulatedTrainer,
    estimate: u64,
    takes: u64,
}

impl Trainer for GpuTrainer {
    fn footprint(&self, jobs: &[(TrialJob, TrainContext)]) -> u64 {
        self.estimate * jobs.len() as u64
    }

    fn train(&mut self, job: &TrialJob, ctx: &TrainContext) -> Result<TrainOutcome, TrainError> {
        self.gpu.alloc(self.takes)?;
        let now = self.gpu.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.gpu.peak_running.fetch_max(now, Ordering::SeqCst);
        let result = self.inner.train(job, ctx);
        self.gpu.running.fetch_sub(1, Ordering::SeqCst);
        self.gpu.free(self.takes);
        result
    }
}

/// Every trial of the sweep, each checked to have succeeded.
async fn all_succeeded(coord: &Coordinator) -> Vec<sweep_coordinator::store::TrialRecord> {
    let trials = coord.store.trials("slots").await.unwrap();
    for t in &trials {
        assert_eq!(t.state, TrialState::Succeeded, "{}: {:?}", t.trial_id, t.last_error);
    }
    trials
}

/// Runs an in-process worker with `slots` slots on `gpu` until it has been
/// idle for two seconds.
async fn run_worker(url: &str, dir: &std::path::Path, gpu: &Arc<FakeGpu>, slots: u32, estimate: u64, takes: u64) {
    let mut config = WorkerConfig::new(url);
    config.worker_id = "fake-gpu".into();
    config.device = "cuda:0".into();
    config.checkpoint_root = dir.join("checkpoints");
    config.lease_wait = Duration::from_millis(500);
    config.idle_exit = Some(Duration::from_secs(2));
    config.slots = slots;
    config.memory = Some(DeviceMemory { probe: Arc::new(Probe(gpu.clone())), keep_free: KeepFree::Bytes(0) });
    let g = gpu.clone();
    let factory: TrainerFactory = Arc::new(move || {
        let inner = SimulatedTrainer::new(Duration::from_millis(25));
        Ok(Box::new(GpuTrainer { gpu: g.clone(), inner, estimate, takes }) as Box<dyn Trainer>)
    });
    tokio::time::timeout(Duration::from_secs(120), daemon::run(config, factory, std::future::pending()))
        .await
        .expect("the worker ends once idle")
        .expect("the worker ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_never_exceed_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), fast_config(Duration::from_secs(20))).await;
    coord.store.submit(&grid(&seeds_grid(3)), 0).await.unwrap();
    // Each training takes 150 MiB, half as much again as the trainer
    // estimates: 400 MiB hold two, not three. Four slots would overrun it
    // (and run out of memory) without admission.
    let gpu = FakeGpu::new(400 * MIB);
    run_worker(&coord.url, dir.path(), &gpu, 4, 100 * MIB, 150 * MIB).await;

    assert_eq!(gpu.ooms.load(Ordering::SeqCst), 0, "admission let a training run out of memory");
    assert!(gpu.peak_used.load(Ordering::SeqCst) <= 400 * MIB);
    assert_eq!(gpu.peak_running.load(Ordering::SeqCst), 2, "two trainings fit, and ran side by side");
    for t in all_succeeded(&coord).await {
        assert_eq!((t.attempts, t.failures, t.handbacks), (1, 0, 0), "{}", t.trial_id);
    }
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_beside_others_requeues_without_an_attempt_and_lowers_the_slots() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), fast_config(Duration::from_secs(20))).await;
    // One attempt each: a trial failure would fail the trial for good.
    coord.store.submit(&grid(&seeds_grid(1)), 0).await.unwrap();
    // The estimate is right (100 MiB) and the budget holds four, but
    // another process takes 150 MiB once the worker has measured its
    // second training (reads of the free memory: 1 at start, then one as
    // each training is admitted and one after its first step, so
    // read 5 measures the second): the third training at once runs out of
    // memory.
    let gpu = Arc::new(FakeGpu { total: 400 * MIB, grab_after_read: Some((5, 150 * MIB)), ..Default::default() });
    run_worker(&coord.url, dir.path(), &gpu, 4, 100 * MIB, 100 * MIB).await;

    let ooms = gpu.ooms.load(Ordering::SeqCst);
    assert!(ooms >= 1, "the test did not provoke an out-of-memory error");
    let mut handbacks = 0;
    for t in all_succeeded(&coord).await {
        assert_eq!(t.failures, 0, "{} used an attempt on out-of-memory", t.trial_id);
        handbacks += t.handbacks as usize;
    }
    assert_eq!(handbacks, ooms, "every trial that ran out of memory was handed back once");
    // After lowering, the slots left fit beside the other process.
    assert!(gpu.peak_used.load(Ordering::SeqCst) <= 400 * MIB);
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_alone_fails_the_trial_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), fast_config(Duration::from_secs(20))).await;
    let mut text = seeds_grid(1);
    text = text.replace("seeds = 8", "seeds = 1");
    coord.store.submit(&grid(&text), 0).await.unwrap();
    // 300 MiB on a 200 MiB device: it does not fit, even alone.
    let gpu = FakeGpu::new(200 * MIB);
    run_worker(&coord.url, dir.path(), &gpu, 2, 100 * MIB, 300 * MIB).await;

    let t = coord.store.trials("slots").await.unwrap().remove(0);
    assert_eq!(t.state, TrialState::Failed);
    let why = t.last_error.unwrap_or_default();
    assert!(why.contains("out of device memory") && why.contains("does not fit"), "{why}");
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_with_three_slots_trains_three_trials_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), fast_config(Duration::from_secs(20))).await;
    coord.store.submit(&grid(&seeds_grid(3)), 0).await.unwrap();
    let mut w =
        spawn_worker(&coord.url, "slots3", &dir.path().join("ck"), 60, &["--slots", "3", "--idle-exit-secs", "2"]);
    wait_for(&coord.store, "slots", Duration::from_secs(60), "three trials running at once", |s| s.running.len() >= 3)
        .await;
    wait_for(&coord.store, "slots", Duration::from_secs(120), "all trials to finish", |s| s.counts.finished()).await;
    let status = tokio::time::timeout(Duration::from_secs(30), w.wait()).await.expect("exits when idle").unwrap();
    assert!(status.success(), "{status}");
    for t in all_succeeded(&coord).await {
        assert_eq!(t.attempts, 1, "{}", t.trial_id);
    }
    coord.stop().await;
}
