//! The workers this coordinator has heard from: who asked for work (with
//! their device, threads and slots), and when each last called (a lease
//! call or a heartbeat). Behind `sweep workers` and the
//! `sweep_workers_connected` metric.
//!
//! Memory, not the database: a worker is "connected" only while it calls,
//! and a restarted coordinator learns its fleet again within one lease
//! wait. Entries silent for an hour are forgotten, so the map stays as
//! small as the fleet. What lasts (a trial's worker, quarantine counts)
//! is in the store.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Forgotten after this long without a call.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// What a worker said about itself, and when it last called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub worker_id: String,
    /// The identity (token hash) it calls with; empty without auth.
    pub holder: String,
    pub device: String,
    pub threads: u32,
    /// Trials it asks for at once (its fused group size).
    pub slots: u32,
    /// When it last leased, asked for work or heartbeat.
    pub last_call: Instant,
}

#[derive(Debug, Default)]
pub struct Fleet {
    members: Mutex<HashMap<String, Member>>,
}

impl Fleet {
    /// A lease call (granted, empty or refused).
    pub fn asked(&self, worker_id: &str, holder: &str, device: &str, threads: u32, slots: u32) {
        if worker_id.is_empty() {
            return;
        }
        let member = Member {
            worker_id: worker_id.to_owned(),
            holder: holder.to_owned(),
            device: device.to_owned(),
            threads,
            slots: slots.max(1),
            last_call: Instant::now(),
        };
        if let Ok(mut members) = self.members.lock() {
            members.insert(worker_id.to_owned(), member);
            if members.len() > 1024 {
                members.retain(|_, m| m.last_call.elapsed() <= FORGET_AFTER);
            }
        }
    }

    /// A heartbeat from a worker already known (one that leased).
    pub fn heard(&self, worker_id: &str) {
        if let Ok(mut members) = self.members.lock() {
            if let Some(m) = members.get_mut(worker_id) {
                m.last_call = Instant::now();
            }
        }
    }

    /// Workers that called within `within`, by worker ID.
    pub fn recent(&self, within: Duration) -> Vec<Member> {
        let Ok(mut members) = self.members.lock() else { return Vec::new() };
        members.retain(|_, m| m.last_call.elapsed() <= FORGET_AFTER);
        let mut recent: Vec<Member> = members.values().filter(|m| m.last_call.elapsed() <= within).cloned().collect();
        recent.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        recent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_recent_after_a_call_and_heartbeats_refresh_only_known_workers() {
        let fleet = Fleet::default();
        fleet.asked("w1", "h", "cuda:0", 4, 8);
        fleet.heard("stranger");
        let recent = fleet.recent(Duration::from_secs(60));
        assert_eq!(recent.len(), 1);
        assert_eq!((recent[0].device.as_str(), recent[0].threads, recent[0].slots), ("cuda:0", 4, 8));
        std::thread::sleep(Duration::from_millis(20));
        assert!(fleet.recent(Duration::from_millis(10)).is_empty());
        fleet.heard("w1");
        assert_eq!(fleet.recent(Duration::from_millis(10)).len(), 1);
        fleet.asked("", "h", "cpu", 0, 0);
        assert_eq!(fleet.recent(Duration::from_secs(60)).len(), 1);
    }
}
