//! Which trainings may run on the device at once (`--slots`): at most the
//! slot count, and, on a device with a memory probe, only as many as fit
//! in its memory.
//!
//! The plan: the memory free once the trainers exist ([`Admission::plan`]),
//! less what it leaves to others ([`crate::memory::KeepFree`]), is the budget. Each training
//! group reserves its need: the trainer's estimate ([`crate::trainer::Trainer::footprint`])
//! times a correction learnt from what trainings actually took. A group is
//! admitted, first come first served, when its need fits beside the
//! others' reservations, or when nothing else runs (a training alone always runs; if it runs out of
//! memory then, it does not fit this device).
//!
//! Learning: admissions are taken one at a time. The free memory is read
//! when a group is admitted and again after its first training step; the
//! difference is what it took, and the correction
//! becomes the largest ratio of taken to estimated seen so far (the first
//! measurement sets it). A difference under 1 MiB says nothing (the
//! caching allocator served the group from memory an earlier one left) and
//! is ignored. Until a group has been measured (or ended), no other is
//! admitted, so each measurement sees one newcomer only.
//!
//! A training that runs out of memory after sharing the device lowers the
//! slot limit below the number that ran together ([`Admission::lower_slots`]);
//! slots at or above the limit stop leasing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::memory::{DeviceMemory, MemoryProbe};
use crate::trainer::StepHook;

/// Differences of free memory below this are noise or cache reuse.
const MEASURABLE: u64 = 1 << 20;

/// How often waiters look again even without news (memory freed by other
/// processes produces none).
const RECHECK: Duration = Duration::from_millis(200);

/// The admission state of one device, shared by its slots.
#[derive(Debug)]
pub struct Admission {
    memory: Option<DeviceMemory>,
    slots: AtomicUsize,
    ledger: Mutex<Ledger>,
    changed: Condvar,
    news: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Ledger {
    /// Bytes trainings may reserve; `None`: no memory limit (no probe, or
    /// not planned yet).
    budget: Option<u64>,
    running: usize,
    reserved: u64,
    tickets: BTreeMap<u64, Held>,
    /// Groups waiting to be admitted, oldest first: only the oldest may be
    /// admitted, and no slot leases more while any waits, so a large group
    /// cannot be overtaken forever by small ones.
    queue: VecDeque<u64>,
    /// Ticket whose first step is awaited.
    measuring: Option<u64>,
    /// Taken / estimated, once measured.
    correction: Option<f64>,
    /// The largest estimate admitted so far: what the next lease is likely
    /// to need (before the correction).
    typical: u64,
    next_id: u64,
    peak_running: usize,
    peak_reserved: u64,
}

/// What one admitted group holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    estimate: u64,
    reserved: u64,
    /// The most other trainings it has run beside.
    beside: usize,
}

impl Admission {
    /// Admission for `slots` trainings at once, within `memory` when given
    /// (once [`Admission::plan`] has read its budget).
    pub fn new(slots: usize, memory: Option<DeviceMemory>) -> Admission {
        Admission {
            memory,
            slots: AtomicUsize::new(slots.max(1)),
            ledger: Mutex::new(Ledger::default()),
            changed: Condvar::new(),
            news: tokio::sync::Notify::new(),
        }
    }

    /// Reads the budget: the free memory now, less what is left to others.
    /// Call it once the trainers exist (their CUDA context is no
    /// training's footprint). Blocks for the probe's call.
    pub fn plan(&self) {
        let Some(m) = &self.memory else { return };
        let budget = match m.probe.free_bytes() {
            Ok(free) => {
                let budget = free.saturating_sub(m.keep_free.of(free));
                tracing::info!(free_mib = free >> 20, budget_mib = budget >> 20, "device memory budget for slots");
                Some(budget)
            }
            Err(e) => {
                tracing::warn!("cannot read the device's free memory ({e}); slots are limited by count alone");
                None
            }
        };
        self.lock().budget = budget;
    }

    /// How many slots may run now.
    pub fn slot_limit(&self) -> usize {
        self.slots.load(Ordering::SeqCst)
    }

    /// After a training ran out of memory while `together` trainings
    /// shared the device: at most one fewer than that from now on (never
    /// below one, never raised). Returns the new limit.
    pub fn lower_slots(&self, together: usize) -> usize {
        let cap = together.saturating_sub(1).max(1);
        let old = self.slots.fetch_min(cap, Ordering::SeqCst);
        self.notify();
        old.min(cap)
    }

    /// Trainings running now.
    pub fn running(&self) -> usize {
        self.lock().running
    }

    /// (most trainings at once, most bytes reserved at once) so far.
    pub fn peaks(&self) -> (usize, u64) {
        let l = self.lock();
        (l.peak_running, l.peak_reserved)
    }

