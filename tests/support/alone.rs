//! Tests that measure load or time against a listener (`limits`, `crash`)
//! run alone, as they did when each suite was a binary of its own: while
//! one holds [`alone`], no other test starts an app, and it first waits for
//! every app already running to be dropped. Every other app holds a
//! [`Turn`] while it runs (taken in `spawn_against`); the test that runs
//! alone starts its own apps without one.
//!
//! A test waiting to run alone goes first: tests that have no app yet wait
//! for it. A test that already has an app may start another (two listeners
//! on one database), so it can never wait on a test that waits on it.

use std::cell::Cell;
use std::sync::Mutex;
use std::time::Duration;

struct Turns {
    /// Apps running with a turn.
    apps: usize,
    /// A test runs alone.
    alone: bool,
    /// Tests waiting to run alone.
    waiting: usize,
}

static TURNS: Mutex<Turns> = Mutex::new(Turns { apps: 0, alone: false, waiting: 0 });

thread_local! {
    /// This test (its thread: a `#[tokio::test]` body runs on the test's
    /// own thread) runs alone.
    static ALONE_HERE: Cell<bool> = const { Cell::new(false) };
    /// This test has started an app.
    static HAS_APP: Cell<bool> = const { Cell::new(false) };
}

const POLL: Duration = Duration::from_millis(20);

/// Held by a test that runs alone; others start apps again once dropped.
#[must_use = "the test runs alone only while this is held"]
pub struct Alone(());

/// Waits until no other test runs an app, then keeps others from starting one
/// until the returned guard is dropped.
pub async fn alone() -> Alone {
    TURNS.lock().unwrap().waiting += 1;
    loop {
        {
            let mut turns = TURNS.lock().unwrap();
            if !turns.alone && turns.apps == 0 {
                turns.alone = true;
                turns.waiting -= 1;
                break;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    ALONE_HERE.with(|a| a.set(true));
    Alone(())
}

impl Drop for Alone {
    fn drop(&mut self) {
        ALONE_HERE.with(|a| a.set(false));
        TURNS.lock().unwrap().alone = false;
    }
}

/// An app's share of the listener machine; see the module docs.
pub struct Turn {
    counted: bool,
}

/// Waits while a test runs alone (or, for a test's first app, while one
/// waits to), then counts this app as running.
pub async fn turn() -> Turn {
    if ALONE_HERE.with(Cell::get) {
        return Turn { counted: false };
    }
    let first = !HAS_APP.with(Cell::get);
    loop {
        {
            let mut turns = TURNS.lock().unwrap();
            let must_wait = turns.alone || (first && turns.waiting > 0);
            if !must_wait {
                turns.apps += 1;
                break;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    HAS_APP.with(|a| a.set(true));
    Turn { counted: true }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if self.counted {
            TURNS.lock().unwrap().apps -= 1;
        }
    }
}
