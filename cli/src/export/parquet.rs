//! `sweep export --format parquet`: two tables for pandas and polars.
//!
//! - `trials.parquet`: a row per trial with every stored column (the
//!   archive's `TrialRow`) and one typed column per factor of its cell
//!   (`depth` INT64, `skip` BOOLEAN, `lr` DOUBLE, text otherwise), named
//!   as the factor (`factor_NAME` where that would clash with a stored
//!   column);
//! - `points.parquet`: a row per metric point (`trial_id`, `name`, `step`,
//!   `epoch`, `value`), written in row groups as the points arrive, so
//!   memory does not grow with them.
//!
//! Snappy-compressed, written with the `parquet` crate's column writers.
//! Both are written completely, then renamed into place, only when the
//! export is complete.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use parquet::basic::Compression;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use sweep_core::archive::{PointRow, Record, TrialRow};

use super::Sink;

/// Points per row group of `points.parquet`.
const POINTS_PER_GROUP: usize = 64 * 1024;

/// One column's values, `None` for null.
enum Values {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
}

struct Column {
    name: String,
    values: Values,
}

impl Column {
    fn text(name: &str, v: Vec<Option<String>>) -> Self {
        Column { name: name.to_owned(), values: Values::Text(v) }
    }
    fn int(name: &str, v: Vec<Option<i64>>) -> Self {
        Column { name: name.to_owned(), values: Values::Int(v) }
    }
    fn float(name: &str, v: Vec<Option<f64>>) -> Self {
        Column { name: name.to_owned(), values: Values::Float(v) }
    }

    /// Its line of a Parquet message type (every column may be null).
    fn schema_line(&self) -> String {
        let ty = match self.values {
            Values::Text(_) => "BYTE_ARRAY",
            Values::Int(_) => "INT64",
            Values::Float(_) => "DOUBLE",
            Values::Bool(_) => "BOOLEAN",
        };
        let utf8 = if matches!(self.values, Values::Text(_)) { " (UTF8)" } else { "" };
        format!("OPTIONAL {ty} {}{utf8};", self.name)
    }
}

/// The values present and the definition levels (1 present, 0 null).
fn split<T: Clone>(v: &[Option<T>]) -> (Vec<T>, Vec<i16>) {
    let present = v.iter().flatten().cloned().collect();
    let levels = v.iter().map(|x| i16::from(x.is_some())).collect();
    (present, levels)
}

/// A Parquet file being written to a temporary name in its folder.
struct Table {
    writer: SerializedFileWriter<File>,
    tmp: tempfile::TempPath,
    dest: PathBuf,
}

impl Table {
    fn create(dir: &std::path::Path, name: &str, columns: &[Column]) -> anyhow::Result<Table> {
        let message = format!(
            "message {} {{ {} }}",
            name.trim_end_matches(".parquet"),
            columns.iter().map(Column::schema_line).collect::<Vec<_>>().join(" ")
        );
        let schema = Arc::new(parse_message_type(&message).with_context(|| format!("the schema of {name}"))?);
        let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
        let tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
        let (file, tmp) = tmp.into_parts();
        let writer = SerializedFileWriter::new(file, schema, props)?;
        Ok(Table { writer, tmp, dest: dir.join(name) })
    }

    /// One row group: the columns in schema order, all of one length.
    fn write_group(&mut self, columns: &[Column]) -> anyhow::Result<()> {
        let mut group = self.writer.next_row_group()?;
        for column in columns {
            let mut writer = group.next_column()?.context("more columns than the schema")?;
            match &column.values {
                Values::Text(v) => {
                    let (present, levels) = split(v);
                    let present: Vec<ByteArray> =
                        present.into_iter().map(|s| ByteArray::from(s.into_bytes())).collect();
                    writer.typed::<ByteArrayType>().write_batch(&present, Some(&levels), None)?;
                }
                Values::Int(v) => {
                    let (present, levels) = split(v);
                    writer.typed::<Int64Type>().write_batch(&present, Some(&levels), None)?;
                }
                Values::Float(v) => {
                    let (present, levels) = split(v);
                    writer.typed::<DoubleType>().write_batch(&present, Some(&levels), None)?;
                }
                Values::Bool(v) => {
                    let (present, levels) = split(v);
                    writer.typed::<BoolType>().write_batch(&present, Some(&levels), None)?;
                }
            }
            writer.close()?;
        }
        group.close()?;
        Ok(())
    }

    /// Writes the footer; the file stays under its temporary name.
    fn close(self) -> anyhow::Result<Closed> {
        let file = self.writer.into_inner()?;
        file.sync_all()?;
        Ok(Closed { tmp: self.tmp, dest: self.dest })
    }
}

/// A complete table not yet in place.
struct Closed {
    tmp: tempfile::TempPath,
    dest: PathBuf,
}

impl Closed {
    fn persist(self) -> anyhow::Result<()> {
        self.tmp.persist(&self.dest).with_context(|| format!("cannot write {}", self.dest.display()))?;
        Ok(())
    }
}

/// The sink: trials kept until the end (a row each), points written as
/// they come.
pub(super) struct Tables {
    dir: PathBuf,
    trials: Vec<TrialRow>,
    points: Vec<PointRow>,
    points_table: Option<Table>,
}

