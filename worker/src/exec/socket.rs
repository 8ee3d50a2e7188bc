//! The metrics socket of one exec trial: a Unix socket in the trial's
//! scratch folder (`SWEEP_METRICS_SOCKET`). Each connection (a command may
//! open several: its ranks, a reconnect) is read on its own thread, line
//! by line (each line at most [`protocol::MAX_LINE_BYTES`]), and its lines
//! handed to the training thread in arrival order per connection; a
//! checkpoint request carries the stream to answer on.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::protocol::{self, Message};

/// The most connections served at once; more wait in the backlog.
const MAX_CONNECTIONS: usize = 16;

/// A line (understood, or why not) and, for a checkpoint request, where to
/// answer.
pub(super) struct Incoming {
    pub line: Result<Message, String>,
    pub reply: Option<UnixStream>,
}

/// Accepts connections until `done`, each read on its own thread until
/// its end (or, once `done`, until it has nothing more for 200 ms).
pub(super) fn serve(listener: &UnixListener, tx: &mpsc::SyncSender<Incoming>, done: &Arc<AtomicBool>) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    loop {
        if open.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            if done.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let (tx, done, open) = (tx.clone(), Arc::clone(done), Arc::clone(&open));
                open.fetch_add(1, Ordering::SeqCst);
                let spawned = std::thread::Builder::new().name("exec-metrics-conn".into()).spawn(move || {
                    read_connection(stream, &tx, &done);
                    open.fetch_sub(1, Ordering::SeqCst);
                });
                match spawned {
                    Ok(h) => readers.push(h),
                    Err(e) => tracing::warn!("metrics socket: cannot start a reader: {e}"),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::warn!("metrics socket: {e}");
                break;
            }
        }
    }
    for r in readers {
        let _ = r.join();
    }
}

fn read_connection(stream: UnixStream, tx: &mpsc::SyncSender<Incoming>, done: &AtomicBool) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(Duration::from_millis(200))).is_err() {
        return;
    }
    let reply = stream.try_clone().ok();
    if let Some(r) = &reply {
        // A command that stops reading its answers cannot stall the worker.
        let _ = r.set_write_timeout(Some(Duration::from_secs(5)));
    }
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let room = (protocol::MAX_LINE_BYTES + 1).saturating_sub(line.len()) as u64;
        match (&mut reader).take(room).read_until(b'\n', &mut line) {
            Ok(0) if line.is_empty() => return,
            Ok(_) if line.ends_with(b"\n") => {
                line.pop();
                if send(&line, too_long, reply.as_ref(), tx).is_err() {
                    return;
                }
                too_long = false;
                line.clear();
            }
            Ok(_) if line.len() > protocol::MAX_LINE_BYTES => {
                // Longer than a line may be: skip to its end.
                too_long = true;
                line.clear();
            }
            Ok(_) => {
                // The stream ended after a last line without its newline.
                if reader.fill_buf().map_or(true, <[u8]>::is_empty) {
                    let _ = send(&line, too_long, reply.as_ref(), tx);
                    return;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if done.load(Ordering::SeqCst) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Hands one line over; `Err` when the training thread stopped listening
/// (or, once done, is not taking more).
fn send(line: &[u8], too_long: bool, reply: Option<&UnixStream>, tx: &mpsc::SyncSender<Incoming>) -> Result<(), ()> {
    let parsed = if too_long {
        Err(format!("longer than {} bytes", protocol::MAX_LINE_BYTES))
    } else {
        match std::str::from_utf8(line) {
            Ok(text) if text.trim().is_empty() => return Ok(()),
            Ok(text) => protocol::parse(text),
            Err(_) => Err("not UTF-8".into()),
        }
    };
    let reply = match parsed {
        Ok(Message::Checkpoint(_)) => reply.and_then(|s| s.try_clone().ok()),
        _ => None,
    };
    tx.send(Incoming { line: parsed, reply }).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn two_connections_are_read_at_once_and_long_lines_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let (tx, rx) = mpsc::sync_channel(64);
        let done = Arc::new(AtomicBool::new(false));
        let server = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || serve(&listener, &tx, &done))
        };
        // The first connection stays open and silent; the second is read.
        let _held = UnixStream::connect(&path).unwrap();
        let mut second = UnixStream::connect(&path).unwrap();
        let long = "x".repeat(protocol::MAX_LINE_BYTES + 10);
        write!(second, "{{\"step\": 1, \"loss\": 0.5}}\n{long}\nnot json\n{{\"step\": 2, \"loss\": 0.4}}").unwrap();
        drop(second);
        let mut got = Vec::new();
        while got.len() < 4 {
            got.push(rx.recv_timeout(Duration::from_secs(5)).expect("a line").line);
        }
        assert!(matches!(got[0], Ok(Message::Point { step: Some(1), .. })));
        assert!(got[1].as_ref().unwrap_err().contains("longer than"));
        assert!(got[2].as_ref().unwrap_err().contains("not JSON"));
        assert!(matches!(got[3], Ok(Message::Point { step: Some(2), .. })), "the last line without its newline");
        done.store(true, Ordering::SeqCst);
        drop(rx);
        server.join().unwrap();
    }
}
