//! The last digest seen of each watched image tag, per platform: what a
//! registry check compares with, and when it last changed.

use serde::Serialize;

use super::sql::args;
use super::{now_text, Store, StoreError};

/// What a check learned against what was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestChange {
    /// Never seen before: recorded, nothing to rebuild.
    First,
    Same,
    Changed {
        previous: String,
    },
}

/// One watched image tag and platform, for the status surfaces.
#[derive(Debug, Clone, Serialize)]
pub struct WatchedDigest {
    pub image: String,
    pub platform: String,
    pub digest: String,
    pub previous: Option<String>,
    pub checked_at: String,
    pub changed_at: Option<String>,
}

impl Store {
    /// Records the digest `image` (with its tag) has now on `platform`.
    pub fn record_digest(
        &self,
        image: &str,
        platform: &str,
        digest: &str,
    ) -> Result<DigestChange, StoreError> {
        self.with_tx(|sql| {
            let now = now_text();
            let stored = sql
                .row(
                    "SELECT digest FROM digests WHERE image = ?1 AND platform = ?2",
                    args![image, platform],
                )?
                .map(|r| r.text(0))
                .transpose()?;
            Ok(match stored {
                None => {
                    // Another replica may record the same sighting at once.
                    sql.exec(
                        "INSERT INTO digests (image, platform, digest, first_seen, checked_at)
                         VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT DO NOTHING",
                        args![image, platform, digest, now],
                    )?;
                    DigestChange::First
                }
                Some(d) if d == digest => {
                    sql.exec(
                        "UPDATE digests SET checked_at = ?3 WHERE image = ?1 AND platform = ?2",
                        args![image, platform, now],
                    )?;
                    DigestChange::Same
                }
                Some(previous) => {
                    sql.exec(
                        "UPDATE digests SET previous = digest, digest = ?3, checked_at = ?4, changed_at = ?4
                         WHERE image = ?1 AND platform = ?2",
                        args![image, platform, digest, now],
                    )?;
                    DigestChange::Changed { previous }
                }
            })
        })
    }

    /// The digest last recorded for `image` on `platform`.
    pub fn digest_of(&self, image: &str, platform: &str) -> Result<Option<String>, StoreError> {
        self.with_conn(|sql| {
            sql.row(
                "SELECT digest FROM digests WHERE image = ?1 AND platform = ?2",
                args![image, platform],
            )?
            .map(|r| r.text(0))
            .transpose()
        })
    }

    /// Every watched image tag and platform, by name.
    pub fn watched_digests(&self) -> Result<Vec<WatchedDigest>, StoreError> {
        let rows = self.with_conn(|sql| {
            sql.rows(
                "SELECT image, platform, digest, previous, checked_at, changed_at FROM digests
                 ORDER BY image, platform",
                &[],
            )
        })?;
        rows.iter()
            .map(|r| {
                Ok(WatchedDigest {
                    image: r.text(0)?,
                    platform: r.text(1)?,
                    digest: r.text(2)?,
                    previous: r.opt_text(3)?,
                    checked_at: r.text(4)?,
                    changed_at: r.opt_text(5)?,
                })
            })
            .collect()
    }
}
