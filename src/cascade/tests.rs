use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::graph::{DependencyGraph, Target};
use crate::image::Registry;
use crate::scan::{DockerfileState, ProjectInfo, ScannedImage, ScannedProject};

const REG: &str = "registry.example.com";

/// Projects `p0…pN`; `edges` are (upstream, downstream) pairs, cycles and
/// self-loops included.
fn graph(n: usize, edges: &[(usize, usize)]) -> DependencyGraph {
    let projects: Vec<ScannedProject> = (0..n)
        .map(|i| {
            let images = edges
                .iter()
                .filter(|(_, down)| *down == i)
                .enumerate()
                .map(|(line, (up, _))| ScannedImage {
                    reference: format!("{REG}/g/p{up}:latest"),
                    via: "FROM".into(),
                    line: line + 1,
                    unresolved: false,
                    file: "Dockerfile".into(),
                })
                .collect();
            ScannedProject {
                project: ProjectInfo {
                    id: i as u64 + 1,
                    path: format!("g/p{i}"),
                    default_branch: Some("main".into()),
                    archived: false,
                    empty_repo: false,
                    web_url: String::new(),
                },
                dockerfile: DockerfileState::Found {
                    blob_id: None,
                    images,
                },
                fetched_at: 0,
                config: None,
                config_error: None,
            }
        })
        .collect();
    DependencyGraph::from_projects(&projects, &Registry::new([REG]).expect("a host"))
}

fn cascade_for(n: usize, edges: &[(usize, usize)], target: usize) -> Cascade {
    let g = graph(n, edges);
    let node = g.node_by_path(&format!("g/p{target}")).expect("target");
    Cascade::from_plan(&g.plan(&Target::Project(node), true), false)
}

fn diamond() -> Cascade {
    // p0 → p1, p0 → p2, p1 → p3, p2 → p3, p3 → p4
    cascade_for(5, &[(0, 1), (0, 2), (1, 3), (2, 3), (3, 4)], 0)
}

fn triggered(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Trigger { project_id } => Some(*project_id),
            _ => None,
        })
        .collect()
}

fn finished(id: u64, outcome: Outcome) -> Event {
    Event::Finished {
        project_id: id,
        outcome,
    }
}

#[test]
fn a_diamond_builds_its_bottom_once_after_both_sides() {
    let mut c = diamond();
    // Project ids are index + 1.
    assert_eq!(triggered(&c.start()), [2, 3]);
    assert!(triggered(&c.on_event(finished(2, Outcome::Succeeded))).is_empty());
    // A redelivered success changes nothing.
    assert!(c.on_event(finished(2, Outcome::Succeeded)).is_empty());
    assert_eq!(triggered(&c.on_event(finished(3, Outcome::Succeeded))), [4]);
    assert_eq!(triggered(&c.on_event(finished(4, Outcome::Succeeded))), [5]);
    assert!(!c.is_finished());
    assert!(c.on_event(finished(5, Outcome::Succeeded)).is_empty());
    assert!(c.is_finished());
}

#[test]
fn a_failure_prunes_the_subtree_below_it_and_says_why() {
    let mut c = diamond();
    c.start();
    let actions = c.on_event(finished(2, Outcome::Failed));
    assert_eq!(
        actions,
        [
            Action::Prune {
                project_id: 4,
                because: 2
            },
            Action::Prune {
                project_id: 5,
                because: 4
            }
        ]
    );
    assert!(c.on_event(finished(3, Outcome::Succeeded)).is_empty());
    assert!(c.is_finished());
}

#[test]
fn manual_counts_as_success_only_when_accepted() {
    let mut c = cascade_for(3, &[(0, 1), (1, 2)], 0);
    c.start();
    assert!(triggered(&c.on_event(finished(2, Outcome::Manual))).is_empty());
    assert!(c.is_finished(), "p2 pruned below a manual pipeline");
    let mut c = cascade_for(3, &[(0, 1), (1, 2)], 0);
    c.accept_manual = true;
    c.start();
    assert_eq!(triggered(&c.on_event(finished(2, Outcome::Manual))), [3]);
}