impl Tables {
    pub(super) fn new(dir: PathBuf) -> Self {
        Tables { dir, trials: Vec::new(), points: Vec::new(), points_table: None }
    }

    fn flush_points(&mut self) -> anyhow::Result<()> {
        let points = std::mem::take(&mut self.points);
        let columns = vec![
            Column::text("trial_id", points.iter().map(|p| Some(p.trial_id.clone())).collect()),
            Column::text("name", points.iter().map(|p| Some(p.name.clone())).collect()),
            Column::int("step", points.iter().map(|p| Some(p.step)).collect()),
            Column::int("epoch", points.iter().map(|p| Some(p.epoch)).collect()),
            Column::float("value", points.iter().map(|p| Some(p.value)).collect()),
        ];
        if self.points_table.is_none() {
            self.points_table = Some(Table::create(&self.dir, "points.parquet", &columns)?);
        }
        if !points.is_empty() {
            self.points_table.as_mut().map(|t| t.write_group(&columns)).transpose()?;
        }
        Ok(())
    }
}

impl Sink for Tables {
    fn record(&mut self, _line: &[u8], record: Record) -> anyhow::Result<()> {
        match record {
            Record::Trial(t) => self.trials.push(*t),
            Record::Point(p) => {
                self.points.push(p);
                if self.points.len() == POINTS_PER_GROUP {
                    self.flush_points()?;
                }
            }
            Record::Header(_) | Record::Sweep(_) | Record::Settings(_) | Record::End(_) => {}
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.flush_points()?;
        let columns = trial_columns(&self.trials)?;
        let mut trials = Table::create(&self.dir, "trials.parquet", &columns)?;
        trials.write_group(&columns)?;
        // Both complete before either is put in place, so a failure never
        // leaves new trials beside old points.
        let trials = trials.close()?;
        let points = self.points_table.take().map(Table::close).transpose()?;
        trials.persist()?;
        points.map(Closed::persist).transpose()?;
        Ok(())
    }
}

/// Every stored column of the trials, then one per factor.
fn trial_columns(trials: &[TrialRow]) -> anyhow::Result<Vec<Column>> {
    macro_rules! col {
        ($kind:ident, $name:ident) => {
            Column::$kind(stringify!($name), trials.iter().map(|t| t.$name.clone().into()).collect())
        };
    }
    let mut columns = vec![
        col!(text, id),
        col!(text, identity),
        col!(text, sweep_id),
        col!(text, cell_key),
        col!(int, seq),
        col!(text, cell),
        col!(int, seed),
        col!(text, spec_json),
        col!(text, settings_hash),
        col!(int, priority),
        col!(int, max_attempts),
        col!(text, state),
        col!(int, attempts),
        col!(int, failures),
        col!(int, infra_failures),
        col!(int, handbacks),
        col!(text, lease_id),
        col!(text, worker_id),
        col!(text, holder),
        col!(int, lease_expires_ms),
        col!(text, last_error),
        col!(int, progress_epoch),
        col!(int, progress_step),
        col!(float, progress_loss),
        col!(int, started_ms),
        col!(int, finished_ms),
        col!(float, final_train_loss),
        col!(float, final_test_loss),
        col!(float, final_test_accuracy),
        col!(float, best_test_accuracy),
        col!(float, wall_seconds),
        col!(int, resumed_step),
        col!(int, checkpoint_step),
        col!(text, device),
        col!(int, threads),
        col!(text, code_version),
        col!(text, libtorch),
        col!(text, device_name),
        col!(text, dataset_sha256),
    ];
    let cells: Vec<BTreeMap<String, serde_json::Value>> = trials
        .iter()
        .map(|t| {
            serde_json::from_str(&t.cell).with_context(|| format!("trial {}: its cell is not a JSON object", t.id))
        })
        .collect::<anyhow::Result<_>>()?;
    let names: BTreeSet<&String> = cells.iter().flat_map(|c| c.keys()).collect();
    let stored: BTreeSet<String> = columns.iter().map(|c| c.name.clone()).collect();
    for name in names {
        let column = if stored.contains(name) { format!("factor_{name}") } else { name.clone() };
        let values: Vec<Option<&serde_json::Value>> = cells.iter().map(|c| c.get(name)).collect();
        columns.push(factor_column(&column, &values));
    }
    Ok(columns)
}

/// A factor's levels as one typed column: booleans, integers, numbers, or
/// else text (strings as they are, anything else as JSON).
fn factor_column(name: &str, values: &[Option<&serde_json::Value>]) -> Column {
    use serde_json::Value;
    let present = || values.iter().flatten();
    if present().all(|v| v.is_boolean()) {
        return Column {
            name: name.to_owned(),
            values: Values::Bool(values.iter().map(|v| v.and_then(Value::as_bool)).collect()),
        };
    }
    if present().all(|v| v.is_i64()) {
        return Column::int(name, values.iter().map(|v| v.and_then(Value::as_i64)).collect());
    }
    if present().all(|v| v.is_number()) {
        return Column::float(name, values.iter().map(|v| v.and_then(Value::as_f64)).collect());
    }
    Column::text(
        name,
        values
            .iter()
            .map(|v| {
                v.map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            })
            .collect(),
    )
}
