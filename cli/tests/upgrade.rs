//! A database made by the code before factors became data (schema v3:
//! migrations 0001-0003, four factor columns) upgrades in place when today's
//! coordinator opens it, on SQLite and on PostgreSQL, and reports exactly
//! what the old code reported: the same markdown, CSV and JSON, the same
//! `sweep status`, and resubmitting the old grid adds nothing.
//!
//! The rows and the old outputs are in tests/fixtures/upgrade (see its
//! README for how they were made). What the report gained since (the
//! "Trained with:" note, each JSON trial row's `settings`, the JSON's empty
//! `lesion`, `variance` and `landscape` sections, each effect's `method`)
//! is checked
//! against the grid and then set aside, so the rest is compared with the old
//! output byte for byte.

mod common;

use std::path::{Path, PathBuf};

use common::{run_ok, sweep};
use sqlx::Executor;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade").join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The migrations of schema v3 (0001-0003), copied to their own folder.
fn v3_migrations(dir: &Path) -> PathBuf {
    let out = dir.join("migrations-v3");
    std::fs::create_dir_all(&out).unwrap();
    let backend = if dir.join("pg").exists() { "postgres" } else { "sqlite" };
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations").join(backend);
    for name in ["0001_init.sql", "0002_reliability.sql", "0003_hardening.sql"] {
        std::fs::copy(src.join(name), out.join(name)).unwrap();
    }
    out
}

/// Fills a schema-v3 database at `url` with the fixture's rows.
async fn make_v3<DB: sqlx::Database>(pool: &sqlx::Pool<DB>, migrations: &Path)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Connection: sqlx::migrate::Migrate,
{
    let migrator = sqlx::migrate::Migrator::new(migrations).await.expect("read the v3 migrations");
    migrator.run(pool).await.expect("apply the v3 migrations");
    pool.execute(sqlx::raw_sql(&read("schema_v3.sql"))).await.expect("load the v3 rows");
}

const GRID: &str = r#"
name = "NAME"
seeds = 3
[grid]
depth = [8, 32]
skip = [true, false]
init = ["default", "kaiming_normal", "xavier_uniform"]
batchnorm = [true, false]
[train]
epochs = 2
lr = 0.01
[data]
path = "/data/cifar-10-batches-bin"
train_subset = 512
test_subset = 256
"#;

/// The note added after v3: the grid's settings, every default filled in.
const TRAINED_WITH: &str = "- Trained with: epochs=2, batch_size=4, optimizer=sgd, lr=0.01, momentum=0.9, \
                            weight_decay=0.0, log_every=2000, augment=false, precision=fp32.\n";

/// The note on standardised effects, added after v3.
const STANDARDIZED: &str = "- d: the effect in units of the seed-to-seed spread";

/// A markdown report without what was added after v3 (which must be
/// there): the settings note, the note on `d`, and the tables' `d` column.
/// `sweep status` without what it gained since the fixtures were made:
/// each running trial's short ID, ` (trial 1a2b3c4d)`.
fn without_trial_ids(status: &str) -> String {
    status
        .lines()
        .map(|line| match line.find(" (trial ") {
            Some(i) => match line[i + 8..].find(')') {
                Some(j) => format!("{}{}", &line[..i], &line[i + 8 + j + 1..]),
                None => line.to_owned(),
            },
            None => line.to_owned(),
        })
        .map(|l| l + "\n")
        .collect()
}

fn without_new_note(md: String) -> String {
    assert!(md.contains(TRAINED_WITH), "no settings note: {md}");
    let md = md.replacen(TRAINED_WITH, "", 1);
    let mut out = String::new();
    let mut d_column: Option<usize> = None;
    let mut saw_d_note = false;
    for line in md.lines() {
        if line.starts_with(STANDARDIZED) {
            saw_d_note = true;
            continue;
        }
        let cells: Option<Vec<&str>> =
            line.strip_prefix("| ").and_then(|l| l.strip_suffix(" |")).map(|l| l.split(" | ").collect());
        match (&cells, d_column) {
            (Some(cells), None) if cells.contains(&"d") => {
                let i = cells.iter().position(|c| *c == "d").unwrap();
                d_column = Some(i);
                out += &format!(
                    "| {} |\n",
                    cells.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, c)| *c).collect::<Vec<_>>().join(" | ")
                );
            }
            (Some(cells), Some(i)) => {
                out += &format!(
                    "| {} |\n",
                    cells.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, c)| *c).collect::<Vec<_>>().join(" | ")
                );
            }
            (None, Some(_)) if line.starts_with("|---|") => out += &format!("{}\n", line.replacen("---|", "", 1)),
            _ => {
                d_column = None;
                out += line;
                out += "\n";
            }
        }
    }
    assert!(saw_d_note, "no note on standardised effects: {md}");
    out
}

