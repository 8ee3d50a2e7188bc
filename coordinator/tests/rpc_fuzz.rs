//! Property test of every RPC's input validation (issue 5, acceptance 5):
//! arbitrary wire messages, including hostile ones (NaN, huge numbers, odd
//! strings, unknown enum values), never panic the coordinator and are
//! answered either normally or with a clear client-error code; and nothing
//! invalid reaches the store.

use std::sync::Arc;

use proptest::prelude::*;
use sweep_coordinator::analysis::Analysis;
use sweep_coordinator::store::{SqliteStore, Store};
use sweep_coordinator::{Coordinator, CoordinatorConfig};
use sweep_proto::v1 as pb;
use sweep_proto::v1::analysis_service_server::AnalysisService;
use sweep_proto::v1::sweep_service_server::SweepService;
use sweep_proto::v1::worker_service_server::WorkerService;
use tonic::{Code, Request};

fn client_error(code: Code) -> bool {
    matches!(code, Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::ResourceExhausted)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z_]{1,12}",
        "\\PC{0,40}",
        Just("default".to_owned()),
        Just("sgd".to_owned()),
        Just("cifar10".to_owned()),
        Just("x".repeat(300)),
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-1.0), Just(0.0), Just(1e-4), any::<f64>()]
}

fn level() -> impl Strategy<Value = pb::Level> {
    use pb::level::Kind;
    let l = |k: Kind| pb::Level { kind: Some(k) };
    prop_oneof![
        Just(pb::Level { kind: None }),
        prop_oneof![Just(8i64), Just(16), Just(0), Just(12), any::<i64>()].prop_map(move |i| l(Kind::Int(i))),
        float().prop_map(move |x| l(Kind::Float(x))),
        any::<bool>().prop_map(move |b| l(Kind::Flag(b))),
        text().prop_map(move |t| l(Kind::Text(t))),
    ]
}

/// A key of the trainer's schema, or anything.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["depth", "skip", "init", "batchnorm", "optimizer", "lr", "epochs", "momentum"])
            .prop_map(str::to_owned),
        text(),
    ]
}

fn int(i: impl Into<i64>) -> pb::Level {
    pb::Level { kind: Some(pb::level::Kind::Int(i.into())) }
}
fn flt(x: f64) -> pb::Level {
    pb::Level { kind: Some(pb::level::Kind::Float(x)) }
}
fn flag(b: bool) -> pb::Level {
    pb::Level { kind: Some(pb::level::Kind::Flag(b)) }
}
fn txt(t: String) -> pb::Level {
    pb::Level { kind: Some(pb::level::Kind::Text(t)) }
}

prop_compose! {
    fn grid_spec()(
        name in text(),
        seeds in prop::collection::vec(any::<u64>(), 0..4),
        depth in prop::collection::vec(prop_oneof![Just(8u32), Just(16), Just(0), Just(12), any::<u32>()], 0..4),
        skip in prop::collection::vec(any::<bool>(), 0..3),
        init in prop::collection::vec(text(), 0..3),
        bn in prop::collection::vec(any::<bool>(), 0..3),
        extra_factors in prop::collection::vec((key(), prop::collection::vec(level(), 0..4)), 0..3),
        extra_train in prop::collection::vec((key(), level()), 0..3),
        epochs in prop_oneof![Just(0u32), Just(1), any::<u32>()],
        batch in prop_oneof![Just(0u32), Just(4), any::<u32>()],
        optimizer in text(),
        lr in float(),
        momentum in float(),
        wd in float(),
        log_every in any::<u32>(),
        dataset in text(),
        path in text(),
        subset in proptest::option::of(any::<u64>()),
        attempts in any::<u32>(),
        priority in any::<i32>(),
        with_parts in any::<[bool; 4]>(),
    ) -> pb::GridSpec {
        let factor = |name: &str, levels: Vec<pb::Level>| pb::Factor { name: name.into(), levels };
        let mut factors = Vec::new();
        if with_parts[0] {
            factors.push(factor("depth", depth.into_iter().map(int).collect()));
            factors.push(factor("skip", skip.into_iter().map(flag).collect()));
            factors.push(factor("init", init.into_iter().map(txt).collect()));
            factors.push(factor("batchnorm", bn.into_iter().map(flag).collect()));
        }
        factors.extend(extra_factors.into_iter().map(|(name, levels)| pb::Factor { name, levels }));
        let mut train = std::collections::HashMap::new();
        if with_parts[1] {
            for (k, v) in [
                ("epochs", int(epochs)),
                ("batch_size", int(batch)),
                ("optimizer", txt(optimizer)),
                ("lr", flt(lr)),
                ("momentum", flt(momentum)),
                ("weight_decay", flt(wd)),
                ("log_every", int(log_every)),
                ("augment", flag(false)),
            ] {
                train.insert(k.to_owned(), v);
            }
        }
        train.extend(extra_train);
        pb::GridSpec {
            name,
            seeds,
            factors,
            train,
            data: with_parts[2].then_some(pb::DataSettings { dataset, path, train_subset: subset, test_subset: None }),
            run: with_parts[3].then(|| pb::RunSettings { max_attempts: attempts, priority, ..Default::default() }),
            exec: None,
        }
    }
}

