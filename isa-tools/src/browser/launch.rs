//! How Chromium is started: sandboxed, and never as root.
//!
//! Chromium's sandbox refuses to run as root. A server running as root therefore starts
//! Chromium through a launcher script that drops to the unprivileged account [`UNPRIVILEGED`]
//! with `setpriv` (which `exec`s, so the process `headless_chrome` controls and kills is
//! Chromium itself). The launcher lives in a directory only root may write; the profile
//! directories beside it belong to the unprivileged account, a new one for every launch.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
};

use isa_core::{Error, Result};

/// The account Chromium runs as when the server runs as root.
pub(super) const UNPRIVILEGED: &str = "nobody";

/// The program `headless_chrome` starts, and the directory of the profiles Chromium writes,
/// kept for as long as the driver lives.
#[derive(Debug)]
pub(super) struct Launcher {
    dir: tempfile::TempDir,
    program: PathBuf,
    /// The account Chromium runs as, when the server runs as root.
    account: Option<(u32, u32)>,
    launches: AtomicU64,
}

impl Launcher {
    pub(super) fn new(chromium: &Path) -> Result<Launcher> {
        let dir = tempfile::Builder::new()
            .prefix("isa-chromium-")
            .tempdir()
            .map_err(|e| failed("a directory", e))?;
        let (program, account) = if running_as_root() {
            let (uid, gid) = account(UNPRIVILEGED)?;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .map_err(|e| failed("the launcher directory", e))?;
            let launcher = dir.path().join("chromium");
            let script = format!(
                "#!/bin/sh\nexec setpriv --reuid={uid} --regid={gid} --clear-groups -- '{}' \"$@\"\n",
                chromium.display().to_string().replace('\'', r"'\''")
            );
            std::fs::write(&launcher, script).map_err(|e| failed("the launcher", e))?;
            std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| failed("the launcher", e))?;
            (launcher, Some((uid, gid)))
        } else {
            (chromium.to_path_buf(), None)
        };
        Ok(Launcher {
            dir,
            program,
            account,
            launches: AtomicU64::new(0),
        })
    }

    /// What `headless_chrome` runs: Chromium, or the launcher that drops privileges first.
    pub(super) fn program(&self) -> &Path {
        &self.program
    }

    /// A new, empty profile directory for one launch, writable by the account Chromium runs
    /// as. Each launch has its own, so a Chromium that hangs on to its profile never stops
    /// the next from starting.
    pub(super) fn new_profile(&self) -> Result<PathBuf> {
        let n = self.launches.fetch_add(1, Ordering::Relaxed);
        let profile = self.dir.path().join(format!("profile-{n}"));
        std::fs::create_dir(&profile).map_err(|e| failed("the profile directory", e))?;
        if let Some((uid, gid)) = self.account {
            std::os::unix::fs::chown(&profile, Some(uid), Some(gid))
                .map_err(|e| failed("the profile directory", e))?;
        }
        Ok(profile)
    }
}

fn failed(what: &str, e: std::io::Error) -> Error {
    Error::Config(format!("preparing to start Chromium: {what}: {e}"))
}

/// Whether this process runs as root: `/proc/self` belongs to the process's effective user.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The user and group ids of `name`.
fn account(name: &str) -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let output = Command::new("id")
            .args([flag, name])
            .output()
            .map_err(|e| Error::Config(format!("looking up the account {name}: {e}")))?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                Error::Config(format!(
                    "the account {name:?}, which Chromium runs as when the server runs as root, does not exist"
                ))
            })
    };
    Ok((id("-u")?, id("-g")?))
}
