//! The durable queue: accepted webhook events (deduplicated, retried and
//! parked per event, deleted after the retention) and the triggers they
//! queue (one queued row per project; done, retried or failed).

use serde::Serialize;

use super::postgres::{NOW_MS, WORK_CHANNEL};
use super::sql::{args, Backend, Row, Sql};
use super::{cutoff_text, now_millis, now_text, Store, StoreError};

/// Rows deleted per transaction by the retention sweep.
pub const SWEEP_BATCH: usize = 5000;

/// An event to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: String,
    /// The natural key: the same event delivered twice (a group hook and a
    /// project hook, a resend) has the same one.
    pub dedupe_key: String,
    /// GitLab's `Idempotency-Key`, checked in addition.
    pub idempotency_key: Option<String>,
    pub event_uuid: Option<String>,
    pub project_id: u64,
    pub project_path: String,
    pub detail: String,
    /// For a pipeline event: which pipeline, how it ended, and the trigger
    /// that created it when it was ours.
    pub pipeline: Option<PipelineFacts>,
}

/// What a Pipeline Hook says of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PipelineFacts {
    pub id: u64,
    pub status: String,
    /// `AUTODEP_TRIGGER_ID` among its variables.
    pub trigger_marker: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    New(i64),
    Duplicate,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub id: i64,
    pub received_at: String,
    pub kind: String,
    pub event_uuid: Option<String>,
    pub project_id: u64,
    pub project_path: String,
    pub detail: String,
    pub state: String,
    pub outcome: Option<String>,
    /// Failed attempts so far.
    pub attempts: u32,
    pub pipeline: Option<PipelineFacts>,
}

/// A trigger to queue for one project.
#[derive(Debug, Clone)]
pub struct NewTrigger {
    pub project_id: u64,
    pub project_path: String,
    pub git_ref: String,
    pub upstream: String,
    pub image: String,
    /// Its depth in the cascade: shallower ones are started first.
    pub depth: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredTrigger {
    pub id: i64,
    pub event_id: i64,
    pub event_uuid: Option<String>,
    pub project_id: u64,
    pub project_path: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub upstream: String,
    pub image: String,
    pub state: String,
    pub attempts: u32,
    pub pipeline_id: Option<u64>,
    pub web_url: Option<String>,
    pub error: Option<String>,
    pub updated_at: String,
    pub created_at: String,
    /// Sent with the pipeline as `AUTODEP_TRIGGER_ID`: finds it again after
    /// an answer lost in transit.
    #[serde(skip)]
    pub marker: String,
    /// A create request was sent at least once.
    #[serde(skip)]
    pub posted: bool,
    /// The first cascade waiting for it, if any.
    pub cascade_id: Option<i64>,
    /// Its depth in its cascade: shallower ones are started first.
    #[serde(skip)]
    pub depth: u64,
}

const EVENT_COLUMNS: &str =
    "id, received_at, kind, event_uuid, project_id, project_path, detail, state, outcome, attempts,
     pipeline_id, pipeline_status, trigger_marker";

fn event_from(r: &Row) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        id: r.int(0)?,
        received_at: r.text(1)?,
        kind: r.text(2)?,
        event_uuid: r.opt_text(3)?,
        project_id: r.int(4)? as u64,
        project_path: r.text(5)?,
        detail: r.text(6)?,
        state: r.text(7)?,
        outcome: r.opt_text(8)?,
        attempts: r.int(9)? as u32,
        pipeline: match (r.opt_int(10)?, r.opt_text(11)?) {
            (Some(id), Some(status)) => Some(PipelineFacts {
                id: id as u64,
                status,
                trigger_marker: r.opt_text(12)?,
            }),
            _ => None,
        },
    })
}

const TRIGGER_COLUMNS: &str = "id, event_id, event_uuid, project_id, project_path, git_ref, upstream, image, state, attempts,
     pipeline_id, web_url, error, updated_at, created_at, COALESCE(marker, 'trigger-' || id), posted,
     (SELECT MIN(a.cascade_id) FROM attachments a WHERE a.trigger_id = triggers.id), depth";

fn trigger_from(r: &Row) -> Result<StoredTrigger, StoreError> {
    Ok(StoredTrigger {
        id: r.int(0)?,
        event_id: r.int(1)?,
        event_uuid: r.opt_text(2)?,
        project_id: r.int(3)? as u64,
        project_path: r.text(4)?,
        git_ref: r.text(5)?,
        upstream: r.text(6)?,
        image: r.text(7)?,
        state: r.text(8)?,
        attempts: r.int(9)? as u32,
        pipeline_id: r.opt_int(10)?.map(|v| v as u64),
        web_url: r.opt_text(11)?,
        error: r.opt_text(12)?,
        updated_at: r.text(13)?,
        created_at: r.text(14)?,
        marker: r.text(15)?,
        posted: r.int(16)? != 0,
        cascade_id: r.opt_int(17)?,
        depth: r.int(18)? as u64,
    })
}

