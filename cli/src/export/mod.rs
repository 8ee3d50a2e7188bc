//! `sweep export`: a sweep's stored state from the coordinator, as the
//! archive itself (JSON lines, what `sweep import` reads), as Parquet
//! tables for pandas and polars, or as TensorBoard event files.
//!
//! The archive arrives in chunks; this side splits it into lines and
//! checks every one with the same `sweep_core::archive::Checker` an import
//! uses, so an export that ends early (a dropped connection, a coordinator
//! stopped mid-way) is an error, never a short file passed off as whole.
//! Files are written next to their destination and renamed into place
//! only when complete. Writing runs on a blocking thread, fed through a
//! bounded channel.

mod parquet;
mod tensorboard;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use futures::StreamExt;
use sweep_core::archive::{Checker, LineSplitter, Record};
use sweep_proto::v1 as pb;

use crate::commands::{channel, rpc};
use crate::Failure;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExportFormat {
    /// The archive: JSON lines, lossless, what `sweep import` reads.
    Jsonl,
    /// `trials.parquet` (a row per trial: every stored column, and one
    /// column per factor) and `points.parquet` (a row per metric point).
    Parquet,
    /// TensorBoard event files, one folder per trial (`CELL/seed=N`).
    Tensorboard,
}

#[derive(clap::Args, Clone, Debug)]
pub(crate) struct ExportArgs {
    pub sweep: String,
    /// What to write.
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// Where: a file for jsonl (default: standard output), a folder
    /// (created if missing) for parquet and tensorboard.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

/// What the receiving side tells the writer.
enum ToWriter {
    Record(Vec<u8>, Record),
    /// The archive is whole: put the files in place.
    Commit,
}

/// Where records go: each format's writer.
trait Sink: Send {
    /// One checked record and its line as received (without `\n`).
    fn record(&mut self, line: &[u8], record: Record) -> anyhow::Result<()>;
    /// Called once the whole archive was received and checked.
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

/// The archive as received, line for line.
struct Jsonl {
    out: Box<dyn Write + Send>,
    /// The temporary file to rename to the destination, when writing one.
    file: Option<(tempfile::NamedTempFile, PathBuf)>,
}

impl Sink for Jsonl {
    fn record(&mut self, line: &[u8], _record: Record) -> anyhow::Result<()> {
        self.out.write_all(line)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.out.flush()?;
        drop(self.out);
        if let Some((tmp, dest)) = self.file {
            tmp.as_file().sync_all()?;
            tmp.persist(&dest).with_context(|| format!("cannot write {}", dest.display()))?;
        }
        Ok(())
    }
}

fn jsonl_sink(out: Option<&Path>) -> anyhow::Result<Box<dyn Sink>> {
    Ok(match out {
        None => Box::new(Jsonl { out: Box::new(std::io::BufWriter::new(std::io::stdout())), file: None }),
        Some(dest) => {
            let dir = match dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot write in {} (for {})", dir.display(), dest.display()))?;
            let writer = std::io::BufWriter::new(tmp.reopen()?);
            Box::new(Jsonl { out: Box::new(writer), file: Some((tmp, dest.to_owned())) })
        }
    })
}

/// A folder to fill: created if missing; refused when it is a file.
fn out_dir(out: Option<&Path>, format: &str) -> anyhow::Result<PathBuf> {
    let Some(dir) = out else {
        bail!("--format {format} writes several files: give a folder with --out DIR");
    };
    if dir.is_file() {
        bail!("--out {}: a file; --format {format} needs a folder", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir.to_owned())
}

pub(crate) async fn command(args: &ExportArgs, url: &str) -> Result<(), Failure> {
    let sink: Box<dyn Sink> = match args.format {
        ExportFormat::Jsonl => jsonl_sink(args.out.as_deref())?,
        ExportFormat::Parquet => Box::new(parquet::Tables::new(out_dir(args.out.as_deref(), "parquet")?)),
        ExportFormat::Tensorboard => Box::new(tensorboard::Events::new(out_dir(args.out.as_deref(), "tensorboard")?)?),
    };
    let mut client = pb::archive_service_client::ArchiveServiceClient::new(channel(url).await?)
        .max_decoding_message_size(sweep_coordinator::archive::MAX_CHUNK_BYTES + 1024);
    let mut stream = client.export(pb::ExportRequest { sweep_id: args.sweep.clone() }).await.map_err(rpc)?.into_inner();

    // The writer runs on a blocking thread; lines reach it through a
    // bounded channel, and it puts files in place only on `Commit`: once
    // the stream ended cleanly and the checker found the archive whole.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ToWriter>(1024);
    let writer = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut sink = sink;
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                ToWriter::Record(line, record) => sink.record(&line, record)?,
                ToWriter::Commit => return sink.finish(),
            }
        }
        // No commit: the export failed (the stream says why), and nothing
        // is renamed into place.
        Ok(())
    });
    let received = async {
        let mut checker = Checker::new();
        let mut lines = LineSplitter::default();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(rpc).context("the export stopped")?;
            lines.push(&chunk.data);
            loop {
                let line = match lines.next_line() {
                    Ok(Some(line)) => line.to_vec(),
                    Ok(None) => break,
                    Err(n) => bail!("the coordinator sent a line of over {n} bytes: not an archive"),
                };
                let record = checker.line(&line).context("the coordinator sent a bad archive")?;
                if tx.send(ToWriter::Record(line, record)).await.is_err() {
                    return Ok(()); // the writer failed, and says why
                }
            }
        }
        if !lines.rest().is_empty() {
            bail!("the archive ends inside a line: it is truncated");
        }
        checker.finish().context("the export stopped early")?;
        let _ = tx.send(ToWriter::Commit).await;
        Ok::<(), anyhow::Error>(())
    }
    .await;
    drop(tx);
    let written = writer.await.context("the export's writer")?;
    // A failed export stops the writer with the channel half-read: the
    // stream's error is the cause, the writer's a consequence.
    received?;
    written?;
    if let Some(out) = &args.out {
        eprintln!("exported {} to {}", crate::printable::printable(&args.sweep), out.display());
    }
    Ok(())
}
