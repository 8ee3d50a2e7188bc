//! The archive format of `sweep export` and `sweep import`: one sweep's
//! stored state as JSON lines, lossless between the SQLite and PostgreSQL
//! stores (every column of every row, integers as integers, floats in
//! their shortest round-trip form).
//!
//! A file is, in this order: one [`Header`], one [`SweepRow`], the
//! [`SettingsRow`]s its trials use, its [`TrialRow`]s in queue order, its
//! [`PointRow`]s, and one [`End`] with the counts, so a truncated file is
//! refused instead of imported in part. [`Checker`] enforces the order and
//! the references; the store writes what it accepts in one transaction.
//!
//! Each line is an object with one key naming the record:
//! `{"trial":{"id":"…","state":"succeeded",…}}`.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::{GridSpec, TrialState};

/// `Header::format`.
pub const FORMAT: &str = "sweep-archive";
/// `Header::version`: the version this code writes and reads.
pub const VERSION: u32 = 1;
/// The longest line accepted (a trial's spec or a grid's JSON is far
/// shorter; this bounds the memory one bad line can take).
pub const MAX_LINE_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    Header(Header),
    Sweep(SweepRow),
    Settings(SettingsRow),
    /// Boxed: a trial row is far larger than the other records.
    Trial(Box<TrialRow>),
    Point(PointRow),
    End(End),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// The sweep the file holds.
    pub sweep: String,
    /// When it was written (milliseconds since the Unix epoch).
    pub exported_ms: i64,
}

/// A row of `sweeps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepRow {
    pub id: String,
    /// The last submitted grid ([`GridSpec`] as JSON).
    pub spec_json: String,
    pub max_attempts: i64,
    pub priority: i64,
    pub cancelled: bool,
    pub created_ms: i64,
    pub keep_weights: bool,
    pub adaptive: bool,
}

/// A row of `trial_settings`: a grid's shared settings, by content hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsRow {
    pub hash: String,
    pub settings_json: String,
}

/// A row of `trials`, every column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialRow {
    pub id: String,
    pub identity: Option<String>,
    pub sweep_id: String,
    pub cell_key: String,
    pub seq: i64,
    pub cell: String,
    pub seed: i64,
    pub spec_json: String,
    pub settings_hash: Option<String>,
    pub priority: i64,
    pub max_attempts: i64,
    pub state: String,
    pub attempts: i64,
    pub failures: i64,
    pub infra_failures: i64,
    pub handbacks: i64,
    pub lease_id: Option<String>,
    pub worker_id: Option<String>,
    pub holder: Option<String>,
    pub lease_expires_ms: Option<i64>,
    pub last_error: Option<String>,
    pub progress_epoch: Option<i64>,
    pub progress_step: Option<i64>,
    pub progress_loss: Option<f64>,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub final_train_loss: Option<f64>,
    pub final_test_loss: Option<f64>,
    pub final_test_accuracy: Option<f64>,
    pub best_test_accuracy: Option<f64>,
    pub wall_seconds: Option<f64>,
    pub resumed_step: Option<i64>,
    pub checkpoint_step: Option<i64>,
    pub device: Option<String>,
    pub threads: Option<i64>,
    pub code_version: Option<String>,
    pub libtorch: Option<String>,
    pub device_name: Option<String>,
    pub dataset_sha256: Option<String>,
}

/// A row of `metrics`: one point of one trial's curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointRow {
    pub trial_id: String,
    pub name: String,
    pub step: i64,
    pub epoch: i64,
    pub value: f64,
}

/// The last line: what came before it, counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct End {
    pub trials: u64,
    pub points: u64,
}

