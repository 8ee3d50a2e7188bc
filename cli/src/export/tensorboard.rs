//! `sweep export --format tensorboard`: each trial's curves as a
//! TensorBoard event file,
//! `OUT/SWEEP/CELL/seed=N/events.out.tfevents.T.sweep` (`CELL` like
//! `depth=8,skip=true`), one scalar per metric point (tag = the metric's
//! name, step = its step), so `tensorboard --logdir OUT` shows every
//! cell's seeds side by side, and several sweeps' runs in one `OUT`.
//!
//! An event file is a TFRecord stream of `tensorflow.Event` protobufs: per
//! record its length (u64, little-endian), the masked CRC-32C of the
//! length, the bytes, and their masked CRC-32C. The three messages used
//! are declared below with prost (the fields TensorBoard reads for
//! scalars); the CRC is the `crc` crate's Castagnoli polynomial. The files
//! are written in a temporary folder in `OUT`, which replaces `OUT/SWEEP`
//! (an earlier export of the same sweep) when the export is complete.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use prost::Message;
use sweep_core::archive::Record;

use super::Sink;

/// `tensorflow.Event` (the fields used here).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a scalar.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// TFRecord's masked CRC-32C.
pub(crate) fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = CASTAGNOLI.checksum(bytes);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// One TFRecord.
pub(crate) fn write_record(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    let len = (data.len() as u64).to_le_bytes();
    out.write_all(&len)?;
    out.write_all(&masked_crc(&len).to_le_bytes())?;
    out.write_all(data)?;
    out.write_all(&masked_crc(data).to_le_bytes())
}

/// A name usable as one path component: separators and control
/// characters replaced, never empty, `.` or `..`.
fn folder_name(text: &str) -> String {
    let name: String = text.chars().map(|c| if c == '/' || c == '\\' || c.is_control() { '_' } else { c }).collect();
    match name.as_str() {
        "" | "." | ".." => "_".to_owned(),
        _ => name,
    }
}

/// A folder name from a cell's canonical JSON: `name=level` joined by
/// commas, with path separators and control characters replaced.
fn cell_folder(cell: &str) -> String {
    let label = match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(cell) {
        Ok(map) => map
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(","),
        Err(_) => cell.to_owned(),
    };
    match label.as_str() {
        "" => "cell".to_owned(),
        _ => folder_name(&label),
    }
}

/// The sink: a folder per trial, created when its first point arrives
/// (the archive orders points by trial).
pub(super) struct Events {
    out: PathBuf,
    /// The sweep's folder name (from the archive's header).
    sweep: String,
    staging: tempfile::TempDir,
    /// Trial ID to its folder (relative) and start time in seconds.
    trials: HashMap<String, (PathBuf, f64)>,
    open: Option<(String, std::io::BufWriter<std::fs::File>)>,
}

impl Events {
    pub(super) fn new(out: PathBuf) -> anyhow::Result<Self> {
        let staging = tempfile::Builder::new()
            .prefix(".sweep-export-")
            .tempdir_in(&out)
            .with_context(|| format!("cannot write in {}", out.display()))?;
        Ok(Events { out, sweep: String::new(), staging, trials: HashMap::new(), open: None })
    }

    fn writer(&mut self, trial_id: &str) -> anyhow::Result<&mut std::io::BufWriter<std::fs::File>> {
        if self.open.as_ref().map(|(id, _)| id.as_str()) != Some(trial_id) {
            if let Some((_, mut w)) = self.open.take() {
                w.flush()?;
            }
            let (folder, wall) =
                self.trials.get(trial_id).cloned().with_context(|| format!("a point of unknown trial {trial_id}"))?;
            let dir = self.staging.path().join(&folder);
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let name = format!("events.out.tfevents.{}.sweep", wall as i64);
            let mut w = std::io::BufWriter::new(std::fs::File::create(dir.join(name))?);
            let version = Event { wall_time: wall, step: 0, file_version: Some("brain.Event:2".into()), summary: None };
            write_record(&mut w, &version.encode_to_vec())?;
            self.open = Some((trial_id.to_owned(), w));
        }
        Ok(&mut self.open.as_mut().expect("opened above").1)
    }
}

impl Sink for Events {
    fn record(&mut self, _line: &[u8], record: Record) -> anyhow::Result<()> {
        match record {
            Record::Trial(t) => {
                let folder = Path::new(&cell_folder(&t.cell)).join(format!("seed={}", t.seed));
                let wall = t.started_ms.unwrap_or(0) as f64 / 1000.0;
                self.trials.insert(t.id, (folder, wall));
            }
            Record::Point(p) => {
                let wall = self.trials.get(&p.trial_id).map(|t| t.1).unwrap_or(0.0);
                let event = Event {
                    wall_time: wall,
                    step: p.step,
                    file_version: None,
                    summary: Some(Summary {
                        value: vec![SummaryValue { tag: p.name, simple_value: Some(p.value as f32) }],
                    }),
                };
                let data = event.encode_to_vec();
                write_record(self.writer(&p.trial_id)?, &data)?;
            }
            Record::Header(h) => self.sweep = folder_name(&h.sweep),
            Record::Sweep(_) | Record::Settings(_) | Record::End(_) => {}
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        if let Some((_, mut w)) = self.open.take() {
            w.flush()?;
            w.get_ref().sync_all()?;
        }
        // The staging folder becomes OUT/SWEEP; an earlier export of the
        // sweep is moved aside first and removed after.
        let dest = self.out.join(&self.sweep);
        let staging = self.staging.keep();
        let old = self.out.join(format!(".sweep-export-old-{}", std::process::id()));
        let had = dest.exists();
        if had {
            std::fs::rename(&dest, &old).with_context(|| format!("cannot replace {}", dest.display()))?;
        }
        std::fs::rename(&staging, &dest).with_context(|| format!("cannot write {}", dest.display()))?;
        if had {
            std::fs::remove_dir_all(&old).with_context(|| format!("cannot remove {}", old.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_masked_crc_matches_tensorflows_reference_values() {
        // TensorFlow's crc32c tests: CRC-32C("123456789") is 0xE3069283.
        assert_eq!(CASTAGNOLI.checksum(b"123456789"), 0xE306_9283);
        // Masked: rotated right by 15 bits, plus 0xa282ead8 (mod 2^32).
        assert_eq!(masked_crc(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn cell_folders_are_labels_without_path_separators() {
        assert_eq!(cell_folder(r#"{"depth":8,"init":"he/2","skip":true}"#), "depth=8,init=he_2,skip=true");
        assert_eq!(cell_folder("{}"), "cell");
    }
}