prop_compose! {
    fn metric_batch()(
        lease in text(),
        seq in any::<u64>(),
        points in prop::collection::vec((any::<i64>(), text(), float(), any::<u32>()), 0..20),
        truncate in proptest::option::of(any::<i64>()),
    ) -> pb::MetricBatch {
        pb::MetricBatch {
            lease_id: lease,
            seq,
            points: points.into_iter().map(|(step, name, value, epoch)| pb::MetricPoint { step, name, value, epoch }).collect(),
            truncate_after: truncate,
            checkpoint_step: None,
        }
    }
}

struct Env {
    rt: tokio::runtime::Runtime,
    coord: Coordinator,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

fn env() -> Env {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("f.db").display());
    let store: Arc<dyn Store> = Arc::new(rt.block_on(SqliteStore::open(&url)).unwrap());
    let coord = Coordinator::new(store.clone(), CoordinatorConfig::default());
    Env { rt, coord, store, _dir: dir }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn submit_never_panics_and_stores_only_valid_specs(spec in grid_spec()) {
        let e = env();
        let result = e.rt.block_on(e.coord.submit(Request::new(pb::SubmitRequest { spec: Some(spec.clone()) })));
        let valid = sweep_core::GridSpec::try_from(spec).is_ok();
        match result {
            Ok(_) => prop_assert!(valid, "an invalid spec was accepted"),
            Err(s) => {
                prop_assert!(client_error(s.code()), "unexpected code {:?}: {}", s.code(), s.message());
                let stored = e.rt.block_on(e.store.status(None)).unwrap();
                prop_assert!(stored.is_empty(), "a refused submit stored {stored:?}");
            }
        }
    }

    #[test]
    fn worker_calls_never_panic(
        worker in text(), lease in text(), reason in text(), outcome in any::<i32>(),
        epoch in any::<u32>(), step in any::<i64>(), loss in proptest::option::of(float()), wait in 0u32..50,
    ) {
        let e = env();
        let lease_req = pb::LeaseRequest { worker_id: worker.clone(), device: "cpu".into(), wait_ms: wait, ..Default::default() };
        let calls: Vec<Result<(), tonic::Status>> = e.rt.block_on(async {
            vec![
                e.coord.lease(Request::new(lease_req)).await.map(|_| ()),
                e.coord.heartbeat(Request::new(pb::HeartbeatRequest { lease_id: lease.clone(), epoch, step, last_loss: loss })).await.map(|_| ()),
                e.coord.complete(Request::new(pb::CompleteRequest { last_batch: None, provenance: None, lease_id: lease.clone(), outcome, summary: None, worker_id: worker.clone() })).await.map(|_| ()),
                e.coord.fail(Request::new(pb::FailRequest { lease_id: lease.clone(), reason: reason.clone(), worker_id: worker.clone() })).await.map(|_| ()),
                e.coord.release(Request::new(pb::ReleaseRequest { lease_id: lease.clone(), reason })).await.map(|_| ()),
                Analysis::new(e.store.clone()).analyze(Request::new(pb::AnalyzeRequest { sweep_id: lease.clone(), curve_metrics: vec![lease.clone()], grad_flow: true, live: false })).await.map(|_| ()),
                e.coord.cancel(Request::new(pb::CancelRequest { sweep_id: lease.clone() })).await.map(|_| ()),
                e.coord.status(Request::new(pb::StatusRequest { sweep_id: lease })).await.map(|_| ()),
            ]
        });
        for r in calls {
            if let Err(s) = r {
                prop_assert!(client_error(s.code()), "unexpected code {:?}: {}", s.code(), s.message());
            }
        }
    }

    #[test]
    fn metric_batches_are_validated_before_any_write(batch in metric_batch()) {
        match sweep_coordinator::service::validate_batch(&batch, 10_000) {
            Ok(points) => {
                prop_assert_eq!(points.len(), batch.points.len());
                for p in points {
                    prop_assert!(p.value.is_finite() && p.step >= 0 && !p.name.is_empty() && p.name.len() <= 200);
                }
            }
            Err(s) => prop_assert_eq!(s.code(), Code::InvalidArgument),
        }
    }
}
