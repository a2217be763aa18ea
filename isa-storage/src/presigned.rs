//! The HTTP face of a store without its own URL signing (local disk, memory): the router that
//! serves the URLs [`LocalSigner`] makes (feature `http`). The user service mounts it; the
//! `FileStore` suite fetches local URLs through it.

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    extract::{Path, State},
    http::{Method, StatusCode, header},
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
    expires: i64,
    signature: String,
}

/// `GET`/`PUT /files/{key}`: `store`'s presigned URLs, checked (signature in constant time,
/// then expiry) before any byte moves. Downloads are served as attachments, so a user's HTML
/// never runs on this origin; uploads are bounded by `max_size`.
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
    body: Body,
) -> ApiResult<Response> {
    let presign_method = match (method.as_str(), q.method.as_str()) {
        ("GET", "GET") => PresignMethod::Get,
        ("PUT", "PUT") => PresignMethod::Put,
        _ => return Err(Error::Forbidden("the URL was signed for another method".into()).into()),
    };
    presigned
        .signer
        .verify(presign_method, &key, q.expires, &q.signature)?;
    let file_key = FileKey::parse(&key)?;
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
        PresignMethod::Put => {
            let stream: ByteStream = Box::pin(
                body.into_data_stream()
                    .map_err(|e| Error::invalid(format!("upload body: {e}"))),
            );
            let opts = PutOptions {
                content_type: None,
                max_size: Some(presigned.max_size),
            };
            store.put(&file_key, stream, opts).await?;
            Ok(StatusCode::OK.into_response())
        }
    }
}
