//! The HTTP face of a store without its own URL signing (local disk, memory): the router that
//! serves the URLs [`LocalSigner`] makes (feature `http`). The user service mounts it; the
//! `FileStore` suite fetches local URLs through it.

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use futures::TryStreamExt;
use isa_core::{
    ByteStream, Error, FileKey, FileStore, PresignMethod, PutOptions,
    http::{ApiQuery, ApiResult},
};
use serde::Deserialize;

use crate::files::{DOWNLOAD_CONTENT_TYPE, LocalSigner, attachment};

#[derive(Clone)]
struct Presigned {
    store: Arc<dyn FileStore>,
    signer: LocalSigner,
    max_size: u64,
}

#[derive(Deserialize)]
struct Signed {
    method: String,
    content_length: Option<u64>,
    expires: i64,
    signature: String,
}

/// `GET`/`PUT /files/{key}`: `store`'s presigned URLs, checked (signature in constant time,
/// then expiry) before any byte moves. Downloads are served as attachments, so a user's HTML
/// never runs on this origin; an upload stores exactly the size its URL was signed for, at
/// most `max_size`, or nothing.
pub fn presigned_router(store: Arc<dyn FileStore>, signer: LocalSigner, max_size: u64) -> Router {
    Router::new()
        .route("/files/{*key}", get(serve).put(serve))
        .with_state(Presigned {
            store,
            signer,
            max_size,
        })
}

async fn serve(
    State(presigned): State<Presigned>,
    method: Method,
    Path(key): Path<String>,
    ApiQuery(q): ApiQuery<Signed>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let presign_method = match (method.as_str(), q.method.as_str(), q.content_length) {
        ("GET", "GET", None) => PresignMethod::Get,
        ("PUT", "PUT", Some(content_length)) => PresignMethod::Put { content_length },
        _ => return Err(Error::Forbidden("the URL was signed for another method".into()).into()),
    };
    presigned
        .signer
        .verify(presign_method, &key, q.expires, &q.signature)?;
    let file_key = FileKey::parse(&key)?;
    presign_method.check_target(&file_key)?;
    let store = &presigned.store;
    match presign_method {
        PresignMethod::Get => {
            let stream = store.get(&file_key).await?;
            Ok((
                [
                    (header::CONTENT_TYPE, DOWNLOAD_CONTENT_TYPE.to_owned()),
                    (header::CONTENT_DISPOSITION, attachment(&key)),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
                ],
                Body::from_stream(stream),
            )
                .into_response())
        }
        PresignMethod::Put { content_length } => {
            let declared = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if declared.is_some_and(|n| n != content_length) {
                return Err(wrong_size(content_length).into());
            }
            let stream: ByteStream = Box::pin(
                body.into_data_stream()
                    .map_err(|e| Error::invalid(format!("upload body: {e}"))),
            );
            let opts = PutOptions {
                content_type: None,
                max_size: Some(content_length.min(presigned.max_size)),
            };
            let stored = store
                .put(&file_key, stream, opts)
                .await
                .map_err(|e| match e {
                    Error::TooLarge { .. } if content_length <= presigned.max_size => {
                        wrong_size(content_length)
                    }
                    other => other,
                })?;
            if stored.size != content_length {
                // A chunked body that ended short: the URL promised exactly this many bytes.
                store.delete(&file_key).await?;
                return Err(wrong_size(content_length).into());
            }
            Ok(StatusCode::OK.into_response())
        }
    }
}

fn wrong_size(content_length: u64) -> Error {
    Error::Forbidden(format!(
        "the URL was signed for a body of exactly {content_length} bytes"
    ))
}
