//! The worker's Prometheus metrics (`sweep-worker --metrics-listen ADDR`,
//! plain HTTP `GET /metrics`): what each running trial is doing (epoch,
//! step, last loss, training images per second), trials by how they ended,
//! and on CUDA the device's free and used memory (NVML, read at scrape).
//!
//! Images per second are measured here, from the progress events every
//! trainer sends (steps times the trial's batch size over the time between
//! two events), so they mean the same for every trainer. A trial's series
//! go away when it ends.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::memory::DeviceMemory;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrialLabel {
    sweep: String,
    trial: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Where a running trial was at its last progress event.
struct Running {
    label: TrialLabel,
    batch_size: u64,
    last: Option<(Instant, i64)>,
}

pub struct Telemetry {
    registry: Registry,
    running: Gauge,
    finished: Family<OutcomeLabel, Counter>,
    epoch: Family<TrialLabel, Gauge>,
    step: Family<TrialLabel, Gauge>,
    loss: Family<TrialLabel, FloatGauge>,
    images_per_sec: Family<TrialLabel, FloatGauge>,
    memory_free: FloatGauge,
    memory_used: FloatGauge,
    trials: Mutex<HashMap<String, Running>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Default for Telemetry {
    /// Without device memory series (the CPU, or no NVML).
    fn default() -> Self {
        Telemetry::new(false)
    }
}

impl Telemetry {
    /// `memory`: with the device memory series (a device NVML reads).
    pub fn new(memory: bool) -> Self {
        let t = Telemetry {
            registry: Registry::default(),
            running: Gauge::default(),
            finished: Family::default(),
            epoch: Family::default(),
            step: Family::default(),
            loss: Family::default(),
            images_per_sec: Family::default(),
            memory_free: FloatGauge::default(),
            memory_used: FloatGauge::default(),
            trials: Mutex::default(),
        };
        let mut registry = Registry::default();
        registry.register("sweep_worker_trials_running", "Trials this worker trains now", t.running.clone());
        registry.register(
            "sweep_worker_trials_finished",
            "Trials this worker ended, by how (succeeded, diverged, failed, handed_back, stopped, lease_lost)",
            t.finished.clone(),
        );
        registry.register("sweep_worker_trial_epoch", "The epoch a running trial trains (1-based)", t.epoch.clone());
        registry.register("sweep_worker_trial_step", "A running trial's global step", t.step.clone());
        registry.register("sweep_worker_trial_loss", "A running trial's last logged training loss", t.loss.clone());
        registry.register(
            "sweep_worker_images_per_second",
            "Training images per second of a running trial, between its last two progress events",
            t.images_per_sec.clone(),
        );
        if memory {
            registry.register(
                "sweep_worker_device_memory_free_bytes",
                "Free memory of the training device (CUDA only, from NVML)",
                t.memory_free.clone(),
            );
            registry.register(
                "sweep_worker_device_memory_used_bytes",
                "Used memory of the training device, all processes (CUDA only, from NVML)",
                t.memory_used.clone(),
            );
        }
        Telemetry { registry, ..t }
    }

    /// A trial started training with this batch size.
    pub fn started(&self, trial: &str, sweep: &str, batch_size: u64) {
        let label = TrialLabel { sweep: sweep.to_owned(), trial: trial.to_owned() };
        if let Ok(mut trials) = self.trials.lock() {
            trials.insert(trial.to_owned(), Running { label, batch_size, last: None });
            self.running.set(trials.len() as i64);
        }
    }

    /// A trial's progress event.
    pub fn progress(&self, trial: &str, epoch: u32, step: i64, loss: Option<f64>) {
        let Ok(mut trials) = self.trials.lock() else { return };
        let Some(t) = trials.get_mut(trial) else { return };
        self.epoch.get_or_create(&t.label).set(i64::from(epoch));
        self.step.get_or_create(&t.label).set(step);
        if let Some(l) = loss.filter(|l| l.is_finite()) {
            self.loss.get_or_create(&t.label).set(l);
        }
        let now = Instant::now();
        if let Some((at, from)) = t.last {
            let secs = now.duration_since(at).as_secs_f64();
            if step > from && secs > 0.0 {
                self.images_per_sec.get_or_create(&t.label).set((step - from) as f64 * t.batch_size as f64 / secs);
            }
        }
        t.last = Some((now, step));
    }

    /// A trial ended (`outcome` as in `sweep_worker_trials_finished`).
    pub fn ended(&self, trial: &str, outcome: &'static str) {
        self.finished.get_or_create(&OutcomeLabel { outcome }).inc();
        let Ok(mut trials) = self.trials.lock() else { return };
        if let Some(t) = trials.remove(trial) {
            self.epoch.remove(&t.label);
            self.step.remove(&t.label);
            self.loss.remove(&t.label);
            self.images_per_sec.remove(&t.label);
        }
        self.running.set(trials.len() as i64);
    }

    /// The exposition text, with the device's memory read now.
    pub fn render(&self, memory: Option<&DeviceMemory>) -> String {
        if let Some(m) = memory {
            if let Ok(free) = m.probe.free_bytes() {
                self.memory_free.set(free as f64);
            }
            if let Ok(used) = m.probe.used_bytes() {
                self.memory_used.set(used as f64);
            }
        }
        let mut text = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves. The NVML
/// read runs on a blocking thread.
pub async fn serve(
    listener: tokio::net::TcpListener,
    telemetry: Arc<Telemetry>,
    memory: Option<DeviceMemory>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::header;
    let scrape = move || {
        let (telemetry, memory) = (telemetry.clone(), memory.clone());
        async move {
            let text = tokio::task::spawn_blocking(move || telemetry.render(memory.as_ref())).await.unwrap_or_default();
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
        }
    };
    let app = axum::Router::new().route("/metrics", axum::routing::get(scrape));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trials_series_follow_its_progress_and_go_when_it_ends() {
        let t = Telemetry::default();
        t.started("t1", "s", 32);
        t.progress("t1", 1, 10, Some(2.0));
        std::thread::sleep(std::time::Duration::from_millis(50));
        t.progress("t1", 1, 20, Some(1.5));
        let text = t.render(None);
        assert!(text.contains("sweep_worker_trials_running 1"), "{text}");
        assert!(text.contains(r#"sweep_worker_trial_step{sweep="s",trial="t1"} 20"#), "{text}");
        assert!(text.contains(r#"sweep_worker_trial_loss{sweep="s",trial="t1"} 1.5"#), "{text}");
        let ips: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(r#"sweep_worker_images_per_second{sweep="s",trial="t1"} "#))
            .unwrap()
            .parse()
            .unwrap();
        // 10 steps of 32 images in a little over 50 ms.
        assert!(ips > 1000.0 && ips < 6400.0, "{ips}");
        t.ended("t1", "succeeded");
        let text = t.render(None);
        assert!(text.contains("sweep_worker_trials_running 0"), "{text}");
        assert!(!text.contains(r#"trial="t1""#), "{text}");
        assert!(text.contains(r#"sweep_worker_trials_finished_total{outcome="succeeded"} 1"#), "{text}");
    }
}
