//! `sweep workers`: the workers the coordinator heard from lately, what
//! they run, and their quarantine state.

use sweep_proto::v1 as pb;

use crate::commands::{connect, rpc};
use crate::printable::printable;
use crate::tables::{age, condensed};
use crate::Failure;

pub(crate) async fn workers(url: &str) -> Result<(), Failure> {
    let mut client = connect(url).await?;
    let resp = client.workers(pb::WorkersRequest {}).await.map_err(rpc)?.into_inner();
    if resp.workers.is_empty() {
        println!("no workers heard from within two lease TTLs");
        return Ok(());
    }
    let mut t = condensed(&["worker", "device", "threads", "slots", "running", "last call", "failed in a row"]);
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
