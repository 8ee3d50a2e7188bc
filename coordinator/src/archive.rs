//! `ArchiveService`: `sweep export` and `sweep import` over gRPC.
//!
//! Both directions go through an unnamed temporary file (in `TMPDIR`), so
//! the database is held only while rows move between it and local disk,
//! never while a slow client reads or writes:
//!
//! - export: the store writes one snapshot's records into the file, the
//!   transaction ends, then the file is streamed in chunks;
//! - import: the client's chunks are split into lines and each one checked
//!   (`sweep_core::archive::Checker`: order, references, counts, stored
//!   specs that read back) as it arrives, the checked lines are spooled,
//!   and only then does the store write them, in one transaction: a bad
//!   line or a cut connection stores nothing. Afterwards waiting workers
//!   and watchers are woken, and running leases get a full TTL again (on
//!   SQLite a large import holds the one writer, so heartbeats may have
//!   waited).

use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use sweep_core::archive::{ArchiveError, Checker, LineSplitter, Record, MAX_LINE_BYTES};
use sweep_proto::v1 as pb;

use crate::service::{now_ms, Coordinator};

/// Bytes per exported chunk (cut anywhere; the client joins them).
pub const EXPORT_CHUNK_BYTES: usize = 256 * 1024;
/// The largest chunk an import accepts.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
/// The largest archive an import accepts (it is spooled to `TMPDIR`).
pub const MAX_ARCHIVE_BYTES: u64 = 16 << 30;

#[derive(Clone)]
pub struct ArchiveService {
    coordinator: Coordinator,
}

impl ArchiveService {
    pub fn new(coordinator: Coordinator) -> Self {
        Self { coordinator }
    }
}

fn refused(e: ArchiveError) -> Status {
    Status::invalid_argument(format!("archive: {e}"))
}

fn spool_error(e: std::io::Error) -> Status {
    tracing::error!(error = %e, "archive: the temporary file (TMPDIR) failed");
    Status::internal(format!("archive: the coordinator's temporary file (TMPDIR): {e}"))
}

async fn spool() -> Result<tokio::io::BufWriter<tokio::fs::File>, Status> {
    let file = tokio::task::spawn_blocking(tempfile::tempfile)
        .await
        .map_err(|e| Status::internal(format!("archive: {e}")))?
        .map_err(spool_error)?;
    Ok(tokio::io::BufWriter::new(tokio::fs::File::from_std(file)))
}

/// The spool, flushed and rewound for reading.
async fn rewound(spool: tokio::io::BufWriter<tokio::fs::File>) -> Result<tokio::fs::File, Status> {
    let mut spool = spool;
    spool.flush().await.map_err(spool_error)?;
    let mut file = spool.into_inner();
    file.rewind().await.map_err(spool_error)?;
    Ok(file)
}

/// Checks each line of an import as it arrives and spools it.
struct Incoming {
    lines: LineSplitter,
    checker: Checker,
    bytes: u64,
    spool: tokio::io::BufWriter<tokio::fs::File>,
}

impl Incoming {
    async fn line(&mut self, line: &[u8]) -> Result<(), Status> {
        self.checker.line(line).map_err(refused)?;
        self.spool.write_all(line).await.map_err(spool_error)?;
        self.spool.write_all(b"\n").await.map_err(spool_error)
    }

    async fn feed(&mut self, data: &[u8]) -> Result<(), Status> {
        self.bytes += data.len() as u64;
        if self.bytes > MAX_ARCHIVE_BYTES {
            return Err(Status::invalid_argument(format!("archive: over {MAX_ARCHIVE_BYTES} bytes")));
        }
        self.lines.push(data);
        loop {
            match self.lines.next_line() {
                Ok(Some(line)) => {
                    let line = line.to_vec();
                    self.line(&line).await?;
                }
                Ok(None) => return Ok(()),
                Err(_) => {
                    return Err(refused(ArchiveError::Line {
                        line: self.checker.lines() + 1,
                        reason: format!("no line end within {MAX_LINE_BYTES} bytes"),
                    }))
                }
            }
        }
    }

