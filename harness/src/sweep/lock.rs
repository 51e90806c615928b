//! One writer per results directory: `<out>/.membench.lock`, held with `flock` for the life of a
//! sweep (or merge) and holding `pid host` of the holder for the error message.
//!
//! `flock` locks die with their process, so a lock file left by a killed sweep is stale by
//! construction and the next sweep simply takes it over (and says so). The descriptor is opened
//! close-on-exec, so child runs never inherit the lock. On network file systems without working
//! `flock`, run one sweep per directory (shards write to separate directories anyway).

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;

pub const LOCK_FILE: &str = ".membench.lock";

/// Held lock; released when dropped (or when the process dies).
pub struct DirLock {
    file: File,
}

impl DirLock {
    /// Takes the lock of `out` (which must exist), or says who holds it.
    pub fn acquire(out: &Path) -> Result<DirLock> {
        let path = out.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        let mut previous = String::new();
        let _ = file.read_to_string(&mut previous);
        let previous = previous.trim().to_string();
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let who = if previous.is_empty() {
                    "another membench process".to_string()
                } else {
                    format!("membench (pid host: {previous})")
                };
                bail!("{} is in use by {who}; wait for it to finish, or use another --out directory (lock: {})", out.display(), path.display());
            }
            return Err(err).with_context(|| format!("locking {}", path.display()));
        }
        if !previous.is_empty() {
            tracing::info!(
                "taking over the stale lock {} of a process that is gone ({previous})",
                path.display()
            );
            eprintln!(
                "membench: taking over the stale lock of a process that is gone ({previous})"
            );
        }
        let me = format!("{} {}\n", std::process::id(), crate::sys::host());
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(me.as_bytes())?;
        file.sync_data()?;
        Ok(DirLock { file })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Empty the file rather than delete it: deleting would let two later processes lock two
        // different inodes of the same name. An empty lock file means "free".
        let _ = self.file.set_len(0);
    }
}
