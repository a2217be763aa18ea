//! MCP tools over the calling user's files: upload (base64 content), list, get a download URL,
//! delete (after the user confirms, asked through the client), summarize (with the client's
//! model). They act only for the authenticated caller; an anonymous call is refused.

use std::sync::Arc;

use base64::Engine;
use isa_core::{
    CallContext, ClientCapability, Confirmation, Error, JsonObject, Result, SamplingRequest, Tool,
    ToolAnnotations, ToolOutput, ToolSpec, UserId, UserStore, byte_stream, tool_fn,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{FileFilter, FileRecord, UserFiles};

struct Files {
    files: UserFiles,
    users: Arc<dyn UserStore>,
    initial_credits: i64,
}

impl Files {
    /// The caller, whose account is made on first use like the user service makes it.
    async fn caller(&self, ctx: &CallContext) -> Result<UserId> {
        let user = ctx
            .user()
            .cloned()
            .ok_or_else(|| Error::Forbidden("file tools need an authenticated caller".into()))?;
        self.users
            .ensure_user(&user, None, self.initial_credits)
            .await?;
        Ok(user)
    }

    async fn with_url(&self, file: FileRecord) -> Result<ToolOutput> {
        let file = self.files.with_download_url(file).await?;
        Ok(ToolOutput::json(
            serde_json::to_value(file).map_err(Error::internal)?,
        ))
    }
}

fn parse<T: for<'de> Deserialize<'de>>(args: JsonObject) -> Result<T> {
    serde_json::from_value(Value::Object(args)).map_err(|e| Error::invalid(e.to_string()))
}

#[derive(Deserialize)]
struct Upload {
    name: String,
    content_base64: String,
    content_type: Option<String>,
}

#[derive(Deserialize)]
struct FileRef {
    file_id: String,
}

const FILE_ID: &str = "The file's id, from file_list or file_upload";

/// The file tools, acting for the caller on `files`; users seen for the first time are
/// made in `users` with `initial_credits`, as the user service makes them.
pub fn file_tools(
    files: UserFiles,
    users: Arc<dyn UserStore>,
    initial_credits: i64,
) -> Vec<Arc<dyn Tool>> {
    let state = Arc::new(Files {
        files,
        users,
        initial_credits,
    });
    let max = state.files.config().max_size;

    let upload_state = state.clone();
    let upload = tool_fn(
        ToolSpec::new(
            "file_upload",
            format!("Save a file to the user's files from base64 content (at most {max} bytes); returns its id and a download URL"),
        )
        .with_input_schema(json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "File name, such as report.pdf"},
                "content_base64": {"type": "string", "description": "The content, base64-encoded"},
                "content_type": {"type": "string", "description": "Media type; taken from the name when absent"},
            },
            "required": ["name", "content_base64"],
        }))
        .with_tags(["files"]),
        move |args, ctx| {
            let state = upload_state.clone();
            async move {
                let user = state.caller(&ctx).await?;
                let args: Upload = parse(args)?;
                if args.content_base64.len() as u64 > max.saturating_mul(4) / 3 + 4 {
                    return Err(Error::TooLarge { limit: max });
                }
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(args.content_base64.trim())
                    .map_err(|e| Error::invalid(format!("content_base64: {e}")))?;
                let file = state
                    .files
                    .upload(&user, &args.name, args.content_type.as_deref(), byte_stream(bytes))
                    .await?;
                state.with_url(file).await
            }
        },
    );

    let list_state = state.clone();
    let list = tool_fn(
        ToolSpec::new(
            "file_list",
            "List the user's files, oldest first, optionally of one year and month",
        )
        .with_input_schema(json!({
            "type": "object",
            "properties": {
                "year": {"type": "integer"},
                "month": {"type": "integer", "minimum": 1, "maximum": 12},
                "after": {"type": "string", "description": "`next` from the previous page"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
            },
        }))
        .with_annotations(read_only())
        .with_tags(["files"]),
        move |args, ctx| {
            let state = list_state.clone();
            async move {
                let user = state.caller(&ctx).await?;
                let filter: FileFilter = parse(args)?;
                let page = state.files.list(&user, &filter).await?;
                Ok(ToolOutput::json(
                    serde_json::to_value(page).map_err(Error::internal)?,
                ))
            }
        },
    );

    let url_state = state.clone();
    let download_url = tool_fn(
        ToolSpec::new(
            "file_download_url",
            "Get a temporary download URL for one of the user's files",
        )
        .with_input_schema(json!({
            "type": "object",
            "properties": {"file_id": {"type": "string", "description": FILE_ID}},
            "required": ["file_id"],
        }))
        .with_annotations(read_only())
        .with_tags(["files"]),
        move |args, ctx| {
            let state = url_state.clone();
            async move {
                let user = state.caller(&ctx).await?;
                let r: FileRef = parse(args)?;
                let file = state.files.get(&user, &r.file_id).await?;
                state.with_url(file).await
            }
        },
    );

    let delete_state = state.clone();
    let delete = tool_fn(
        ToolSpec::new("file_delete", "Delete one of the user's files")
            .with_input_schema(json!({
                "type": "object",
                "properties": {"file_id": {"type": "string", "description": FILE_ID}},
                "required": ["file_id"],
            }))
            .with_annotations(ToolAnnotations {
                destructive_hint: Some(true),
                ..Default::default()
            })
            .with_tags(["files"])
            .with_confirmation(Confirmation::Required),
        move |args, ctx| {
            let state = delete_state.clone();
            async move {
                let user = state.caller(&ctx).await?;
                let r: FileRef = parse(args)?;
                state.files.delete(&user, &r.file_id).await?;
                Ok(ToolOutput::json(json!({"deleted": r.file_id})))
            }
        },
    );
    let summarize_state = state;
    let summarize = tool_fn(
        ToolSpec::new(
            "file_summarize",
            format!(
                "Summarize one of the user's text files (at most {SUMMARIZED_BYTES} bytes) with \
                 the client's own model"
            ),
        )
        .with_input_schema(json!({
            "type": "object",
            "properties": {
                "file_id": {"type": "string", "description": FILE_ID},
                "focus": {"type": "string", "description": "What the summary should bring out"},
            },
            "required": ["file_id"],
        }))
        .with_annotations(read_only())
        .with_tags(["files"])
        .requiring_client(ClientCapability::Sampling),
        move |args, ctx| {
            let state = summarize_state.clone();
            async move {
                let user = state.caller(&ctx).await?;
                let r: Summarize = parse(args)?;
                let (file, text) = state
                    .files
                    .read_text(&user, &r.file_id, SUMMARIZED_BYTES)
                    .await?;
                let focus = r
                    .focus
                    .map(|f| format!(", bringing out {f}"))
                    .unwrap_or_default();
                let mut request = SamplingRequest::user(
                    format!("Summarize the file {}{focus}:\n\n{text}", file.name),
                    SUMMARY_TOKENS,
                );
                request.system_prompt = Some(
                    "You write short, faithful summaries of files: only what the file says.".into(),
                );
                let summary = ctx.sample("summary", &request).await?;
                Ok(ToolOutput::json(json!({
                    "file_id": file.id,
                    "name": file.name,
                    "summary": summary.text(),
                    "model": summary.model,
                })))
            }
        },
    );
    vec![upload, list, download_url, delete, summarize]
}

/// The largest file `file_summarize` sends to the client's model.
const SUMMARIZED_BYTES: u64 = 64 * 1024;
/// The longest summary asked for, in tokens.
const SUMMARY_TOKENS: u32 = 500;

#[derive(Deserialize)]
struct Summarize {
    file_id: String,
    focus: Option<String>,
}

fn read_only() -> ToolAnnotations {
    ToolAnnotations {
        read_only_hint: Some(true),
        ..Default::default()
    }
}
