//! SIGINT/SIGTERM → one `CancellationToken` that every role watches; a
//! second signal ends the process at once.
//!
//! Shutdown has one deadline, counted from the signal: the longest drain of
//! the roles a process runs (`dispatcher::drain_deadline`, the servers'
//! `ServerLimits::drain`) plus `GRACE`. `app::Running::wait` keeps to it;
//! `watchdog` ends the process shortly after it even if every runtime
//! thread is stuck.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// After the drain deadline, what the rest of shutdown may take: the last
/// hand-offs give up (2 s), the consumers commit and close (1.5 s), the
/// attempt log writes its last batch (1 s), the producer flushes, the
/// runtime lets go of what is left (`EXIT_WAIT`).
pub const GRACE: Duration = Duration::from_secs(5);

/// The last part of the deadline: how long the runtime waits for tasks a
/// bounded shutdown left behind (a consumer closing against a broker that
/// is gone) before the process exits.
pub const EXIT_WAIT: Duration = Duration::from_millis(500);

/// How long after the deadline the watchdog ends a process that is still
/// there.
pub const WATCHDOG_MARGIN: Duration = Duration::from_secs(1);

pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    // Listening from now on: a signal that comes before the task runs is
    // not lost.
    let mut signals = Signals::new();
    tokio::spawn(async move {
        let first = signals.next().await;
        tracing::info!(
            signal = first.name,
            "shutdown signal received; draining (a second signal exits at once)"
        );
        cancel.cancel();
        let second = signals.next().await;
        tracing::error!(
            signal = second.name,
            "second shutdown signal: exiting without finishing the drain; unfinished work is read again after a restart"
        );
        std::process::exit(128 + second.number);
    });
    token
}

/// Once `token` is cancelled, a thread of its own ends the process after
/// `deadline`, with exit code 1: the last resort behind `Running::wait`'s
/// own deadline, for a runtime whose threads are all stuck in blocking calls.
pub fn watchdog(token: &CancellationToken, deadline: Duration) {
    let token = token.clone();
    tokio::spawn(async move {
        token.cancelled().await;
        std::thread::spawn(move || {
            std::thread::sleep(deadline);
            eprintln!("hookgate: shutdown did not end within {deadline:?}; exiting");
            std::process::exit(1);
        });
    });
}

struct Signal {
    name: &'static str,
    number: i32,
}

#[cfg(unix)]
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    async fn next(&mut self) -> Signal {
        async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.term) => Signal { name: "SIGTERM", number: 15 },
            () = recv(&mut self.int) => Signal { name: "SIGINT", number: 2 },
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> Self {
        Self
    }

    async fn next(&mut self) -> Signal {
        let _ = tokio::signal::ctrl_c().await;
        Signal { name: "Ctrl-C", number: 2 }
    }
}