    /// The correction learnt so far (taken / estimated), if any.
    pub fn correction(&self) -> Option<f64> {
        self.lock().correction
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn notify(&self) {
        self.changed.notify_all();
        self.news.notify_waiters();
    }

    fn probe(&self) -> Option<&Arc<dyn MemoryProbe>> {
        self.memory.as_ref().map(|m| &m.probe)
    }

    fn need(l: &Ledger, estimate: u64) -> u64 {
        (estimate as f64 * l.correction.unwrap_or(1.0)).ceil() as u64
    }

    fn fits(l: &Ledger, need: u64) -> bool {
        l.measuring.is_none() && (l.running == 0 || l.budget.is_none_or(|b| l.reserved.saturating_add(need) <= b))
    }

    /// Waits (asynchronously) until a group like the ones admitted so far
    /// would fit and none is waiting: a slot calls it before asking the
    /// coordinator for work, so it does not hold leases it cannot train.
    pub async fn room_to_lease(&self) {
        loop {
            let notified = self.news.notified();
            {
                let l = self.lock();
                if l.queue.is_empty() && Self::fits(&l, Self::need(&l, l.typical)) {
                    return;
                }
            }
            let _ = tokio::time::timeout(RECHECK, notified).await;
        }
    }

    /// Blocks (on a training thread) until a group with this `estimate`
    /// fits and every group that asked earlier has been admitted, then
    /// reserves it. `None` when `cancelled` turns true first.
    pub fn admit(self: &Arc<Self>, estimate: u64, cancelled: impl Fn() -> bool) -> Option<Ticket> {
        let me = {
            let mut l = self.lock();
            l.next_id += 1;
            let id = l.next_id;
            l.queue.push_back(id);
            id
        };
        let mut l = self.lock();
        let mut before = None;
        loop {
            let need = Self::need(&l, estimate);
            let turn = l.queue.front() == Some(&me) && Self::fits(&l, need);
            let measure = l.budget.is_some() && estimate > 0;
            if turn && measure && before.is_none() {
                // Read the free memory outside the lock (the probe may take
                // a while), then look again.
                drop(l);
                before = self.probe().and_then(|p| p.free_bytes().ok());
                l = self.lock();
                if before.is_some() {
                    continue;
                }
            }
            if turn {
                l.queue.pop_front();
                l.running += 1;
                l.reserved += need;
                let beside = l.running - 1;
                for h in l.tickets.values_mut() {
                    h.beside = h.beside.max(beside);
                }
                l.tickets.insert(me, Held { estimate, reserved: need, beside });
                l.typical = l.typical.max(estimate);
                l.peak_running = l.peak_running.max(l.running);
                l.peak_reserved = l.peak_reserved.max(l.reserved);
                let before = before.filter(|_| measure);
                if before.is_some() {
                    l.measuring = Some(me);
                }
                tracing::debug!(need_mib = need >> 20, running = l.running, "training admitted");
                drop(l);
                self.notify();
                return Some(Ticket { admission: self.clone(), id: me, estimate, before });
            }
            // Not its turn after all: read again when it is.
            before = None;
            if cancelled() {
                l.queue.retain(|&w| w != me);
                drop(l);
                self.notify();
                return None;
            }
            l = self.changed.wait_timeout(l, RECHECK).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        }
    }

    fn measured(&self, id: u64, estimate: u64, before: Option<u64>) {
        if self.lock().measuring != Some(id) {
            return;
        }
        let after = self.probe().and_then(|p| p.free_bytes().ok());
        let mut l = self.lock();
        if l.measuring != Some(id) {
            return;
        }
        l.measuring = None;
        if let (Some(b), Some(a)) = (before, after) {
            let taken = b.saturating_sub(a);
            if taken >= MEASURABLE && estimate > 0 {
                let ratio = taken as f64 / estimate as f64;
                let c = l.correction.map_or(ratio, |c| c.max(ratio));
                tracing::info!(
                    taken_mib = taken >> 20,
                    estimated_mib = estimate >> 20,
                    correction = c,
                    "measured a training's device memory"
                );
                l.correction = Some(c);
                // Every running training is now reserved at the corrected
                // need (never less than before).
                let mut reserved = 0;
                for h in l.tickets.values_mut() {
                    h.reserved = h.reserved.max((h.estimate as f64 * c).ceil() as u64);
                    reserved += h.reserved;
                }
                l.reserved = reserved;
                l.peak_reserved = l.peak_reserved.max(reserved);
            }
        }
        drop(l);
        self.notify();
    }
}

/// A training's admission: its reservation lasts until the ticket drops.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    estimate: u64,
    before: Option<u64>,
}

