//! Size and sha256 of the attachment files the info namespace lists, memoised per file by what
//! its metadata says of its content (length, modification and change times, inode), so that a
//! listing reads a file again only after it changed. The memo is process-wide: it describes the
//! file system, which is too.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

/// What a player can check a download against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Bytes.
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// What must be unchanged for a memoised digest to still describe the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    /// (inode, ctime in ns): a write that keeps the length and mtime still moves the ctime, and
    /// a file replaced by a rename has another inode.
    #[cfg(unix)]
    identity: (u64, i64),
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            identity: (
                meta.ino(),
                meta.ctime()
                    .saturating_mul(1_000_000_000)
                    .saturating_add(meta.ctime_nsec()),
            ),
        }
    }
}

static MEMO: LazyLock<Mutex<HashMap<PathBuf, (Stamp, Digest)>>> = LazyLock::new(Default::default);

/// Most files remembered; beyond that the memo starts afresh (attachments are few).
const MAX_ENTRIES: usize = 10_000;

/// The digest of the regular file at `path` (already resolved), read only if it changed since
/// it was last digested. Blocking: call it off the async workers.
pub fn digest(path: &Path) -> io::Result<Digest> {
    let before = Stamp::of(&std::fs::metadata(path)?);
    if let Some((stamp, digest)) = memo().get(path) {
        if *stamp == before {
            return Ok(digest.clone());
        }
    }
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let size = io::copy(&mut file, &mut hasher)?;
    let digest = Digest {
        size,
        sha256: hex::encode(hasher.finalize()),
    };
    // Remembered only if the file did not change while it was read.
    if Stamp::of(&file.metadata()?) == before {
        let mut memo = memo();
        if memo.len() >= MAX_ENTRIES {
            memo.clear();
        }
        memo.insert(path.to_path_buf(), (before, digest.clone()));
    }
    Ok(digest)
}

fn memo() -> std::sync::MutexGuard<'static, HashMap<PathBuf, (Stamp, Digest)>> {
    MEMO.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_follow_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "abc").unwrap();
        let d = digest(&path).unwrap();
        assert_eq!(d.size, 3);
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(digest(&path).unwrap(), d, "memoised");
        // Same length, new content: the times move, so the memo is not used. (The mtime is set
        // explicitly: two writes within one tick of the kernel's coarse clock share their times.)
        std::fs::write(&path, "abd").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000))
            .unwrap();
        let changed = digest(&path).unwrap();
        assert_eq!(changed.size, 3);
        assert_ne!(changed.sha256, d.sha256);
        std::fs::remove_file(&path).unwrap();
        assert!(digest(&path).is_err());
    }
}
