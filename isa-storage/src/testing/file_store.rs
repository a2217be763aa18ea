//! Behaviour every [`FileStore`] must have.

use std::time::Duration;

use bytes::Bytes;
use chrono::NaiveDate;
use futures::StreamExt;
use isa_core::{
    ByteStream, Error, FileKey, FileStore, PresignMethod, PutOptions, UserId, byte_stream,
};

use super::fresh_user;

fn chunked(total: usize, chunk: usize) -> (ByteStream, Vec<u8>) {
    let data: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
    let chunks: Vec<isa_core::Result<Bytes>> = data
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    (Box::pin(futures::stream::iter(chunks)), data)
}

/// A fresh key of `user` for a file `name` uploaded in `month` of 2026.
pub fn key_in_month(user: &UserId, month: u32, name: &str) -> FileKey {
    FileKey::new(
        user,
        NaiveDate::from_ymd_opt(2026, month, 3).unwrap(),
        &uuid::Uuid::now_v7().simple().to_string(),
        name,
    )
}

fn tamper(url: &str, param: &str) -> String {
    let at = url.find(&format!("{param}=")).unwrap() + param.len() + 1;
    let mut bytes = url.as_bytes().to_vec();
    bytes[at + 3] = if bytes[at + 3] == b'a' { b'b' } else { b'a' };
    String::from_utf8(bytes).unwrap()
}

