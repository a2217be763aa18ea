//! Users' files: multipart uploads, listing, download URLs, deletion and direct uploads.

use axum::{
    Json,
    extract::{Path, Request, State},
    http::{StatusCode, header},
};
use futures::TryStreamExt;
use isa_core::{
    ByteStream, Error, Identity,
    http::{ApiJson, ApiQuery, ApiResult},
};
use isa_files::{FileFilter, FileRecord};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Service, Shared};

/// A file as the API shows it: metadata and a fresh presigned download URL.
async fn file_json(service: &Service, file: FileRecord) -> ApiResult<Value> {
    let file = service.inner.files.with_download_url(file).await?;
    Ok(serde_json::to_value(file).map_err(Error::internal)?)
}

/// `POST /api/users/{user_id}/files`: multipart with the content in the field `file`.
pub(super) async fn upload(
    State(service): Shared,
    identity: Identity,
    Path(user_id): Path<String>,
    request: Request,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let user = service.account_of(&identity, &user_id).await?;
    let boundary = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| Error::invalid("expected a multipart/form-data body"))?;
    let max = service.inner.files.config().max_size;
    // The whole body may carry a little more than the file: part headers, other fields.
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(max.saturating_add(64 * 1024))
            .per_field(max.saturating_add(1)),
    );
    let body = request.into_body().into_data_stream();
    let mut multipart = multer::Multipart::with_constraints(body, boundary, constraints);
    while let Some(field) = multipart.next_field().await.map_err(multipart_error(max))? {
        if field.name() != Some("file") {
            continue;
        }
        let name = field.file_name().unwrap_or("file").to_owned();
        let declared = field.content_type().map(|m| m.essence_str().to_owned());
        let stream: ByteStream = Box::pin(field.map_err(multipart_error(max)));
        let file = service
            .inner
            .files
            .upload(&user, &name, declared.as_deref(), stream)
            .await?;
        return Ok((StatusCode::CREATED, Json(file_json(&service, file).await?)));
    }
    Err(Error::invalid("the multipart body has no field named \"file\"").into())
}

fn multipart_error(limit: u64) -> impl Fn(multer::Error) -> Error + Clone {
    move |e| match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            Error::TooLarge { limit }
        }
        other => Error::invalid(format!("multipart body: {other}")),
    }
}

pub(super) async fn list_files(
    State(service): Shared,
    identity: Identity,
    Path(user_id): Path<String>,
    ApiQuery(filter): ApiQuery<FileFilter>,
) -> ApiResult<Json<Value>> {
    let user = service.account_of(&identity, &user_id).await?;
    let page = service.inner.files.list(&user, &filter).await?;
    Ok(Json(serde_json::to_value(page).map_err(Error::internal)?))
}

pub(super) async fn get_file(
    State(service): Shared,
    identity: Identity,
    Path((user_id, file_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let user = service.account_of(&identity, &user_id).await?;
    let file = service.inner.files.get(&user, &file_id).await?;
    Ok(Json(file_json(&service, file).await?))
}

pub(super) async fn delete_file(
    State(service): Shared,
    identity: Identity,
    Path((user_id, file_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let user = service.account_of(&identity, &user_id).await?;
    service.inner.files.delete(&user, &file_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(super) struct NewUpload {
    name: String,
    content_type: String,
    /// The exact size the PUT will send: the URL accepts no other.
    size: u64,
}

pub(super) async fn begin_upload(
    State(service): Shared,
    identity: Identity,
    Path(user_id): Path<String>,
    ApiJson(new): ApiJson<NewUpload>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let user = service.account_of(&identity, &user_id).await?;
    if !isa_files::media::ALLOWED_TYPES.contains(&new.content_type.as_str()) {
        return Err(Error::UnsupportedMediaType(format!(
            "{} is not an accepted file type",
            new.content_type
        ))
        .into());
    }
    let pending = service
        .inner
        .files
        .begin_upload(&user, &new.name, &new.content_type, new.size)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "file": pending.file,
            "url": pending.url.url,
            "url_expires_at": pending.url.expires_at,
            "method": "PUT",
        })),
    ))
}

pub(super) async fn complete_upload(
    State(service): Shared,
    identity: Identity,
    Path((user_id, file_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let user = service.account_of(&identity, &user_id).await?;
    let file = service.inner.files.complete_upload(&user, &file_id).await?;
    Ok(Json(file_json(&service, file).await?))
}
