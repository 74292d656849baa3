//! Cascades as stored: each one's state machine (`cascade::Cascade`: a row
//! in `cascades`, a row per member in `cascade_members`) and which
//! triggers' pipelines it waits for. Every step — an event applied, the
//! triggers it queues, the event marked done — is one transaction
//! ([`Store::with_cascades`]), so a crash leaves either all of a step or
//! none of it.
//!
//! With PostgreSQL, steps of all replicas take turns (an advisory lock
//! held for the step's transaction), and each step reads what it needs
//! from the database.
//!
//! A step writes only the members whose state changed, and (SQLite) the
//! running cascades are kept in memory as last committed (one server per
//! state directory), so a step over a cascade of N members costs neither N rows
//! read nor N written: a 2,000-project cascade is not quadratic. The cache
//! is only filled from committed steps; a step that fails leaves it
//! without that cascade, which is then read from the database again.
//! (Databases written before `cascade_members` keep the members in the
//! cascade's JSON; such a cascade moves to rows at its next step.)

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::postgres::CASCADE_LOCK;
use super::queue::work_queued;
use super::sql::{args, Backend, Row, Sql};
use super::{cutoff_text, now_text, NewTrigger, Store, StoreError};
use crate::cascade::{Cascade, Member};

/// Running cascades as last committed, by id.
pub(super) type CascadeCache = std::sync::Mutex<HashMap<i64, Cascade>>;

/// A cascade as the status surfaces show it.
#[derive(Debug, Clone, Serialize)]
pub struct StoredCascade {
    pub id: i64,
    pub root: String,
    pub reason: String,
    pub state: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(flatten)]
    pub machine: Cascade,
}

/// The pipeline the server made for one member of a cascade.
#[derive(Debug, Clone, Serialize)]
pub struct MemberPipeline {
    /// `queued` (waiting for a running slot), `done` (created), `failed`.
    pub trigger_state: String,
    pub pipeline_id: Option<u64>,
    pub web_url: Option<String>,
    pub updated_at: String,
    /// When its pipeline was created.
    pub fired_at: Option<String>,
    /// The last hook heard from its pipeline; none while it is created and
    /// no hook has come (a silent or paused hook shows here).
    pub last_hook_at: Option<String>,
}

/// The operations one cascade step needs, inside one transaction.
pub struct CascadeTx<'a> {
    sql: &'a mut dyn Sql,
    cache: Option<&'a CascadeCache>,
    /// A trigger was queued: other replicas are told at commit.
    queued: bool,
    /// Cascades this step wrote, as the step leaves them; they replace the
    /// cache's once the step commits.
    touched: HashMap<i64, Cascade>,
    /// Cascades whose member rows are not all written yet (new, or kept in
    /// the old JSON): their next save writes every member.
    fresh: HashSet<i64>,
}

fn decode(json: &str) -> Result<Cascade, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("a stored cascade: {e}")))
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("a stored cascade member: {e}"))
}

/// A cascade's machine: its row's JSON, with its members from their rows
/// (or, written before those existed, from the JSON itself).
fn load_machine(sql: &mut dyn Sql, id: i64, json: &str) -> Result<Cascade, StoreError> {
    let mut machine = decode(json)?;
    if machine.members.is_empty() {
        let rows = sql.rows(
            "SELECT member FROM cascade_members WHERE cascade_id = ?1 ORDER BY project_id",
            args![id],
        )?;
        for row in rows {
            let member: Member = serde_json::from_str(&row.text(0)?).map_err(corrupt)?;
            machine.members.insert(member.project_id, member);
        }
    }
    Ok(machine)
}