impl Ticket {
    /// The hook to put on the group's contexts: the first step of any
    /// member ([`crate::trainer::TrainContext::stepped`]) measures what the
    /// group took.
    pub fn step_hook(&self) -> StepHook {
        let (admission, id, estimate, before) = (self.admission.clone(), self.id, self.estimate, self.before);
        Arc::new(move || admission.measured(id, estimate, before))
    }

    /// The most other trainings this one has run beside on the device:
    /// what an out-of-memory error of it is blamed on.
    pub fn peers(&self) -> usize {
        self.admission.lock().tickets.get(&self.id).map_or(0, |h| h.beside)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut l = self.admission.lock();
        l.running = l.running.saturating_sub(1);
        let reserved = l.tickets.remove(&self.id).map_or(0, |h| h.reserved);
        l.reserved = l.reserved.saturating_sub(reserved);
        if l.measuring == Some(self.id) {
            l.measuring = None;
        }
        drop(l);
        self.admission.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::KeepFree;
    use std::sync::atomic::AtomicU64;

    #[derive(Debug)]
    struct Fake(AtomicU64);
    impl MemoryProbe for Fake {
        fn free_bytes(&self) -> Result<u64, String> {
            Ok(self.0.load(Ordering::SeqCst))
        }
    }

    fn admission(free: u64, slots: usize) -> (Arc<Admission>, Arc<Fake>) {
        let fake = Arc::new(Fake(AtomicU64::new(free)));
        let memory = DeviceMemory { probe: fake.clone(), keep_free: KeepFree::Bytes(0) };
        let a = Arc::new(Admission::new(slots, Some(memory)));
        a.plan();
        (a, fake)
    }

    #[test]
    fn learns_the_correction_and_admits_only_what_fits() {
        let (a, fake) = admission(1000 << 20, 4);
        let t1 = a.admit(100 << 20, || false).expect("alone: admitted");
        // Until t1 is measured nothing else is admitted.
        assert!(a.admit(1, || true).is_none());
        // It took 300 MiB, three times the estimate.
        fake.0.fetch_sub(300 << 20, Ordering::SeqCst);
        (t1.step_hook())();
        assert_eq!(a.correction(), Some(3.0));
        let t2 = a.admit(100 << 20, || false).expect("600 MiB of 1000 fits");
        fake.0.fetch_sub(300 << 20, Ordering::SeqCst);
        (t2.step_hook())();
        // A third (300 more: 900) fits, a fourth (1200) does not.
        let t3 = a.admit(100 << 20, || false).expect("900 MiB of 1000 fits");
        (t3.step_hook())();
        assert!(a.admit(100 << 20, || true).is_none());
        assert_eq!(t3.peers(), 2);
        assert_eq!(t1.peers(), 2, "t1 ran beside t2 and t3");
        drop(t1);
        let t4 = a.admit(100 << 20, || false).expect("room again");
        assert_eq!(a.peaks(), (3, 900 << 20));
        drop((t2, t3, t4));
        assert_eq!(a.running(), 0);
    }

    #[test]
    fn a_group_alone_is_always_admitted_and_slots_lower_to_one() {
        let (a, _) = admission(10, 3);
        let t = a.admit(1 << 40, || false).expect("alone");
        drop(t);
        // Three ran together: at most two from now on, however many of
        // them report it; never raised again.
        assert_eq!(a.lower_slots(3), 2);
        assert_eq!(a.lower_slots(3), 2);
        assert_eq!(a.lower_slots(5), 2);
        assert_eq!(a.lower_slots(2), 1);
        assert_eq!(a.lower_slots(1), 1);
        assert_eq!(a.slot_limit(), 1);
    }

    #[test]
    fn a_waiting_large_group_is_not_overtaken() {
        let (a, _) = admission(1000 << 20, 3);
        let small = a.admit(600 << 20, || false).expect("alone");
        (small.step_hook())();
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || a.admit(900 << 20, || false).map(|t| t.peers()))
        };
        while a.lock().queue.is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
        // 100 MiB would fit beside the small one, but the large group asked
        // first: nothing overtakes it, and no slot leases meanwhile.
        assert!(a.admit(100 << 20, || true).is_none());
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let leased = rt.block_on(async { tokio::time::timeout(Duration::from_millis(300), a.room_to_lease()).await });
        assert!(leased.is_err(), "a slot may not lease while a group waits");
        drop(small);
        assert_eq!(waiter.join().unwrap(), Some(0), "admitted alone once the small one ended");
    }

    #[test]
    fn without_a_probe_only_the_count_limits() {
        let a = Arc::new(Admission::new(2, None));
        let t1 = a.admit(1 << 40, || false).unwrap();
        let t2 = a.admit(1 << 40, || false).unwrap();
        assert_eq!(t2.peers(), 1);
        drop((t1, t2));
    }
}
