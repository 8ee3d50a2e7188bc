//! Export and import (issue 12, acceptance 4), through real coordinators:
//! a sweep trained by real `sweep-worker`s on libtorch is exported from
//! SQLite, imported into PostgreSQL, exported again and imported into a
//! fresh SQLite database; the report is byte-identical at every stop, and
//! the two SQLite archives are line for line the same (their headers'
//! export times aside). Import is all or nothing: a truncated or corrupted
//! archive, or a sweep the database holds already, stores nothing. The
//! Parquet tables are read back with the `parquet` crate and the
//! TensorBoard event files with an independent TFRecord reader.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{run_ok, sweep, sweep_run, Server};

fn report(server: &Server, name: &str) -> (String, String) {
    let text = run_ok(sweep().args(["report", name, "--coordinator", &server.url]));
    let json = run_ok(sweep().args(["report", name, "--format", "json", "--coordinator", &server.url]));
    (text, json)
}

/// Equal, or a panic showing where the two first differ.
fn same(a: &(String, String), b: &(String, String), what: &str) {
    for (x, y) in [(&a.0, &b.0), (&a.1, &b.1)] {
        if let Some(i) =
            x.bytes().zip(y.bytes()).position(|(p, q)| p != q).or((x.len() != y.len()).then_some(x.len().min(y.len())))
        {
            let from = x.floor_char_boundary(i.saturating_sub(300));
            let (xe, ye) = (x.ceil_char_boundary((i + 200).min(x.len())), y.ceil_char_boundary((i + 200).min(y.len())));
            panic!("{what} differs at byte {i}:\n{}\n---\n{}", &x[from..xe], &y[from.min(y.len())..ye]);
        }
    }
}

fn export(server: &Server, name: &str, out: &Path) {
    run_ok(sweep().args(["export", name, "--coordinator", &server.url, "--out"]).arg(out));
}

fn import(server: &Server, file: &Path) -> String {
    run_ok(sweep().args(["import", "--coordinator", &server.url]).arg(file))
}

/// The archive's lines without the header (its export time differs).
fn body(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file).unwrap().lines().skip(1).map(str::to_owned).collect()
}

/// The same archive but for the header's export time, or a panic showing
/// the first line that differs.
fn same_archive(a: &Path, b: &Path, what: &str) {
    let (before, after) = (body(a), body(b));
    assert_eq!(before.len(), after.len(), "{what}: lines");
    if let Some((x, y)) = before.iter().zip(&after).find(|(x, y)| x != y) {
        panic!("{what} differs:\n{x}\n{y}");
    }
}

/// A PostgreSQL URL on a fresh schema, dropped by the returned guard.
struct PgSchema {
    base: String,
    schema: String,
    url: String,
}

impl PgSchema {
    fn new() -> Option<PgSchema> {
        let base = common::postgres_url()?;
        let schema = format!("sweep_archive_{}", uuid::Uuid::new_v4().simple());
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        psql(&base, &format!("CREATE SCHEMA {schema}"));
        Some(PgSchema { base, schema, url })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        psql(&self.base, &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
    }
}

fn psql(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use sqlx::Executor;
        let pool = sqlx::PgPool::connect(url).await.expect("connect to PostgreSQL");
        pool.execute(sql).await.expect(sql);
        pool.close().await;
    });
}

#[test]
fn a_sweep_moves_sqlite_to_postgres_to_sqlite_with_an_identical_report() {
    let Some(pg) = PgSchema::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let grid = common::grid_over_synth_data(
        dir.path(),
        "moved",
        (64, 32),
        "seeds = [0, 1]\n[grid]\ndepth = 8\nskip = [true, false]\ninit = \"default\"\nbatchnorm = true\n\
         [train]\nepochs = 1\nbatch_size = 16\nlog_every = 1\n",
    );
    let first = dir.path().join("first.db");
    let child = sweep_run(&grid, &dir.path().join("state"), &first).spawn().unwrap();
    let out = common::finish(child, Duration::from_secs(300), "sweep run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let a = Server::start(&first);
    let original = report(&a, "moved");
    assert!(original.0.contains("moved"), "{}", original.0);
    let a_file = dir.path().join("a.jsonl");
    export(&a, "moved", &a_file);

    // SQLite -> PostgreSQL.
    let b = Server::start_url(&pg.url);
    let said = import(&b, &a_file);
    assert!(said.contains("imported sweep moved: 4 trials,"), "{said}");
    same(&report(&b, "moved"), &original, "the report from PostgreSQL");
    let b_file = dir.path().join("b.jsonl");
    export(&b, "moved", &b_file);
    same_archive(&a_file, &b_file, "the archive from PostgreSQL");

    // PostgreSQL -> SQLite.
    let c = Server::start(&dir.path().join("third.db"));
    import(&c, &b_file);
    same(&report(&c, "moved"), &original, "the report after the round trip");
    let c_file = dir.path().join("c.jsonl");
    export(&c, "moved", &c_file);
    same_archive(&a_file, &c_file, "the archive after the round trip");
    let lines = body(&a_file);
    assert!(lines.iter().any(|l| l.starts_with("{\"point\":")), "metric points travel");
    assert!(lines.iter().any(|l| l.contains("\"dataset_sha256\":\"")), "provenance travels");

    // A sweep the database holds already is refused, and nothing changes.
    let again = sweep().args(["import", "--coordinator", &c.url]).arg(&b_file).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("exists in this database already") && err.contains("AlreadyExists"), "{err}");
    same(&report(&c, "moved"), &original, "the report after a refused import");
}

