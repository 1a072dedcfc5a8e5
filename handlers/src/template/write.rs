//! Replacing a file so that a reader never sees half of it: a candidate file in the same
//! directory, written and synced, then renamed over the destination.
//!
//! * The candidate gets the destination's mode and owner (or the handler's `perms` and
//!   `owner`), so a `check` command sees it as the live file will be, and nothing is ever
//!   world-readable for a moment.
//! * [`Candidate::commit`] renames it into place and syncs the directory; dropping a candidate
//!   that was not committed deletes it (a failed check leaves nothing behind).
//! * A file that cannot be renamed over (`/etc/hosts` bind-mounted into a container answers
//!   `EBUSY`) is rewritten in place instead, which is the best such a file allows.
//! * A marked block ([`splice_block`]) replaces only the lines between `# BEGIN name` and
//!   `# END name`, leaving every other byte of the file as it was.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of a new file when the handler sets no `perms`.
const DEFAULT_MODE: u32 = 0o644;

/// Who should own the written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Ownership {
    /// Parses `user`, `user:group` or `:group` (names or numeric ids), looking the names up.
    pub fn parse(spec: &str) -> Result<Ownership, String> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let uid = match user {
            "" => None,
            u => Some(lookup_id(u, IdKind::User).ok_or_else(|| {
                format!("owner {spec:?}: no user {u:?} on this host; give a user name or uid")
            })?),
        };
        let gid = match group {
            None | Some("") => None,
            Some(g) => Some(lookup_id(g, IdKind::Group).ok_or_else(|| {
                format!("owner {spec:?}: no group {g:?} on this host; give a group name or gid")
            })?),
        };
        if uid.is_none() && gid.is_none() {
            return Err(format!(
                "owner {spec:?} names nobody: expected USER, USER:GROUP or :GROUP"
            ));
        }
        Ok(Ownership { uid, gid })
    }
}

#[derive(Clone, Copy)]
enum IdKind {
    User,
    Group,
}

/// A numeric id as given, or the id of the user or group with that name.
fn lookup_id(name: &str, kind: IdKind) -> Option<u32> {
    if let Ok(id) = name.parse::<u32>() {
        return Some(id);
    }
    let c_name = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: the *_r functions write only into `entry` and `buf` (whose length is given), and
    // `found` points at `entry` or is null afterwards.
    unsafe {
        match kind {
            IdKind::User => {
                let mut entry: libc::passwd = std::mem::zeroed();
                let mut found: *mut libc::passwd = std::ptr::null_mut();
                let rc = libc::getpwnam_r(
                    c_name.as_ptr(),
                    &mut entry,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut found,
                );
                (rc == 0 && !found.is_null()).then_some(entry.pw_uid)
            }
            IdKind::Group => {
                let mut entry: libc::group = std::mem::zeroed();
                let mut found: *mut libc::group = std::ptr::null_mut();
                let rc = libc::getgrnam_r(
                    c_name.as_ptr(),
                    &mut entry,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut found,
                );
                (rc == 0 && !found.is_null()).then_some(entry.gr_gid)
            }
        }
    }
}

/// A rendered file waiting in the destination's directory to replace it.
#[derive(Debug)]
pub struct Candidate {
    path: PathBuf,
    destination: PathBuf,
    committed: bool,
}

impl Candidate {
    /// Writes `content` to a new file next to `destination` with the mode and owner the live
    /// file will have: `perms`/`owner` when set, else the destination's own, else 0644 and the
    /// agent's user. Creates the destination's directory when it is missing.
    pub fn write(
        destination: &Path,
        content: &[u8],
        perms: Option<u32>,
        owner: Option<Ownership>,
    ) -> io::Result<Candidate> {
        let dir = parent(destination);
        fs::create_dir_all(&dir)?;
        let existing = fs::metadata(destination).ok();
        let mode = perms
            .or(existing.as_ref().map(|m| m.mode() & 0o7777))
            .unwrap_or(DEFAULT_MODE);
        let name = destination
            .file_name()
            .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
        let path = dir.join(format!(".{name}.rumor-{}", unique_suffix()));
        let candidate = Candidate {
            path,
            destination: destination.to_path_buf(),
            committed: false,
        };
        // 0600 until the content is in: the file is never readable by others before its mode
        // is set.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&candidate.path)?;
        file.write_all(content)?;
        let (uid, gid) = match (owner, &existing) {
            (Some(o), _) => (o.uid, o.gid),
            (None, Some(m)) => (Some(m.uid()), Some(m.gid())),
            (None, None) => (None, None),
        };
        if uid.is_some() || gid.is_some() {
            let current = file.metadata()?;
            if uid != Some(current.uid()) || gid != Some(current.gid()) {
                std::os::unix::fs::fchown(&file, uid, gid).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot give {} to uid {uid:?} gid {gid:?}: {e}", name),
                    )
                })?;
            }
        }
        // After chown, which clears set-id bits.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        Ok(candidate)
    }

    /// Where the candidate is, for a check command.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the destination with the candidate; with `backup`, the previous file is kept
    /// as `DESTINATION.bak` first.
    pub fn commit(mut self, backup: bool) -> io::Result<()> {
        if backup && self.destination.exists() {
            let bak = backup_path(&self.destination);
            fs::copy(&self.destination, &bak)?;
            File::open(&bak)?.sync_all()?;
        }
        match fs::rename(&self.path, &self.destination) {
            Ok(()) => {}
            // A bind-mounted file (Docker's /etc/hosts) cannot be renamed over: rewrite it.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                let content = fs::read(&self.path)?;
                let mut live = OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&self.destination)?;
                live.write_all(&content)?;
                live.sync_all()?;
                fs::remove_file(&self.path)?;
            }
            Err(e) => return Err(e),
        }
        self.committed = true;
        // The rename is durable once the directory is synced.
        if let Ok(dir) = File::open(parent(&self.destination)) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// `FILE.bak` next to `FILE`.
