//! `sweep watch`: live progress from the coordinator's `Watch` stream.
//! Progress bars on a terminal; plain lines (one per change) otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sweep_proto::v1 as pb;

use crate::commands::{connect, rpc};
use crate::printable::printable;
use crate::Failure;

/// Most running trials shown as their own line.
const MAX_TRIAL_LINES: usize = 8;

/// Follows a sweep until it finishes; returns its final status.
pub(crate) async fn watch(sweep: &str, url: &str) -> Result<pb::SweepStatus, Failure> {
    let mut client = connect(url).await?;
    let mut stream = client.watch(pb::WatchRequest { sweep_id: sweep.to_owned() }).await.map_err(rpc)?.into_inner();
    let tty = std::io::stderr().is_terminal();
    let multi =
        MultiProgress::with_draw_target(if tty { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
    let main = multi.add(ProgressBar::new(0));
    main.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40.cyan/blue}] {pos}/{len} trials  {msg}  ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let sweep = printable(sweep);
    main.set_prefix(sweep.to_string());
    main.enable_steady_tick(Duration::from_millis(500));
    let mut lines: Vec<ProgressBar> = Vec::new();
    let mut last_plain = String::new();
    let mut last: Option<pb::SweepStatus> = None;
    while let Some(s) = stream.message().await.map_err(rpc)? {
        let c = s.counts.unwrap_or_default();
        let total = c.queued + c.running + c.succeeded + c.diverged + c.failed + c.cancelled;
        let done = c.succeeded + c.diverged + c.failed + c.cancelled;
        let msg = format!(
            "running {}  queued {}  ok {}  diverged {}  failed {}{}",
            c.running,
            c.queued,
            c.succeeded,
            c.diverged,
            c.failed,
            if c.cancelled > 0 { format!("  cancelled {}", c.cancelled) } else { String::new() }
        );
        if tty {
            main.set_length(total);
            main.set_position(done);
            main.set_message(msg);
            while lines.len() < s.running.len().min(MAX_TRIAL_LINES) {
                let pb = multi.add(ProgressBar::new(1));
                pb.set_style(ProgressStyle::with_template("  {msg}").expect("valid template"));
                lines.push(pb);
            }
            while lines.len() > s.running.len().min(MAX_TRIAL_LINES) {
                if let Some(pb) = lines.pop() {
                    pb.finish_and_clear();
                    multi.remove(&pb);
                }
            }
            for (pb, r) in lines.iter().zip(&s.running) {
                pb.set_message(trial_line(r));
            }
        } else {
            let line = format!("{sweep}: {done}/{total} done; {msg}");
            if line != last_plain {
                eprintln!("{line}");
                last_plain = line;
            }
        }
        let finished = s.finished;
        last = Some(s);
        if finished {
            break;
        }
    }
    for pb in lines {
        pb.finish_and_clear();
    }
    main.finish();
    last.ok_or_else(|| anyhow::anyhow!("the coordinator closed the watch stream without a status").into())
}

fn trial_line(r: &pb::RunningTrial) -> String {
    format!(
        "{}  epoch {}/{}  step {}{}  [{}{}]",
        printable(&r.label),
        r.epoch.max(1),
        r.epochs,
        r.step,
        r.last_loss.map(|l| format!("  loss {l:.4}")).unwrap_or_default(),
        printable(&r.worker_id),
        if r.attempt > 1 { format!(", attempt {}", r.attempt) } else { String::new() }
    )
}
