//! Group commit: the hot writes of many concurrent calls (leases,
//! heartbeats, metric batches, completions) share one transaction on
//! SQLite's single writer connection.
//!
//! One task owns the writing: it takes every write waiting in its queue (up
//! to [`MAX_BATCH`]), runs them one after the other in one transaction,
//! commits once, and only then answers each caller. Under load a batch
//! holds tens of writes, so the transaction's BEGIN and COMMIT, the pages
//! written to the WAL, and the pool's checkout (a round trip to the
//! connection's thread each way) are paid once per batch instead of once
//! per call; with no load a batch is one write, as before.
//!
//! Contract of a write: it returns [`StoreError::LeaseLost`] (a refusal)
//! only before it has written anything, so a refusal needs no rollback and
//! the batch goes on. Any other error, or a panic, may follow a write: the
//! whole batch is rolled back, the failing write gets its own error and
//! the others [`StoreError::RolledBack`] (a retryable `UNAVAILABLE`);
//! nothing any of them did is kept, and none was answered before the
//! rollback. The writes not yet run then go in the next batch. A write
//! whose caller went away before its turn is skipped.
//!
//! The writer checks the connection out of the store's one-connection write
//! pool for each batch and gives it back after, so the store's other
//! writes (submit, cancel, the reaper) take their turn between batches and
//! there is still exactly one writer.

use std::collections::VecDeque;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// Most writes in one transaction (a bound on how long one batch holds the
/// connection from the store's other writes).
pub(crate) const MAX_BATCH: usize = 256;
/// Writes that may wait for the writer; past it callers wait to enqueue.
const QUEUE: usize = 4096;

/// A write as the writer runs it: its statements on the batch's connection,
/// then (after commit or rollback) its answer.
type Work<DB> = Box<dyn for<'c> FnOnce(&'c mut <DB as sqlx::Database>::Connection) -> BoxFuture<'c, Ran> + Send>;

/// What running a write left: whether it hit a database error (the batch
/// must roll back), and how to answer its caller.
struct Ran {
    failed: bool,
    /// `None`: the batch committed, send the write's own result; `Some`:
    /// it was rolled back for this reason (the failing write keeps its own
    /// error).
    answer: Box<dyn FnOnce(Option<String>) + Send>,
}

pub(crate) struct GroupCommit<DB: sqlx::Database> {
    queue: mpsc::Sender<Work<DB>>,
}

impl<DB> GroupCommit<DB>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    /// Starts the writer over `pool` (the store's write pool). It stops when
    /// the store is dropped.
    pub(crate) fn start(pool: sqlx::Pool<DB>) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        tokio::spawn(writer(pool, jobs));
        Self { queue }
    }

    /// Runs `write` in the next batch's transaction; its result once the
    /// batch committed.
    pub(crate) async fn run<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T, StoreError>>();
        let work: Work<DB> = Box::new(move |conn| {
            Box::pin(async move {
                // A caller that went away (a deadline, a dropped connection)
                // was told nothing: its write is skipped, not done for no
                // one (a lease nobody holds would wait out its TTL).
                if reply.is_closed() {
                    return Ran { failed: false, answer: Box::new(|_| ()) };
                }
                let result = write(conn).await;
                // Only a refusal (a lease that is not current) is known to
                // have written nothing; any other error may come after a
                // write, so the batch is rolled back.
                let failed = !matches!(result, Ok(_) | Err(StoreError::LeaseLost(_)));
                Ran {
                    failed,
                    answer: Box::new(move |rolled_back: Option<String>| {
                        let answer = match rolled_back {
                            Some(why) => Err(StoreError::RolledBack(why)),
                            None => result,
                        };
                        let _ = reply.send(answer);
                    }),
                }
            })
        });
        self.queue.send(work).await.map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        answer.await.map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?
    }
}

async fn writer<DB>(pool: sqlx::Pool<DB>, mut jobs: mpsc::Receiver<Work<DB>>)
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut waiting: VecDeque<Work<DB>> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match jobs.recv().await {
                Some(w) => waiting.push_back(w),
                None => return,
            }
        }
        while waiting.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(w) => waiting.push_back(w),
                Err(_) => break,
            }
        }
        batch(&pool, &mut waiting).await;
    }
}

