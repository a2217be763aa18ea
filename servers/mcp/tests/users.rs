//! The user service through HTTP with real tokens (Supabase HS256 JWTs and API keys), on
//! SQLite and on PostgreSQL, with files on local disk served by presigned URLs; and the MCP
//! file tools acting for their caller.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use common::*;
use isa_core::UserId;
use isa_mcp_server::api::users::VERIFY_SCOPE;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod common;

#[tokio::test(flavor = "multi_thread")]
async fn users_upload_list_and_download_only_their_own_files() {
    for (name, db, dir) in databases().await {
        let users = user_service(&db, dir.path()).await;
        let base = &users.base;
        let http = Client::new();
        let (alice, bob) = (unique("alice"), unique("bob"));
        let (a, b) = (token_with(&alice, None), token_with(&bob, None));

        let content = b"quarterly numbers\n1,2,3\n";
        let (status, file) =
            upload(&http, base, &a, &alice, b"report.csv", "text/csv", content).await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {file}");
        assert_eq!(file["name"], "report.csv");
        assert_eq!(file["size"], content.len());
        assert_eq!(file["content_type"], "text/csv");
        assert_eq!(file["sha256"], hex::encode(Sha256::digest(content)));
        let key = file["key"].as_str().unwrap();
        let now = chrono::Utc::now();
        assert!(
            key.starts_with(&format!("users/{alice}/files/{}/", now.format("%Y/%m"))),
            "{key}"
        );
        let expires: chrono::DateTime<chrono::Utc> =
            file["url_expires_at"].as_str().unwrap().parse().unwrap();
        assert!((expires - now).num_seconds() > 3500, "an hour by default");

        // The presigned URL works with no credential at all; a changed signature does not.
        let url = file["url"].as_str().unwrap();
        let fetched = http.get(url).send().await.unwrap();
        assert_eq!(fetched.status(), 200);
        let disposition = fetched.headers()["content-disposition"].to_str().unwrap();
        assert!(disposition.starts_with("attachment"), "{disposition}");
        assert_eq!(fetched.bytes().await.unwrap().as_ref(), content);
        let forged = url.replace("signature=", "signature=00");
        assert_eq!(http.get(&forged).send().await.unwrap().status(), 403);

        // Alice lists and reads it; a fresh URL comes with the metadata.
        let id = file["id"].as_str().unwrap();
        let listed = get_json(&http, format!("{base}/api/users/{alice}/files"), &a).await;
        assert_eq!(listed["files"].as_array().unwrap().len(), 1, "{listed}");
        assert_eq!(listed["files"][0]["id"], id);
        let this_month = format!(
            "{base}/api/users/{alice}/files?year={}&month={}",
            now.format("%Y"),
            now.format("%-m")
        );
        let by_month = get_json(&http, &this_month, &a).await;
        assert_eq!(by_month["files"].as_array().unwrap().len(), 1);
        let last_year = format!("{base}/api/users/{alice}/files?year=2001");
        let none = get_json(&http, &last_year, &a).await;
        assert!(none["files"].as_array().unwrap().is_empty());
        let got = get_json(&http, format!("{base}/api/users/{alice}/files/{id}"), &a).await;
        assert_eq!(got["sha256"], file["sha256"]);
        let again = http.get(got["url"].as_str().unwrap()).send().await.unwrap();
        assert_eq!(again.bytes().await.unwrap().as_ref(), content);

        // Bob: 403 on everything of Alice's, and her file is never in his listing.
        for path in [
            format!("/api/users/{alice}/files"),
            format!("/api/users/{alice}/files/{id}"),
        ] {
            assert_eq!(
                status_as(&http, Method::GET, format!("{base}{path}"), &b).await,
                403,
                "{name}: bob GET {path}"
            );
        }
        assert_eq!(
            status_as(
                &http,
                Method::DELETE,
                format!("{base}/api/users/{alice}/files/{id}"),
                &b,
            )
            .await,
            403
        );
        let (status, _) = upload(&http, base, &b, &alice, b"x.txt", "text/plain", b"x").await;
        assert_eq!(status, 403, "bob cannot upload as alice");
        assert_eq!(
            status_as(
                &http,
                Method::GET,
                format!("{base}/api/users/{bob}/files/{id}"),
                &b,
            )
            .await,
            404,
            "her file id under his name is not found"
        );
        let his = get_json(&http, format!("{base}/api/users/{bob}/files"), &b).await;
        assert!(his["files"].as_array().unwrap().is_empty(), "{his}");
        let anonymous = http
            .get(format!("{base}/api/users/{alice}/files"))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401);

        // An administrator may act for her.
        let admin = token_with(&unique("admin"), Some("admin"));
        assert_eq!(
            status_as(
                &http,
                Method::GET,
                format!("{base}/api/users/{alice}/files/{id}"),
                &admin,
            )
            .await,
            200
        );

        // Delete: gone from the listing, the store and the URL.
        assert_eq!(
            status_as(
                &http,
                Method::DELETE,
                format!("{base}/api/users/{alice}/files/{id}"),
                &a,
            )
            .await,
            204
        );
        assert_eq!(objects_of(&users.store, &alice).await, 0);
        assert_eq!(http.get(url).send().await.unwrap().status(), 404);
        assert_eq!(
            status_as(
                &http,
                Method::GET,
                format!("{base}/api/users/{alice}/files/{id}"),
                &a,
            )
            .await,
            404
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_uploads_are_refused_and_leave_nothing_behind() {
    for (name, db, dir) in databases().await {
        let users = user_service(&db, dir.path()).await;
        let base = &users.base;
        let http = Client::new();
        let alice = unique("alice");
        let a = token_with(&alice, None);
        let list = || async {
            let listed = get_json(&http, format!("{base}/api/users/{alice}/files"), &a).await;
            listed["files"].as_array().unwrap().len()
        };

        // Over the limit: 413, nothing kept.
        let big = vec![b'a'; MAX_FILE as usize + 1];
        let (status, body) = upload(&http, base, &a, &alice, b"big.txt", "text/plain", &big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{name}: {body}");
        assert_eq!(body["error"]["code"], "too_large");
        // Exactly at the limit is fine.
        let (status, _) = upload(
            &http,
            base,
            &a,
            &alice,
            b"edge.txt",
            "text/plain",
            &big[1..],
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);

        // Bytes that contradict the declared type: 415, nothing kept.
        let (status, body) = upload(
            &http,
            base,
            &a,
            &alice,
            b"photo.png",
            "image/png",
            b"just some text",
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
        let (status, _) = upload(
            &http,
            base,
            &a,
            &alice,
            b"doc.txt",
            "text/plain",
            b"%PDF-1.7\n\x00\x01",
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let (status, _) = upload(
            &http,
            base,
            &a,
            &alice,
            b"run.exe",
            "application/x-msdownload",
            b"MZ\x90\x00",
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not an accepted type"
        );
        assert_eq!(list().await, 1);
        assert_eq!(objects_of(&users.store, &alice).await, 1);

        // Hostile names are stored safely: the key stays in her folder, the name keeps no
        // separator or control character.
        let png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR";
        let (status, file) = upload(
            &http,
            base,
            &a,
            &alice,
            b"../../etc/passwd",
            "image/png",
            png,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{file}");
        let key = file["key"].as_str().unwrap();
        let segments: Vec<&str> = key.split('/').collect();
        assert!(key.starts_with(&format!("users/{alice}/files/")), "{key}");
        assert_eq!(segments.len(), 6, "{key}");
        assert!(segments.iter().all(|s| *s != ".." && *s != "."), "{key}");
        assert_eq!(file["name"], ".._.._etc_passwd");
        let fetched = http
            .get(file["url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(fetched.bytes().await.unwrap().as_ref(), png);
        // A direct upload: PUT to the presigned URL, then complete; checked like any upload.
        let (nul, put) = direct_upload(
            &http,
            base,
            &a,
            &alice,
            "a\u{0000}b",
            "text/plain",
            "direct bytes",
        )
        .await;
        assert_eq!(nul["file"]["name"], "a_b", "{nul}");
        let nul_key = nul["file"]["key"].as_str().unwrap();
        assert!(nul_key.ends_with("-a_b"), "{nul_key}");
        // A NUL inside a multipart header is malformed: refused as bad input.
        let (status, _) = upload(&http, base, &a, &alice, b"a\x00b.txt", "text/plain", b"x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        assert!(put.is_success(), "{put}");
        let id = nul["file"]["id"].as_str().unwrap();
        let done: Value = send_as(
            &http,
            Method::POST,
            format!("{base}/api/users/{alice}/files/{id}/complete"),
            &a,
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(
            done["sha256"],
            hex::encode(Sha256::digest(b"direct bytes")),
            "{done}"
        );
        assert_eq!(done["size"], 12);
        // The URL still takes a body of its size after the check, but what was checked is what
        // is served; a body of another size is refused.
        let url = nul["url"].as_str().unwrap();
        let swap = http.put(url).body("swapped html").send().await.unwrap();
        assert!(swap.status().is_success(), "{}", swap.status());
        let longer = http
            .put(url)
            .body("direct bytes, and more")
            .send()
            .await
            .unwrap();
        assert!(longer.status().is_client_error(), "{}", longer.status());
        let served = http
            .get(done["url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(served.bytes().await.unwrap().as_ref(), b"direct bytes");
        assert_eq!(uploads_of(&users.store, &alice).await, 1);
        let (lying, _) =
            direct_upload(&http, base, &a, &alice, "x.png", "image/png", "not a png").await;
        let lying_id = lying["file"]["id"].as_str().unwrap();
        let refused = send_as(
            &http,
            Method::POST,
            format!("{base}/api/users/{alice}/files/{lying_id}/complete"),
            &a,
        )
        .await;
        assert_eq!(refused.status(), 415);
        // A direct upload never completed is swept with whatever bytes arrived.
        let (abandoned, _) = direct_upload(
            &http,
            base,
            &a,
            &alice,
            "later.txt",
            "text/plain",
            "never completed",
        )
        .await;
        assert_eq!(objects_of(&users.store, &alice).await, 3);
        assert_eq!(uploads_of(&users.store, &alice).await, 2);
        let swept = users.files.sweep_abandoned(Duration::ZERO).await.unwrap();
        assert!(swept.uploads >= 1 && swept.stray_objects >= 1, "{swept:?}");
        assert_eq!(uploads_of(&users.store, &alice).await, 0);
        let abandoned_id = abandoned["file"]["id"].as_str().unwrap();
        let late = send_as(
            &http,
            Method::POST,
            format!("{base}/api/users/{alice}/files/{abandoned_id}/complete"),
            &a,
        )
        .await;
        assert_eq!(late.status(), 404);
        assert_eq!(list().await, 3, "{name}: edge.txt, passwd, a_b");
        assert_eq!(objects_of(&users.store, &alice).await, 3);
        // A body sent to the URL after the file was deleted recreates no file.
        let deleted = send_as(
            &http,
            Method::DELETE,
            format!("{base}/api/users/{alice}/files/{id}"),
            &a,
        )
        .await;
        assert_eq!(deleted.status(), 204);
        let resent = http.put(url).body("direct bytes").send().await.unwrap();
        assert!(resent.status().is_success(), "{}", resent.status());
        assert_eq!(list().await, 2, "{name}");
        assert_eq!(objects_of(&users.store, &alice).await, 2);
        assert_eq!(uploads_of(&users.store, &alice).await, 1);
        let swept = users.files.sweep_abandoned(Duration::ZERO).await.unwrap();
        assert!(swept.stray_objects >= 1, "{swept:?}");
        assert_eq!(uploads_of(&users.store, &alice).await, 0);

        // Malformed requests are clear 400s.
        let r = http
            .post(format!("{base}/api/users/{alice}/files"))
            .bearer_auth(&a)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(
            status_as(
                &http,
                Method::GET,
                format!("{base}/api/users/{alice}/files?month=13&year=2026"),
                &a,
            )
            .await,
            400
        );
        let r = send_as(
            &http,
            Method::GET,
            format!("{base}/api/users/..%2Fetc/files"),
            &a,
        )
        .await;
        assert!(r.status() == 400 || r.status() == 403, "{}", r.status());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_are_made_used_and_revoked() {
    for (name, db, dir) in databases().await {
        let users = user_service(&db, dir.path()).await;
        let base = &users.base;
        let http = Client::new();
        let alice = unique("alice");
        let a = token_with(&alice, None);
        let made = http
            .post(format!("{base}/api/users/me/api-keys"))
            .bearer_auth(&a)
            .json(&json!({"name": "laptop"}))
            .send()
            .await
            .unwrap();
        assert_eq!(made.status(), 201, "{name}");
        let made: Value = made.json().await.unwrap();
        let key = made["key"].as_str().unwrap();
        let me: Value = http
            .get(format!("{base}/api/users/me"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["id"], alice.as_str());
        assert_eq!(me["auth_method"], "api_key");
        let listed = get_json(&http, format!("{base}/api/users/me/api-keys"), key).await;
        assert_eq!(listed["api_keys"].as_array().unwrap().len(), 1);
        assert!(
            !listed.to_string().contains(&key[20..]),
            "the secret is never listed"
        );
        let escalation = http
            .post(format!("{base}/api/users/me/api-keys"))
            .bearer_auth(&a)
            .json(&json!({"name": "root", "scopes": ["admin"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            escalation.status(),
            403,
            "a key grants no more than its maker holds"
        );
        // A key cannot make keys: they would outlive its revocation.
        let by_key = http
            .post(format!("{base}/api/users/me/api-keys"))
            .header("x-api-key", key)
            .json(&json!({"name": "offspring"}))
            .send()
            .await
            .unwrap();
        assert_eq!(by_key.status(), 403, "{name}");
        let expired = http
            .post(format!("{base}/api/users/me/api-keys"))
            .bearer_auth(&a)
            .json(&json!({"name": "old", "expires_at": "2001-01-01T00:00:00Z"}))
            .send()
            .await
            .unwrap();
        assert_eq!(expired.status(), 400, "{name}");
        let expiring: Value = http
            .post(format!("{base}/api/users/me/api-keys"))
            .bearer_auth(&a)
            .json(&json!({"name": "ci", "expires_at": "2999-01-01T00:00:00Z"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            expiring["api_key"]["expires_at"], "2999-01-01T00:00:00Z",
            "{name}: {expiring}"
        );
        let id = made["api_key"]["id"].as_str().unwrap();
        let revoked = send_as(
            &http,
            Method::DELETE,
            format!("{base}/api/users/me/api-keys/{id}"),
            &a,
        )
        .await;
        assert_eq!(revoked.status(), 204);
        let after = http
            .get(format!("{base}/api/users/me"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(after.status(), 401);
        // Only a service credential may ask whose a credential is.
        let ask = |caller: Option<String>, token: &str| {
            let mut request = http
                .post(format!("{base}/api/auth/verify"))
                .json(&json!({"token": token}));
            if let Some(caller) = caller {
                request = request.bearer_auth(caller);
            }
            request.send()
        };
        let anonymous = ask(None, &a).await.unwrap();
        assert_eq!(anonymous.status(), 401, "{name}");
        let a_user = ask(Some(a.clone()), &a).await.unwrap();
        assert_eq!(a_user.status(), 403, "{name}");
        let service = Some(token_with("agent-service", Some(VERIFY_SCOPE)));
        let verify: Value = ask(service.clone(), &a)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(verify["valid"], true, "{name}: {verify}");
        assert_eq!(verify["user_id"], alice.as_str());
        let invalid: Value = ask(service, "not.a.token")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(invalid["valid"], false, "{name}: {invalid}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn credits_are_charged_once_per_request_and_never_overdrawn() {
    for (name, db, dir) in databases().await {
        let users = user_service(&db, dir.path()).await;
        let base = users.base.clone();
        let http = Client::new();
        let alice = unique("alice");
        let a = token_with(&alice, None);
        let admin = token_with(&unique("admin"), Some("admin"));
        let post = |path: String, bearer: String, body: Value| {
            let http = http.clone();
            let url = format!("{base}{path}");
            async move {
                let r = http
                    .post(url)
                    .bearer_auth(bearer)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                (status, r.json::<Value>().await.unwrap())
            }
        };
        let consume = format!("/api/users/{alice}/credits/consume");

        let (status, _) = post(
            format!("/api/users/{alice}/credits/grant"),
            a.clone(),
            json!({"request_id": "g0", "amount": 5}),
        )
        .await;
        assert_eq!(status, 403, "only administrators grant");
        let (status, grant) = post(
            format!("/api/users/{alice}/credits/grant"),
            admin.clone(),
            json!({"request_id": "g1", "amount": 100}),
        )
        .await;
        assert_eq!(status, 201, "{name}: {grant}");

        let charge =
            json!({"request_id": "r1", "amount": 30, "operation": "model.chat", "units": 1200});
        let (status, first) = post(consume.clone(), a.clone(), charge.clone()).await;
        assert_eq!(status, 201, "{first}");
        assert_eq!(first["transaction"]["balance_after"], 70);
        let (status, replay) = post(consume.clone(), a.clone(), charge).await;
        assert_eq!(status, 200);
        assert_eq!(replay["replayed"], true);
        assert_eq!(replay["transaction"]["id"], first["transaction"]["id"]);
        let (status, broke) = post(
            consume.clone(),
            a.clone(),
            json!({"request_id": "r2", "amount": 71, "operation": "model.chat"}),
        )
        .await;
        assert_eq!(status, 402, "{broke}");
        let (status, _) = post(
            consume.clone(),
            token_with(&unique("bob"), None),
            json!({"request_id": "r3", "amount": 1, "operation": "x"}),
        )
        .await;
        assert_eq!(status, 403, "bob cannot spend alice's credits");
        let (status, _) = post(
            consume.clone(),
            a.clone(),
            json!({"request_id": "r4", "amount": -5, "operation": "x"}),
        )
        .await;
        assert_eq!(status, 400);

        // Ten concurrent charges of 10 against a balance of 70: exactly seven succeed.
        let attempts = (0..10).map(|i| {
            post(
                consume.clone(),
                a.clone(),
                json!({"request_id": format!("c{i}"), "amount": 10, "operation": "tool.call"}),
            )
        });
        let outcomes = futures::future::join_all(attempts).await;
        let charged = outcomes.iter().filter(|(s, _)| *s == 201).count();
        let refused = outcomes.iter().filter(|(s, _)| *s == 402).count();
        assert_eq!((charged, refused), (7, 3), "{name}: {outcomes:?}");
        let balance = get_json(&http, format!("{base}/api/users/{alice}/credits"), &a).await;
        assert_eq!(balance["balance"], 0);

        let history = get_json(
            &http,
            format!("{base}/api/users/{alice}/credits/history?limit=5"),
            &a,
        )
        .await;
        let page = history["transactions"].as_array().unwrap();
        assert_eq!(page.len(), 5);
        assert!(
            page.windows(2)
                .all(|w| w[0]["id"].as_str() > w[1]["id"].as_str()),
            "newest first"
        );
        let rest: Value = send_as(
            &http,
            Method::GET,
            format!(
                "{base}/api/users/{alice}/credits/history?before={}",
                history["next"].as_str().unwrap()
            ),
            &a,
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(
            rest["transactions"].as_array().unwrap().len(),
            4,
            "grant + r1 + 7 charges = 9"
        );
        let usage = get_json(&http, format!("{base}/api/users/{alice}/usage"), &a).await;
        assert_eq!(
            usage["operations"],
            json!([
                {"operation": "model.chat", "requests": 1, "credits": 30, "units": 1200},
                {"operation": "tool.call", "requests": 7, "credits": 70, "units": 0},
            ])
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mcp_file_tools_act_for_the_caller_only() {
    use base64::Engine;
    use isa_core::{
        AuthMethod, CallContext, Identity,
        mcp::{McpConfig, McpServer},
    };
    for (name, db, dir) in databases().await {
        let users = user_service(&db, dir.path()).await;
        let server = McpServer::builder(McpConfig::default()).build();
        server
            .add_tools(isa_files::tools::file_tools(
                users.files.clone(),
                Arc::new(db.clone()),
                0,
            ))
            .await
            .unwrap();
        let as_user = |user: &str| {
            CallContext::of(Identity::new(
                UserId::new(user).unwrap(),
                AuthMethod::Trusted,
            ))
        };
        let call = |tool: &'static str, args: Value, ctx: CallContext| {
            let server = server.clone();
            async move {
                server
                    .call_tool(tool, args.as_object().cloned(), &ctx)
                    .await
                    .unwrap()
            }
        };
        let (alice, bob) = (unique("alice"), unique("bob"));
        let content = "a note from a model";
        let encoded = base64::engine::general_purpose::STANDARD.encode(content);
        let saved = call(
            "file_upload",
            json!({"name": "note.md", "content_base64": encoded}),
            as_user(&alice),
        )
        .await;
        assert!(!saved.is_error, "{name}: {saved:?}");
        let file = saved.structured_content.unwrap();
        assert_eq!(file["content_type"], "text/markdown");
        let fetched = Client::new()
            .get(file["url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(fetched.text().await.unwrap(), content);

        let listed = call("file_list", json!({}), as_user(&alice)).await;
        assert_eq!(
            listed.structured_content.unwrap()["files"][0]["id"],
            file["id"]
        );
        let id = json!({"file_id": file["id"]});
        let theirs = call("file_download_url", id.clone(), as_user(&bob)).await;
        assert!(theirs.is_error, "bob cannot reach alice's file");
        let empty = call("file_list", json!({}), as_user(&bob)).await;
        assert_eq!(empty.structured_content.unwrap()["files"], json!([]));
        let anonymous = call("file_list", json!({}), CallContext::default()).await;
        assert!(anonymous.is_error, "an anonymous caller has no files");
        let bad = call(
            "file_upload",
            json!({"name": "x.png", "content_base64": "not base64!"}),
            as_user(&alice),
        )
        .await;
        assert!(bad.is_error);
        let lying = call(
            "file_upload",
            json!({"name": "x.png", "content_base64": encoded}),
            as_user(&alice),
        )
        .await;
        assert!(
            lying.is_error,
            "text declared as PNG by its name is refused"
        );
        // Deleting needs the user's confirmation, asked through the client.
        let unasked = call("file_delete", id.clone(), as_user(&alice)).await;
        assert!(unasked.is_error);
        assert!(
            format!("{:?}", unasked.content).contains("confirmation"),
            "{unasked:?}"
        );
        let declined = call(
            "file_delete",
            id.clone(),
            answering(as_user(&alice), json!({"action": "decline"})),
        )
        .await;
        assert!(declined.is_error, "{declined:?}");
        let kept = call("file_download_url", id.clone(), as_user(&alice)).await;
        assert!(
            !kept.is_error,
            "a file stays until its deletion is confirmed"
        );
        let confirmed = json!({"action": "accept", "content": {"confirm": true}});
        let deleted = call(
            "file_delete",
            id.clone(),
            answering(as_user(&alice), confirmed),
        )
        .await;
        assert!(!deleted.is_error, "{deleted:?}");
        let gone = call("file_download_url", id, as_user(&alice)).await;
        assert!(gone.is_error);
    }
}

/// A client that can be asked and gives `answer` to every question.
struct Answering(Value);

#[isa_core::async_trait]
impl isa_core::ClientChannel for Answering {
    fn supports(&self, capability: isa_core::ClientCapability) -> bool {
        capability == isa_core::ClientCapability::Elicitation
    }

    async fn ask(&self, _key: &str, _request: isa_core::ClientRequest) -> isa_core::Result<Value> {
        Ok(self.0.clone())
    }
}

fn answering(mut ctx: isa_core::CallContext, answer: Value) -> isa_core::CallContext {
    ctx.client = Some(Arc::new(Answering(answer)));
    ctx
}

/// An upload whose body trickles in: it holds a slot of the service until `rest` is sent and
/// the sender dropped.
struct TrickledUpload {
    more: futures::channel::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    rest: Vec<u8>,
    status: tokio::task::JoinHandle<StatusCode>,
}

async fn start_trickled_upload(
    http: &Client,
    base: &str,
    bearer: &str,
    owner: &str,
) -> TrickledUpload {
    use futures::SinkExt;
    let (mut more, body) = futures::channel::mpsc::channel(1);
    let (header, whole) = multipart(b"slow.txt", "text/plain", b"first bytes");
    let request = http
        .post(format!("{base}/api/users/{owner}/files"))
        .bearer_auth(bearer)
        .header("content-type", header)
        .body(reqwest::Body::wrap_stream(body));
    let status = tokio::spawn(async move { request.send().await.unwrap().status() });
    let (head, rest) = whole.split_at(whole.len() - 20);
    more.send(Ok(head.to_vec())).await.unwrap();
    TrickledUpload {
        more,
        rest: rest.to_vec(),
        status,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_beyond_the_concurrency_limit_are_refused_at_once() {
    use futures::SinkExt;
    let (_, db, dir) = databases().await.remove(0);
    let users = user_service_serving(&db, dir.path(), 1).await;
    let alice = unique("alice");
    let a = token_with(&alice, None);
    let http = Client::new();
    let me = format!("{}/api/users/me", users.base);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // Once a trickled upload holds the one slot, other requests are refused at once. A probe
    // may reach the service first and hold the slot itself, and the upload is refused: then
    // the upload starts again.
    let (mut upload, refused) = loop {
        let upload = start_trickled_upload(&http, &users.base, &a, &alice).await;
        let answer = loop {
            let answer = send_as(&http, Method::GET, &me, &a).await;
            if answer.status() != 200 || upload.status.is_finished() {
                break answer;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the upload never held the slot"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        if answer.status() != 200 {
            break (upload, answer);
        }
        assert_eq!(
            upload.status.await.unwrap(),
            StatusCode::SERVICE_UNAVAILABLE,
            "an upload that ended before its body did was refused for the probe"
        );
    };
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    upload.more.send(Ok(upload.rest.clone())).await.unwrap();
    drop(upload.more);
    assert_eq!(upload.status.await.unwrap(), StatusCode::CREATED);
    let after = send_as(&http, Method::GET, &me, &a).await;
    assert_eq!(after.status(), 200, "the slot is free again");
}
