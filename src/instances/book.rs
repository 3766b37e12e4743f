//! The durable record of per-team instances and of every dynamic flag ever issued: one JSON
//! file under `--state-dir`, written atomically (fsync'd) before the API answers. Pure data and
//! its file; the rules (limits, TTL) live in [`super`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable::write_atomically;

/// One live instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// 8 hex characters, unique among all instances ever issued.
    pub id: String,
    pub challenge: String,
    pub team: String,
    /// Seconds since the epoch.
    pub created_at: i64,
    pub expires_at: i64,
    pub renewals: u32,
    /// The instance's dynamic flag, if the challenge has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
}

/// A dynamic flag as issued, kept after its instance is gone (flag-sharing detection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Issued {
    pub flag: String,
    pub challenge: String,
    pub team: String,
    pub instance: String,
    pub issued_at: i64,
}

/// Everything the file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    /// Live instances by id.
    #[serde(default)]
    pub live: BTreeMap<String, Record>,
    /// Every dynamic flag issued, by flag.
    #[serde(default)]
    pub flags: BTreeMap<String, Issued>,
    /// Every id ever issued, so an id is never reused (a container of an expired instance
    /// must never be mistaken for a new one's).
    #[serde(default)]
    pub ids: std::collections::BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error("reading {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file} is not a valid instance book: {source}")]
    Parse {
        file: String,
        source: serde_json::Error,
    },
    #[error("writing {file}: {source}")]
    Write {
        file: String,
        source: std::io::Error,
    },
}

/// Where the book lives.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("instances.json")
}

impl Book {
    /// Reads the book; a missing file is an empty book.
    pub fn load(file: &Path) -> Result<Book, BookError> {
        let text = match std::fs::read(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Book::default()),
            Err(source) => {
                return Err(BookError::Read {
                    file: file.display().to_string(),
                    source,
                })
            }
        };
        serde_json::from_slice(&text).map_err(|source| BookError::Parse {
            file: file.display().to_string(),
            source,
        })
    }

    /// Writes the book durably.
    pub fn save(&self, file: &Path) -> Result<(), BookError> {
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        write_atomically(file, &bytes).map_err(|source| BookError::Write {
            file: file.display().to_string(),
            source,
        })
    }

    /// Live instances of `challenge` (and of `team`, when given), oldest first.
    pub fn of(&self, challenge: Option<&str>, team: Option<&str>) -> Vec<&Record> {
        let mut out: Vec<&Record> = self
            .live
            .values()
            .filter(|r| challenge.is_none_or(|c| r.challenge == c))
            .filter(|r| team.is_none_or(|t| r.team == t))
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_book_loads_back_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = path_in(dir.path());
        assert_eq!(Book::load(&file).unwrap(), Book::default());
        let mut book = Book::default();
        book.live.insert(
            "ab".into(),
            Record {
                id: "ab".into(),
                challenge: "web".into(),
                team: "t1".into(),
                created_at: 1,
                expires_at: 2,
                renewals: 0,
                flag: Some("flag{x}".into()),
            },
        );
        book.ids.insert("ab".into());
        book.save(&file).unwrap();
        assert_eq!(Book::load(&file).unwrap(), book);
        std::fs::write(&file, "{not json").unwrap();
        assert!(matches!(Book::load(&file), Err(BookError::Parse { .. })));
    }
}