/// Runs the writes at the front of `waiting` in one transaction (all of
/// them, or those before and including the first that failed) and answers
/// their callers.
async fn batch<DB>(pool: &sqlx::Pool<DB>, waiting: &mut VecDeque<Work<DB>>)
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            // No transaction (a closed pool, a database that cannot begin):
            // the waiting writes are dropped unrun, which answers each
            // caller UNAVAILABLE, and the callers retry.
            tracing::error!(error = %e, writes = waiting.len(), "group commit: cannot begin a transaction; the waiting writes were refused");
            waiting.clear();
            return;
        }
    };
    let mut ran = Vec::with_capacity(waiting.len().min(MAX_BATCH));
    // The write that failed keeps its own answer; the others of its batch
    // are answered RolledBack.
    let mut failing: Option<Ran> = None;
    let mut panicked = false;
    while ran.len() < MAX_BATCH {
        let Some(work) = waiting.pop_front() else { break };
        match std::panic::AssertUnwindSafe(work(&mut *tx)).catch_unwind().await {
            Ok(r) if r.failed => {
                failing = Some(r);
                break;
            }
            Ok(r) => ran.push(r),
            Err(_) => {
                // The write's answer went with it: its caller is told
                // UNAVAILABLE. The writer goes on.
                tracing::error!("group commit: a write panicked; its batch is rolled back");
                panicked = true;
                break;
            }
        }
    }
    let rolled_back = if failing.is_some() || panicked {
        let _ = tx.rollback().await;
        Some("another write of its batch failed".to_owned())
    } else {
        tx.commit().await.err().map(|e| format!("the batch's commit failed: {e}"))
    };
    if let Some(why) = &rolled_back {
        tracing::warn!(writes = ran.len() + 1, reason = %why, "group commit: a batch was rolled back; its calls may retry");
    }
    for r in ran {
        (r.answer)(rolled_back.clone());
    }
    if let Some(r) = failing {
        (r.answer)(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pool() -> sqlx::SqlitePool {
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER PRIMARY KEY)").execute(&pool).await.unwrap();
        pool
    }

    /// Queues `insert x` writes while the test holds the pool's only
    /// connection, so the writer takes them all in one batch once released.
    async fn one_batch(
        pool: &sqlx::SqlitePool,
        group: &std::sync::Arc<GroupCommit<sqlx::Sqlite>>,
        xs: &[i64],
    ) -> Vec<Result<i64, StoreError>> {
        let held = pool.acquire().await.unwrap();
        let calls: Vec<_> = xs
            .iter()
            .map(|&x| {
                let group = group.clone();
                tokio::spawn(async move {
                    group
                        .run(move |conn: &mut sqlx::SqliteConnection| {
                            Box::pin(async move {
                                if x < 0 {
                                    return Err(StoreError::LeaseLost(x.to_string()));
                                }
                                sqlx::query("INSERT INTO t (x) VALUES ($1)").bind(x).execute(&mut *conn).await?;
                                if x == 666 {
                                    panic!("a write that panics after writing");
                                }
                                if x >= 1000 {
                                    return Err(StoreError::Corrupt(format!("{x} is unreadable")));
                                }
                                Ok(x)
                            })
                        })
                        .await
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        drop(held);
        let mut out = Vec::new();
        for c in calls {
            out.push(c.await.unwrap());
        }
        out
    }

    async fn stored(pool: &sqlx::SqlitePool) -> Vec<i64> {
        sqlx::query_scalar("SELECT x FROM t ORDER BY x").fetch_all(pool).await.unwrap()
    }

    #[tokio::test]
    async fn a_batch_commits_together_and_a_refusal_does_not_roll_it_back() {
        let pool = pool().await;
        let group = std::sync::Arc::new(GroupCommit::start(pool.clone()));
        let out = one_batch(&pool, &group, &[1, 2, -3, 4]).await;
        assert!(matches!(out[2], Err(StoreError::LeaseLost(_))), "{:?}", out[2]);
        assert_eq!(out.iter().filter_map(|r| r.as_ref().ok().copied()).collect::<Vec<_>>(), vec![1, 2, 4]);
        assert_eq!(stored(&pool).await, vec![1, 2, 4]);
    }

    #[tokio::test]
    async fn a_database_error_rolls_its_batch_back_and_later_writes_go_on() {
        let pool = pool().await;
        let group = std::sync::Arc::new(GroupCommit::start(pool.clone()));
        one_batch(&pool, &group, &[7]).await.remove(0).unwrap();
        // 8 runs, then 7 fails (primary key): both are undone; 9 was not run
        // yet and goes in the next batch.
        let out = one_batch(&pool, &group, &[8, 7, 9]).await;
        assert!(matches!(out[0], Err(StoreError::RolledBack(_))), "{:?}", out[0]);
        assert!(matches!(out[1], Err(StoreError::Database(_))), "{:?}", out[1]);
        assert_eq!(out[2].as_ref().ok(), Some(&9));
        assert_eq!(stored(&pool).await, vec![7, 9], "8 was rolled back with the failed write");
        assert_eq!(one_batch(&pool, &group, &[8]).await.remove(0).unwrap(), 8, "a retry stores it");
    }

    #[tokio::test]
    async fn an_error_after_a_write_or_a_panic_rolls_the_batch_back_and_the_writer_goes_on() {
        let pool = pool().await;
        let group = std::sync::Arc::new(GroupCommit::start(pool.clone()));
        // 1000 writes, then fails: its write and 1's are undone.
        let out = one_batch(&pool, &group, &[1, 1000]).await;
        assert!(matches!(out[0], Err(StoreError::RolledBack(_))), "{:?}", out[0]);
        assert!(matches!(out[1], Err(StoreError::Corrupt(_))), "{:?}", out[1]);
        assert!(stored(&pool).await.is_empty());
        // 666 panics after writing: undone, its caller told the store is
        // unavailable, and the writer still takes writes.
        let out = one_batch(&pool, &group, &[2, 666, 3]).await;
        assert!(matches!(out[0], Err(StoreError::RolledBack(_))), "{:?}", out[0]);
        assert!(matches!(out[1], Err(StoreError::Database(sqlx::Error::PoolClosed))), "{:?}", out[1]);
        assert_eq!(out[2].as_ref().ok(), Some(&3));
        assert_eq!(stored(&pool).await, vec![3]);
    }
}
