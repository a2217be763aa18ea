//! Validated identifiers: user ids and the object keys of user files.

use std::fmt;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Longest accepted user id, in bytes. Long enough for UUIDs and Auth0 subjects (`auth0|…`).
pub const MAX_USER_ID_LEN: usize = 128;

/// Longest file name kept in an object key, in bytes (S3 allows 1024 bytes for the whole key).
pub const MAX_FILE_NAME_LEN: usize = 120;

/// A user id that is safe to use as one segment of a storage key or URL path.
///
/// Rejects the empty string, `/`, `\`, `..`, control characters and ids longer than
/// [`MAX_USER_ID_LEN`] bytes, so `users/{user_id}/...` can never escape its prefix.
///
/// ```
/// use isa_core::UserId;
/// assert!(UserId::new("auth0|64f1c2").is_ok());
/// assert!(UserId::new("../admin").is_err());
/// assert!(UserId::new("a/b").is_err());
/// assert!(UserId::new("").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// Validates and wraps a user id.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        if id.is_empty() {
            return Err(Error::invalid("user id is empty"));
        }
        if id.len() > MAX_USER_ID_LEN {
            return Err(Error::invalid(format!(
                "user id is longer than {MAX_USER_ID_LEN} bytes"
            )));
        }
        if id.contains(['/', '\\']) || id.contains("..") {
            return Err(Error::invalid("user id contains a path separator or '..'"));
        }
        if id.chars().any(char::is_control) {
            return Err(Error::invalid("user id contains a control character"));
        }
        Ok(UserId(id))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        UserId::new(raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Makes a user-supplied file name safe to be the last segment of an object key.
///
/// Keeps letters, digits, `.`, `-` and `_`; replaces every other character (separators, control
/// characters, spaces, NUL) with `_`; strips leading dots so `..` and hidden names cannot appear;
/// truncates to [`MAX_FILE_NAME_LEN`] bytes keeping the extension; never returns an empty string.
///
/// ```
/// use isa_core::sanitize_file_name;
/// assert_eq!(sanitize_file_name("../../etc/passwd"), "_.._etc_passwd");
/// assert_eq!(sanitize_file_name("a\u{0}b.txt"), "a_b.txt");
/// assert_eq!(sanitize_file_name(""), "file");
/// ```
pub fn sanitize_file_name(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = mapped.trim_start_matches('.');
    let mut safe = if trimmed.is_empty() {
        String::from("file")
    } else {
        trimmed.to_string()
    };
    if safe.len() > MAX_FILE_NAME_LEN {
        let ext = safe
            .rfind('.')
            .map(|i| safe[i..].to_string())
            .filter(|e| e.len() <= 16)
            .unwrap_or_default();
        safe.truncate(MAX_FILE_NAME_LEN - ext.len());
        safe.push_str(&ext);
    }
    safe
}

/// Whether a key's last segment is what [`FileKey::new`] produces: non-empty, no leading dot,
/// only letters, digits, `.`, `-` and `_`, and not longer than an id, a dash and a sanitised name.
fn is_safe_name_segment(segment: &str) -> bool {
    !segment.is_empty()
        && !segment.starts_with('.')
        && segment.len() <= 64 + 1 + MAX_FILE_NAME_LEN
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The object key of a user file: `users/{user_id}/files/{YYYY}/{MM}/{unique id}-{sanitised name}`,
/// or of a direct upload not yet checked: `uploads/{user_id}/{YYYY}/{MM}/{unique id}-{sanitised name}`.
///
/// Built only from a validated [`UserId`] and a sanitised name, so it cannot leave the user's
/// prefix. [`FileKey::parse`] checks a key read back from storage or from a URL. Uploads are kept
/// apart from files so that what a client may still write is never what anyone downloads, and
/// so that one listing of [`FileKey::UPLOADS_PREFIX`] finds every upload left behind.
///
/// ```
/// use chrono::NaiveDate;
/// use isa_core::{FileKey, UserId};
/// let user = UserId::new("u1").unwrap();
/// let date = NaiveDate::from_ymd_opt(2026, 3, 9).unwrap();
/// let key = FileKey::new(&user, date, "0192abcd", "report.pdf");
/// assert_eq!(key.as_str(), "users/u1/files/2026/03/0192abcd-report.pdf");
/// assert_eq!(FileKey::parse(key.as_str()).unwrap().user_id(), "u1");
/// let staged = FileKey::upload(&user, date, "0192abcd", "report.pdf");
/// assert_eq!(staged.as_str(), "uploads/u1/2026/03/0192abcd-report.pdf");
/// assert!(FileKey::parse(staged.as_str()).unwrap().is_upload());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FileKey {
    key: String,
    user_len: usize,
}

impl FileKey {
    /// Where the bytes of direct uploads wait until they are checked.
    pub const UPLOADS_PREFIX: &'static str = "uploads/";

    /// Builds the key for a new file stored on `date`. `unique_id` keeps only its first 64
    /// alphanumeric characters (a UUID's
    /// simple form, say); `name` is sanitised with [`sanitize_file_name`].
    pub fn new(user: &UserId, date: NaiveDate, unique_id: &str, name: &str) -> Self {
        Self::build(&Self::user_prefix(user), user, date, unique_id, name)
    }

    /// Builds the key a direct upload begun on `date` is written to, before it is checked.
    pub fn upload(user: &UserId, date: NaiveDate, unique_id: &str, name: &str) -> Self {
        let prefix = format!("{}{user}", Self::UPLOADS_PREFIX);
        Self::build(&prefix, user, date, unique_id, name)
    }

    fn build(prefix: &str, user: &UserId, date: NaiveDate, unique_id: &str, name: &str) -> Self {
        let unique: String = unique_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(64)
            .collect();
        let key = format!(
            "{prefix}/{:04}/{:02}/{}-{}",
            date.year(),
            date.month(),
            unique,
            sanitize_file_name(name)
        );
        FileKey {
            key,
            user_len: user.as_str().len(),
        }
    }

    /// The prefix under which all of a user's files live: `users/{user_id}/files`.
    pub fn user_prefix(user: &UserId) -> String {
        format!("users/{user}/files")
    }

    /// The prefix of one month of a user's files: `users/{user_id}/files/{YYYY}/{MM}/`.
    pub fn month_prefix(user: &UserId, year: i32, month: u32) -> String {
        format!("{}/{year:04}/{month:02}/", Self::user_prefix(user))
    }

    /// Parses and validates a key in one of the layouts above.
    pub fn parse(key: &str) -> Result<Self> {
        let bad = || Error::invalid(format!("not a user file key: {key:?}"));
        let parts: Vec<&str> = key.split('/').collect();
        let (user, year, month, name) = match parts.as_slice() {
            ["users", user, "files", year, month, name] => (user, year, month, name),
            ["uploads", user, year, month, name] => (user, year, month, name),
            _ => return Err(bad()),
        };
        let user = UserId::new(*user).map_err(|_| bad())?;
        let year_ok = year.len() == 4 && year.chars().all(|c| c.is_ascii_digit());
        let month_ok = matches!(month.parse::<u32>(), Ok(1..=12)) && month.len() == 2;
        if !year_ok || !month_ok || !is_safe_name_segment(name) {
            return Err(bad());
        }
        Ok(FileKey {
            key: key.to_string(),
            user_len: user.as_str().len(),
        })
    }

    /// Whether this is the key of a direct upload not yet checked.
    pub fn is_upload(&self) -> bool {
        self.key.starts_with(Self::UPLOADS_PREFIX)
    }

    /// The owner's id, as stored in the key.
    pub fn user_id(&self) -> &str {
        let start = self.key.find('/').map_or(0, |slash| slash + 1);
        &self.key[start..start + self.user_len]
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

impl TryFrom<String> for FileKey {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        FileKey::parse(&s)
    }
}

impl From<FileKey> for String {
    fn from(k: FileKey) -> String {
        k.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_rejects_escapes_and_bounds_length() {
        for bad in [
            "",
            "a/b",
            "a\\b",
            "..",
            "x..y",
            "tab\there",
            "nul\0",
            &"x".repeat(129),
        ] {
            assert!(UserId::new(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(UserId::new("x".repeat(128)).is_ok());
        assert!(UserId::new("550e8400-e29b-41d4-a716-446655440000").is_ok());
        let parsed: std::result::Result<UserId, _> = serde_json::from_str("\"../x\"");
        assert!(parsed.is_err());
    }

    #[test]
    fn file_names_cannot_break_the_layout() {
        let user = UserId::new("alice").unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        for name in [
            "../../etc/passwd",
            "a\0b",
            "..",
            "/",
            "x/../../y",
            "ünïcödé ñame.txt",
            &"long".repeat(100),
        ] {
            let key = FileKey::new(&user, date, "abc123", name);
            let parsed = FileKey::parse(key.as_str()).unwrap();
            assert_eq!(parsed.user_id(), "alice");
            assert!(
                key.as_str()
                    .starts_with("users/alice/files/2026/11/abc123-"),
                "{key}"
            );
            assert!(
                key.as_str().split('/').all(|segment| segment != ".."),
                "{key}"
            );
            assert_eq!(key.as_str().split('/').count(), 6, "{key}");
            assert!(key.as_str().len() < 250);
        }
    }

    #[test]
    fn parse_rejects_foreign_keys() {
        for bad in [
            "users/alice/files/2026/11",
            "users/../files/2026/11/x",
            "other/alice/files/2026/11/x",
            "users/alice/files/2026/13/x",
            "users/alice/files/2026/11/../x",
            "users/alice/files/2026/11/a b",
        ] {
            assert!(FileKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upload_keys_stay_apart_from_files() {
        let user = UserId::new("alice").unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        let staged = FileKey::upload(&user, date, "abc123", "../x.txt");
        assert_eq!(staged.as_str(), "uploads/alice/2026/11/abc123-_x.txt");
        let parsed = FileKey::parse(staged.as_str()).unwrap();
        assert!(parsed.is_upload());
        assert_eq!(parsed.user_id(), "alice");
        assert!(!FileKey::new(&user, date, "abc123", "x.txt").is_upload());
        for bad in [
            "uploads/alice/files/2026/11/x",
            "uploads/alice/2026/11",
            "uploads/../2026/11/x",
            "uploads/alice/2026/00/x",
        ] {
            assert!(FileKey::parse(bad).is_err(), "{bad}");
        }
    }
}