#[test]
fn a_truncated_or_corrupted_archive_stores_nothing_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("grid.toml");
    std::fs::write(&grid, common::small_grid("cut", 2)).unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let db = dir.path().join("a.db");
    let out =
        run_ok(sweep_run(&grid, &dir.path().join("state"), &db).args(["--simulate-step-ms", "1", "--workers", "2"]));
    assert!(out.contains("cut"), "{out}");
    let a = Server::start(&db);
    let file = dir.path().join("cut.jsonl");
    export(&a, "cut", &file);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.last().unwrap().starts_with("{\"end\":{\"trials\":8,"), "{}", lines.last().unwrap());

    let b = Server::start(&dir.path().join("b.db"));
    let refused = |archive: &str, what: &str| {
        let path = dir.path().join("bad.jsonl");
        std::fs::write(&path, archive).unwrap();
        let out = sweep().args(["import", "--coordinator", &b.url]).arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains("nothing was stored"), "{what}: {err}");
        let status = run_ok(sweep().args(["status", "--coordinator", &b.url]));
        assert!(status.contains("no sweeps"), "{what} stored something: {status}");
        err
    };
    // Without its end record.
    let cut = lines[..lines.len() - 1].join("\n");
    let err = refused(&cut, "truncated");
    assert!(err.contains("truncated"), "{err}");
    // Cut inside the points: the end record's counts disagree.
    let mut short: Vec<&str> = lines.clone();
    short.remove(lines.len() - 2);
    let err = refused(&short.join("\n"), "a point missing");
    assert!(err.contains(&format!("line {}", lines.len() - 1)) && err.contains("points"), "{err}");
    // A garbled line names its number.
    let mut garbled: Vec<String> = lines.iter().map(ToString::to_string).collect();
    garbled[5] = garbled[5].replace("\"seed\":", "\"seeed\":");
    let err = refused(&garbled.join("\n"), "garbled");
    assert!(err.contains("line 6") && err.contains("seeed"), "{err}");
    // The whole file imports.
    let said = import(&b, &file);
    assert!(said.contains("imported sweep cut: 8 trials"), "{said}");
    same(&report(&b, "cut"), &report(&a, "cut"), "the report after an import");

    // Queued trials travel queued, and queue after what the database holds,
    // in their own order.
    let pending = dir.path().join("pending.toml");
    std::fs::write(&pending, common::small_grid("pending", 1)).unwrap();
    run_ok(sweep().arg("submit").arg(&pending).args(["--coordinator", &a.url]));
    let queued = dir.path().join("pending.jsonl");
    export(&a, "pending", &queued);
    import(&b, &queued);
    let status = run_ok(sweep().args(["status", "pending", "--coordinator", &b.url]));
    let row = status.lines().find(|l| l.contains("pending")).unwrap();
    assert!(row.contains(" 4 ") && row.contains("active"), "{status}");
    let again = dir.path().join("pending-b.jsonl");
    export(&b, "pending", &again);
    let seqs = |file: &Path| -> Vec<i64> {
        body(file)
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["trial"]["seq"].as_i64())
            .collect()
    };
    let cut_max = seqs(&file).into_iter().max().unwrap();
    let moved = seqs(&again);
    assert_eq!(moved.len(), 4);
    assert!(moved.windows(2).all(|w| w[0] < w[1]) && moved[0] > cut_max, "{moved:?} after {cut_max}");

    // An unknown sweep exports nothing and says so.
    let missing = sweep().args(["export", "nope", "--coordinator", &a.url]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"));
}

