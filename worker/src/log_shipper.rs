//! Sends a running trial's captured output ([`crate::trial_log`]) to the
//! coordinator (`PushLog`), where `sweep logs` reads it: its tail whenever
//! the log grew, and once more when the trial ends, before its result.
//! Best effort: a log that cannot be sent never holds up a trial.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sweep_proto::v1 as pb;

use crate::daemon::Client;
use crate::trial_log;

/// The size and modification time last seen, to send only what changed.
type Seen = Option<(u64, std::time::SystemTime)>;

/// Sends the log's tail every `every` while it changes; ends when the
/// lease is no longer current. Aborted by the daemon at the trial's end.
pub(crate) async fn ship(client: Client, lease: String, root: PathBuf, trial_id: String, every: Duration) {
    let mut seen: Seen = None;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(code) = send_if_changed(&client, &lease, &root, &trial_id, &mut seen).await {
            if code == tonic::Code::FailedPrecondition {
                return;
            }
        }
    }
}

/// The last tail, sent before the trial's result (at most 5 s).
pub(crate) async fn ship_final(client: &Client, lease: &str, root: &Path, trial_id: &str) {
    let mut seen = None;
    let send = send_if_changed(client, lease, root, trial_id, &mut seen);
    if tokio::time::timeout(Duration::from_secs(5), send).await.is_err() {
        tracing::warn!("the trial's last output was not sent within 5 s; `sweep logs` shows an older tail");
    }
}

async fn send_if_changed(
    client: &Client,
    lease: &str,
    root: &Path,
    trial_id: &str,
    seen: &mut Seen,
) -> Result<(), tonic::Code> {
    let path = trial_log::path(root, trial_id);
    let (root, id) = (root.to_owned(), trial_id.to_owned());
    let read = tokio::task::spawn_blocking(move || {
        let meta = std::fs::metadata(&path).ok()?;
        let stamp = (meta.len(), meta.modified().ok()?);
        let text = trial_log::tail(&root, &id, trial_log::TAIL_BYTES).ok()?;
        Some((stamp, text))
    })
    .await;
    let Ok(Some((stamp, text))) = read else { return Ok(()) };
    if *seen == Some(stamp) {
        return Ok(());
    }
    match client.clone().push_log(pb::PushLogRequest { lease_id: lease.to_owned(), text }).await {
        Ok(_) => {
            *seen = Some(stamp);
            Ok(())
        }
        Err(s) => {
            tracing::debug!(code = ?s.code(), message = %s.message(), "the trial's output was not sent");
            Err(s.code())
        }
    }
}
