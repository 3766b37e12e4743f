//! The build context: walks a context directory, applies `.dockerignore`, refuses what must not
//! leave it, and packs the rest into a deterministic tar whose hash names the image.
//!
//! Pure file-system work, no engine. Deterministic means: entries sorted by name, mtimes, uids
//! and gids zeroed, no user or group names, file modes kept. So the same tree gives the same bytes
//! (and hash) on any machine and across restarts; touching a file's mtime changes nothing.
//!
//! Refused (the error names the path): a symlink whose target lies outside the context (absolute
//! targets included), anything that is not a regular file, directory or symlink (sockets, fifos,
//! devices), a non-UTF-8 name, a Dockerfile outside the context. Ignored entries are never looked
//! at, so `.dockerignore` can leave such things out.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ignore::Matcher;
use super::BuildError;
use crate::model::BuildSpec;

/// Characters of the hex sha256 kept in the tag (64 bits).
const HASH_LEN: usize = 16;

/// Bumped when the tar layout or the hash input changes, so old tags never match new contexts.
const HASH_VERSION: &[u8] = b"beast-build/v1";

/// A packed build context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The tar the engine's build API takes.
    pub tar: Vec<u8>,
    /// Hex sha256 (first 16 characters) of the tar, the Dockerfile path and the build args.
    pub hash: String,
    /// The Dockerfile path relative to the context, cleaned, `/`-separated.
    pub dockerfile: String,
}

/// `beast-build/<challenge>:<hash>`: the tag of the image built from a context.
pub fn image_tag(challenge: &str, hash: &str) -> String {
    format!("{}{hash}", tag_prefix(challenge))
}

/// `beast-build/<challenge>:`, the prefix every built tag of a challenge starts with.
pub fn tag_prefix(challenge: &str) -> String {
    format!("beast-build/{challenge}:")
}

/// Walks, filters and packs `spec.context`.
pub fn prepare(spec: &BuildSpec) -> Result<Context, BuildError> {
    let root = context_root(&spec.context)?;
    let dockerfile = dockerfile_path(&root, &spec.dockerfile)?;
    let mut matcher = read_dockerignore(&root)?;
    matcher.keep(&dockerfile);
    matcher.keep(".dockerignore");
    let mut tar = tar::Builder::new(Vec::new());
    walk(&root, &root, "", &matcher, &mut tar)?;
    let tar = tar.into_inner().map_err(|e| io_error(&root, e))?;
    let hash = hash_of(&tar, &dockerfile, &spec.args);
    Ok(Context {
        tar,
        hash,
        dockerfile,
    })
}

/// The canonical context directory.
fn context_root(context: &Path) -> Result<PathBuf, BuildError> {
    let root = context.canonicalize().map_err(|e| io_error(context, e))?;
    if !root.is_dir() {
        return Err(refused(context, "the build context is not a directory"));
    }
    Ok(root)
}

/// Checks that the Dockerfile is a regular file inside the context; returns its cleaned path.
fn dockerfile_path(root: &Path, dockerfile: &str) -> Result<String, BuildError> {
    let path = Path::new(dockerfile);
    let cleaned = super::ignore::clean(dockerfile);
    let lexical_escape = path.is_absolute() || cleaned == ".." || cleaned.starts_with("../");
    if lexical_escape {
        return Err(refused(
            &root.join(path),
            "the Dockerfile must be inside the build context",
        ));
    }
    let full = root.join(&cleaned);
    let real = full.canonicalize().map_err(|e| io_error(&full, e))?;
    if !real.starts_with(root) {
        return Err(refused(
            &full,
            "the Dockerfile leads (through a symlink) outside the build context",
        ));
    }
    if !real.is_file() {
        return Err(refused(&full, "the Dockerfile is not a regular file"));
    }
    Ok(cleaned)
}

pub(super) fn read_dockerignore(root: &Path) -> Result<Matcher, BuildError> {
    let path = root.join(".dockerignore");
    let text = match std::fs::read(&path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Matcher::default()),
        Err(e) => return Err(io_error(&path, e)),
    };
    Matcher::parse(&text).map_err(|e| BuildError::Dockerignore {
        path,
        line: e.line,
        message: e.message,
    })
}