pub fn backup_path(destination: &Path) -> PathBuf {
    let mut name = destination.as_os_str().to_owned();
    name.push(".bak");
    PathBuf::from(name)
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The markers of block `name`: `# BEGIN name` and `# END name`.
pub fn markers(name: &str) -> (String, String) {
    (format!("# BEGIN {name}"), format!("# END {name}"))
}

/// `existing` with the block `name` holding `block` (which should end with a newline): the
/// lines between the markers are replaced and every other byte kept; without the markers the
/// block is appended (after a newline if the file does not end with one). A begin marker
/// without its end marker is an error: replacing "to the end of the file" could delete what
/// the user wrote.
pub fn splice_block(existing: &str, name: &str, block: &str) -> Result<String, String> {
    let (begin, end) = markers(name);
    let mut block = block.to_string();
    if !block.is_empty() && !block.ends_with('\n') {
        block.push('\n');
    }
    let framed = format!("{begin}\n{block}{end}\n");
    let Some(start) = find_line(existing, &begin, 0) else {
        let mut out = existing.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&framed);
        return Ok(out);
    };
    let Some(stop) = find_line(existing, &end, start) else {
        return Err(format!(
            "the file has a {begin:?} line but no {end:?} line after it; add the end marker \
             (or remove the begin marker) so that rumor knows where its block ends"
        ));
    };
    // Through the end marker's line break, if it has one.
    let after = existing[stop..]
        .find('\n')
        .map_or(existing.len(), |i| stop + i + 1);
    let mut out = String::with_capacity(existing.len() + block.len());
    out.push_str(&existing[..start]);
    out.push_str(&framed);
    if after == existing.len() && !existing.ends_with('\n') {
        // The end marker was the last line, without a newline: keep it that way.
        out.pop();
    }
    out.push_str(&existing[after..]);
    Ok(out)
}

/// The byte offset of the first line at or after `from` that is exactly `line` (ignoring
/// trailing spaces and `\r`).
fn find_line(text: &str, line: &str, from: usize) -> Option<usize> {
    let mut offset = 0;
    for l in text.split_inclusive('\n') {
        if offset >= from && l.trim_end() == line {
            return Some(offset);
        }
        offset += l.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_replaces_only_its_lines() {
        let before = "127.0.0.1 localhost\n# BEGIN rumor\n10.0.0.1 old\n# END rumor\n::1 ip6\n";
        let after = splice_block(before, "rumor", "10.0.0.2 new\n").unwrap();
        assert_eq!(
            after,
            "127.0.0.1 localhost\n# BEGIN rumor\n10.0.0.2 new\n# END rumor\n::1 ip6\n"
        );
        // Again: nothing changes.
        assert_eq!(
            splice_block(&after, "rumor", "10.0.0.2 new\n").unwrap(),
            after
        );
    }

    #[test]
    fn a_missing_block_is_appended_and_odd_endings_are_kept() {
        assert_eq!(
            splice_block("a", "rumor", "x").unwrap(),
            "a\n# BEGIN rumor\nx\n# END rumor\n"
        );
        assert_eq!(
            splice_block("", "rumor", "").unwrap(),
            "# BEGIN rumor\n# END rumor\n"
        );
        assert_eq!(
            splice_block("# BEGIN rumor\nold\n# END rumor", "rumor", "new\n").unwrap(),
            "# BEGIN rumor\nnew\n# END rumor"
        );
        let err = splice_block("# BEGIN rumor\nmine\n", "rumor", "x").unwrap_err();
        assert!(err.contains("no \"# END rumor\""), "{err}");
    }

    #[test]
    fn owners_are_names_or_ids() {
        assert_eq!(
            Ownership::parse("root:root").unwrap(),
            Ownership {
                uid: Some(0),
                gid: Some(0)
            }
        );
        assert_eq!(
            Ownership::parse(":0").unwrap(),
            Ownership {
                uid: None,
                gid: Some(0)
            }
        );
        let err = Ownership::parse("no-such-user-here").unwrap_err();
        assert!(err.contains("no user"), "{err}");
        assert!(Ownership::parse(":").is_err());
    }

    #[test]
    fn a_candidate_takes_the_live_files_mode_and_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("sub/app.conf");
        fs::create_dir_all(live.parent().unwrap()).unwrap();
        fs::write(&live, "old").unwrap();
        fs::set_permissions(&live, fs::Permissions::from_mode(0o640)).unwrap();
        let candidate = Candidate::write(&live, b"new", None, None).unwrap();
        let mode = fs::metadata(candidate.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o640);
        candidate.commit(true).unwrap();
        assert_eq!(fs::read_to_string(&live).unwrap(), "new");
        assert_eq!(fs::read_to_string(backup_path(&live)).unwrap(), "old");
        assert_eq!(fs::metadata(&live).unwrap().mode() & 0o777, 0o640);

        // A dropped candidate leaves nothing behind; perms win over the live file's mode.
        let candidate = Candidate::write(&live, b"newer", Some(0o600), None).unwrap();
        let path = candidate.path().to_path_buf();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        drop(candidate);
        assert!(!path.exists());
        assert_eq!(fs::read_to_string(&live).unwrap(), "new");

        // A new file in a new directory.
        let fresh = dir.path().join("made/here.txt");
        Candidate::write(&fresh, b"x", None, None)
            .unwrap()
            .commit(false)
            .unwrap();
        assert_eq!(fs::metadata(&fresh).unwrap().mode() & 0o777, 0o644);
    }
}