impl Record {
    /// The record as one line, `\n` included.
    pub fn to_line(&self) -> String {
        // Serialising plain structs of strings, integers and finite floats
        // cannot fail.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// Splits a byte stream cut anywhere into lines, remembering how far it
/// has looked, so each byte is scanned once however small the pieces; an
/// unfinished line longer than [`MAX_LINE_BYTES`] is an error, so memory
/// stays bounded. Used by both ends of `sweep export` and `sweep import`.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    /// Where the next line starts.
    start: usize,
    /// Bytes from `start` on already known to hold no `\n`.
    scanned: usize,
}

impl LineSplitter {
    pub fn push(&mut self, data: &[u8]) {
        // Drop consumed lines once they are at least half the buffer.
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete line (without its `\n`); `Ok(None)` until more
    /// data comes; `Err(bytes)` when the unfinished line is already longer
    /// than [`MAX_LINE_BYTES`].
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, usize> {
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(n) => {
                let (from, to) = (self.start, self.scanned + n);
                self.start = to + 1;
                self.scanned = self.start;
                Ok(Some(&self.buf[from..to]))
            }
            None => {
                self.scanned = self.buf.len();
                let pending = self.buf.len() - self.start;
                if pending > MAX_LINE_BYTES {
                    Err(pending)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// What follows the last `\n` (a last line may lack one).
    pub fn rest(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Why an archive is refused; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("line {line}: {reason}")]
    Line { line: u64, reason: String },
    #[error("the archive ends early (after line {line}, {what}): it is truncated")]
    Truncated { line: u64, what: &'static str },
}

/// Where [`Checker`] is in the file: each record kind may follow only the
/// ones before it in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Start,
    Header,
    Sweep,
    Settings,
    Trials,
    Points,
    Ended,
}

/// Reads an archive line by line, checking each record against the ones
/// before it: the order above; one sweep, with a grid that validates;
/// settings stored under their own hash; trials of that sweep whose stored
/// spec reads back and validates, whose identity is that spec's ID, with
/// known states and settings; points of trials in the file, in key order
/// (so none twice); and the end's counts. Only what an import would store
/// passes, and the store can read every row it stores. It keeps the trial
/// IDs, the settings and the last point's key.
#[derive(Debug)]
pub struct Checker {
    stage: Stage,
    line: u64,
    sweep: String,
    /// Settings hash to its JSON.
    settings: HashMap<String, String>,
    trials: HashSet<String>,
    points: u64,
    last_point: Option<(String, String, i64)>,
}

/// A stored ID (trial, identity or cell key): 32 lowercase hex digits. A
/// trial ID names its checkpoint folder on every worker.
fn stored_id(what: &str, id: &str) -> Result<(), String> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(format!("{what} {}: not 32 lowercase hex digits", crate::quote::short(id)))
    }
}

impl Default for Checker {
    fn default() -> Self {
        Self::new()
    }
}

impl Checker {
    pub fn new() -> Self {
        Self {
            stage: Stage::Start,
            line: 0,
            sweep: String::new(),
            settings: HashMap::new(),
            trials: HashSet::new(),
            points: 0,
            last_point: None,
        }
    }

    /// Lines read so far.
    pub fn lines(&self) -> u64 {
        self.line
    }

    /// The sweep the archive holds (empty before its header).
    pub fn sweep(&self) -> &str {
        &self.sweep
    }

    /// Parses and checks the next line (without its `\n`).
    pub fn line(&mut self, text: &[u8]) -> Result<Record, ArchiveError> {
        self.line += 1;
        let line = self.line;
        let bad = |reason: String| ArchiveError::Line { line, reason };
        if self.stage == Stage::Ended {
            return Err(bad("text after the end record".into()));
        }
        if text.len() > MAX_LINE_BYTES {
            return Err(bad(format!("{} bytes; a line holds at most {MAX_LINE_BYTES}", text.len())));
        }
        let record: Record = serde_json::from_slice(text).map_err(|e| bad(format!("not an archive record: {e}")))?;
        let (stage, expected) = match &record {
            Record::Header(_) => (Stage::Header, "the header comes first"),
            Record::Sweep(_) => (Stage::Sweep, "the sweep comes right after the header"),
            Record::Settings(_) => (Stage::Settings, "settings come after the sweep, before the trials"),
            Record::Trial(_) => (Stage::Trials, "trials come after the settings, before the points"),
            Record::Point(_) => (Stage::Points, "points come after the trials"),
            Record::End(_) => (Stage::Ended, "the end comes last"),
        };
        let repeatable = matches!(stage, Stage::Settings | Stage::Trials | Stage::Points);
        let in_order = match self.stage {
            Stage::Start => stage == Stage::Header,
            Stage::Header => stage == Stage::Sweep,
            now => stage > now || (repeatable && stage == now),
        };
        if !in_order {
            return Err(bad(format!("out of order: {expected}")));
        }
        self.stage = stage;
        match &record {
            Record::Header(h) => {
                if h.format != FORMAT {
                    return Err(bad(format!("format {:?}: not a sweep archive (expected {FORMAT:?})", h.format)));
                }
                if h.version != VERSION {
                    return Err(bad(format!(
                        "version {}: this sweep reads version {VERSION} only (upgrade sweep to read newer archives)",
                        h.version
                    )));
                }
                self.sweep = h.sweep.clone();
            }
            Record::Sweep(s) => {
                if s.id != self.sweep {
                    return Err(bad(format!("sweep {:?}, but the header says {:?}", s.id, self.sweep)));
                }
                let spec: GridSpec = serde_json::from_str(&s.spec_json)
                    .map_err(|e| bad(format!("sweep.spec_json is not a grid: {e}")))?;
                spec.validate().map_err(|e| bad(format!("sweep.spec_json: {e}")))?;
                if spec.name != s.id {
                    return Err(bad(format!("sweep.spec_json names sweep {:?}, not {:?}", spec.name, s.id)));
                }
            }
            Record::Settings(s) => {
                if crate::stored::settings_hash(&s.settings_json) != s.hash {
                    return Err(bad(format!(
                        "settings {}: the hash is not their SHA-256",
                        crate::quote::short(&s.hash)
                    )));
                }
                crate::stored::train_of(&s.settings_json).map_err(|e| bad(format!("settings: {e}")))?;
                if self.settings.insert(s.hash.clone(), s.settings_json.clone()).is_some() {
                    return Err(bad(format!("settings {:?} twice", s.hash)));
                }
            }
            Record::Trial(t) => self.trial(t).map_err(bad)?,
            Record::Point(p) => {
                if !self.trials.contains(&p.trial_id) {
                    return Err(bad(format!(
                        "a point of trial {}, which the archive does not hold",
                        crate::quote::short(&p.trial_id)
                    )));
                }
                crate::point::check(&p.name, p.step, p.epoch, p.value).map_err(|e| bad(format!("point: {e}")))?;
                let key = (p.trial_id.clone(), p.name.clone(), p.step);
                if self.last_point.as_ref().is_some_and(|last| *last >= key) {
                    return Err(bad(format!(
                        "point {} of trial {} at step {}: out of order or twice (points are sorted by trial, name, step)",
                        crate::quote::short(&p.name),
                        p.trial_id,
                        p.step
                    )));
                }
                self.last_point = Some(key);
                self.points += 1;
            }
            Record::End(e) => {
                let held = End { trials: self.trials.len() as u64, points: self.points };
                if *e != held {
                    return Err(bad(format!(
                        "the end counts {} trials and {} points, but the archive holds {} and {}",
                        e.trials, e.points, held.trials, held.points
                    )));
                }
            }
        }
        Ok(record)
    }

    fn trial(&mut self, t: &TrialRow) -> Result<(), String> {
        stored_id("trial", &t.id)?;
        stored_id("cell key", &t.cell_key)?;
        if t.sweep_id != self.sweep {
            return Err(format!("trial {} belongs to sweep {:?}, not {:?}", t.id, t.sweep_id, self.sweep));
        }
        if self.trials.len() as u64 >= crate::MAX_TRIALS {
            return Err(format!("more than {} trials", crate::MAX_TRIALS));
        }
        TrialState::parse(&t.state).map_err(|e| format!("trial {}: {e}", t.id))?;
        let hash = t.settings_hash.as_deref().ok_or_else(|| format!("trial {}: no settings_hash", t.id))?;
        let settings = self
            .settings
            .get(hash)
            .ok_or_else(|| format!("trial {} uses settings {hash:?}, which the archive does not hold", t.id))?;
        let spec = crate::stored::trial_spec(&t.spec_json, settings).map_err(|e| format!("trial {}: {e}", t.id))?;
        spec.validate().map_err(|e| format!("trial {}: {e}", t.id))?;
        let id = spec.id(&self.sweep).0;
        if t.identity.as_deref() != Some(id.as_str()) {
            return Err(format!("trial {}: its identity is not its spec's ID ({id})", t.id));
        }
        if t.cell != spec.cell.canonical() {
            return Err(format!("trial {}: its cell is not its spec's cell", t.id));
        }
        // What a coordinator accepts from a worker (no control characters
        // in its device or provenance), so a report can read it back.
        let provenance = [("device", &t.device), ("code_version", &t.code_version), ("libtorch", &t.libtorch)]
            .into_iter()
            .chain([("device_name", &t.device_name), ("dataset_sha256", &t.dataset_sha256)]);
        for (what, value) in provenance {
            if value.as_deref().is_some_and(|v| v.chars().any(char::is_control)) {
                return Err(format!("trial {}: its {what} holds a control character", t.id));
            }
        }
        if !self.trials.insert(t.id.clone()) {
            return Err(format!("trial {} twice", t.id));
        }
        Ok(())
    }

    /// Call after the last line: an archive without its end is truncated.
    pub fn finish(&self) -> Result<End, ArchiveError> {
        let what = match self.stage {
            Stage::Ended => return Ok(End { trials: self.trials.len() as u64, points: self.points }),
            Stage::Start => "empty",
            Stage::Header => "after the header",
            Stage::Sweep | Stage::Settings => "before its trials",
            Stage::Trials | Stage::Points => "without its end record",
        };
        Err(ArchiveError::Truncated { line: self.line, what })
    }
}
