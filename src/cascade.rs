//! One rebuild cascade as a pure state machine: the plan of a target's
//! rebuild (every project reachable from it, each waiting for its affected
//! upstreams inside the plan), advanced by what happens to the pipelines,
//! answering with what to do next. No I/O: the server drives it from
//! webhook events and stores its state; `rebuild --recurse` can drive it by
//! polling. The properties users rely on are proven here once, by property
//! tests over random graphs with diamonds and cycles and random event
//! orders: each project is triggered at most once, only after every
//! upstream it waits for succeeded, never after one failed, and every
//! cascade ends.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::plan::TriggerPlan;

/// How a pipeline ended, as far as a cascade cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Succeeded,
    Failed,
    Canceled,
    Skipped,
    /// Waiting for a person (`manual`): counts as not succeeded unless the
    /// cascade accepts manual pipelines.
    Manual,
}

impl Outcome {
    /// GitLab's final pipeline statuses; `None` while it still runs.
    pub fn from_status(status: &str) -> Option<Outcome> {
        Some(match status {
            "success" => Outcome::Succeeded,
            "failed" => Outcome::Failed,
            "canceled" | "canceling" => Outcome::Canceled,
            "skipped" => Outcome::Skipped,
            "manual" => Outcome::Manual,
            _ => return None,
        })
    }
}

/// Where one member of a cascade stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MemberState {
    /// Some upstream it waits for has not succeeded yet.
    Waiting,
    /// Told to trigger; its pipeline has not ended.
    Triggered,
    Succeeded,
    /// Its pipeline ended without success (or could not be created).
    Failed {
        outcome: Option<Outcome>,
        reason: String,
    },
    /// Not triggered: an upstream it waits for did not succeed.
    Pruned {
        because: u64,
    },
}

impl MemberState {
    fn is_settled(&self) -> bool {
        !matches!(self, MemberState::Waiting | MemberState::Triggered)
    }
}

/// One project of a cascade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub project_id: u64,
    pub project: String,
    /// The branch its pipeline runs on (the default branch).
    pub git_ref: String,
    /// What makes it stale, for the pipeline's `AUTODEP_*` variables.
    pub upstream: String,
    pub image: String,
    /// Members whose pipelines must succeed first.
    pub waits_for: BTreeSet<u64>,
    /// 0 for projects built directly on the target.
    pub depth: usize,
    pub state: MemberState,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create this project's pipeline.
    Trigger { project_id: u64 },
    /// This project will not be built: an upstream did not succeed.
    Prune { project_id: u64, because: u64 },
}

/// What happened to a member's pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Finished {
        project_id: u64,
        outcome: Outcome,
    },
    /// GitLab refused to create the pipeline for a reason retrying cannot fix.
    NotCreated {
        project_id: u64,
        reason: String,
    },
}

/// A cascade: its members by project id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cascade {
    pub members: BTreeMap<u64, Member>,
    /// `manual` counts as success.
    pub accept_manual: bool,
    /// Derived from the members; never stored, never compared.
    #[serde(skip)]
    index: Index,
}

/// What makes a step cost what changed rather than the cascade's size:
/// who waits for whom, how many are unsettled, which members changed since
/// they were last stored. Built from the members on first use.
#[derive(Debug, Clone, Default)]
struct Index {
    built: bool,
    /// Member → the members waiting for it.
    dependents: BTreeMap<u64, Vec<u64>>,
    unsettled: usize,
    /// Members whose state changed since [`Cascade::take_changed`].
    changed: BTreeSet<u64>,
}

impl PartialEq for Index {
    fn eq(&self, _: &Index) -> bool {
        true
    }
}

impl Eq for Index {}

impl Cascade {
    /// The members of a recursive plan, each waiting for what the plan says
    /// (archived, pinned and cut-cycle edges are already left out there).
    pub fn from_plan(plan: &TriggerPlan, accept_manual: bool) -> Cascade {
        let id_of: BTreeMap<_, _> = plan
            .triggers
            .iter()
            .map(|t| (t.node, t.project_id))
            .collect();
        let members = plan
            .triggers
            .iter()
            .map(|t| {
                let member = Member {
                    project_id: t.project_id,
                    project: t.project.clone(),
                    git_ref: t.git_ref.clone(),
                    upstream: t.upstream.clone(),
                    image: t.image.clone(),
                    waits_for: t
                        .waits_for
                        .iter()
                        .filter_map(|n| id_of.get(n).copied())
                        .filter(|id| *id != t.project_id)
                        .collect(),
                    depth: t.depth,
                    state: MemberState::Waiting,
                };
                (t.project_id, member)
            })
            .collect();
        Cascade::new(members, accept_manual)
    }

