//! Which database the server keeps its state in, as the operator names
//! it: `sqlite://PATH` or `postgres://…` (`postgresql://…`).

use std::path::PathBuf;

/// Where state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file: `None` is `state.sqlite3` under `--state-dir`.
    Sqlite(Option<PathBuf>),
    /// A PostgreSQL connection URL, shared by any number of replicas.
    Postgres(String),
}

impl Default for Database {
    fn default() -> Self {
        Database::Sqlite(None)
    }
}

impl Database {
    /// Reads a database URL; the error says what is accepted.
    pub fn parse(url: &str) -> Result<Database, String> {
        let url = url.trim();
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// needs a file: sqlite://PATH (or leave --database out for state.sqlite3 under --state-dir)".into());
            }
            return Ok(Database::Sqlite(Some(PathBuf::from(path))));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (rest, _) = super::postgres::split_root_cert(url);
            rest.parse::<postgres::Config>().map_err(|e| {
                format!(
                    "{} is not a PostgreSQL URL this version reads: {e}",
                    super::postgres::redacted(url)
                )
            })?;
            return Ok(Database::Postgres(url.to_string()));
        }
        Err(format!(
            "unknown database {:?}: use sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE",
            super::postgres::redacted(url)
                .chars()
                .take(80)
                .collect::<String>()
        ))
    }

    /// The database as a message may name it: without its password.
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(None) => "SQLite under --state-dir".into(),
            Database::Sqlite(Some(p)) => format!("SQLite {}", p.display()),
            Database::Postgres(url) => super::postgres::redacted(url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Database;

    #[test]
    fn urls_are_read_and_a_wrong_one_says_what_is_accepted() {
        assert_eq!(
            Database::parse("sqlite:///var/lib/autodep/state.db").unwrap(),
            Database::Sqlite(Some("/var/lib/autodep/state.db".into()))
        );
        assert!(matches!(
            Database::parse("postgresql://u:p@db:5432/autodep").unwrap(),
            Database::Postgres(_)
        ));
        let err = Database::parse("mysql://u:secret@db/x").unwrap_err();
        assert!(
            err.contains("postgres://") && !err.contains("secret"),
            "{err}"
        );
        assert!(Database::parse("sqlite://").is_err());
        assert!(
            Database::parse("postgres://u@db/x?sslmode=require&sslrootcert=/etc/ca.pem").is_ok()
        );
        assert_eq!(
            Database::parse("postgres://u:secret@db/x")
                .unwrap()
                .describe(),
            "postgres://u:***@db/x"
        );
    }
}
