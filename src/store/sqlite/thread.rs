//! The thread that owns the connection. Calls queue as closures; the thread takes every call
//! already waiting (up to [`GROUP_MAX`]) and runs them in one transaction, each inside a
//! savepoint of its own, so a burst of jobs costs one commit — one write of each changed page
//! to the WAL — per group instead of one per call. A call that fails is undone alone; nobody
//! hears of a success before the group's COMMIT has succeeded.

use rusqlite::Connection;

use super::SqliteStore;
use crate::store::StoreError;

/// The most calls one transaction takes: bounds how long the first of them waits for its
/// answer behind the others.
const GROUP_MAX: usize = 64;

/// One call queued for the connection thread: it runs and hands back its answer, to be given
/// once the transaction it ran in is settled.
pub(super) type Task = Box<dyn FnOnce(&mut Connection) -> Answer + Send>;

/// Gives a call its result, or the error that undid it (its transaction did not commit).
pub(super) type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A SQLite error as the store reports it.
pub(super) fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Start the thread that owns `conn`; it ends when every sender is dropped.
pub(super) fn start(conn: Connection) -> Result<std::sync::mpsc::Sender<Task>, StoreError> {
    let (tasks, queue) = std::sync::mpsc::channel::<Task>();
    std::thread::Builder::new()
        .name("sqlite".into())
        .spawn(move || {
            let mut conn = conn;
            while let Ok(first) = queue.recv() {
                let mut group = vec![first];
                group.extend(queue.try_iter().take(GROUP_MAX - 1));
                run_group(&mut conn, group);
            }
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the SQLite thread: {e}")))?;
    Ok(tasks)
}

fn run_group(conn: &mut Connection, group: Vec<Task>) {
    // Without the group's transaction (the write lock is taken elsewhere), every call's
    // savepoint is a transaction of its own, committed as it is released.
    let mut grouped = conn.execute_batch("BEGIN IMMEDIATE").is_ok();
    let mut waiting = Vec::with_capacity(group.len());
    for task in group {
        let answer = task(conn);
        if !grouped {
            answer(Ok(()));
            continue;
        }
        waiting.push(answer);
        if conn.is_autocommit() {
            // SQLite rolls the whole transaction back on some errors (I/O, a full disk):
            // the calls so far are undone, the rest commit one by one.
            for answer in waiting.drain(..) {
                answer(Err(StoreError::Database(
                    "the transaction was rolled back".into(),
                )));
            }
            grouped = false;
        }
    }
    if !grouped {
        return;
    }
    let committed = conn.execute_batch("COMMIT");
    if committed.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for answer in waiting {
        answer(committed.as_ref().map(|_| ()).map_err(db_err));
    }
}

/// Run `f` inside a savepoint: released when it succeeds, rolled back when it fails.
fn in_savepoint<T>(
    conn: &mut Connection,
    f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached("SAVEPOINT call")?.execute([])?;
    let result = f(conn);
    let close = if result.is_ok() {
        conn.prepare_cached("RELEASE call")?.execute([])
    } else {
        conn.prepare_cached("ROLLBACK TO call")?
            .execute([])
            .and_then(|_| conn.prepare_cached("RELEASE call")?.execute([]))
    };
    close?;
    result
}

impl SqliteStore {
    /// Run `f` on the connection thread, in the next group's transaction. `f` is atomic as
    /// it is: it runs in a savepoint of its own, undone whole when it fails.
    pub(super) async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let stopped = || StoreError::Unavailable("the SQLite thread stopped".into());
        self.tasks
            .send(Box::new(move |conn: &mut Connection| -> Answer {
                let result = in_savepoint(conn, f);
                Box::new(move |settled: Result<(), StoreError>| {
                    let _ = reply.send(settled.and_then(|()| result.map_err(db_err)));
                })
            }))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn rows(store: &SqliteStore) -> Vec<i64> {
        store
            .call(|c| {
                let mut stmt = c.prepare("SELECT n FROM t ORDER BY n")?;
                let rows = stmt.query_map([], |row| row.get(0))?;
                rows.collect()
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn calls_grouped_in_one_transaction_fail_alone() {
        let store = SqliteStore::in_memory().unwrap();
        store
            .call(|c| c.execute_batch("CREATE TABLE t (n INTEGER NOT NULL)"))
            .await
            .unwrap();
        // The first call holds the thread while the others queue: they run as one group.
        let hold = store.call(|_| {
            std::thread::sleep(Duration::from_millis(100));
            Ok(())
        });
        let insert = |n: i64, then_fail: bool| {
            store.call(move |c| {
                c.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
                if then_fail {
                    c.execute("INSERT INTO t (n) VALUES (NULL)", [])?;
                }
                Ok(n)
            })
        };
        let (held, one, two, three) =
            tokio::join!(hold, insert(1, false), insert(2, true), insert(3, false));
        held.unwrap();
        assert_eq!(one.unwrap(), 1);
        assert!(two.is_err(), "the failing call reports its error");
        assert_eq!(three.unwrap(), 3);
        assert_eq!(
            rows(&store).await,
            [1, 3],
            "only the failing call was undone"
        );
    }
}
