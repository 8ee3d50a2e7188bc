//! `sweep logs TRIAL`: what a trial's command wrote (stdout and stderr,
//! with the worker's own `[sweep]` notes), each attempt's tail as its
//! worker last sent it.

use sweep_proto::v1 as pb;

use crate::commands::{connect, rpc};
use crate::printable::printable_lines;
use crate::tables::age;
use crate::Failure;

pub(crate) async fn logs(trial: &str, attempt: Option<u32>, url: &str) -> Result<(), Failure> {
    let mut client = connect(url).await?;
    let resp = client.logs(pb::LogsRequest { trial_id: trial.to_owned() }).await.map_err(rpc)?.into_inner();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let shown: Vec<&pb::AttemptLog> = resp.attempts.iter().filter(|a| attempt.is_none_or(|n| a.attempt == n)).collect();
    if shown.is_empty() {
        let which = attempt.map(|n| format!(" for attempt {n}")).unwrap_or_default();
        println!(
            "trial {}: no output stored{which} (only exec trials capture output; a trial not started yet has none)",
            resp.trial_id
        );
        return Ok(());
    }
    for a in shown {
        let ago = age(now_ms.saturating_sub(a.updated_ms).max(0) as u64);
        println!(
            "=== trial {} attempt {} on {} (sent {ago} ago) ===",
            resp.trial_id,
            a.attempt,
            crate::printable::printable(&a.worker_id)
        );
        print!("{}", printable_lines(&a.text));
        if !a.text.ends_with('\n') {
            println!();
        }
    }
    Ok(())
}