#[test]
fn parquet_tables_and_tensorboard_events_read_back() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;

    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("grid.toml");
    std::fs::write(&grid, common::small_grid("tables", 2)).unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let db = dir.path().join("a.db");
    run_ok(sweep_run(&grid, &dir.path().join("state"), &db).args(["--simulate-step-ms", "1", "--workers", "2"]));
    let a = Server::start(&db);
    let archive = dir.path().join("tables.jsonl");
    export(&a, "tables", &archive);
    let records: Vec<serde_json::Value> =
        std::fs::read_to_string(&archive).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let trials: Vec<&serde_json::Value> = records.iter().filter_map(|r| r.get("trial")).collect();
    let points: Vec<&serde_json::Value> = records.iter().filter_map(|r| r.get("point")).collect();
    assert_eq!(trials.len(), 8);
    assert!(!points.is_empty());

    // Parquet.
    let tables = dir.path().join("tables");
    run_ok(sweep().args(["export", "tables", "--format", "parquet", "--coordinator", &a.url, "--out"]).arg(&tables));
    let reader = SerializedFileReader::new(std::fs::File::open(tables.join("trials.parquet")).unwrap()).unwrap();
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let index = |name: &str| schema.columns().iter().position(|c| c.name() == name).unwrap_or_else(|| panic!("{name}"));
    let (id, depth, skip, acc, state) =
        (index("id"), index("depth"), index("skip"), index("final_test_accuracy"), index("state"));
    let mut rows = 0;
    for row in reader.get_row_iter(None).unwrap() {
        let row = row.unwrap();
        let trial = trials.iter().find(|t| t["id"] == row.get_string(id).unwrap().as_str()).expect("a known trial");
        let cell: serde_json::Value = serde_json::from_str(trial["cell"].as_str().unwrap()).unwrap();
        assert_eq!(row.get_long(depth).unwrap(), cell["depth"].as_i64().unwrap(), "typed factor column");
        assert_eq!(row.get_bool(skip).unwrap(), cell["skip"].as_bool().unwrap());
        assert_eq!(row.get_string(state).unwrap(), "succeeded");
        assert_eq!(row.get_double(acc).unwrap(), trial["final_test_accuracy"].as_f64().unwrap());
        rows += 1;
    }
    assert_eq!(rows, 8);
    let reader = SerializedFileReader::new(std::fs::File::open(tables.join("points.parquet")).unwrap()).unwrap();
    let mut sum = 0.0;
    let mut n = 0;
    for row in reader.get_row_iter(None).unwrap() {
        sum += row.unwrap().get_double(4).unwrap();
        n += 1;
    }
    assert_eq!(n, points.len());
    let expected: f64 = points.iter().map(|p| p["value"].as_f64().unwrap()).sum();
    assert!((sum - expected).abs() <= 1e-9 * expected.abs().max(1.0), "{sum} vs {expected}");

    // TensorBoard: a file per trial, every point a scalar.
    let runs = dir.path().join("runs");
    run_ok(sweep().args(["export", "tables", "--format", "tensorboard", "--coordinator", &a.url, "--out"]).arg(&runs));
    let mut scalars = 0;
    for trial in &trials {
        let cell: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(trial["cell"].as_str().unwrap()).unwrap();
        let label: Vec<String> = cell
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().map(str::to_owned).unwrap_or(v.to_string())))
            .collect();
        let folder = runs.join("tables").join(label.join(",")).join(format!("seed={}", trial["seed"]));
        let files: Vec<_> =
            std::fs::read_dir(&folder).unwrap_or_else(|e| panic!("{}: {e}", folder.display())).collect();
        assert_eq!(files.len(), 1);
        let path = files[0].as_ref().unwrap().path();
        assert!(path.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents."));
        let events = tfrecord::read(&std::fs::read(&path).unwrap());
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        let mine: Vec<&&serde_json::Value> = points.iter().filter(|p| p["trial_id"] == trial["id"]).collect();
        assert_eq!(events.len() - 1, mine.len());
        for (e, p) in events[1..].iter().zip(&mine) {
            let v = &e.summary.as_ref().unwrap().value[0];
            assert_eq!(e.step, p["step"].as_i64().unwrap());
            assert_eq!(v.tag, p["name"].as_str().unwrap());
            assert_eq!(v.simple_value, Some(p["value"].as_f64().unwrap() as f32));
        }
        scalars += mine.len();
    }
    assert_eq!(scalars, points.len());
    assert!(!std::fs::read_dir(&runs).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with('.')));
}

/// An independent reader of TensorBoard's TFRecord files: checks both
/// CRCs of every record and decodes `tensorflow.Event`.
mod tfrecord {
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
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Summary {
        #[prost(message, repeated, tag = "1")]
        pub value: Vec<Value>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Value {
        #[prost(string, tag = "1")]
        pub tag: String,
        #[prost(float, optional, tag = "2")]
        pub simple_value: Option<f32>,
    }

    fn masked(bytes: &[u8]) -> u32 {
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(bytes);
        crc.rotate_right(15).wrapping_add(0xa282_ead8)
    }

    pub(crate) fn read(mut bytes: &[u8]) -> Vec<Event> {
        use prost::Message;
        let mut events = Vec::new();
        while !bytes.is_empty() {
            let len_bytes = &bytes[..8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), masked(len_bytes), "length CRC");
            let data = &bytes[12..12 + len];
            assert_eq!(u32::from_le_bytes(bytes[12 + len..16 + len].try_into().unwrap()), masked(data), "data CRC");
            events.push(Event::decode(data).unwrap());
            bytes = &bytes[16 + len..];
        }
        events
    }
}