/// Adds the entries of `dir` (`rel` relative to the root; `""` for the root) in name order.
fn walk(
    root: &Path,
    dir: &Path,
    rel: &str,
    matcher: &Matcher,
    tar: &mut tar::Builder<Vec<u8>>,
) -> Result<(), BuildError> {
    for name in sorted_names(dir)? {
        let path = dir.join(&name);
        let name = std::str::from_utf8(name.as_bytes())
            .map_err(|_| refused(&path, "the file name is not UTF-8"))?;
        let rel = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io_error(&path, e))?;
        let kind = meta.file_type();
        if matcher.excludes(&rel) {
            if kind.is_dir() && matcher.may_include_below(&rel) {
                walk(root, &path, &rel, matcher, tar)?;
            }
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if kind.is_dir() {
            append_dir(tar, &path, &rel, mode)?;
            walk(root, &path, &rel, matcher, tar)?;
        } else if kind.is_file() {
            append_file(tar, &path, &rel, mode)?;
        } else if kind.is_symlink() {
            let target = symlink_target(root, &path, &rel)?;
            append_symlink(tar, &path, &rel, &target)?;
        } else {
            return Err(refused(
                &path,
                "not a regular file, directory or symlink (sockets, fifos and devices cannot be sent)",
            ));
        }
    }
    Ok(())
}

fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>, BuildError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        names.push(entry.map_err(|e| io_error(dir, e))?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// A header with nothing machine- or time-dependent in it.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn append_dir(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &Path,
    rel: &str,
    mode: u32,
) -> Result<(), BuildError> {
    let mut header = header(tar::EntryType::Directory, mode, 0);
    tar.append_data(&mut header, format!("{rel}/"), std::io::empty())
        .map_err(|e| io_error(path, e))
}

fn append_file(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &Path,
    rel: &str,
    mode: u32,
) -> Result<(), BuildError> {
    // Read whole: the size in the header is then the size of what is sent, even if the file
    // changes meanwhile.
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    let mut header = header(tar::EntryType::Regular, mode, bytes.len() as u64);
    tar.append_data(&mut header, rel, bytes.as_slice())
        .map_err(|e| io_error(path, e))
}

fn append_symlink(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &Path,
    rel: &str,
    target: &Path,
) -> Result<(), BuildError> {
    let mut header = header(tar::EntryType::Symlink, 0o777, 0);
    tar.append_link(&mut header, rel, target)
        .map_err(|e| io_error(path, e))
}