/// Wakes the other replicas' workers when the transaction commits.
pub(super) fn work_queued(sql: &mut dyn Sql) -> Result<(), StoreError> {
    if sql.backend() == Backend::Postgres {
        sql.exec(&format!("SELECT pg_notify('{WORK_CHANNEL}', '')"), &[])?;
    }
    Ok(())
}

/// Pipelines we created that still run, as far as the events tell.
pub(super) const RUNNING_PIPELINES: &str = "FROM triggers t
     WHERE t.state = 'done' AND t.pipeline_id IS NOT NULL
       AND EXISTS (SELECT 1 FROM attachments a JOIN cascades c ON c.id = a.cascade_id
                   WHERE a.trigger_id = t.id AND c.state = 'running')
       AND NOT EXISTS (SELECT 1 FROM events e
                       WHERE e.project_id = t.project_id AND e.pipeline_id = t.pipeline_id)";

impl Store {
    /// Accepts a batch of events in one transaction (one disk sync).
    pub fn accept_events(&self, events: &[NewEvent]) -> Result<Vec<Accepted>, StoreError> {
        self.with_tx(|sql| {
            let now = now_text();
            let mut out = Vec::with_capacity(events.len());
            for e in events {
                let pipeline = e.pipeline.as_ref();
                let row = sql.row(
                    "INSERT INTO events (received_at, kind, dedupe_key, event_uuid, project_id, project_path, detail, state, idempotency_key,
                                         pipeline_id, pipeline_status, trigger_marker)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10, ?11) ON CONFLICT DO NOTHING RETURNING id",
                    args![
                        now.as_str(),
                        e.kind.as_str(),
                        e.dedupe_key.as_str(),
                        e.event_uuid.as_deref(),
                        e.project_id,
                        e.project_path.as_str(),
                        e.detail.as_str(),
                        e.idempotency_key.as_deref(),
                        pipeline.map(|p| p.id),
                        pipeline.map(|p| p.status.as_str()),
                        pipeline.and_then(|p| p.trigger_marker.as_deref()),
                    ],
                )?;
                out.push(match row {
                    Some(r) => Accepted::New(r.int(0)?),
                    None => Accepted::Duplicate,
                });
            }
            if out.iter().any(|a| matches!(a, Accepted::New(_))) {
                work_queued(sql)?;
            }
            Ok(out)
        })
    }

    /// Pending events whose next attempt is due, oldest first. With
    /// PostgreSQL they are claimed: leased to this replica (renewed by its
    /// heartbeat, taken over by another when it stops), skipping those
    /// another replica holds and those behind an older event of the same
    /// project that another replica holds — one project's events stay in
    /// order.
    pub fn pending_events(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let now = now_millis();
        let rows = self.with_conn(|sql| match sql.backend() {
            Backend::Sqlite => sql.rows(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE state = 'pending' AND next_attempt_at <= ?1
                     ORDER BY id ASC LIMIT ?2"
                ),
                args![now, limit],
            ),
            Backend::Postgres => sql.rows(
                &format!(
                    "UPDATE events SET lease_owner = ?1, lease_until = {NOW_MS} + ?2
                     WHERE id IN (SELECT e.id FROM events e
                        WHERE e.state = 'pending' AND e.next_attempt_at <= ?3
                          AND (e.lease_until < {NOW_MS} OR e.lease_owner = ?1)
                          AND NOT EXISTS (SELECT 1 FROM events p
                              WHERE p.project_id = e.project_id AND p.state = 'pending' AND p.id < e.id
                                AND p.lease_until >= {NOW_MS} AND p.lease_owner <> ?1)
                        ORDER BY e.id LIMIT ?4 FOR UPDATE OF e SKIP LOCKED)
                     RETURNING {EVENT_COLUMNS}"
                ),
                args![
                    self.me.id.as_str(),
                    self.me.lease.as_millis() as i64,
                    now,
                    limit.min(20)
                ],
            ),
        })?;
        let mut events: Vec<StoredEvent> = rows.iter().map(event_from).collect::<Result<_, _>>()?;
        events.sort_by_key(|e| e.id);
        Ok(events)
    }

    /// Keeps the event pending; tries again after `delay` (any replica).
    pub fn event_retry(
        &self,
        id: i64,
        delay: std::time::Duration,
        error: &str,
    ) -> Result<(), StoreError> {
        self.with_conn(|sql| {
            sql.exec(
                "UPDATE events SET attempts = attempts + 1, next_attempt_at = ?2, outcome = ?3, lease_until = 0 WHERE id = ?1",
                args![id, now_millis() + delay.as_millis() as i64, error],
            )
        })?;
        Ok(())
    }

    /// Gives up on an event after too many failed attempts.
    pub fn event_parked(&self, id: i64, error: &str) -> Result<(), StoreError> {
        self.with_conn(|sql| {
            sql.exec(
                "UPDATE events SET state = 'parked', attempts = attempts + 1, outcome = ?2 WHERE id = ?1",
                args![id, error],
            )
        })?;
        Ok(())
    }

    pub fn recent_events(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = self.with_conn(|sql| {
            sql.rows(
                &format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY id DESC LIMIT ?1"),
                args![limit],
            )
        })?;
        rows.iter().map(event_from).collect()
    }

    /// Marks an event done with what came of it (a push, an event we do not
    /// use; pipeline events are completed with their cascade step).
    pub fn complete_event(&self, event_id: i64, outcome: &str) -> Result<(), StoreError> {
        self.with_cascades(|tx| tx.complete_event(event_id, outcome))
    }

    /// Queued triggers whose next attempt is due, shallowest and oldest
    /// first, but those in `exclude` (being fired here). With PostgreSQL
    /// they are claimed as [`Store::pending_events`] claims events.
    pub fn due_triggers(
        &self,
        limit: usize,
        exclude: &[i64],
    ) -> Result<Vec<StoredTrigger>, StoreError> {
        let now = now_millis();
        // Integers only: safe to write into the statement.
        let excluded = if exclude.is_empty() {
            String::new()
        } else {
            let ids: Vec<String> = exclude.iter().map(i64::to_string).collect();
            format!("AND id NOT IN ({})", ids.join(", "))
        };
        let rows = self.with_conn(|sql| match sql.backend() {
            Backend::Sqlite => sql.rows(
                &format!(
                    "SELECT {TRIGGER_COLUMNS} FROM triggers
                     WHERE state = 'queued' AND next_attempt_at <= ?1 {excluded}
                     ORDER BY depth ASC, id ASC LIMIT ?2"
                ),
                args![now, limit],
            ),
            Backend::Postgres => sql.rows(
                &format!(
                    "UPDATE triggers SET lease_owner = ?1, lease_until = {NOW_MS} + ?2
                     WHERE id IN (SELECT id FROM triggers
                        WHERE state = 'queued' AND next_attempt_at <= ?3 {excluded}
                          AND (lease_until < {NOW_MS} OR lease_owner = ?1)
                        ORDER BY depth ASC, id ASC LIMIT ?4 FOR UPDATE SKIP LOCKED)
                     RETURNING {TRIGGER_COLUMNS}"
                ),
                args![
                    self.me.id.as_str(),
                    self.me.lease.as_millis() as i64,
                    now,
                    limit
                ],
            ),
        })?;
        let mut triggers: Vec<StoredTrigger> =
            rows.iter().map(trigger_from).collect::<Result<_, _>>()?;
        triggers.sort_by_key(|t| (t.depth, t.id));
        Ok(triggers)
    }

    /// Pipelines we created that have not ended yet, as far as the events
    /// tell: what `--max-running` counts. With PostgreSQL, triggers other
    /// replicas are creating (leased to them) count too; the caller adds
    /// its own.
    pub fn running_pipelines(&self) -> Result<usize, StoreError> {
        let n = self.with_conn(|sql| match sql.backend() {
            Backend::Sqlite => sql
                .one(&format!("SELECT COUNT(*) {RUNNING_PIPELINES}"), &[])?
                .int(0),
            Backend::Postgres => sql
                .one(
                    &format!(
                        "SELECT (SELECT COUNT(*) {RUNNING_PIPELINES})
                              + (SELECT COUNT(*) FROM triggers WHERE state = 'queued'
                                 AND lease_until >= {NOW_MS} AND lease_owner <> ?1)"
                    ),
                    args![self.me.id.as_str()],
                )?
                .int(0),
        })?;
        Ok(n as usize)
    }

    pub fn recent_triggers(&self, limit: usize) -> Result<Vec<StoredTrigger>, StoreError> {
        let rows = self.with_conn(|sql| {
            sql.rows(
                &format!("SELECT {TRIGGER_COLUMNS} FROM triggers ORDER BY id DESC LIMIT ?1"),
                args![limit],
            )
        })?;
        rows.iter().map(trigger_from).collect()
    }

    /// Recorded before every create request, so that after a crash the
    /// next attempt looks for the pipeline before posting. With PostgreSQL
    /// it is also the fence: it renews this replica's lease and is refused
    /// (`false`) when the lease lapsed — another replica may own the
    /// trigger now, and this one must not post.
    pub fn trigger_posting(&self, id: i64) -> Result<bool, StoreError> {
        let changed = self.with_conn(|sql| match sql.backend() {
            Backend::Sqlite => sql.exec("UPDATE triggers SET posted = 1 WHERE id = ?1", args![id]),
            Backend::Postgres => sql.exec(
                &format!(
                    "UPDATE triggers SET posted = 1, lease_until = {NOW_MS} + ?3
                     WHERE id = ?1 AND state = 'queued' AND lease_owner = ?2 AND lease_until >= {NOW_MS}"
                ),
                args![id, self.me.id.as_str(), self.me.lease.as_millis() as i64],
            ),
        })?;
        Ok(changed == 1)
    }

    pub fn trigger_done(&self, id: i64, pipeline_id: u64, web_url: &str) -> Result<(), StoreError> {
        self.with_conn(|sql| {
            sql.exec(
                "UPDATE triggers SET state = 'done', pipeline_id = ?2, web_url = ?3, error = NULL, attempts = attempts + 1, updated_at = ?4, fired_at = ?4 WHERE id = ?1",
                args![id, pipeline_id, web_url, now_text()],
            )
        })?;
        Ok(())
    }

    /// Keeps the trigger queued; tries again after `delay` (any replica).
    pub fn trigger_retry(
        &self,
        id: i64,
        delay: std::time::Duration,
        error: &str,
    ) -> Result<(), StoreError> {
        self.with_conn(|sql| {
            sql.exec(
                "UPDATE triggers SET attempts = attempts + 1, next_attempt_at = ?2, error = ?3, updated_at = ?4, lease_until = 0 WHERE id = ?1",
                args![id, now_millis() + delay.as_millis() as i64, error, now_text()],
            )
        })?;
        Ok(())
    }

    /// Deletes what is finished and older than `age`: events done or parked,
    /// triggers done or failed, cascades finished or closed. Pending work
    /// is never deleted. Works in short transactions of at most
    /// [`SWEEP_BATCH`] rows each, so webhooks are accepted meanwhile and the
    /// write-ahead log stays small. Returns `(events, triggers)` deleted.
    pub fn delete_finished_older_than(
        &self,
        age: std::time::Duration,
    ) -> Result<(usize, usize), StoreError> {
        let cutoff = cutoff_text(age);
        let batch = |sql_text: &str, with_cutoff: bool| -> Result<usize, StoreError> {
            let mut total = 0;
            loop {
                let n = self.with_tx(|sql| {
                    let row = match sql.backend() {
                        Backend::Sqlite => "rowid",
                        Backend::Postgres => "ctid",
                    };
                    let text = sql_text.replace("ROW", row);
                    if with_cutoff {
                        sql.exec(&text, args![cutoff.as_str(), SWEEP_BATCH])
                    } else {
                        sql.exec(&text.replace("?2", "?1"), args![SWEEP_BATCH])
                    }
                })?;
                total += n;
                if n < SWEEP_BATCH {
                    return Ok(total);
                }
            }
        };
        batch(
            "DELETE FROM cascades WHERE id IN (SELECT id FROM cascades
             WHERE state IN ('finished', 'closed') AND updated_at < ?1 LIMIT ?2)",
            true,
        )?;
        batch(
            "DELETE FROM cascade_members WHERE ROW IN (SELECT ROW FROM cascade_members
             WHERE cascade_id NOT IN (SELECT id FROM cascades) LIMIT ?2)",
            false,
        )?;
        batch(
            "DELETE FROM attachments WHERE ROW IN (SELECT ROW FROM attachments
             WHERE cascade_id NOT IN (SELECT id FROM cascades) LIMIT ?2)",
            false,
        )?;
        let triggers = batch(
            "DELETE FROM triggers WHERE id IN (SELECT id FROM triggers
             WHERE state IN ('done', 'failed') AND updated_at < ?1
             AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.trigger_id = triggers.id) LIMIT ?2)",
            true,
        )?;
        let events = batch(
            "DELETE FROM events WHERE id IN (SELECT id FROM events
             WHERE state IN ('done', 'parked') AND received_at < ?1
             AND NOT EXISTS (SELECT 1 FROM triggers t WHERE t.event_id = events.id) LIMIT ?2)",
            true,
        )?;
        Ok((events, triggers))
    }

    pub(super) fn count(&self, statement: &str) -> Result<u64, StoreError> {
        Ok(self.with_conn(|sql| sql.one(statement, &[])?.int(0))? as u64)
    }

    /// Events given up on after too many failed attempts.
    pub fn parked_events(&self) -> Result<u64, StoreError> {
        self.count("SELECT COUNT(*) FROM events WHERE state = 'parked'")
    }

    /// `(pending events, queued triggers)`
    pub fn queue_depth(&self) -> Result<(u64, u64), StoreError> {
        Ok((
            self.count("SELECT COUNT(*) FROM events WHERE state = 'pending'")?,
            self.count("SELECT COUNT(*) FROM triggers WHERE state = 'queued'")?,
        ))
    }
}
