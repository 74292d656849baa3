//! The server's long-lived tasks apart from the worker: the refresher
//! (rescans, on the leader), the listener for other replicas' notices, and
//! the supervisor that restarts a task that panicked.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::AppState;

/// What the other replicas say: work was queued (wake the worker), the
/// graph changed (reload it from the database; several notices at once
/// are one reload).
pub(super) async fn hear_replicas(
    app: Arc<AppState>,
    mut notices: tokio::sync::mpsc::UnboundedReceiver<crate::store::Notice>,
) {
    use crate::store::Notice;
    while let Some(first) = notices.recv().await {
        let mut reload = false;
        let mut next = Some(first);
        while let Some(notice) = next {
            match notice {
                Notice::Work => app.wake.notify_one(),
                Notice::Graph { from } => reload |= from != app.store.replica_id(),
                Notice::Reconnected => reload = true,
            }
            next = notices.try_recv().ok();
        }
        if reload {
            let this = app.clone();
            let _ = tokio::task::spawn_blocking(move || this.reload_graph()).await;
            tracing::info!("graph reloaded: another replica changed it");
        }
    }
}

/// Runs a long-lived task and restarts it when it panics (after a short,
/// growing pause), so that one bad input cannot stop the server's work.
/// While it is down `/readyz` answers 503; restarts are counted in
/// `autodep_task_restarts_total`.
pub(super) async fn supervise<F, Fut>(
    name: &'static str,
    app: Arc<AppState>,
    stopped: watch::Receiver<bool>,
    task: F,
) where
    F: Fn(Arc<AppState>, watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut restarts = 0u32;
    loop {
        let run = tokio::spawn(task(app.clone(), stopped.clone())).await;
        match run {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                app.tasks_down.fetch_add(1, Ordering::SeqCst);
                metrics::counter!("autodep_task_restarts_total", "task" => name).increment(1);
                restarts += 1;
                let pause = Duration::from_millis(100).saturating_mul(1 << restarts.min(8));
                tracing::error!("the {name} panicked; restarting it in {pause:?}");
                let mut stopped = stopped.clone();
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stopped.wait_for(|s| *s) => {
                        app.tasks_down.fetch_sub(1, Ordering::SeqCst);
                        return;
                    }
                }
                app.tasks_down.fetch_sub(1, Ordering::SeqCst);
            }
            Err(_) => return,
        }
    }
}

/// Rescans every refresh interval — on the leader only (always, with
/// SQLite). A stored scan younger than the interval is served until it is
/// due: restarting the server, or the leader's role moving to another
/// replica, does not cost GitLab a full rescan.
pub(super) async fn refresh_loop(app: Arc<AppState>, mut stopped: watch::Receiver<bool>) {
    // For the tests: once a graph is loaded, crash at every (re)start.
    if app.has_graph() && crate::failpoint::hit("refresher-panic", "after-scan") {
        panic!("failpoint refresher-panic");
    }
    loop {
        let wait = if !app.is_leader() {
            // Not the leader: look again soon, the leader may be gone.
            Duration::from_millis(500)
        } else {
            let store = app.store.clone();
            let age = tokio::task::spawn_blocking(move || store.scan_age())
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
            match age.filter(|a| app.has_graph() && *a < app.config.refresh_interval) {
                // Not due: look again soon (the role may move meanwhile).
                Some(age) => (app.config.refresh_interval - age).min(Duration::from_secs(5)),
                None => {
                    let failed = app.refresh().await.map_err(|e| tracing::error!("{e:#}"));
                    if crate::failpoint::hit("refresher-panic", "after-scan") {
                        panic!("failpoint refresher-panic");
                    }
                    match (failed, app.has_graph()) {
                        (Ok(()), _) => Duration::ZERO,
                        (Err(()), true) => app.config.refresh_interval,
                        // Not ready yet: try again soon rather than after
                        // a full interval.
                        (Err(()), false) => {
                            app.config.refresh_interval.min(Duration::from_secs(30))
                        }
                    }
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}
