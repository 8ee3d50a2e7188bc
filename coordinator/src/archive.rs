//! `ArchiveService`: `sweep export` and `sweep import` over gRPC.
//!
//! Export streams the store's records of one sweep as archive lines, cut
//! into chunks. Import joins the client's chunks into lines, checks each
//! one (`sweep_core::archive::Checker`: order, references, counts), spools
//! the checked lines to an unnamed temporary file (disk, not memory, holds
//! an archive however large), and only then hands them to the store, which
//! writes them in one transaction: a bad line or a cut connection stores
//! nothing, and the database's single SQLite writer is held only while
//! rows are written, never while a slow client uploads.

use std::sync::Arc;

use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use sweep_core::archive::{ArchiveError, Checker, Record};
use sweep_proto::v1 as pb;

use crate::service::now_ms;
use crate::store::{Store, StoreError};

/// Bytes of archive text per exported chunk (a chunk is cut at a line end
/// once it holds this much).
pub const EXPORT_CHUNK_BYTES: usize = 256 * 1024;
/// The largest chunk an import accepts.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
/// The largest archive an import accepts (it is spooled to disk).
pub const MAX_ARCHIVE_BYTES: u64 = 64 << 30;

#[derive(Clone)]
pub struct ArchiveService {
    store: Arc<dyn Store>,
}

impl ArchiveService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

fn refused(e: ArchiveError) -> Status {
    Status::invalid_argument(format!("archive: {e}"))
}

fn spool_error(e: std::io::Error) -> Status {
    tracing::error!(error = %e, "import: spooling the archive to a temporary file failed");
    Status::internal(format!("import: spooling the archive to a temporary file: {e}"))
}

/// Splits a chunked byte stream into lines: each complete line is checked
/// and written to the spool.
struct Lines {
    pending: Vec<u8>,
    checker: Checker,
    bytes: u64,
}

impl Lines {
    async fn feed(&mut self, data: &[u8], spool: &mut tokio::io::BufWriter<tokio::fs::File>) -> Result<(), Status> {
        self.bytes += data.len() as u64;
        if self.bytes > MAX_ARCHIVE_BYTES {
            return Err(Status::invalid_argument(format!("archive: over {MAX_ARCHIVE_BYTES} bytes")));
        }
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(n) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let line = &self.pending[start..start + n];
            self.checker.line(line).map_err(refused)?;
            spool.write_all(line).await.map_err(spool_error)?;
            spool.write_all(b"\n").await.map_err(spool_error)?;
            start += n + 1;
        }
        self.pending.drain(..start);
        if self.pending.len() > sweep_core::archive::MAX_LINE_BYTES {
            return Err(refused(ArchiveError::Line {
                line: self.checker.lines() + 1,
                reason: format!("no line end within {} bytes", sweep_core::archive::MAX_LINE_BYTES),
            }));
        }
        Ok(())
    }

    /// The last line may lack its `\n`.
    async fn finish(mut self, spool: &mut tokio::io::BufWriter<tokio::fs::File>) -> Result<(), Status> {
        if !self.pending.iter().all(u8::is_ascii_whitespace) {
            let line = std::mem::take(&mut self.pending);
            self.checker.line(&line).map_err(refused)?;
            spool.write_all(&line).await.map_err(spool_error)?;
            spool.write_all(b"\n").await.map_err(spool_error)?;
        }
        self.checker.finish().map_err(refused)?;
        spool.flush().await.map_err(spool_error)
    }
}

#[tonic::async_trait]
impl pb::archive_service_server::ArchiveService for ArchiveService {
    type ExportStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ArchiveChunk, Status>> + Send>>;

    async fn export(&self, req: Request<pb::ExportRequest>) -> Result<Response<Self::ExportStream>, Status> {
        let id = crate::bounds::sweep_id(&req.into_inner().sweep_id)?.to_owned();
        // Fail fast on an unknown sweep, before the stream starts.
        if self.store.status(Some(&id)).await?.is_empty() {
            return Err(StoreError::NotFound(format!("sweep {id}")).into());
        }
        let (records_tx, mut records) = mpsc::channel::<Record>(256);
        let (chunks_tx, chunks) = mpsc::channel::<Result<pb::ArchiveChunk, Status>>(4);
        let store = self.store.clone();
        let export = tokio::spawn(async move { store.export(&id, now_ms(), records_tx).await });
        tokio::spawn(async move {
            let mut data = Vec::with_capacity(EXPORT_CHUNK_BYTES + 4096);
            while let Some(record) = records.recv().await {
                data.extend_from_slice(record.to_line().as_bytes());
                if data.len() >= EXPORT_CHUNK_BYTES {
                    let chunk = pb::ArchiveChunk { data: std::mem::take(&mut data) };
                    if chunks_tx.send(Ok(chunk)).await.is_err() {
                        return; // the client is gone; the export stops at its next send
                    }
                }
            }
            let ended = match export.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Status::from(e)),
                Err(e) => Err(Status::internal(format!("export: {e}"))),
            };
            match ended {
                Ok(()) if !data.is_empty() => {
                    let _ = chunks_tx.send(Ok(pb::ArchiveChunk { data })).await;
                }
                Ok(()) => {}
                Err(status) => {
                    let _ = chunks_tx.send(Err(status)).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(chunks))))
    }

    async fn import(&self, req: Request<Streaming<pb::ArchiveChunk>>) -> Result<Response<pb::ImportResponse>, Status> {
        let mut stream = req.into_inner();
        let file = tempfile::tempfile().map_err(spool_error)?;
        let mut spool = tokio::io::BufWriter::new(tokio::fs::File::from_std(file));
        let mut lines = Lines { pending: Vec::new(), checker: Checker::new(), bytes: 0 };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if chunk.data.len() > MAX_CHUNK_BYTES {
                return Err(Status::invalid_argument(format!(
                    "archive chunk of {} bytes: at most {MAX_CHUNK_BYTES}",
                    chunk.data.len()
                )));
            }
            lines.feed(&chunk.data, &mut spool).await?;
        }
        let sweep_id = lines.checker.sweep().to_owned();
        lines.finish(&mut spool).await?;
        let mut file = spool.into_inner();
        file.rewind().await.map_err(spool_error)?;

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
        let stored = self.store.import(records).await;
        let read = reader.await.map_err(|e| Status::internal(format!("import: {e}")))?;
        // A failed read ends the records early (the store then refuses a
        // truncated archive): its own error says more.
        read?;
        let end = stored?;
        tracing::info!(sweep = %sweep_id, trials = end.trials, points = end.points, "sweep imported");
        Ok(Response::new(pb::ImportResponse { sweep_id, trials: end.trials, points: end.points }))
    }
}