/// Objects round-trip with their type; listings page by month in key order and only under the
/// key layout; deletes are idempotent; a write past its limit is refused and leaves nothing,
/// in one request and in a multipart upload; presigned GETs work with a plain HTTP client
/// until they expire and not with a changed signature; presigned PUTs upload to upload keys
/// only, exactly the size they were signed for; lifetimes past
/// seven days are refused. `signature_param` names the query parameter holding the signature
/// in the store's presigned URLs; the URLs must be reachable from this process.
pub async fn file_store_conforms(name: &str, store: &dyn FileStore, signature_param: &str) {
    let user = fresh_user("conformance");
    let http = reqwest::Client::new();

    // Round trip with content type.
    let hello = key_in_month(&user, 11, "hello.txt");
    let opts = PutOptions {
        content_type: Some("text/plain".into()),
        max_size: None,
    };
    let info = store
        .put(&hello, byte_stream("hello, files"), opts)
        .await
        .unwrap();
    assert_eq!(info.size, 12, "{name}");
    assert_eq!(info.content_type.as_deref(), Some("text/plain"), "{name}");
    assert_eq!(store.head(&hello).await.unwrap().size, 12, "{name}");
    assert_eq!(
        store.get_bytes(&hello).await.unwrap(),
        "hello, files",
        "{name}"
    );

    // Listing by month, in pages.
    for i in 0..4 {
        store
            .put(
                &key_in_month(&user, 11, &format!("n{i}.txt")),
                byte_stream("x"),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    store
        .put(
            &key_in_month(&user, 10, "october.txt"),
            byte_stream("x"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let november = FileKey::month_prefix(&user, 2026, 11);
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list(&november, after.as_deref(), 2).await.unwrap();
        assert!(page.objects.len() <= 2, "{name}");
        seen.extend(page.objects.iter().map(|o| o.key.as_str().to_owned()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{name}: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "{name}: pages come in key order"
    );
    assert_eq!(
        store
            .list(user.as_str(), None, 100)
            .await
            .unwrap()
            .objects
            .len(),
        0,
        "{name}: a bare user id is not a prefix of the layout"
    );
    assert_eq!(
        store
            .list(&FileKey::user_prefix(&user), None, 100)
            .await
            .unwrap()
            .objects
            .len(),
        6,
        "{name}"
    );

    // Delete: gone, and deleting again is fine.
    store.delete(&hello).await.unwrap();
    assert!(
        matches!(store.head(&hello).await, Err(Error::NotFound(_))),
        "{name}"
    );
    assert!(
        matches!(store.get(&hello).await, Err(Error::NotFound(_))),
        "{name}"
    );
    store.delete(&hello).await.unwrap();

    // Over the limit: refused, nothing left — in one request and in a multipart upload.
    for (total, limit) in [(2048, 1024u64), (12 << 20, 8 << 20)] {
        let big = key_in_month(&user, 11, "big.bin");
        let (body, _) = chunked(total, 256 * 1024);
        let refused = store
            .put(
                &big,
                body,
                PutOptions {
                    content_type: None,
                    max_size: Some(limit),
                },
            )
            .await;
        assert!(
            matches!(refused, Err(Error::TooLarge { limit: l }) if l == limit),
            "{name}: {refused:?}"
        );
        assert!(
            matches!(store.head(&big).await, Err(Error::NotFound(_))),
            "{name}: nothing left behind"
        );
    }

    // A multipart upload (12 MiB in 1 MiB chunks) reads back intact.
    let large = key_in_month(&user, 11, "large.bin");
    let (body, data) = chunked(12 << 20, 1 << 20);
    let info = store
        .put(&large, body, PutOptions::default())
        .await
        .unwrap();
    assert_eq!(info.size, 12 << 20, "{name}");
    let mut read = Vec::new();
    let mut stream = store.get(&large).await.unwrap();
    while let Some(chunk) = stream.next().await {
        read.extend_from_slice(&chunk.unwrap());
    }
    assert!(read == data, "{name}: multipart content differs");

    // Presigned GET: works with a plain client; a changed signature and an expired URL do not.
    let doc = key_in_month(&user, 11, "doc.txt");
    store
        .put(&doc, byte_stream("presigned!"), PutOptions::default())
        .await
        .unwrap();
    let url = store
        .presign(PresignMethod::Get, &doc, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(
        (url.expires_at - chrono::Utc::now()).num_seconds() > 3500,
        "{name}"
    );
    let fetched = http.get(&url.url).send().await.unwrap();
    assert_eq!(fetched.status(), 200, "{name}");
    // A download, never a page rendered in the store's origin, whatever was uploaded.
    let header = |n: &str| {
        fetched
            .headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        header("content-disposition").as_deref(),
        Some("attachment; filename=\"doc.txt\""),
        "{name}"
    );
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/octet-stream"),
        "{name}"
    );
    assert_eq!(fetched.text().await.unwrap(), "presigned!", "{name}");
    let forged = http
        .get(tamper(&url.url, signature_param))
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        403,
        "{name}: a changed signature is refused"
    );
    let short = store
        .presign(PresignMethod::Get, &doc, Duration::from_secs(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = http.get(&short.url).send().await.unwrap();
    assert!(
        expired.status().is_client_error(),
        "{name}: an expired URL is refused: {}",
        expired.status()
    );

    // Presigned PUT uploads to an upload key exactly the size it was signed for; any other
    // size is refused and stores nothing. No URL downloads an upload or uploads over a file.
    let direct = FileKey::upload(
        &user,
        NaiveDate::from_ymd_opt(2026, 11, 3).unwrap(),
        &uuid::Uuid::now_v7().simple().to_string(),
        "direct.txt",
    );
    let body = "uploaded directly";
    let put_url = |content_length| {
        store.presign(
            PresignMethod::Put { content_length },
            &direct,
            Duration::from_secs(600),
        )
    };
    let exact = put_url(body.len() as u64).await.unwrap();
    for (wrong, what) in [
        ("uploaded directly, and more", "longer"),
        ("uploaded", "shorter"),
    ] {
        let refused = http.put(&exact.url).body(wrong).send().await.unwrap();
        assert!(
            refused.status().is_client_error(),
            "{name}: a {what} body is refused: {}",
            refused.status()
        );
        assert!(
            matches!(store.head(&direct).await, Err(Error::NotFound(_))),
            "{name}: a refused {what} body leaves nothing"
        );
    }
    let unsized_body =
        reqwest::Body::wrap_stream(futures::stream::iter([Ok::<_, std::io::Error>(
            "uploaded directly, without a length",
        )]));
    let refused = http
        .put(&exact.url)
        .body(unsized_body)
        .send()
        .await
        .unwrap();
    assert!(
        refused.status().is_client_error(),
        "{name}: a body of no declared length is refused: {}",
        refused.status()
    );
    assert!(
        matches!(store.head(&direct).await, Err(Error::NotFound(_))),
        "{name}: a body of no declared length leaves nothing"
    );
    let uploaded = http.put(&exact.url).body(body).send().await.unwrap();
    assert!(
        uploaded.status().is_success(),
        "{name}: {}",
        uploaded.status()
    );
    assert_eq!(store.get_bytes(&direct).await.unwrap(), body, "{name}");
    let staged: Vec<FileKey> = store
        .list(FileKey::UPLOADS_PREFIX, None, 1000)
        .await
        .unwrap()
        .objects
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(
        staged.contains(&direct),
        "{name}: uploads are listed under {}",
        FileKey::UPLOADS_PREFIX
    );
    assert!(
        store
            .presign(PresignMethod::Get, &direct, Duration::from_secs(600))
            .await
            .is_err(),
        "{name}: an upload is not downloaded"
    );
    assert!(
        store
            .presign(
                PresignMethod::Put { content_length: 1 },
                &doc,
                Duration::from_secs(600)
            )
            .await
            .is_err(),
        "{name}: a file is not uploaded over"
    );
    store.delete(&direct).await.unwrap();

    // TTL bounds.
    assert!(
        store
            .presign(PresignMethod::Get, &doc, Duration::from_secs(8 * 24 * 3600))
            .await
            .is_err()
    );
}
