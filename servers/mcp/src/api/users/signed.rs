//! The presigned URLs of a file store on local disk, which this service serves itself.

use axum::{
    body::Body,
    extract::{Path, State},
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::TryStreamExt;
use isa_core::{
    ByteStream, Error, FileKey, PresignMethod, PutOptions,
    http::{ApiQuery, ApiResult},
};
use serde::Deserialize;

use super::Shared;

#[derive(Deserialize)]
pub(super) struct Signed {
    method: String,
    expires: i64,
    signature: String,
}

/// `GET`/`PUT /files/{key}`: a local store's presigned URLs, checked (signature in constant
/// time, then expiry) before any byte moves. Downloads are served as attachments, so a
/// user's HTML never runs on this origin.
pub(super) async fn serve_signed(
    State(service): Shared,
    method: Method,
    Path(key): Path<String>,
    ApiQuery(q): ApiQuery<Signed>,
    body: Body,
) -> ApiResult<Response> {
    let Some(signer) = &service.inner.signer else {
        return Err(Error::NotFound("presigned URLs are served by the object store".into()).into());
    };
    let presign_method = match (method.as_str(), q.method.as_str()) {
        ("GET", "GET") => PresignMethod::Get,
        ("PUT", "PUT") => PresignMethod::Put,
        _ => return Err(Error::Forbidden("the URL was signed for another method".into()).into()),
    };
    signer.verify(presign_method, &key, q.expires, &q.signature)?;
    let file_key = FileKey::parse(&key)?;
    let store = &service.inner.store;
    match presign_method {
        PresignMethod::Get => {
            let stream = store.get(&file_key).await?;
            let file_name = key.rsplit('/').next().unwrap_or("file");
            Ok((
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{file_name}\""),
                    ),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
                ],
                Body::from_stream(stream),
            )
                .into_response())
        }
        PresignMethod::Put => {
            let stream: ByteStream = Box::pin(
                body.into_data_stream()
                    .map_err(|e| Error::invalid(format!("upload body: {e}"))),
            );
            let opts = PutOptions {
                content_type: None,
                max_size: Some(service.inner.files.config().max_size),
            };
            store.put(&file_key, stream, opts).await?;
            Ok(StatusCode::OK.into_response())
        }
    }
}
