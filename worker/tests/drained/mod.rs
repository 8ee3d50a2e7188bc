//! A trainer's events, received the way the daemon would on another thread:
//! metric points collected, every checkpoint barrier acknowledged at once,
//! and the stop flag set when `stop_when` says so for an event (the
//! trainer's `TrainContext::metric` blocks on a bounded channel, so someone
//! must drain it).
#![allow(dead_code)]

use sweep_worker::trainer::{Metric, StopFlag, StopReason, TrainContext, TrainEvent};

pub(crate) struct Drained {
    pub ctx: TrainContext,
    pub drain: std::thread::JoinHandle<Vec<Metric>>,
}

impl Drained {
    /// Closes the context and returns every metric point it carried.
    pub(crate) fn finish(self) -> Vec<Metric> {
        drop(self.ctx);
        self.drain.join().expect("drain thread")
    }
}

pub(crate) fn drained(stop_when: impl Fn(&TrainEvent) -> Option<StopReason> + Send + 'static) -> Drained {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let stop = StopFlag::new();
    let flag = stop.clone();
    let drain = std::thread::spawn(move || {
        let mut out = Vec::new();
        while let Some(ev) = rx.blocking_recv() {
            if let Some(r) = stop_when(&ev) {
                flag.stop(r);
            }
            match ev {
                TrainEvent::Metric(m) => out.push(m),
                TrainEvent::Barrier { ack, .. } => {
                    let _ = ack.0.send(true);
                }
                _ => {}
            }
        }
        out
    });
    Drained { ctx: TrainContext::new(tx, stop), drain }
}
