//! The OpenAPI 3.1 descriptions of the user and event services, served at `/openapi.json`.
//! A test calls every operation listed here, so the description cannot name a route the
//! services do not have.

use serde_json::{Value, json};

fn error_responses(codes: &[&str]) -> Value {
    let mut responses = serde_json::Map::new();
    for code in codes {
        responses.insert(
            (*code).to_owned(),
            json!({"description": describe(code), "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    Value::Object(responses)
}

fn describe(code: &str) -> &'static str {
    match code {
        "400" => "Invalid input",
        "401" => "No valid bearer token or API key",
        "402" => "The balance does not cover the charge; nothing was charged",
        "403" => "The caller may not act for this user",
        "404" => "Not found",
        "409" => "The request id was used for a different request; nothing changed",
        "413" => "Larger than the limit; nothing was kept",
        "415" => "Not an accepted type, or the bytes contradict the declared type",
        "503" => "Busy or a dependency is down; retry after the Retry-After header",
        _ => "Error",
    }
}

/// One operation: summary, parameters, an optional JSON or multipart body, the success status
/// with its schema, and the error statuses it can answer.
fn op(
    summary: &str,
    params: &[Value],
    body: Option<Value>,
    ok: (&str, Value),
    errors: &[&str],
) -> Value {
    let mut responses = error_responses(errors);
    responses[ok.0] =
        json!({"description": "Success", "content": {"application/json": {"schema": ok.1}}});
    if ok.0 == "204" {
        responses[ok.0] = json!({"description": "Done"});
    }
    let mut operation = json!({
        "summary": summary,
        "parameters": params,
        "responses": responses,
        "security": [{"bearer": []}, {"apiKey": []}],
    });
    if let Some(body) = body {
        operation["requestBody"] = body;
    }
    operation
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

fn query_param(name: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": ty}})
}

fn json_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn document(title: &str, description: &str, port: u16, paths: Value, schemas: Value) -> Value {
    let mut all_schemas = json!({
        "Error": object(json!({"error": {"type": "string"}, "message": {"type": "string"}}), &["error", "message"]),
    });
    if let (Some(all), Some(more)) = (all_schemas.as_object_mut(), schemas.as_object()) {
        all.extend(more.clone());
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": title, "version": env!("CARGO_PKG_VERSION"), "description": description},
        "servers": [{"url": format!("http://127.0.0.1:{port}")}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A JWT of a configured issuer (Supabase, Auth0) or an API key"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "schemas": all_schemas,
        },
    })
}

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
        "/api/users/me/api-keys/{key_id}": {"delete": op("Revoke an API key", &[path_param("key_id")], None, ("204", json!({})), &["401", "404"])},
        "/api/users/{user_id}/files": {
            "get": op("List files, oldest first", &[user.clone(),
                    query_param("year", "integer", "Only files uploaded in this year"),
                    query_param("month", "integer", "Only files uploaded in this month (needs year)"),
                    query_param("after", "string", "The `next` of the previous page"),
                    query_param("limit", "integer", "Page size, 1 to 1000 (default 100)")],
                None, ("200", object(json!({"files": {"type": "array", "items": reference("File")}, "next": {"type": ["string", "null"]}}), &["files"])),
                &["400", "401", "403"]),
            "post": op("Upload a file (multipart field `file`; 50 MB at most by default)", &by_user,
                Some(json!({"required": true, "content": {"multipart/form-data": {"schema": object(json!({"file": {"type": "string", "format": "binary"}}), &["file"])}}})),
                ("201", file_with_url.clone()), &["400", "401", "403", "413", "415"]),
        },
        "/api/users/{user_id}/files/uploads": {"post": op("Start a direct upload: PUT the bytes to `url`, then complete it", &by_user,
            Some(json_body(object(json!({"name": {"type": "string"}, "content_type": {"type": "string"}}), &["name", "content_type"]))),
            ("201", object(json!({"file": reference("File"), "url": {"type": "string"}, "url_expires_at": {"type": "string", "format": "date-time"}, "method": {"const": "PUT"}}), &["file", "url", "url_expires_at"])),
            &["400", "401", "403", "415"])},
        "/api/users/{user_id}/files/{file_id}": {
            "get": op("A file's metadata and a fresh download URL", &[user.clone(), file.clone()], None, ("200", file_with_url.clone()), &["401", "403", "404"]),
            "delete": op("Delete a file", &[user.clone(), file.clone()], None, ("204", json!({})), &["401", "403", "404"]),
        },
        "/api/users/{user_id}/files/{file_id}/complete": {"post": op("Check and keep what a direct upload sent", &[user.clone(), file], None, ("200", file_with_url), &["400", "401", "403", "404", "413", "415"])},
        "/api/users/{user_id}/credits": {"get": op("The credit balance", &by_user, None,
            ("200", object(json!({"user_id": {"type": "string"}, "balance": {"type": "integer"}}), &["user_id", "balance"])), &["401", "403", "404"])},
        "/api/users/{user_id}/credits/consume": {"post": op("Charge credits, once per request id (a replay answers 200 with the first charge)", &by_user,
            Some(json_body(object(json!({"request_id": {"type": "string"}, "amount": {"type": "integer", "minimum": 1}, "operation": {"type": "string"}, "units": {"type": "integer", "minimum": 0}}), &["request_id", "amount", "operation"]))),
            ("201", charge.clone()), &["400", "401", "402", "403", "409"])},
        "/api/users/{user_id}/credits/grant": {"post": op("Add credits (administrators), once per request id", &by_user,
            Some(json_body(object(json!({"request_id": {"type": "string"}, "amount": {"type": "integer", "minimum": 1}, "reason": {"type": "string"}}), &["request_id", "amount"]))),
            ("201", charge), &["400", "401", "403", "409"])},
        "/api/users/{user_id}/credits/history": {"get": op("Credit transactions, newest first", &[user.clone(),
                query_param("before", "string", "The `next` of the previous page"), query_param("limit", "integer", "Page size")],
            None, ("200", object(json!({"transactions": {"type": "array", "items": reference("Transaction")}, "next": {"type": ["string", "null"]}}), &["transactions"])), &["401", "403"])},
        "/api/users/{user_id}/usage": {"get": op("Consumption per operation over a period (default: the last 30 days)", &[user,
                query_param("since", "string", "RFC 3339"), query_param("until", "string", "RFC 3339")],
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

/// The event service's description.
pub fn events() -> Value {
    let filters = [
        query_param(
            "user_id",
            "string",
            "Only this user's events (others' need the admin scope)",
        ),
        query_param("kind", "string", "Only this kind"),
        query_param("since", "string", "RFC 3339"),
        query_param("until", "string", "RFC 3339"),
        query_param("after", "string", "The `next` of the previous page"),
        query_param("limit", "integer", "Page size, 1 to 1000"),
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
