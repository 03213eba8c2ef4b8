//! The one way every loop and background task learns that the process is stopping: a
//! [`Shutdown`] is cloned into each of them, triggered once (a signal, the demo finishing, a
//! test), and awaited with [`Shutdown::wait`].

use tokio_util::sync::CancellationToken;

/// A stop request shared by every task of the process. Cheap to clone; once triggered it stays
/// triggered, and every clone sees it.
#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// A `Shutdown` triggered by the first SIGTERM or SIGINT. A second signal exits the
    /// process at once with status 130 (no draining).
    pub fn on_signals() -> Shutdown {
        let shutdown = Shutdown::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            let mut term = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::terminate(),
            ) {
                Ok(s) => s,
                Err(err) => {
                    tracing::error!(%err, "cannot listen for SIGTERM; only SIGINT stops the service");
                    let _ = tokio::signal::ctrl_c().await;
                    trigger.trigger();
                    return;
                }
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            }
            trigger.trigger();
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::warn!("second signal: exiting without draining");
            std::process::exit(130);
        });
        shutdown
    }

    /// A stop of its own that is also triggered by this one (not the other way round): a part
    /// that may stop alone, such as a reader that lost its lease.
    pub fn child(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
        }
    }

    /// Asks every holder to stop.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once the shutdown is triggered (at once if it already was).
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_one_trigger_even_late_ones() {
        let shutdown = Shutdown::new();
        let early = shutdown.clone();
        let waiter = tokio::spawn(async move { early.wait().await });
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let late = shutdown.clone();
        late.wait().await;
        assert!(late.is_triggered());
    }

    #[test]
    fn a_child_stops_alone_or_with_its_parent() {
        let parent = Shutdown::new();
        let alone = parent.child();
        alone.trigger();
        assert!(alone.is_triggered() && !parent.is_triggered());
        let with = parent.child();
        parent.trigger();
        assert!(with.is_triggered());
    }
}
