//! Watching external images: for every image tag the graph uses from
//! another registry, the digest it has now on each platform built for,
//! against the one seen last. A first sighting is recorded and triggers
//! nothing; a change says from what to what; a registry that cannot be
//! reached or asks to wait is reported and checked again next time.
//!
//! [`observe`] only reads; [`remember`] records. Callers act on a change
//! (queue or trigger the rebuild) before they remember it, so a crash in
//! between repeats the change rather than losing it.

use std::collections::BTreeSet;

use crate::image::ImageRef;
use crate::registry::{Platform, RegistryClient};
use crate::store::{Store, StoreError};

/// What one check learned of one image tag on one platform.
#[derive(Debug, Clone)]
pub struct Observation {
    /// `registry/path`.
    pub name: String,
    pub tag: String,
    pub platform: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    First {
        digest: String,
    },
    Same {
        digest: String,
    },
    Changed {
        from: String,
        to: String,
    },
    /// Not checked this time; why.
    Unchecked {
        error: String,
    },
}

impl Observation {
    pub fn image(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }
}

/// Checks every `(name, tag)` on every platform against what was seen
/// last; records nothing.
pub async fn observe(
    client: &RegistryClient,
    store: &Store,
    tags: &BTreeSet<(String, String)>,
    platforms: &[Platform],
) -> Result<Vec<Observation>, StoreError> {
    let mut seen = Vec::new();
    // A registry that asked to wait is not asked again this round.
    let mut waiting: BTreeSet<String> = BTreeSet::new();
    for (name, tag) in tags {
        let observe = |platform: String, outcome| Observation {
            name: name.clone(),
            tag: tag.clone(),
            platform,
            outcome,
        };
        let image = match ImageRef::parse(&format!("{name}:{tag}")) {
            Ok(i) => i,
            Err(e) => {
                seen.push(observe(
                    "*".into(),
                    Outcome::Unchecked {
                        error: e.to_string(),
                    },
                ));
                continue;
            }
        };
        if waiting.contains(&image.registry) {
            let error = format!(
                "the registry {} asked to wait; not asked again this round",
                image.registry
            );
            seen.push(observe("*".into(), Outcome::Unchecked { error }));
            continue;
        }
        match client.digests(&image, platforms).await {
            Err(e) => {
                if matches!(e, crate::registry::RegistryError::RateLimited { .. }) {
                    waiting.insert(image.registry.clone());
                }
                let error = e.to_string();
                seen.push(observe("*".into(), Outcome::Unchecked { error }));
            }
            Ok(digests) => {
                for (platform, now) in digests {
                    let key = format!("{name}:{tag}");
                    let (reader, platform_name) = (store.clone(), platform.to_string());
                    let known =
                        tokio::task::spawn_blocking(move || reader.digest_of(&key, &platform_name))
                            .await
                            .map_err(|e| StoreError::Corrupt(format!("reading a digest: {e}")))??;
                    let outcome = match known {
                        None => Outcome::First { digest: now.digest },
                        Some(d) if d == now.digest => Outcome::Same { digest: d },
                        Some(from) => Outcome::Changed {
                            from,
                            to: now.digest,
                        },
                    };
                    seen.push(observe(platform.to_string(), outcome));
                }
            }
        }
    }
    Ok(seen)
}

/// Records what was observed (after any change was acted on).
pub fn remember(store: &Store, observations: &[Observation]) -> Result<(), StoreError> {
    for o in observations {
        let digest = match &o.outcome {
            Outcome::First { digest } | Outcome::Same { digest } => digest,
            Outcome::Changed { to, .. } => to,
            Outcome::Unchecked { .. } => continue,
        };
        store.record_digest(&o.image(), &o.platform, digest)?;
    }
    Ok(())
}

/// Whether what was observed is a reason to rebuild: a change, a first
/// sighting (nothing to compare with) or a registry that could not say.
/// `None` means every tag is known and unchanged; `Some` says why to go on.
pub fn reason_to_rebuild(observations: &[Observation]) -> Option<String> {
    if observations.is_empty() {
        return Some("no image of it is used by name".into());
    }
    observations.iter().find_map(|o| match &o.outcome {
        Outcome::Same { .. } => None,
        Outcome::First { .. } => Some(format!(
            "{} ({}) seen for the first time",
            o.image(),
            o.platform
        )),
        Outcome::Changed { from, to } => Some(format!(
            "digest of {} ({}) changed from {from} to {to}",
            o.image(),
            o.platform
        )),
        Outcome::Unchecked { error } => {
            Some(format!("{} could not be checked ({error})", o.image()))
        }
    })
}

/// The words for "nothing changed".
pub fn unchanged(observations: &[Observation]) -> String {
    let images: BTreeSet<String> = observations.iter().map(Observation::image).collect();
    format!(
        "the digests of {} are unchanged",
        images.into_iter().collect::<Vec<_>>().join(", ")
    )
}

/// The image tags whose digest changed on some platform: each rebuilt once.
pub fn changed(observations: &[Observation]) -> BTreeSet<(String, String)> {
    observations
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Changed { .. }))
        .map(|o| (o.name.clone(), o.tag.clone()))
        .collect()
}
