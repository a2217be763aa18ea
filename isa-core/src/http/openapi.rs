//! Helpers that write the OpenAPI 3.1 descriptions services serve at `/openapi.json`: every
//! operation's errors in the common envelope ([`ApiError`](super::ApiError)), and the same two
//! credentials everywhere.

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
        "429" => "Rate limited; retry after the Retry-After header",
        "502" => "The upstream provider failed",
        "504" => "The upstream provider took too long",
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
/// with its schema, and the error statuses it can answer (each in the common envelope).
pub fn op(
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

/// A required path parameter.
pub fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

/// An optional query parameter.
pub fn query_param(name: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": ty}})
}

/// A required JSON request body.
pub fn json_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

/// An object schema.
pub fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required})
}

/// A reference to a schema of the document's components.
pub fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// A whole OpenAPI 3.1 document: the common `Error` envelope and the two credentials (bearer
/// token or API key) are always in its components.
pub fn document(title: &str, description: &str, port: u16, paths: Value, schemas: Value) -> Value {
    let mut all_schemas = json!({
        "Error": object(json!({"error": object(json!({"code": {"type": "string"}, "message": {"type": "string"}}), &["code", "message"])}), &["error"]),
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
