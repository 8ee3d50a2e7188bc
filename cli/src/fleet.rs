//! `sweep ls` (the sweeps, with counts and age) and `sweep workers` (the
//! workers the coordinator heard from lately, what they run, quarantine).

use std::time::{SystemTime, UNIX_EPOCH};

use sweep_proto::v1 as pb;

use crate::commands::{connect, rpc, sweep_state};
use crate::printable::printable;
use crate::Failure;

/// A duration in the largest unit that fits: `45s`, `12m`, `3h 5m`, `2d 4h`.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(header);
    t
}

pub(crate) async fn ls(url: &str) -> Result<(), Failure> {
    let mut client = connect(url).await?;
    let mut sweeps = client.status(pb::StatusRequest::default()).await.map_err(rpc)?.into_inner().sweeps;
    if sweeps.is_empty() {
        println!("no sweeps (submit one: sweep submit GRID.toml)");
        return Ok(());
    }
    // Newest first.
    sweeps.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then_with(|| a.sweep_id.cmp(&b.sweep_id)));
    let now = now_ms();
    let mut t = table(&["sweep", "trials", "done", "running", "queued", "diverged/failed", "state", "age"]);
    for s in &sweeps {
        let c = s.counts.unwrap_or_default();
        let total = c.queued + c.running + c.succeeded + c.diverged + c.failed + c.cancelled;
        let done = c.succeeded + c.diverged + c.failed;
        let state = sweep_state(s);
        t.add_row([
            printable(&s.sweep_id).into_owned(),
            total.to_string(),
            format!("{done} ({:.0}%)", 100.0 * done as f64 / total.max(1) as f64),
            c.running.to_string(),
            c.queued.to_string(),
            format!("{}/{}", c.diverged, c.failed),
            state.to_owned(),
            age((now - s.created_ms).max(0) as u64),
        ]);
    }
    println!("{t}");
    Ok(())
}

pub(crate) async fn workers(url: &str) -> Result<(), Failure> {
    let mut client = connect(url).await?;
    let resp = client.workers(pb::WorkersRequest {}).await.map_err(rpc)?.into_inner();
    if resp.workers.is_empty() {
        println!("no workers heard from within two lease TTLs");
        return Ok(());
    }
    let mut t = table(&["worker", "device", "threads", "slots", "running", "last call", "failed in a row"]);
    for w in &resp.workers {
        let running = if w.running.is_empty() {
            "idle".to_owned()
        } else {
            w.running
                .iter()
                .map(|r| {
                    format!("{}: {} (epoch {}/{})", printable(&r.sweep_id), printable(&r.label), r.epoch, r.epochs)
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let failed = if w.quarantined {
            format!("{} QUARANTINED", w.failures_in_a_row)
        } else {
            format!("{}/{}", w.failures_in_a_row, resp.quarantine_after)
        };
        t.add_row([
            printable(&w.worker_id).into_owned(),
            printable(&w.device).into_owned(),
            if w.threads == 0 { "default".to_owned() } else { w.threads.to_string() },
            w.slots.to_string(),
            running,
            format!("{} ago", age(w.last_call_ms_ago)),
            failed,
        ]);
    }
    println!("{t}");
    let n = resp.workers.len();
    let s = if n == 1 { "" } else { "s" };
    println!("{n} worker{s}; a worker is quarantined after {} trials failed in a row", resp.quarantine_after);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::age;

    #[test]
    fn ages_read_in_their_largest_unit() {
        assert_eq!(age(45_000), "45s");
        assert_eq!(age(12 * 60_000 + 5_000), "12m");
        assert_eq!(age((3 * 3600 + 5 * 60) * 1000), "3h 5m");
        assert_eq!(age((2 * 86_400 + 4 * 3600) * 1000), "2d 4h");
    }
}