/// A JSON report without what was added after v3: the trial rows'
/// `settings` (each the grid's), the settings note, the (empty) lesion,
/// variance and landscape sections and each effect's interval `method` (independent, as
/// asked).
fn without_new_fields(mut json: serde_json::Value) -> serde_json::Value {
    for t in json["trials"].as_array_mut().expect("trial rows") {
        let provenance = t.as_object_mut().unwrap().remove("provenance").expect("provenance in each trial row");
        assert_eq!(provenance, serde_json::Value::Null, "no worker of the old code recorded provenance");
        let settings = t.as_object_mut().unwrap().remove("settings").expect("settings in each trial row");
        assert_eq!((settings["lr"].as_f64(), settings["precision"].as_str()), (Some(0.01), Some("fp32")), "{settings}");
    }
    let lesion = json.as_object_mut().unwrap().remove("lesion").expect("a lesion section");
    assert_eq!(lesion, serde_json::json!({"removed": [], "blocks": []}), "no lesion study in these sweeps");
    let variance = json.as_object_mut().unwrap().remove("variance").expect("a variance section");
    assert_eq!(variance, serde_json::json!([]), "no variance analysis in these sweeps");
    let landscape = json.as_object_mut().unwrap().remove("landscape").expect("a landscape section");
    assert_eq!(landscape, serde_json::Value::Null, "no landscape in these sweeps");
    for section in ["main_effects", "interactions"] {
        for c in json[section].as_array_mut().expect(section) {
            if let Some(effect) = c["effect"].as_object_mut() {
                assert_eq!(effect.remove("method"), Some(serde_json::json!("independent")), "{section}");
            }
            c.as_object_mut().unwrap().remove("standardized").expect("a standardised effect field");
        }
    }
    for p in json["paired"].as_array_mut().expect("paired") {
        p.as_object_mut().unwrap().remove("standardized").expect("a standardised effect field");
    }
    let notes = json["notes"].as_array_mut().expect("notes");
    notes.retain(|n| !n.as_str().is_some_and(|n| n.starts_with(&STANDARDIZED[2..])));
    let notes = json["notes"].as_array_mut().expect("notes");
    let before = notes.len();
    notes.retain(|n| !n.as_str().is_some_and(|n| n.starts_with("Trained with: epochs=2, batch_size=4,")));
    assert_eq!(notes.len() + 1, before, "one settings note");
    json
}

/// Starts today's coordinator over `database_url` and checks every output
/// against the old code's, twice (the upgrade runs once; a restart changes
/// nothing).
fn check_reports(database_url: &str, dir: &Path) {
    for round in 0..2 {
        let server = common::Server::start_url(database_url);
        // The old code's intervals were independent (Welch) everywhere.
        let report = |sweep_name: &str, args: &[&str]| {
            run_ok(
                sweep()
                    .args(["report", sweep_name, "--intervals", "independent", "--coordinator", &server.url])
                    .args(args),
            )
        };
        for name in ["lecture", "legacy"] {
            let md = without_new_note(report(name, &["--format", "markdown"]));
            assert_eq!(md, read(&format!("{name}.md")), "round {round}: {name} markdown report differs");
            let by = report(name, &["--format", "markdown", "--by", "depth,skip", "--baseline", "batchnorm=on"]);
            let by = without_new_note(by);
            assert_eq!(by, read(&format!("{name}-by.md")), "round {round}: {name} --by report differs");
            let csv = report(name, &["--format", "csv"]);
            assert_eq!(csv, read(&format!("{name}.csv")), "round {round}: {name} CSV differs");
            let json = without_new_fields(serde_json::from_str(&report(name, &["--format", "json"])).unwrap());
            let old: serde_json::Value = serde_json::from_str(&read(&format!("{name}.json"))).unwrap();
            assert_eq!(json, old, "round {round}: {name} JSON report differs");
        }
        let status = run_ok(sweep().args(["status", "--coordinator", &server.url]));
        assert!(status.contains(" (trial "), "running trials show their IDs: {status}");
        assert_eq!(without_trial_ids(&status), read("status.txt"), "round {round}: status differs");
        // The old grids, submitted again, are already stored in full.
        for name in ["lecture", "legacy"] {
            let grid = dir.join(format!("{name}.toml"));
            std::fs::write(&grid, GRID.replace("NAME", name)).unwrap();
            let out = run_ok(sweep().args(["submit"]).arg(&grid).args(["--coordinator", &server.url]));
            assert!(out.contains("72 trials (24 cells x 3 seeds), 0 new"), "round {round}: resubmitting {name}: {out}");
        }
    }
}

#[test]
fn a_v3_sqlite_database_upgrades_and_reports_identically() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v3.db");
    let url = format!("sqlite://{}", db.display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let opts: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        let pool = sqlx::SqlitePool::connect_with(opts.create_if_missing(true)).await.unwrap();
        make_v3(&pool, &v3_migrations(dir.path())).await;
        pool.close().await;
    });
    check_reports(&url, dir.path());
}

#[test]
fn a_v3_postgres_database_upgrades_and_reports_identically() {
    let Some(base) = common::postgres_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pg")).unwrap();
    let schema = format!("sweep_upgrade_{}", uuid::Uuid::new_v4().simple());
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = sqlx::PgPool::connect(&base).await.expect("connect to PostgreSQL");
        admin.execute(format!("CREATE SCHEMA {schema}").as_str()).await.unwrap();
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        make_v3(&pool, &v3_migrations(dir.path())).await;
        pool.close().await;
        admin.close().await;
    });
    let result = std::panic::catch_unwind(|| check_reports(&url, dir.path()));
    rt.block_on(async {
        if let Ok(admin) = sqlx::PgPool::connect(&base).await {
            let _ = admin.execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str()).await;
        }
    });
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
