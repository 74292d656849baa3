//! The last digest seen of each watched image tag, per platform: what a
//! registry check compares with, and when it last changed.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

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
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let now = now_text();
        let stored: Option<String> = tx
            .query_row(
                "SELECT digest FROM digests WHERE image = ?1 AND platform = ?2",
                params![image, platform],
                |r| r.get(0),
            )
            .optional()?;
        let change = match stored {
            None => {
                tx.execute(
                    "INSERT INTO digests (image, platform, digest, first_seen, checked_at)
                     VALUES (?1, ?2, ?3, ?4, ?4)",
                    params![image, platform, digest, now],
                )?;
                DigestChange::First
            }
            Some(d) if d == digest => {
                tx.execute(
                    "UPDATE digests SET checked_at = ?3 WHERE image = ?1 AND platform = ?2",
                    params![image, platform, now],
                )?;
                DigestChange::Same
            }
            Some(previous) => {
                tx.execute(
                    "UPDATE digests SET previous = digest, digest = ?3, checked_at = ?4, changed_at = ?4
                     WHERE image = ?1 AND platform = ?2",
                    params![image, platform, digest, now],
                )?;
                DigestChange::Changed { previous }
            }
        };
        tx.commit()?;
        Ok(change)
    }

    /// The digest last recorded for `image` on `platform`.
    pub fn digest_of(&self, image: &str, platform: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT digest FROM digests WHERE image = ?1 AND platform = ?2",
                params![image, platform],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Every watched image tag and platform, by name.
    pub fn watched_digests(&self) -> Result<Vec<WatchedDigest>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT image, platform, digest, previous, checked_at, changed_at FROM digests
             ORDER BY image, platform",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(WatchedDigest {
                image: r.get(0)?,
                platform: r.get(1)?,
                digest: r.get(2)?,
                previous: r.get(3)?,
                checked_at: r.get(4)?,
                changed_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