/// The target of the symlink at `path`, refused when it leads outside the context: lexically
/// (from the link's folder) or, when it exists, after resolving every link on the way.
fn symlink_target(root: &Path, path: &Path, rel: &str) -> Result<PathBuf, BuildError> {
    let target = std::fs::read_link(path).map_err(|e| io_error(path, e))?;
    let escapes = || {
        refused(
            path,
            &format!(
                "the symlink points outside the build context (to {})",
                target.display()
            ),
        )
    };
    if target.is_absolute() {
        return Err(escapes());
    }
    let mut depth: Vec<&str> = rel.split('/').collect();
    depth.pop();
    let mut depth = depth.len();
    for component in target.components() {
        match component {
            Component::ParentDir if depth == 0 => return Err(escapes()),
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    if let Ok(real) = path.canonicalize() {
        if !real.starts_with(root) {
            return Err(escapes());
        }
    }
    Ok(target)
}

/// sha256 over a version tag, the tar, the Dockerfile path and the sorted args, each length-
/// prefixed so no two inputs run together.
fn hash_of(
    tar: &[u8],
    dockerfile: &str,
    args: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(HASH_VERSION);
    field(tar);
    field(dockerfile.as_bytes());
    for (key, value) in args {
        field(key.as_bytes());
        field(value.as_bytes());
    }
    let mut hex = hex::encode(hasher.finalize());
    hex.truncate(HASH_LEN);
    hex
}

fn io_error(path: &Path, source: std::io::Error) -> BuildError {
    BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn refused(path: &Path, reason: &str) -> BuildError {
    BuildError::Refused {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::io::Read;

    use super::*;

    fn spec(dir: &Path) -> BuildSpec {
        BuildSpec {
            context: dir.to_path_buf(),
            dockerfile: "Dockerfile".to_string(),
            args: BTreeMap::new(),
        }
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("Dockerfile"), "FROM scratch\nCOPY . /app\n").unwrap();
        fs::write(dir.path().join("hello.txt"), "hello\n").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(
            dir.path().join("sub/run.sh"),
            fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        dir
    }

    /// (path, mode, mtime, uid, content) of every entry, in tar order.
    fn entries(tar: &[u8]) -> Vec<(String, u32, u64, u64, String)> {
        let mut archive = tar::Archive::new(tar);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            out.push((
                entry.path().unwrap().to_string_lossy().into_owned(),
                header.mode().unwrap(),
                header.mtime().unwrap(),
                header.uid().unwrap(),
                content,
            ));
        }
        out
    }

    fn names(tar: &[u8]) -> Vec<String> {
        entries(tar).into_iter().map(|e| e.0).collect()
    }

    #[test]
    fn the_tar_is_sorted_with_zeroed_times_and_kept_modes() {
        let dir = tree();
        let ctx = prepare(&spec(dir.path())).unwrap();
        let entries = entries(&ctx.tar);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["Dockerfile", "hello.txt", "sub/", "sub/run.sh"]);
        assert!(entries.iter().all(|e| e.2 == 0 && e.3 == 0));
        assert_eq!(entries[3].1, 0o750);
        assert_eq!(entries[1].4, "hello\n");
        assert_eq!(ctx.hash.len(), 16);
        assert_eq!(ctx.dockerfile, "Dockerfile");
    }

    #[test]
    fn the_same_tree_gives_the_same_hash() {
        let (a, b) = (tree(), tree());
        let (a, b) = (
            prepare(&spec(a.path())).unwrap(),
            prepare(&spec(b.path())).unwrap(),
        );
        assert_eq!(a.hash, b.hash);
        assert_eq!(a.tar, b.tar);
    }

    #[test]
    fn touching_a_file_keeps_the_hash() {
        let dir = tree();
        let before = prepare(&spec(dir.path())).unwrap().hash;
        let file = fs::File::options()
            .write(true)
            .open(dir.path().join("hello.txt"))
            .unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(7))
            .unwrap();
        assert_eq!(prepare(&spec(dir.path())).unwrap().hash, before);
    }

    #[test]
    fn a_changed_byte_arg_dockerfile_or_mode_changes_the_hash() {
        let dir = tree();
        let base = prepare(&spec(dir.path())).unwrap().hash;

        let mut with_arg = spec(dir.path());
        with_arg.args.insert("GREETING".into(), "hi".into());
        let arg = prepare(&with_arg).unwrap().hash;
        assert_ne!(arg, base);
        with_arg.args.insert("GREETING".into(), "ho".into());
        assert_ne!(prepare(&with_arg).unwrap().hash, arg);

        fs::copy(dir.path().join("Dockerfile"), dir.path().join("Other")).unwrap();
        let mut other = spec(dir.path());
        other.dockerfile = "Other".into();
        let other_hash = prepare(&other).unwrap().hash;
        assert_ne!(other_hash, base);

        fs::write(dir.path().join("hello.txt"), "hellO\n").unwrap();
        let byte = prepare(&spec(dir.path())).unwrap().hash;
        assert_ne!(byte, base);

        fs::set_permissions(
            dir.path().join("hello.txt"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        assert_ne!(prepare(&spec(dir.path())).unwrap().hash, byte);
    }

    #[test]
    fn dockerignored_files_are_left_out_and_do_not_change_the_hash() {
        let dir = tree();
        fs::write(
            dir.path().join(".dockerignore"),
            "# build junk\n*.log\nsub\n!sub/run.sh\n",
        )
        .unwrap();
        fs::write(dir.path().join("debug.log"), "1").unwrap();
        fs::write(dir.path().join("sub/other"), "x").unwrap();
        let ctx = prepare(&spec(dir.path())).unwrap();
        assert_eq!(
            names(&ctx.tar),
            [".dockerignore", "Dockerfile", "hello.txt", "sub/run.sh"]
        );
        fs::write(dir.path().join("debug.log"), "2").unwrap();
        assert_eq!(prepare(&spec(dir.path())).unwrap().hash, ctx.hash);
    }

    #[test]
    fn the_dockerfile_and_dockerignore_are_sent_even_when_ignored() {
        let dir = tree();
        fs::write(dir.path().join(".dockerignore"), "*\n").unwrap();
        let ctx = prepare(&spec(dir.path())).unwrap();
        assert_eq!(names(&ctx.tar), [".dockerignore", "Dockerfile"]);
    }

    #[test]
    fn a_symlink_escaping_the_context_is_refused() {
        let dir = tree();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("sub/out")).unwrap();
        let err = prepare(&spec(dir.path())).unwrap_err().to_string();
        assert!(err.contains("sub/out"), "{err}");
        assert!(err.contains("outside the build context"), "{err}");

        fs::remove_file(dir.path().join("sub/out")).unwrap();
        std::os::unix::fs::symlink("../../x", dir.path().join("sub/rel")).unwrap();
        assert!(prepare(&spec(dir.path())).is_err());

        // Through a link that itself stays inside: `here` is the context root, `here/..` is not.
        fs::remove_file(dir.path().join("sub/rel")).unwrap();
        std::os::unix::fs::symlink(".", dir.path().join("here")).unwrap();
        std::os::unix::fs::symlink("here/..", dir.path().join("up")).unwrap();
        let err = prepare(&spec(dir.path())).unwrap_err().to_string();
        assert!(err.contains("up"), "{err}");
    }

    #[test]
    fn symlinks_inside_the_context_are_sent_as_links() {
        let dir = tree();
        std::os::unix::fs::symlink("../hello.txt", dir.path().join("sub/hello")).unwrap();
        let ctx = prepare(&spec(dir.path())).unwrap();
        let mut archive = tar::Archive::new(ctx.tar.as_slice());
        let link = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().ends_with("sub/hello"))
            .unwrap();
        assert_eq!(link.header().entry_type(), tar::EntryType::Symlink);
        assert_eq!(
            link.link_name().unwrap().unwrap().to_string_lossy(),
            "../hello.txt"
        );
    }

    #[test]
    fn an_ignored_escaping_symlink_is_fine() {
        let dir = tree();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
        fs::write(dir.path().join(".dockerignore"), "passwd\n").unwrap();
        assert!(prepare(&spec(dir.path())).is_ok());
    }

    #[test]
    fn a_socket_is_refused() {
        let dir = tree();
        let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("s.sock")).unwrap();
        let err = prepare(&spec(dir.path())).unwrap_err().to_string();
        assert!(err.contains("s.sock"), "{err}");
    }

    #[test]
    fn a_dockerfile_outside_the_context_is_refused() {
        let dir = tree();
        let mut bad = spec(&dir.path().join("sub"));
        bad.dockerfile = "../Dockerfile".into();
        assert!(matches!(prepare(&bad), Err(BuildError::Refused { .. })));
        let mut abs = spec(dir.path());
        abs.dockerfile = dir.path().join("Dockerfile").to_string_lossy().into_owned();
        assert!(prepare(&abs).is_err());
        let mut missing = spec(dir.path());
        missing.dockerfile = "Nope".into();
        let err = prepare(&missing).unwrap_err().to_string();
        assert!(err.contains("Nope"), "{err}");
    }

    #[test]
    fn a_dockerfile_in_a_subfolder_is_cleaned() {
        let dir = tree();
        fs::write(dir.path().join("sub/Dockerfile.prod"), "FROM scratch\n").unwrap();
        let mut s = spec(dir.path());
        s.dockerfile = "./sub//Dockerfile.prod".into();
        assert_eq!(prepare(&s).unwrap().dockerfile, "sub/Dockerfile.prod");
    }

    #[test]
    fn tags_name_the_challenge_and_hash() {
        assert_eq!(image_tag("echo", "abc"), "beast-build/echo:abc");
    }
}
