//! The head of an upload as the user service reads it: the multipart body parsed with the
//! service's limits, the file part's name and declared type, its first bytes sniffed, and the
//! storage key made from its name. Never a panic; a key made from any name parses back.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use chrono::NaiveDate;
use isa_core::{FileKey, UserId};
use isa_files::media::check_media_type;
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;

const BOUNDARY: &str = "fuzz-boundary";

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    })
}

fuzz_target!(|body: &[u8]| {
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(61)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let limits = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(1 << 20)
            .per_field(1 << 20),
    );
    let user = UserId::new("fuzzer").unwrap();
    let date = NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
    runtime().block_on(async {
        let mut multipart =
            multer::Multipart::with_constraints(futures::stream::iter(chunks), BOUNDARY, limits);
        while let Ok(Some(mut field)) = multipart.next_field().await {
            let name = field.file_name().unwrap_or("file").to_owned();
            let declared = field.content_type().map(|m| m.essence_str().to_owned());
            let mut head = Vec::new();
            while head.len() < 4096 {
                match field.chunk().await {
                    Ok(Some(chunk)) => head.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            if let Ok(kind) = check_media_type(declared.as_deref(), &name, &head) {
                assert!(!kind.is_empty());
            }
            let key = FileKey::new(&user, date, "0123456789abcdef", &name);
            assert!(FileKey::parse(key.as_str()).is_ok(), "{}", key.as_str());
            let staged = FileKey::upload(&user, date, "0123456789abcdef", &name);
            assert!(
                FileKey::parse(staged.as_str()).is_ok_and(|k| k.is_upload()),
                "{}",
                staged.as_str()
            );
        }
    });
});