    /// The last line may lack its `\n`; then the archive must be whole.
    async fn finish(mut self) -> Result<(Checker, tokio::fs::File), Status> {
        let rest = self.lines.rest().to_vec();
        if !rest.iter().all(u8::is_ascii_whitespace) {
            self.line(&rest).await?;
        }
        self.checker.finish().map_err(refused)?;
        Ok((self.checker, rewound(self.spool).await?))
    }
}

#[tonic::async_trait]
impl pb::archive_service_server::ArchiveService for ArchiveService {
    type ExportStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ArchiveChunk, Status>> + Send>>;

    async fn export(&self, req: Request<pb::ExportRequest>) -> Result<Response<Self::ExportStream>, Status> {
        let id = crate::bounds::sweep_id(&req.into_inner().sweep_id)?.to_owned();
        let store = self.coordinator.store().clone();
        // The snapshot goes to disk first; the transaction ends before the
        // client reads a byte.
        let mut out = spool().await?;
        let (records_tx, mut records) = mpsc::channel::<Record>(256);
        let export = tokio::spawn(async move { store.export(&id, now_ms(), records_tx).await });
        while let Some(record) = records.recv().await {
            out.write_all(record.to_line().as_bytes()).await.map_err(spool_error)?;
        }
        match export.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(Status::internal(format!("export: {e}"))),
        }
        let mut file = rewound(out).await?;
        let (chunks_tx, chunks) = mpsc::channel::<Result<pb::ArchiveChunk, Status>>(4);
        tokio::spawn(async move {
            loop {
                let mut data = vec![0u8; EXPORT_CHUNK_BYTES];
                let n = match file.read(&mut data).await {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = chunks_tx.send(Err(spool_error(e))).await;
                        return;
                    }
                };
                data.truncate(n);
                if chunks_tx.send(Ok(pb::ArchiveChunk { data })).await.is_err() {
                    return; // the client is gone
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(chunks))))
    }

    async fn import(&self, req: Request<Streaming<pb::ArchiveChunk>>) -> Result<Response<pb::ImportResponse>, Status> {
        let mut stream = req.into_inner();
        let mut incoming =
            Incoming { lines: LineSplitter::default(), checker: Checker::new(), bytes: 0, spool: spool().await? };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if chunk.data.len() > MAX_CHUNK_BYTES {
                return Err(Status::invalid_argument(format!(
                    "archive chunk of {} bytes: at most {MAX_CHUNK_BYTES}",
                    chunk.data.len()
                )));
            }
            incoming.feed(&chunk.data).await?;
        }
        let (checker, file) = incoming.finish().await?;
        let sweep_id = checker.sweep().to_owned();

        // Checked already: the spool holds whole, valid records.
        let (records_tx, records) = mpsc::channel::<Record>(256);
        let reader = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(file).lines();
            while let Some(line) = lines.next_line().await.map_err(spool_error)? {
                let record: Record = serde_json::from_str(&line)
                    .map_err(|e| Status::internal(format!("import: the spooled archive changed: {e}")))?;
                if records_tx.send(record).await.is_err() {
                    break; // the store stopped (and says why)
                }
            }
            Ok::<(), Status>(())
        });
        let store = self.coordinator.store().clone();
        let stored = store.import(records).await;
        let read = reader.await.map_err(|e| Status::internal(format!("import: {e}")))?;
        // A failed read ends the records early (the store then refuses a
        // truncated archive): its own error says more.
        read?;
        let end = stored?;
        let ttl = self.coordinator.config().lease_ttl.as_millis() as i64;
        if let Err(e) = store.extend_running_leases(now_ms(), ttl).await {
            tracing::warn!(error = %e, "after an import: running leases could not be extended");
        }
        self.coordinator.queue_changed();
        tracing::info!(sweep = %sweep_id, trials = end.trials, points = end.points, "sweep imported");
        Ok(Response::new(pb::ImportResponse { sweep_id, trials: end.trials, points: end.points }))
    }
}
