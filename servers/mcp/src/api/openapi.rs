//! The OpenAPI 3.1 descriptions of the user and event services, served at `/openapi.json`.
//! A test calls every operation listed here, so the description cannot name a route the
//! services do not have.

use isa_core::http::openapi::{
    document, json_body, object, op, path_param, query_param, reference,
};
use serde_json::{Value, json};

/// The user service's description.
pub fn users() -> Value {
    let user = path_param("user_id");
    let by_user = [user.clone()];
    let file = path_param("file_id");
    let file_with_url = reference("FileWithUrl");
    let charge = reference("Charge");
    let paths = json!({
        "/api/users/me": {"get": op("The caller's account (made on first use)", &[], None, ("200", reference("Me")), &["401"])},
        "/api/users/me/api-keys": {
            "get": op("The caller's API keys", &[], None, ("200", object(json!({"api_keys": {"type": "array", "items": reference("ApiKey")}}), &["api_keys"])), &["401"]),
            "post": op("Make an API key (with a token, not with another key); the full key is shown only in this answer", &[],
                Some(json_body(object(json!({"name": {"type": "string"}, "scopes": {"type": "array", "items": {"type": "string"}}, "expires_at": {"type": "string", "format": "date-time", "description": "When the key stops working; never when absent"}}), &["name"]))),
                ("201", object(json!({"key": {"type": "string"}, "api_key": reference("ApiKey")}), &["key", "api_key"])), &["400", "401", "403"]),
        },
        "/api/users/me/api-keys/{key_id}": {"delete": op("Revoke an API key", &[path_param("key_id")], None, ("204", json!({})), &["400", "401", "404"])},
        "/api/users/{user_id}/files": {
            "get": op("List files, oldest first", &[user.clone(),
                    bounded(query_param("year", "integer", "Only files uploaded in this year"), 1, 9999),
                    bounded(query_param("month", "integer", "Only files uploaded in this month (needs year)"), 1, 12),
                    query_param("after", "string", "The `next` of the previous page"),
                    bounded(query_param("limit", "integer", "Page size, 1 to 1000 (default 100)"), 1, 1000)],
                None, ("200", object(json!({"files": {"type": "array", "items": reference("File")}, "next": {"type": ["string", "null"]}}), &["files"])),
                &["400", "401", "403"]),
            "post": op("Upload a file (multipart field `file`; 50 MB at most by default)", &by_user,
                Some(json!({"required": true, "content": {"multipart/form-data": {"schema": object(json!({"file": {"type": "string", "format": "binary"}}), &["file"])}}})),
                ("201", file_with_url.clone()), &["400", "401", "403", "413", "415"]),
        },
        "/api/users/{user_id}/files/uploads": {"post": op("Start a direct upload: PUT exactly `size` bytes to `url`, then complete it", &by_user,
            Some(json_body(object(json!({"name": {"type": "string"}, "content_type": {"type": "string"}, "size": {"type": "integer", "minimum": 0, "description": "The size of the body the PUT will send; the URL accepts no other"}}), &["name", "content_type", "size"]))),
            ("201", object(json!({"file": reference("File"), "url": {"type": "string"}, "url_expires_at": {"type": "string", "format": "date-time"}, "method": {"const": "PUT"}}), &["file", "url", "url_expires_at"])),
            &["400", "401", "403", "413", "415"])},
        "/api/users/{user_id}/files/{file_id}": {
            "get": op("A file's metadata and a fresh download URL", &[user.clone(), file.clone()], None, ("200", file_with_url.clone()), &["400", "401", "403", "404"]),
            "delete": op("Delete a file", &[user.clone(), file.clone()], None, ("204", json!({})), &["400", "401", "403", "404"]),
        },
        "/api/users/{user_id}/files/{file_id}/complete": {"post": op("Check and keep what a direct upload sent", &[user.clone(), file], None, ("200", file_with_url), &["400", "401", "403", "404", "413", "415"])},
        "/api/users/{user_id}/credits": {"get": op("The credit balance", &by_user, None,
            ("200", object(json!({"user_id": {"type": "string"}, "balance": {"type": "integer"}}), &["user_id", "balance"])), &["400", "401", "403", "404"])},
        "/api/users/{user_id}/credits/consume": {"post": op("Charge credits, once per request id (a replay answers 200 with the first charge)", &by_user,
            Some(json_body(object(json!({"request_id": {"type": "string"}, "amount": {"type": "integer", "minimum": 1}, "operation": {"type": "string"}, "units": {"type": "integer", "minimum": 0}}), &["request_id", "amount", "operation"]))),
            ("201", charge.clone()), &["400", "401", "402", "403", "409"])},
        "/api/users/{user_id}/credits/grant": {"post": op("Add credits (administrators), once per request id", &by_user,
            Some(json_body(object(json!({"request_id": {"type": "string"}, "amount": {"type": "integer", "minimum": 1}, "reason": {"type": "string"}}), &["request_id", "amount"]))),
            ("201", charge), &["400", "401", "403", "409"])},
        "/api/users/{user_id}/credits/history": {"get": op("Credit transactions, newest first", &[user.clone(),
                query_param("before", "string", "The `next` of the previous page"), bounded(query_param("limit", "integer", "Page size, 1 to 1000"), 1, 1000)],
            None, ("200", object(json!({"transactions": {"type": "array", "items": reference("Transaction")}, "next": {"type": ["string", "null"]}}), &["transactions"])), &["400", "401", "403"])},
        "/api/users/{user_id}/usage": {"get": op("Consumption per operation over a period (default: the last 30 days)", &[user,
                date_time(query_param("since", "string", "RFC 3339")), date_time(query_param("until", "string", "RFC 3339"))],
            None, ("200", object(json!({"operations": {"type": "array", "items": object(json!({"operation": {"type": "string"}, "requests": {"type": "integer"}, "credits": {"type": "integer"}, "units": {"type": "integer"}}), &["operation"])}}), &["operations"])), &["400", "401", "403"])},
        "/api/auth/verify": {"post": op("Check a bearer token or API key, for another service (its credential needs the scope auth:verify)", &[],
            Some(json_body(object(json!({"token": {"type": "string"}}), &["token"]))),
            ("200", object(json!({"valid": {"type": "boolean"}, "user_id": {"type": "string"}, "email": {"type": ["string", "null"]}, "scopes": {"type": "array", "items": {"type": "string"}}, "auth_method": {"type": "string"}}), &["valid"])), &["400", "401", "403"])},
        "/health": {"get": {"summary": "Ready when the database and the file store answer", "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}}}},
    });
    let file_properties = json!({
        "id": {"type": "string"}, "user_id": {"type": "string"}, "key": {"type": "string"},
        "name": {"type": "string"}, "size": {"type": "integer"}, "content_type": {"type": "string"},
        "sha256": {"type": ["string", "null"]}, "created_at": {"type": "string", "format": "date-time"},
    });
    let mut with_url = file_properties.clone();
    with_url["url"] = json!({"type": "string", "description": "Presigned download URL"});
    with_url["url_expires_at"] = json!({"type": "string", "format": "date-time"});
    let transaction = object(
        json!({
            "id": {"type": "string"}, "request_id": {"type": "string"}, "amount": {"type": "integer"},
            "balance_after": {"type": "integer"}, "operation": {"type": "string"},
            "units": {"type": ["integer", "null"]}, "created_at": {"type": "string", "format": "date-time"},
        }),
        &[
            "id",
            "request_id",
            "amount",
            "balance_after",
            "operation",
            "created_at",
        ],
    );
    let schemas = json!({
        "File": object(file_properties, &["id", "key", "name", "size", "content_type", "created_at"]),
        "FileWithUrl": object(with_url, &["id", "key", "name", "size", "content_type", "sha256", "url", "url_expires_at"]),
        "Transaction": transaction,
        "Charge": object(json!({"transaction": reference("Transaction"), "replayed": {"type": "boolean"}}), &["transaction", "replayed"]),
        "ApiKey": object(json!({"id": {"type": "string"}, "user_id": {"type": "string"}, "name": {"type": "string"}, "scopes": {"type": "array", "items": {"type": "string"}}, "created_at": {"type": "string"}, "last_used_at": {"type": ["string", "null"]}, "revoked_at": {"type": ["string", "null"]}, "expires_at": {"type": ["string", "null"]}}), &["id", "name", "scopes", "created_at"]),
        "Me": object(json!({"id": {"type": "string"}, "email": {"type": ["string", "null"]}, "credits": {"type": "integer"}, "scopes": {"type": "array", "items": {"type": "string"}}, "auth_method": {"enum": ["jwt", "api_key"]}}), &["id", "credits", "scopes", "auth_method"]),
    });
    document(
        "isa user service",
        "Users, API keys, files (stored under users/{user_id}/files/{YYYY}/{MM}/ with presigned URLs) and credits.",
        8100,
        paths,
        schemas,
    )
}

/// `parameter` with its integer range.
fn bounded(mut parameter: Value, minimum: i64, maximum: i64) -> Value {
    parameter["schema"]["minimum"] = minimum.into();
    parameter["schema"]["maximum"] = maximum.into();
    parameter
}

/// `parameter` as an RFC 3339 date and time.
fn date_time(mut parameter: Value) -> Value {
    parameter["schema"]["format"] = "date-time".into();
    parameter
}

/// The event service's description.
pub fn events() -> Value {
    let filters = [
        query_param(
            "user_id",
            "string",
            "Only this user's events (others' need the admin scope)",
        ),
        query_param("kind", "string", "Only this kind"),
        date_time(query_param("since", "string", "RFC 3339")),
        date_time(query_param("until", "string", "RFC 3339")),
        query_param("after", "string", "The `next` of the previous page"),
        bounded(
            query_param("limit", "integer", "Page size, 1 to 1000"),
            1,
            1000,
        ),
    ];
    let page = object(
        json!({"events": {"type": "array", "items": reference("Event")}, "next": {"type": ["string", "null"]}}),
        &["events"],
    );
    let new_event = object(
        json!({"kind": {"type": "string"}, "payload": {}, "user_id": {"type": "string"}}),
        &["kind"],
    );
    let paths = json!({
        "/api/events": {
            "post": op("Record one event or a batch (`{\"events\": [...]}`, at most 1000)", &[],
                Some(json_body(json!({"oneOf": [reference("NewEvent"), object(json!({"events": {"type": "array", "items": reference("NewEvent")}}), &["events"])]}))),
                ("202", object(json!({"accepted": {"type": "integer"}, "ids": {"type": "array", "items": {"type": "string"}}}), &["accepted", "ids"])),
                &["400", "401", "403", "413", "503"]),
            "get": op("Events, oldest first", &filters, None, ("200", page.clone()), &["400", "401", "403"]),
        },
        "/api/events/recent": {"get": op("Events, newest first", &filters, None, ("200", page), &["400", "401", "403"])},
        "/api/events/counts": {"get": op("Events per kind over a period (default: the last day)", &filters[..4], None,
            ("200", object(json!({"counts": {"type": "array", "items": object(json!({"kind": {"type": "string"}, "count": {"type": "integer"}}), &["kind", "count"])}}), &["counts"])),
            &["400", "401", "403"])},
        "/health": {"get": {"summary": "Ready when the database answers", "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}}}},
    });
    let schemas = json!({
        "NewEvent": new_event,
        "Event": object(json!({"id": {"type": "string"}, "time": {"type": "string", "format": "date-time"}, "user": {"type": ["string", "null"]}, "kind": {"type": "string"}, "payload": {}}), &["id", "time", "kind", "payload"]),
    });
    document(
        "isa event service",
        "Records events in batches (a 202 means the event will be written) and answers queries.",
        8101,
        paths,
        schemas,
    )
}
