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
}

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
        Cascade {
            members,
            accept_manual,
        }
    }

    /// The members that can start at once.
    pub fn start(&mut self) -> Vec<Action> {
        self.advance()
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
        match self.members.get_mut(&project_id) {
            Some(m) if m.state == MemberState::Triggered => m.state = state,
            _ => return Vec::new(),
        }
        self.advance()
    }

    /// Prunes below every member that did not succeed, and triggers every
    /// waiting member whose waits all succeeded. Each pass settles at least
    /// one member or stops, so it ends.
    fn advance(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        loop {
            let mut changed = false;
            let ids: Vec<u64> = self.members.keys().copied().collect();
            for id in ids {
                if self.members[&id].state != MemberState::Waiting {
                    continue;
                }
                let waits = &self.members[&id].waits_for;
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
                let member = self.members.get_mut(&id).expect("listed above");
                if let Some(because) = blocked_by {
                    member.state = MemberState::Pruned { because };
                    actions.push(Action::Prune {
                        project_id: id,
                        because,
                    });
                    changed = true;
                } else if all_ok {
                    member.state = MemberState::Triggered;
                    actions.push(Action::Trigger { project_id: id });
                    changed = true;
                }
            }
            if !changed {
                return actions;
            }
        }
    }

    /// Every member succeeded, failed or was pruned.
    pub fn is_finished(&self) -> bool {
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
