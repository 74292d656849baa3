//! The durable queue: accepted webhook events (deduplicated, retried and
//! parked per event, deleted after the retention) and the triggers they
//! queue (one queued row per project; done, retried or failed).

use rusqlite::params;
use serde::Serialize;

use super::{now_millis, now_text, Store, StoreError};

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
}

impl Store {
    /// Accepts a batch of events in one transaction (one disk sync).
    pub fn accept_events(&self, events: &[NewEvent]) -> Result<Vec<Accepted>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(events.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (received_at, kind, dedupe_key, event_uuid, project_id, project_path, detail, state, idempotency_key,
                                     pipeline_id, pipeline_status, trigger_marker)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10, ?11) ON CONFLICT DO NOTHING",
            )?;
            let now = now_text();
            for e in events {
                let changed = insert.execute(params![
                    now,
                    e.kind,
                    e.dedupe_key,
                    e.event_uuid,
                    e.project_id as i64,
                    e.project_path,
                    e.detail,
                    e.idempotency_key,
                    e.pipeline.as_ref().map(|p| p.id as i64),
                    e.pipeline.as_ref().map(|p| p.status.as_str()),
                    e.pipeline
                        .as_ref()
                        .and_then(|p| p.trigger_marker.as_deref()),
                ])?;
                out.push(if changed == 1 {
                    Accepted::New(tx.last_insert_rowid())
                } else {
                    Accepted::Duplicate
                });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Pending events whose next attempt is due, oldest first.
    pub fn pending_events(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.events(
            &format!(
                "WHERE state = 'pending' AND next_attempt_at <= {} ORDER BY id ASC",
                now_millis()
            ),
            limit,
        )
    }

    /// Keeps the event pending; tries again after `delay`.
    pub fn event_retry(
        &self,
        id: i64,
        delay: std::time::Duration,
        error: &str,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE events SET attempts = attempts + 1, next_attempt_at = ?2, outcome = ?3 WHERE id = ?1",
            params![id, now_millis() + delay.as_millis() as i64, error],
        )?;
        Ok(())
    }

    /// Gives up on an event after too many failed attempts.
    pub fn event_parked(&self, id: i64, error: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE events SET state = 'parked', attempts = attempts + 1, outcome = ?2 WHERE id = ?1",
            params![id, error],
        )?;
        Ok(())
    }

    pub fn recent_events(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.events("ORDER BY id DESC", limit)
    }

    fn events(&self, clause: &str, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT id, received_at, kind, event_uuid, project_id, project_path, detail, state, outcome, attempts,
                    pipeline_id, pipeline_status, trigger_marker FROM events {clause} LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(StoredEvent {
                id: r.get(0)?,
                received_at: r.get(1)?,
                kind: r.get(2)?,
                event_uuid: r.get(3)?,
                project_id: r.get::<_, i64>(4)? as u64,
                project_path: r.get(5)?,
                detail: r.get(6)?,
                state: r.get(7)?,
                outcome: r.get(8)?,
                attempts: r.get(9)?,
                pipeline: match (
                    r.get::<_, Option<i64>>(10)?,
                    r.get::<_, Option<String>>(11)?,
                ) {
                    (Some(id), Some(status)) => Some(PipelineFacts {
                        id: id as u64,
                        status,
                        trigger_marker: r.get(12)?,
                    }),
                    _ => None,
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks an event done with what came of it (a push, an event we do not
    /// use; pipeline events are completed with their cascade step).
    pub fn complete_event(&self, event_id: i64, outcome: &str) -> Result<(), StoreError> {
        self.with_cascades(|tx| tx.complete_event(event_id, outcome))
    }

    /// Queued triggers whose next attempt is due, oldest first.
    pub fn due_triggers(&self, limit: usize) -> Result<Vec<StoredTrigger>, StoreError> {
        self.triggers(
            "WHERE state = 'queued' AND next_attempt_at <= ?2 ORDER BY depth ASC, id ASC",
            limit,
            now_millis(),
        )
    }

    /// Pipelines we created that have not ended yet, as far as the events
    /// tell: what `--max-running` counts.
    pub fn running_pipelines(&self) -> Result<usize, StoreError> {
        let n: i64 = self.lock().query_row(
            "SELECT COUNT(*) FROM triggers t
             WHERE t.state = 'done' AND t.pipeline_id IS NOT NULL
               AND EXISTS (SELECT 1 FROM attachments a JOIN cascades c ON c.id = a.cascade_id
                           WHERE a.trigger_id = t.id AND c.state = 'running')
               AND NOT EXISTS (SELECT 1 FROM events e
                               WHERE e.project_id = t.project_id AND e.pipeline_id = t.pipeline_id)",
            [],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    pub fn recent_triggers(&self, limit: usize) -> Result<Vec<StoredTrigger>, StoreError> {
        self.triggers("WHERE ?2 >= 0 ORDER BY id DESC", limit, 0)
    }

    fn triggers(
        &self,
        clause: &str,
        limit: usize,
        now: i64,
    ) -> Result<Vec<StoredTrigger>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT id, event_id, event_uuid, project_id, project_path, git_ref, upstream, image, state, attempts, pipeline_id, web_url, error, updated_at,
                    created_at, COALESCE(marker, 'trigger-' || id), posted,
                    (SELECT MIN(a.cascade_id) FROM attachments a WHERE a.trigger_id = triggers.id)
             FROM triggers {clause} LIMIT ?1"
        ))?;
        let rows = stmt.query_map(params![limit as i64, now], |r| {
            Ok(StoredTrigger {
                id: r.get(0)?,
                event_id: r.get(1)?,
                event_uuid: r.get(2)?,
                project_id: r.get::<_, i64>(3)? as u64,
                project_path: r.get(4)?,
                git_ref: r.get(5)?,
                upstream: r.get(6)?,
                image: r.get(7)?,
                state: r.get(8)?,
                attempts: r.get(9)?,
                pipeline_id: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
                web_url: r.get(11)?,
                error: r.get(12)?,
                updated_at: r.get(13)?,
                created_at: r.get(14)?,
                marker: r.get(15)?,
                posted: r.get::<_, i64>(16)? != 0,
                cascade_id: r.get(17)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Recorded before the first create request, so that after a crash
    /// the next attempt looks for the pipeline before posting.
    pub fn trigger_posting(&self, id: i64) -> Result<(), StoreError> {
        self.lock()
            .execute("UPDATE triggers SET posted = 1 WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn trigger_done(&self, id: i64, pipeline_id: u64, web_url: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE triggers SET state = 'done', pipeline_id = ?2, web_url = ?3, error = NULL, attempts = attempts + 1, updated_at = ?4, fired_at = ?4 WHERE id = ?1",
            params![id, pipeline_id as i64, web_url, now_text()],
        )?;
        Ok(())
    }

    /// Keeps the trigger queued; tries again after `delay`.
    pub fn trigger_retry(
        &self,
        id: i64,
        delay: std::time::Duration,
        error: &str,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE triggers SET attempts = attempts + 1, next_attempt_at = ?2, error = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, now_millis() + delay.as_millis() as i64, error, now_text()],
        )?;
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
        let cutoff = time::OffsetDateTime::now_utc()
            - time::Duration::try_from(age).unwrap_or(time::Duration::MAX);
        let cutoff = cutoff
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let batch = |sql: &str| -> Result<usize, StoreError> {
            let mut total = 0;
            loop {
                let mut conn = self.lock();
                let tx = conn.transaction()?;
                let n = tx.execute(sql, params![cutoff, SWEEP_BATCH as i64])?;
                tx.commit()?;
                total += n;
                if n < SWEEP_BATCH {
                    return Ok(total);
                }
            }
        };
        batch(
            "DELETE FROM cascades WHERE id IN (SELECT id FROM cascades
             WHERE state IN ('finished', 'closed') AND updated_at < ?1 LIMIT ?2)",
        )?;
        batch(
            "DELETE FROM cascade_members WHERE rowid IN (SELECT rowid FROM cascade_members
             WHERE cascade_id NOT IN (SELECT id FROM cascades) LIMIT ?2) AND ?1 IS NOT NULL",
        )?;
        batch(
            "DELETE FROM attachments WHERE rowid IN (SELECT rowid FROM attachments
             WHERE cascade_id NOT IN (SELECT id FROM cascades) LIMIT ?2) AND ?1 IS NOT NULL",
        )?;
        let triggers = batch(
            "DELETE FROM triggers WHERE id IN (SELECT id FROM triggers
             WHERE state IN ('done', 'failed') AND updated_at < ?1
             AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.trigger_id = triggers.id) LIMIT ?2)",
        )?;
        let events = batch(
            "DELETE FROM events WHERE id IN (SELECT id FROM events
             WHERE state IN ('done', 'parked') AND received_at < ?1
             AND NOT EXISTS (SELECT 1 FROM triggers t WHERE t.event_id = events.id) LIMIT ?2)",
        )?;
        Ok((events, triggers))
    }

    /// Events given up on after too many failed attempts.
    pub fn parked_events(&self) -> Result<u64, StoreError> {
        let n: i64 = self.lock().query_row(
            "SELECT COUNT(*) FROM events WHERE state = 'parked'",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// `(pending events, queued triggers)`
    pub fn queue_depth(&self) -> Result<(u64, u64), StoreError> {
        let conn = self.lock();
        let events: i64 = conn.query_row(
            "SELECT COUNT(*) FROM events WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?;
        let triggers: i64 = conn.query_row(
            "SELECT COUNT(*) FROM triggers WHERE state = 'queued'",
            [],
            |r| r.get(0),
        )?;
        Ok((events as u64, triggers as u64))
    }
}