    pub fn new(members: BTreeMap<u64, Member>, accept_manual: bool) -> Cascade {
        Cascade {
            members,
            accept_manual,
            index: Index::default(),
        }
    }

    fn ensure_index(&mut self) {
        if self.index.built {
            return;
        }
        let mut dependents: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for m in self.members.values() {
            for w in &m.waits_for {
                dependents.entry(*w).or_default().push(m.project_id);
            }
        }
        self.index.dependents = dependents;
        self.index.unsettled = self
            .members
            .values()
            .filter(|m| !m.state.is_settled())
            .count();
        self.index.built = true;
    }

    /// Sets a member's state, keeping the index true.
    fn set_state(&mut self, id: u64, state: MemberState) {
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        if !m.state.is_settled() && state.is_settled() {
            self.index.unsettled -= 1;
        }
        m.state = state;
        self.index.changed.insert(id);
    }

    /// The members whose state changed since the last call (all of them the
    /// first time: none is stored yet).
    pub fn take_changed(&mut self, first_time: bool) -> BTreeSet<u64> {
        if first_time {
            self.index.changed.clear();
            return self.members.keys().copied().collect();
        }
        std::mem::take(&mut self.index.changed)
    }

    /// The members that can start at once.
    pub fn start(&mut self) -> Vec<Action> {
        self.ensure_index();
        let all: Vec<u64> = self.members.keys().copied().collect();
        self.advance(all)
    }

    /// Applies what happened; returns what to do next. An event for a
    /// project that is not a member, or that is not running, changes
    /// nothing (a redelivery, a late or foreign event).
    pub fn on_event(&mut self, event: Event) -> Vec<Action> {
        let (project_id, state) = match event {
            Event::Finished {
                project_id,
                outcome,
            } => {
                let ok = outcome == Outcome::Succeeded
                    || (outcome == Outcome::Manual && self.accept_manual);
                let state = if ok {
                    MemberState::Succeeded
                } else {
                    MemberState::Failed {
                        outcome: Some(outcome),
                        reason: format!("pipeline {outcome:?}").to_lowercase(),
                    }
                };
                (project_id, state)
            }
            Event::NotCreated { project_id, reason } => (
                project_id,
                MemberState::Failed {
                    outcome: None,
                    reason,
                },
            ),
        };
        match self.members.get(&project_id) {
            Some(m) if m.state == MemberState::Triggered => {}
            _ => return Vec::new(),
        }
        self.ensure_index();
        self.set_state(project_id, state);
        let next = self
            .index
            .dependents
            .get(&project_id)
            .cloned()
            .unwrap_or_default();
        self.advance(next)
    }

    /// Looks at `candidates` (and, as they change, at the members waiting
    /// for them): prunes a waiting member below one that did not succeed,
    /// triggers one whose waits all succeeded. A member changes at most
    /// twice (waiting → triggered, or waiting → pruned), so it ends; the
    /// work is what changed, not the cascade's size.
    fn advance(&mut self, candidates: Vec<u64>) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut work: std::collections::VecDeque<u64> = candidates.into();
        while let Some(id) = work.pop_front() {
            let Some(member) = self.members.get(&id) else {
                continue;
            };
            if member.state != MemberState::Waiting {
                continue;
            }
            let waits = &member.waits_for;
            let blocked_by = waits.iter().copied().find(|w| {
                matches!(
                    self.members.get(w).map(|m| &m.state),
                    Some(MemberState::Failed { .. } | MemberState::Pruned { .. })
                )
            });
            let all_ok = waits.iter().all(|w| {
                self.members
                    .get(w)
                    .is_none_or(|m| m.state == MemberState::Succeeded)
            });
            if let Some(because) = blocked_by {
                self.set_state(id, MemberState::Pruned { because });
                actions.push(Action::Prune {
                    project_id: id,
                    because,
                });
                // Below a pruned member, the waiting ones are pruned too.
                work.extend(self.index.dependents.get(&id).into_iter().flatten());
            } else if all_ok {
                self.set_state(id, MemberState::Triggered);
                actions.push(Action::Trigger { project_id: id });
            }
        }
        actions
    }

    /// Every member succeeded, failed or was pruned.
    pub fn is_finished(&self) -> bool {
        if self.index.built {
            return self.index.unsettled == 0;
        }
        self.members.values().all(|m| m.state.is_settled())
    }

    /// Members told to trigger whose pipelines have not ended.
    pub fn running(&self) -> impl Iterator<Item = &Member> {
        self.members
            .values()
            .filter(|m| m.state == MemberState::Triggered)
    }
}

#[cfg(test)]
mod tests;
