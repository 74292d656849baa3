//! gitlab-docker-autodep: finds the GitLab projects whose Docker image is
//! built on an image that changed, and triggers their pipelines.
//!
//! See `ARCHITECTURE.md` for the layers; data flows from the command line
//! and the webhook server down to the pure `dockerfile` and `image` modules.

pub mod cascade;
pub mod config;
pub mod dockerfile;
pub mod failpoint;
pub mod gitlab;
pub mod graph;
pub mod hooks;
pub mod image;
pub mod plan;
pub mod printable;
pub mod rebuild;
pub mod registry;
pub mod scan;
pub mod server;
pub mod store;
pub mod watch;