/// The JSON kept in a cascade's row: everything but the members.
fn header_json(cascade: &Cascade) -> Result<String, StoreError> {
    let header = Cascade::new(BTreeMap::new(), cascade.accept_manual);
    serde_json::to_string(&header).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl CascadeTx<'_> {
    /// The trigger that created this pipeline.
    pub fn trigger_by_pipeline(
        &mut self,
        project_id: u64,
        pipeline_id: u64,
    ) -> Result<Option<i64>, StoreError> {
        self.sql
            .row(
                "SELECT id FROM triggers WHERE project_id = ?1 AND pipeline_id = ?2",
                args![project_id, pipeline_id],
            )?
            .map(|r| r.int(0))
            .transpose()
    }

    /// The trigger whose `AUTODEP_TRIGGER_ID` this is.
    pub fn trigger_by_marker(&mut self, marker: &str) -> Result<Option<i64>, StoreError> {
        self.sql
            .row("SELECT id FROM triggers WHERE marker = ?1", args![marker])?
            .map(|r| r.int(0))
            .transpose()
    }

    /// The running cascades waiting for this trigger's pipeline.
    pub fn attached(&mut self, trigger_id: i64) -> Result<Vec<(i64, Cascade)>, StoreError> {
        let ids: Vec<i64> = self
            .sql
            .rows(
                "SELECT c.id FROM cascades c JOIN attachments a ON a.cascade_id = c.id
                 WHERE a.trigger_id = ?1 AND c.state = 'running' ORDER BY c.id",
                args![trigger_id],
            )?
            .iter()
            .map(|r| r.int(0))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for id in ids {
            out.push((id, self.load(id)?));
        }
        Ok(out)
    }

    /// A cascade as this step sees it: from this step, the cache (taken
    /// out: it goes back when the step commits) or the database.
    fn load(&mut self, id: i64) -> Result<Cascade, StoreError> {
        if let Some(c) = self.touched.remove(&id) {
            return Ok(c);
        }
        let cached = self
            .cache
            .and_then(|c| c.lock().unwrap_or_else(|p| p.into_inner()).remove(&id));
        let cascade = match cached {
            Some(c) => c,
            None => {
                let json = self
                    .sql
                    .one("SELECT machine FROM cascades WHERE id = ?1", args![id])?
                    .text(0)?;
                let legacy = !decode(&json)?.members.is_empty();
                let machine = load_machine(self.sql, id, &json)?;
                // Members kept in the JSON have no rows yet: all are written
                // at the next save.
                if legacy {
                    self.fresh.insert(id);
                }
                machine
            }
        };
        Ok(cascade)
    }

    /// A new running cascade.
    pub fn create(
        &mut self,
        root_project_id: u64,
        root_path: &str,
        reason: &str,
        cascade: &Cascade,
    ) -> Result<i64, StoreError> {
        let now = now_text();
        let id = self
            .sql
            .one(
                "INSERT INTO cascades (root_project_id, root_path, reason, state, machine, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?5) RETURNING id",
                args![root_project_id, root_path, reason, header_json(cascade)?, now],
            )?
            .int(0)?;
        // Every member is new: written at the first save.
        self.fresh.insert(id);
        Ok(id)
    }

    /// Writes the members whose state changed since they were stored.
    fn write_members(&mut self, id: i64, cascade: &mut Cascade) -> Result<(), StoreError> {
        let changed = cascade.take_changed(self.fresh.remove(&id));
        for pid in changed {
            let Some(member) = cascade.members.get(&pid) else {
                continue;
            };
            let json =
                serde_json::to_string(member).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            self.sql.exec(
                "INSERT INTO cascade_members (cascade_id, project_id, member) VALUES (?1, ?2, ?3)
                 ON CONFLICT(cascade_id, project_id) DO UPDATE SET member = excluded.member",
                args![id, pid, json],
            )?;
        }
        Ok(())
    }

    /// Writes a cascade's state; a finished one stops being running.
    pub fn save(&mut self, id: i64, mut cascade: Cascade) -> Result<(), StoreError> {
        self.write_members(id, &mut cascade)?;
        let state = if cascade.is_finished() {
            "finished"
        } else {
            "running"
        };
        self.sql.exec(
            "UPDATE cascades SET machine = ?2, state = ?3, updated_at = ?4 WHERE id = ?1",
            args![id, header_json(&cascade)?, state, now_text()],
        )?;
        self.touched.insert(id, cascade);
        Ok(())
    }

    /// Queues a pipeline for a member of cascade `cascade_id`, or — when one
    /// is already queued for that project (by any cascade) — joins it: its
    /// pipeline will include every change that made either cascade want
    /// it. Returns the trigger and whether it was new.
    pub fn queue(
        &mut self,
        cascade_id: i64,
        event_id: i64,
        event_uuid: Option<&str>,
        trigger: &NewTrigger,
    ) -> Result<(i64, bool), StoreError> {
        let now = now_text();
        let inserted = self.sql.exec(
            "INSERT INTO triggers (event_id, event_uuid, project_id, project_path, git_ref, upstream, image, state, created_at, updated_at, marker, depth)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?8, ?9, ?10)
             ON CONFLICT(project_id) WHERE state = 'queued' DO NOTHING",
            args![
                event_id,
                event_uuid,
                trigger.project_id,
                trigger.project_path.as_str(),
                trigger.git_ref.as_str(),
                trigger.upstream.as_str(),
                trigger.image.as_str(),
                now,
                uuid::Uuid::new_v4().to_string(),
                trigger.depth
            ],
        )?;
        let id = self
            .sql
            .one(
                "SELECT id FROM triggers WHERE project_id = ?1 AND state = 'queued'",
                args![trigger.project_id],
            )?
            .int(0)?;
        self.sql.exec(
            "INSERT INTO attachments (trigger_id, cascade_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            args![id, cascade_id],
        )?;
        self.queued |= inserted == 1;
        Ok((id, inserted == 1))
    }

    /// The event that caused this step is done.
    pub fn complete_event(&mut self, event_id: i64, outcome: &str) -> Result<(), StoreError> {
        self.sql.exec(
            "UPDATE events SET state = 'done', outcome = ?2 WHERE id = ?1",
            args![event_id, outcome],
        )?;
        Ok(())
    }

    /// GitLab refused the trigger for good.
    pub fn trigger_failed(
        &mut self,
        id: i64,
        error: &str,
    ) -> Result<(i64, Option<String>), StoreError> {
        self.sql.exec(
            "UPDATE triggers SET state = 'failed', attempts = attempts + 1, error = ?2, updated_at = ?3 WHERE id = ?1",
            args![id, error, now_text()],
        )?;
        let row = self.sql.one(
            "SELECT event_id, event_uuid FROM triggers WHERE id = ?1",
            args![id],
        )?;
        Ok((row.int(0)?, row.opt_text(1)?))
    }
}

