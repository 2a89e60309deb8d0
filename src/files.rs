//! Files that only their owner may read, written so that a crash leaves either the old state
//! or the whole new file (temp name → fsync → rename → fsync of the directory), and readers
//! and writers that hash what passes through: backup-verify's backups and pg-partition's
//! archives.

use crate::digest::Sha256Hex;
use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `path` for writing (and reading back), owner-only (0600), failing if it exists.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new().write(true).read(true).create_new(true).mode(0o600).open(path)?;
    // The umask can only remove bits; make sure nothing else is set either.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// Makes renames and creations inside `dir` durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(format!("fsync directory '{}'", dir.display()), e))
}

/// The directory a file lives in ("." for a bare name).
pub fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Puts `data` in `dir/name`, owner-only, all or nothing: written to `.NAME.partial` (a
/// leftover of a killed run is replaced), fsynced, renamed over `name`, the directory fsynced.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<PathBuf> {
    let tmp = dir.join(format!(".{name}.partial"));
    let path = dir.join(name);
    let _ = std::fs::remove_file(&tmp);
    let written = create_private(&tmp)
        .and_then(|mut f| f.write_all(data).and_then(|_| f.sync_all()))
        .map_err(|e| Error::io(format!("write '{}'", tmp.display()), e))
        .and_then(|_| {
            std::fs::rename(&tmp, &path).map_err(|e| Error::io(format!("rename to '{}'", path.display()), e))
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    fsync_dir(dir)?;
    Ok(path)
}

/// Counts and hashes (sha256) what passes through to `inner`.
pub struct HashingWriter<W> {
    pub inner: W,
    pub sha: Sha256Hex,
    pub bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, sha: Sha256Hex::new(), bytes: 0 }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Counts and hashes (sha256) what is read from `inner`.
pub struct HashingReader<R> {
    pub inner: R,
    pub sha: Sha256Hex,
    pub bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader { inner, sha: Sha256Hex::new(), bytes: 0 }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pgferry-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn atomic_writes_are_private_and_replace_leftovers() {
        let d = scratch("atomic");
        std::fs::write(d.join(".m.json.partial"), "left by a killed run").unwrap();
        std::fs::write(d.join("m.json"), "old").unwrap();
        let p = write_atomic(&d, "m.json", b"new\n").unwrap();
        assert_eq!(p, d.join("m.json"));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new\n");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert!(!d.join(".m.json.partial").exists());
        // A directory that is not there: an error, and nothing left behind.
        let e = write_atomic(&d.join("missing"), "x", b"").unwrap_err();
        assert_eq!(e.exit_code(), 66, "{}", e.message());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn private_files_are_new_and_0600() {
        let d = scratch("private");
        let p = d.join("f");
        create_private(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(create_private(&p).unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn hashing_both_ways() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello").unwrap();
        let (data, sha, bytes) = (w.inner, w.sha.finish(), w.bytes);
        assert_eq!((data.as_slice(), bytes), (&b"hello"[..], 5));
        assert_eq!(sha, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        let mut r = HashingReader::new(&b"hello"[..]);
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        assert_eq!((r.sha.finish(), r.bytes), (sha, 5));
        assert_eq!(parent_dir(Path::new("x.db")), PathBuf::from("."));
        assert_eq!(parent_dir(Path::new("/a/x.db")), PathBuf::from("/a"));
    }
}