#[test]
fn a_cycle_is_built_once_and_ends() {
    // p0 → p1 → p2 → p1: the cycle is cut once.
    let mut c = cascade_for(3, &[(0, 1), (1, 2), (2, 1)], 0);
    let mut all = triggered(&c.start());
    loop {
        let Some(id) = c.running().next().map(|m| m.project_id) else {
            break;
        };
        all.extend(triggered(&c.on_event(finished(id, Outcome::Succeeded))));
    }
    all.sort();
    assert_eq!(all, [2, 3]);
    assert!(c.is_finished());
}

#[test]
fn events_for_strangers_and_for_members_not_running_change_nothing() {
    let mut c = diamond();
    c.start();
    assert!(c.on_event(finished(99, Outcome::Succeeded)).is_empty());
    // p4 (id 5) waits; a success for it before it was triggered is foreign.
    assert!(c.on_event(finished(5, Outcome::Succeeded)).is_empty());
    assert_eq!(c.members[&5].state, MemberState::Waiting);
}

/// A random graph (cycles, diamonds, self-loops) and a random sequence of
/// choices: which running pipeline ends next, and how.
/// Projects, edges, the target, and the choices.
type Scenario = (usize, Vec<(usize, usize)>, usize, Vec<(u8, u8)>);

fn scenario() -> impl Strategy<Value = Scenario> {
    (2usize..14).prop_flat_map(|n| {
        (
            Just(n),
            proptest::collection::vec((0..n, 0..n), 0..(n * 3)),
            0..n,
            proptest::collection::vec((any::<u8>(), any::<u8>()), 0..200),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Each project is triggered at most once, only after every upstream
    /// it waits for succeeded, never when one failed; every member ends
    /// settled; the cascade ends within one event per member.
    #[test]
    fn cascades_trigger_each_project_once_in_order_and_end(
        (n, edges, target, choices) in scenario()
    ) {
        let mut c = cascade_for(n, &edges, target);
        let outcomes = [Outcome::Succeeded, Outcome::Succeeded, Outcome::Succeeded,
                        Outcome::Failed, Outcome::Canceled, Outcome::Skipped, Outcome::Manual];
        let mut ever_triggered: BTreeSet<u64> = BTreeSet::new();
        let mut ended: BTreeMap<u64, bool> = BTreeMap::new();
        let mut actions = c.start();
        let mut choices = choices.into_iter();
        let mut events = 0;
        loop {
            for action in &actions {
                if let Action::Trigger { project_id } = action {
                    prop_assert!(ever_triggered.insert(*project_id), "{project_id} triggered twice");
                    for w in &c.members[project_id].waits_for {
                        prop_assert_eq!(ended.get(w), Some(&true), "{} before {} succeeded", project_id, w);
                    }
                }
            }
            let running: Vec<u64> = c.running().map(|m| m.project_id).collect();
            if running.is_empty() {
                break;
            }
            let (pick, how) = choices.next().unwrap_or((0, 0));
            let id = running[pick as usize % running.len()];
            let outcome = outcomes[how as usize % outcomes.len()];
            ended.insert(id, outcome == Outcome::Succeeded);
            actions = c.on_event(finished(id, outcome));
            // The same event again, and one for a stranger: nothing.
            prop_assert!(c.on_event(finished(id, outcome)).is_empty());
            prop_assert!(c.on_event(finished(10_000, Outcome::Succeeded)).is_empty());
            events += 1;
            prop_assert!(events <= c.members.len());
        }
        prop_assert!(c.is_finished());
        for m in c.members.values() {
            let waits_ok = m.waits_for.iter().all(|w| ended.get(w) == Some(&true));
            prop_assert_eq!(ever_triggered.contains(&m.project_id), waits_ok, "{:?}", m);
        }
    }
}
