//! A trial's captured output on the worker: what an exec trainer's command
//! writes to stdout and stderr, and the worker's own notes about it, in
//! `<checkpoint root>/.logs/<trial id>.log`. The file is rotated at
//! [`MAX_LOG_BYTES`] (one older file, `.log.1`, is kept), so a chatty
//! command costs bounded disk; its tail ([`tail`]) is what the worker
//! uploads for `sweep logs`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The folder under the checkpoint root (not a trial ID, so never a
/// trial's checkpoint folder).
pub const LOGS_DIR: &str = ".logs";
/// A log file is rotated when it reaches this size.
pub const MAX_LOG_BYTES: u64 = 4 * 1024 * 1024;
/// The most of a log's end uploaded to the coordinator.
pub const TAIL_BYTES: usize = sweep_core::exec::LOG_TAIL_BYTES;

/// Where trial `trial_id`'s log is (the ID is a plain name: the daemon
/// refuses any other).
pub fn path(checkpoint_root: &Path, trial_id: &str) -> PathBuf {
    checkpoint_root.join(LOGS_DIR).join(format!("{trial_id}.log"))
}

/// An open trial log, appended to.
pub struct TrialLog {
    path: PathBuf,
    file: File,
    size: u64,
}

impl TrialLog {
    pub fn open(checkpoint_root: &Path, trial_id: &str) -> std::io::Result<TrialLog> {
        let path = path(checkpoint_root, trial_id);
        std::fs::create_dir_all(path.parent().expect("a log path has a folder"))?;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(TrialLog { path, file, size })
    }

    /// Appends `bytes` (a line of output, with its newline), rotating first
    /// when the file is full. Errors are the caller's to log, once.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.size + bytes.len() as u64 > MAX_LOG_BYTES && self.size > 0 {
            let old = self.path.with_extension("log.1");
            std::fs::rename(&self.path, &old)?;
            self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
            self.size = 0;
        }
        let bytes = &bytes[..bytes.len().min(MAX_LOG_BYTES as usize)];
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// A line of the worker's own, marked `[sweep]`.
    pub fn note(&mut self, text: &str) -> std::io::Result<()> {
        self.write(format!("[sweep] {text}\n").as_bytes())
    }
}

/// The last `max` bytes of trial `trial_id`'s log (lossy UTF-8, from a
/// line's start when the cut falls inside one); empty when there is none.
pub fn tail(checkpoint_root: &Path, trial_id: &str, max: usize) -> std::io::Result<String> {
    let path = path(checkpoint_root, trial_id);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let from = len.saturating_sub(max as u64);
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::with_capacity((len - from) as usize);
    file.take(max as u64).read_to_end(&mut bytes)?;
    if from > 0 {
        if let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            bytes.drain(..=nl);
        }
    }
    Ok(text_of(&bytes, max))
}

/// Output bytes as text the coordinator stores: invalid UTF-8 and NUL
/// replaced (U+FFFD), at most `max` bytes (the end kept, cut at a
/// character).
fn text_of(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes).replace('\0', "\u{FFFD}");
    if text.len() <= max {
        return text;
    }
    let mut cut = text.len() - max;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    text[cut..].to_owned()
}

/// Deletes trial `trial_id`'s log files (after its result is stored).
pub fn remove(checkpoint_root: &Path, trial_id: &str) {
    let p = path(checkpoint_root, trial_id);
    for f in [p.with_extension("log.1"), p] {
        if let Err(e) = std::fs::remove_file(&f) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %f.display(), "could not delete a trial log: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_rotates_and_its_tail_starts_at_a_line() {
        let root = tempfile::tempdir().unwrap();
        let mut log = TrialLog::open(root.path(), "t1").unwrap();
        let line = vec![b'x'; 1023];
        for _ in 0..(MAX_LOG_BYTES / 1024 + 10) {
            log.write(&[line.as_slice(), b"\n"].concat()).unwrap();
        }
        log.note("done").unwrap();
        let current = std::fs::metadata(path(root.path(), "t1")).unwrap().len();
        assert!(current < MAX_LOG_BYTES && current > 0, "{current}");
        assert!(path(root.path(), "t1").with_extension("log.1").exists());
        let t = tail(root.path(), "t1", 3000).unwrap();
        assert!(t.ends_with("[sweep] done\n") && t.starts_with('x') && t.len() < 3000, "{}", t.len());
        assert_eq!(tail(root.path(), "nope", 10).unwrap(), "");
        // Binary output stays within the bound once made text.
        let mut log = TrialLog::open(root.path(), "t2").unwrap();
        for _ in 0..300 {
            log.write(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\n").unwrap();
        }
        log.write(b"\0end\n").unwrap();
        let t = tail(root.path(), "t2", 3000).unwrap();
        assert!(t.len() <= 3000 && !t.contains('\0') && t.ends_with("\u{FFFD}end\n"), "{}", t.len());
        remove(root.path(), "t1");
        assert!(!path(root.path(), "t1").exists());
    }
}
