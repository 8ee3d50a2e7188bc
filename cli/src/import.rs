//! `sweep import`: an archive (from `sweep export`) into the coordinator's
//! database, streamed in chunks. The coordinator checks every line and
//! stores the sweep in one transaction, so a bad or truncated file stores
//! nothing; it refuses a sweep its database holds already.

use std::path::Path;

use anyhow::Context;
use sweep_proto::v1 as pb;
use tokio::io::AsyncReadExt;

use crate::commands::{channel, rpc};
use crate::printable::printable;
use crate::Failure;

/// Bytes per chunk sent (the coordinator accepts up to 1 MiB).
const CHUNK_BYTES: usize = 256 * 1024;

pub(crate) async fn command(file: &Path, url: &str) -> Result<(), Failure> {
    let mut input: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if file == Path::new("-") {
        Box::new(tokio::io::stdin())
    } else {
        Box::new(tokio::fs::File::open(file).await.with_context(|| format!("cannot read {}", file.display()))?)
    };
    let mut client = pb::archive_service_client::ArchiveServiceClient::new(channel(url).await?);
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ArchiveChunk>(4);
    let name = file.display().to_string();
    let reader = tokio::spawn(async move {
        loop {
            let mut data = Vec::with_capacity(CHUNK_BYTES);
            let n = (&mut input).take(CHUNK_BYTES as u64).read_to_end(&mut data).await?;
            if n == 0 || tx.send(pb::ArchiveChunk { data }).await.is_err() {
                return Ok::<(), std::io::Error>(());
            }
        }
    });
    let answer = client.import(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    let read = reader.await.context("reading the archive")?;
    // A read error ends the stream early; the coordinator then refuses the
    // truncated archive, but the read error is the cause.
    if let (Err(_), Err(e)) = (&answer, read) {
        return Err(anyhow::Error::from(e).context(format!("cannot read {name}; nothing was stored")).into());
    }
    let resp = match answer {
        Ok(r) => r.into_inner(),
        // Refused before anything was written.
        Err(s) if matches!(s.code(), tonic::Code::InvalidArgument | tonic::Code::AlreadyExists) => {
            return Err(rpc(s).context(format!("import of {name} refused; nothing was stored")).into())
        }
        // The call broke: the coordinator may or may not have committed.
        Err(s) => {
            return Err(rpc(s)
                .context(format!(
                    "import of {name}: no answer from the coordinator, so whether it was stored is unknown; \
                     `sweep ls` shows whether the sweep is there (importing it again is refused if it is)"
                ))
                .into())
        }
    };
    println!("imported sweep {}: {} trials, {} metric points", printable(&resp.sweep_id), resp.trials, resp.points);
    Ok(())
}
