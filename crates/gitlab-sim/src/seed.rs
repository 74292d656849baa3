//! Seeding the simulated instance: a builder for projects, a JSON fixture
//! format for the binary, and a generator of large synthetic instances whose
//! Dockerfiles form a layered dependency graph.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::world::{PipelineBehaviour, PipelineStatus, TokenScope, Webhook};

/// The CI configuration every seeded project gets unless told otherwise:
/// GitLab refuses to create a pipeline without one.
pub const DEFAULT_CI: &str = "build:\n  script: docker build -t $CI_REGISTRY_IMAGE .\n";

/// One project to create.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSpec {
    /// Full path, capitals allowed: `Group/Sub/Project`.
    pub path: String,
    #[serde(default = "main")]
    pub default_branch: String,
    #[serde(default)]
    pub archived: bool,
    #[serde(default = "private")]
    pub visibility: String,
    /// Files on the default branch.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Files on other branches.
    #[serde(default)]
    pub branches: BTreeMap<String, BTreeMap<String, String>>,
    /// Registry repositories below the project path ("" = the root image).
    #[serde(default)]
    pub images: Option<Vec<String>>,
    #[serde(default)]
    pub pipeline: PipelineBehaviour,
    /// No commits at all.
    #[serde(default)]
    pub empty: bool,
    /// Do not add the default `.gitlab-ci.yml`.
    #[serde(default)]
    pub without_ci: bool,
    /// The token's user is a Guest member: files and pipelines are 403.
    #[serde(default)]
    pub guest: bool,
    /// Pipeline variables are refused (400, as GitLab does when its
    /// settings let no one set them).
    #[serde(default)]
    pub forbid_pipeline_variables: bool,
}

fn main() -> String {
    "main".into()
}

fn private() -> String {
    "private".into()
}

impl ProjectSpec {
    pub fn new(path: &str) -> ProjectSpec {
        ProjectSpec {
            path: path.to_string(),
            default_branch: main(),
            archived: false,
            visibility: private(),
            files: BTreeMap::new(),
            branches: BTreeMap::new(),
            images: None,
            pipeline: PipelineBehaviour::default(),
            empty: false,
            without_ci: false,
            guest: false,
            forbid_pipeline_variables: false,
        }
    }

    /// The token's user is only a Guest of this project.
    pub fn guest(mut self) -> Self {
        self.guest = true;
        self
    }

    /// The project refuses pipeline variables.
    pub fn forbid_pipeline_variables(mut self) -> Self {
        self.forbid_pipeline_variables = true;
        self
    }

    pub fn dockerfile(self, text: &str) -> Self {
        self.file("Dockerfile", text)
    }

    pub fn file(mut self, path: &str, content: &str) -> Self {
        self.files.insert(path.to_string(), content.to_string());
        self
    }

    pub fn branch_file(mut self, branch: &str, path: &str, content: &str) -> Self {
        self.branches
            .entry(branch.to_string())
            .or_default()
            .insert(path.to_string(), content.to_string());
        self
    }

    pub fn default_branch(mut self, branch: &str) -> Self {
        self.default_branch = branch.to_string();
        self
    }

    pub fn archived(mut self) -> Self {
        self.archived = true;
        self
    }

    pub fn public(mut self) -> Self {
        self.visibility = "public".into();
        self
    }

    pub fn empty(mut self) -> Self {
        self.empty = true;
        self
    }

    pub fn without_ci(mut self) -> Self {
        self.without_ci = true;
        self
    }

    pub fn images(mut self, names: &[&str]) -> Self {
        self.images = Some(names.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn pipeline(mut self, duration: Duration, outcome: PipelineStatus) -> Self {
        self.pipeline = PipelineBehaviour { duration, outcome };
        self
    }

    /// Branch name → files, the default branch included; empty for `empty`.
    pub(crate) fn all_branches(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        if self.empty {
            return BTreeMap::new();
        }
        let mut branches = self.branches.clone();
        let default = branches.entry(self.default_branch.clone()).or_default();
        default.extend(self.files.clone());
        if !self.without_ci {
            for files in branches.values_mut() {
                files
                    .entry(".gitlab-ci.yml".into())
                    .or_insert_with(|| DEFAULT_CI.into());
            }
        }
        branches
    }

    pub(crate) fn registry_images(&self) -> Vec<String> {
        match &self.images {
            Some(images) => images.clone(),
            None if self.files.contains_key("Dockerfile") => vec![String::new()],
            None => Vec::new(),
        }
    }
}

/// The binary's `--fixture` file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    #[serde(default)]
    pub registry: Option<String>,
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenScope>,
    #[serde(default)]
    pub job_tokens: Vec<String>,
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
    #[serde(default)]
    pub projects: Vec<ProjectSpec>,
}

/// Shape of a synthetic instance.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    pub projects: usize,
    /// Depth of the dependency DAG.
    pub layers: usize,
    /// Fraction of projects without a Dockerfile.
    pub without_dockerfile: f64,
    /// Fraction of image projects that also `COPY --from` a second upstream.
    pub second_parent: f64,
    pub seed: u64,
    pub pipeline: PipelineBehaviour,
}

impl SyntheticSpec {
    pub fn new(projects: usize) -> SyntheticSpec {
        SyntheticSpec {
            projects,
            layers: 5,
            without_dockerfile: 0.2,
            second_parent: 0.1,
            seed: 42,
            pipeline: PipelineBehaviour::default(),
        }
    }
}

/// Projects `group-G/svc-N`; layer 0 builds on public images, each later
/// layer on a project of the layer below (some on two), so the Dockerfiles
/// form a layered DAG. Deterministic for a given seed.
pub fn synthetic(spec: &SyntheticSpec, registry_host: &str) -> Vec<ProjectSpec> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let layers = spec.layers.max(1);
    let mut by_layer: Vec<Vec<String>> = vec![Vec::new(); layers];
    let mut out = Vec::with_capacity(spec.projects);
    for n in 0..spec.projects {
        let path = format!("group-{}/svc-{n:05}", n / 100);
        let layer = (n * layers / spec.projects.max(1)).min(layers - 1);
        let mut project = ProjectSpec::new(&path);
        project.pipeline = spec.pipeline.clone();
        if rng.random_bool(spec.without_dockerfile.clamp(0.0, 1.0)) {
            project = project.file("README.md", "# no image here\n");
            out.push(project);
            continue;
        }
        let below = if layer == 0 {
            None
        } else {
            Some(&by_layer[layer - 1])
        };
        let mut dockerfile = String::new();
        match below.filter(|b| !b.is_empty()) {
            None => dockerfile.push_str("FROM alpine:3.20\n"),
            Some(parents) => {
                let parent = &parents[rng.random_range(0..parents.len())];
                dockerfile.push_str(&format!("FROM {registry_host}/{parent}:latest\n"));
                if rng.random_bool(spec.second_parent.clamp(0.0, 1.0)) {
                    let other = &parents[rng.random_range(0..parents.len())];
                    dockerfile.push_str(&format!(
                        "COPY --from={registry_host}/{other}:latest /opt /opt\n"
                    ));
                }
            }
        }
        dockerfile.push_str("RUN ./build.sh\n");
        by_layer[layer].push(path.to_lowercase());
        out.push(project.dockerfile(&dockerfile));
    }
    out
}