impl Store {
    /// Runs one cascade step in one transaction; nothing of it is kept when
    /// `step` fails.
    pub fn with_cascades<T>(
        &self,
        step: impl FnOnce(&mut CascadeTx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let cache = self.cascades.as_deref();
        let (out, touched) = self.with_tx(|sql| {
            if sql.backend() == Backend::Postgres {
                sql.exec("SELECT pg_advisory_xact_lock(?1)", args![CASCADE_LOCK])?;
            }
            let mut tx = CascadeTx {
                sql,
                cache,
                queued: false,
                touched: HashMap::new(),
                fresh: HashSet::new(),
            };
            let out = step(&mut tx)?;
            if tx.queued {
                work_queued(tx.sql)?;
            }
            Ok((out, tx.touched))
        })?;
        if let Some(cache) = cache {
            let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            for (id, cascade) in touched {
                if !cascade.is_finished() {
                    cache.insert(id, cascade);
                }
            }
        }
        Ok(out)
    }

    /// The newest cascades, running ones first.
    pub fn recent_cascades(&self, limit: usize) -> Result<Vec<StoredCascade>, StoreError> {
        self.select_cascades(
            "ORDER BY state = 'running' DESC, id DESC LIMIT ?1",
            args![limit],
        )
    }

    /// One cascade.
    pub fn cascade(&self, id: i64) -> Result<Option<StoredCascade>, StoreError> {
        Ok(self
            .select_cascades("WHERE id = ?1", args![id])?
            .into_iter()
            .next())
    }

    /// The newest cascades this project is a member of.
    pub fn cascades_of(
        &self,
        project_id: u64,
        limit: usize,
    ) -> Result<Vec<StoredCascade>, StoreError> {
        // SQLite files from before member rows keep members in the JSON.
        let legacy = match self.backend {
            Backend::Sqlite => "OR json_extract(machine, '$.members.\"' || ?1 || '\"') IS NOT NULL",
            Backend::Postgres => "",
        };
        self.select_cascades(
            &format!(
                "WHERE id IN (SELECT cascade_id FROM cascade_members WHERE project_id = ?1) {legacy}
                 ORDER BY id DESC LIMIT ?2"
            ),
            args![project_id, limit],
        )
    }

    fn select_cascades(
        &self,
        rest: &str,
        args: &[super::sql::Value],
    ) -> Result<Vec<StoredCascade>, StoreError> {
        self.with_conn(|sql| {
            let rows = sql.rows(
                &format!(
                    "SELECT id, root_path, reason, state, created_at, updated_at, machine FROM cascades {rest}"
                ),
                args,
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let id = r.int(0)?;
                out.push(StoredCascade {
                    id,
                    root: r.text(1)?,
                    reason: r.text(2)?,
                    state: r.text(3)?,
                    created_at: r.text(4)?,
                    updated_at: r.text(5)?,
                    machine: load_machine(sql, id, &r.text(6)?)?,
                });
            }
            Ok(out)
        })
    }

    /// The pipelines of a cascade's members, by project id.
    pub fn cascade_pipelines(
        &self,
        cascade_id: i64,
    ) -> Result<std::collections::BTreeMap<u64, MemberPipeline>, StoreError> {
        let rows = self.with_conn(|sql| {
            sql.rows(
                "SELECT t.project_id, t.state, t.pipeline_id, t.web_url, t.updated_at, t.fired_at,
                        (SELECT MAX(e.received_at) FROM events e
                         WHERE e.project_id = t.project_id AND e.pipeline_id = t.pipeline_id)
                 FROM triggers t JOIN attachments a ON a.trigger_id = t.id
                 WHERE a.cascade_id = ?1 ORDER BY t.id",
                args![cascade_id],
            )
        })?;
        rows.iter()
            .map(|r: &Row| {
                Ok((
                    r.int(0)? as u64,
                    MemberPipeline {
                        trigger_state: r.text(1)?,
                        pipeline_id: r.opt_int(2)?.map(|p| p as u64),
                        web_url: r.opt_text(3)?,
                        updated_at: r.text(4)?,
                        fired_at: r.opt_text(5)?,
                        last_hook_at: r.opt_text(6)?,
                    },
                ))
            })
            .collect()
    }

    /// Pipelines we created for a running cascade whose end no event has
    /// reported, last looked at more than `age` ago: `(trigger, project id,
    /// project path, pipeline id)`. Their hooks may have been lost.
    pub fn unreported_pipelines(
        &self,
        age: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<(i64, u64, String, u64)>, StoreError> {
        let cutoff = cutoff_text(age);
        let rows = self.with_conn(|sql| {
            sql.rows(
                &format!(
                    "SELECT t.id, t.project_id, t.project_path, t.pipeline_id {}
                     AND t.updated_at < ?1 ORDER BY t.updated_at LIMIT ?2",
                    super::queue::RUNNING_PIPELINES
                ),
                args![cutoff, limit],
            )
        })?;
        rows.iter()
            .map(|r| Ok((r.int(0)?, r.int(1)? as u64, r.text(2)?, r.int(3)? as u64)))
            .collect()
    }

    /// Pipelines we created for a running cascade from which no hook has
    /// come at all: how many, and when the oldest was created.
    pub fn hook_waits(&self) -> Result<(u64, Option<String>), StoreError> {
        let row = self.with_conn(|sql| {
            sql.one(
                &format!(
                    "SELECT COUNT(*), MIN(t.fired_at) {}",
                    super::queue::RUNNING_PIPELINES
                ),
                &[],
            )
        })?;
        Ok((row.int(0)? as u64, row.opt_text(1)?))
    }

    /// Looked at now: the next look is an interval away.
    pub fn trigger_looked_at(&self, trigger_id: i64) -> Result<(), StoreError> {
        self.with_conn(|sql| {
            sql.exec(
                "UPDATE triggers SET updated_at = ?2 WHERE id = ?1",
                args![trigger_id, now_text()],
            )
        })?;
        Ok(())
    }

    /// Closes the running cascades started more than `age` ago, saying so in
    /// their reason. Returns how many.
    pub fn close_cascades_older_than(&self, age: std::time::Duration) -> Result<usize, StoreError> {
        let cutoff = cutoff_text(age);
        // Closed cascades are never stepped again.
        if let Some(cache) = &self.cascades {
            cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        self.with_conn(|sql| {
            sql.exec(
                "UPDATE cascades SET state = 'closed', updated_at = ?2,
                        reason = reason || '; closed: still running after --cascade-timeout'
                 WHERE state = 'running' AND created_at < ?1",
                args![cutoff, now_text()],
            )
        })
    }

    /// Running cascades.
    pub fn running_cascades(&self) -> Result<u64, StoreError> {
        self.count("SELECT COUNT(*) FROM cascades WHERE state = 'running'")
    }
}
