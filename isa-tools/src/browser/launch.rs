//! How Chromium is started: sandboxed, and never as root.
//!
//! Chromium's sandbox refuses to run as root. A server running as root therefore starts
//! Chromium through a launcher script that drops to the unprivileged account [`UNPRIVILEGED`]
//! with `setpriv` (which `exec`s, so the process `headless_chrome` controls and kills is
//! Chromium itself). The launcher lives in a directory only root may write; the profile
//! directory beside it belongs to the unprivileged account.

use std::{
    collections::HashMap,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
};

use isa_core::{Error, Result};

/// The account Chromium runs as when the server runs as root.
pub(super) const UNPRIVILEGED: &str = "nobody";

/// The program `headless_chrome` starts and the profile directory Chromium writes, kept for
/// as long as the driver lives.
#[derive(Debug)]
pub(super) struct Launcher {
    dir: tempfile::TempDir,
    program: PathBuf,
}

impl Launcher {
    pub(super) fn new(chromium: &Path) -> Result<Launcher> {
        let failed = |what: &str, e: std::io::Error| {
            Error::Config(format!("preparing to start Chromium: {what}: {e}"))
        };
        let dir = tempfile::Builder::new()
            .prefix("isa-chromium-")
            .tempdir()
            .map_err(|e| failed("a directory", e))?;
        let profile = dir.path().join("profile");
        std::fs::create_dir(&profile).map_err(|e| failed("the profile directory", e))?;
        let program = if running_as_root() {
            let (uid, gid) = account(UNPRIVILEGED)?;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .map_err(|e| failed("the launcher directory", e))?;
            std::os::unix::fs::chown(&profile, Some(uid), Some(gid))
                .map_err(|e| failed("the profile directory", e))?;
            let launcher = dir.path().join("chromium");
            let script = format!(
                "#!/bin/sh\nexec setpriv --reuid={uid} --regid={gid} --clear-groups -- '{}' \"$@\"\n",
                chromium.display().to_string().replace('\'', r"'\''")
            );
            std::fs::write(&launcher, script).map_err(|e| failed("the launcher", e))?;
            std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| failed("the launcher", e))?;
            launcher
        } else {
            chromium.to_path_buf()
        };
        Ok(Launcher { dir, program })
    }

    /// What `headless_chrome` runs: Chromium, or the launcher that drops privileges first.
    pub(super) fn program(&self) -> &Path {
        &self.program
    }

    /// Chromium's profile directory, writable by the account it runs as.
    pub(super) fn profile(&self) -> PathBuf {
        self.dir.path().join("profile")
    }

    /// Chromium's environment additions: its home is the profile directory, since the
    /// unprivileged account has none.
    pub(super) fn environment(&self) -> HashMap<String, String> {
        HashMap::from([("HOME".to_owned(), self.profile().display().to_string())])
    }
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
