//! Which media types users may store, and whether a file's leading bytes agree with its
//! declared type. A declared type is never trusted alone: a "PNG" must start like one, and a
//! text file must be UTF-8 without NUL bytes.

use isa_core::{Error, Result};

/// How many leading bytes [`check_media_type`] looks at.
pub const SNIFF_LEN: usize = 512;

/// Media types accepted for user files.
pub const ALLOWED_TYPES: &[&str] = &[
    "text/plain",
    "text/markdown",
    "text/csv",
    "text/html",
    "application/json",
    "application/pdf",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "audio/mpeg",
    "audio/wav",
    "video/mp4",
    "application/zip",
    "application/gzip",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
];

/// Types assumed from a name's extension when the uploader declares none (or only
/// `application/octet-stream`).
const BY_EXTENSION: &[(&str, &str)] = &[
    ("txt", "text/plain"),
    ("log", "text/plain"),
    ("md", "text/markdown"),
    ("csv", "text/csv"),
    ("html", "text/html"),
    ("htm", "text/html"),
    ("json", "application/json"),
    ("pdf", "application/pdf"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("mp3", "audio/mpeg"),
    ("wav", "audio/wav"),
    ("mp4", "video/mp4"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    (
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    (
        "pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
];

/// What the leading bytes say, for formats with a signature.
fn signature_type(head: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| head.starts_with(magic);
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if starts(b"%PDF-") {
        Some("application/pdf")
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if starts(b"\xff\xd8\xff") {
        Some("image/jpeg")
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some("image/gif")
    } else if starts(b"RIFF") && at(8, b"WEBP") {
        Some("image/webp")
    } else if starts(b"RIFF") && at(8, b"WAVE") {
        Some("audio/wav")
    } else if starts(b"ID3") || (head.len() >= 2 && head[0] == 0xff && head[1] & 0xe0 == 0xe0) {
        Some("audio/mpeg")
    } else if at(4, b"ftyp") {
        Some("video/mp4")
    } else if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") {
        Some("application/zip")
    } else if starts(b"\x1f\x8b") {
        Some("application/gzip")
    } else {
        None
    }
}

/// UTF-8 without NUL bytes (a character cut off at the end of `head` is fine).
fn looks_like_text(head: &[u8]) -> bool {
    if head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    }
}

fn is_text(media_type: &str) -> bool {
    media_type.starts_with("text/") || media_type == "application/json"
}

/// Formats that are ZIP archives inside.
fn is_zip_based(media_type: &str) -> bool {
    media_type == "application/zip" || media_type.starts_with("application/vnd.openxmlformats")
}

/// The media type to store a file under: the declared type (or the extension's, when none is
/// declared), provided it is allowed and the leading bytes `head` (the first [`SNIFF_LEN`] are
/// read) agree with it. Otherwise
/// [`Error::UnsupportedMediaType`], saying why.
///
/// ```
/// use isa_files::media::check_media_type;
/// assert_eq!(check_media_type(Some("image/png"), "a.png", b"\x89PNG\r\n\x1a\n...").unwrap(), "image/png");
/// assert_eq!(check_media_type(None, "notes.md", b"# Notes").unwrap(), "text/markdown");
/// assert!(check_media_type(Some("image/png"), "a.png", b"%PDF-1.7").is_err());
/// assert!(check_media_type(Some("application/x-msdownload"), "a.exe", b"MZ").is_err());
/// ```
pub fn check_media_type(declared: Option<&str>, name: &str, head: &[u8]) -> Result<String> {
    let head = &head[..head.len().min(SNIFF_LEN)];
    let declared = declared
        .map(|d| {
            d.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|d| !d.is_empty() && d != "application/octet-stream");
    let claimed = match declared {
        Some(d) => d,
        None => {
            let extension = name
                .rsplit_once('.')
                .map(|(_, e)| e.to_ascii_lowercase())
                .unwrap_or_default();
            match BY_EXTENSION.iter().find(|(e, _)| *e == extension) {
                Some((_, t)) => (*t).to_owned(),
                None => signature_type(head)
                    .map(str::to_owned)
                    .or_else(|| {
                        (!head.is_empty() && looks_like_text(head)).then(|| "text/plain".to_owned())
                    })
                    .ok_or_else(|| {
                        Error::UnsupportedMediaType(
                            "no type was declared and none could be recognised".into(),
                        )
                    })?,
            }
        }
    };
    if !ALLOWED_TYPES.contains(&claimed.as_str()) {
        return Err(Error::UnsupportedMediaType(format!(
            "{claimed} is not an accepted file type"
        )));
    }
    let sniffed = signature_type(head);
    let agrees = if is_text(&claimed) {
        sniffed.is_none() && looks_like_text(head)
    } else if is_zip_based(&claimed) {
        sniffed == Some("application/zip")
    } else {
        sniffed == Some(claimed.as_str())
    };
    if !agrees {
        return Err(Error::UnsupportedMediaType(format!(
            "the content is not {claimed}{}",
            sniffed
                .map(|s| format!(" (it looks like {s})"))
                .unwrap_or_default()
        )));
    }
    Ok(claimed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_must_agree_with_the_declared_type() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(
            check_media_type(Some("image/png"), "x", png).unwrap(),
            "image/png"
        );
        assert!(check_media_type(Some("text/plain"), "x.txt", png).is_err());
        assert!(check_media_type(Some("image/jpeg"), "x.jpg", png).is_err());
        assert!(check_media_type(Some("text/plain"), "x.txt", b"a\0b").is_err());
        assert!(check_media_type(Some("text/plain"), "x.txt", b"\xff\xfe\xfa").is_err());
        assert_eq!(
            check_media_type(Some("Text/Plain; charset=utf-8"), "x", "héllo".as_bytes()).unwrap(),
            "text/plain"
        );
        // A multi-byte character cut off at the end of the sniffed bytes is still text.
        assert!(check_media_type(Some("text/plain"), "x", &"é".as_bytes()[..1]).is_ok());
        assert_eq!(
            check_media_type(
                Some("application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
                "r.docx",
                b"PK\x03\x04rest"
            )
            .unwrap(),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        );
        assert!(check_media_type(Some("application/pdf"), "x.pdf", b"").is_err());
        assert!(check_media_type(Some("text/plain"), "x.txt", b"").is_ok());
    }

    #[test]
    fn undeclared_types_come_from_the_extension_or_the_bytes() {
        assert_eq!(
            check_media_type(
                Some("application/octet-stream"),
                "photo.JPG",
                b"\xff\xd8\xff\xe0"
            )
            .unwrap(),
            "image/jpeg"
        );
        assert_eq!(
            check_media_type(None, "noextension", b"%PDF-1.4").unwrap(),
            "application/pdf"
        );
        assert_eq!(
            check_media_type(None, "README", b"hello").unwrap(),
            "text/plain"
        );
        assert!(check_media_type(None, "a.exe", b"MZ\x90\0").is_err());
        assert!(check_media_type(None, "photo.png", b"not a png").is_err());
    }
}
