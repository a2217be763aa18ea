//! `web_fetch`, `web_search` and the SSRF guard against HTTP servers started by the tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::{
    Router,
    extract::Query,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect},
    routing::get,
};
use isa_core::{Error, Tool};
use isa_tools::web::{FetchConfig, SsrfGuard, WebFetch, WebSearch};
use serde_json::{Value, json};

async fn serve(app: Router) -> String {
    serve_on("127.0.0.1", app).await
}

async fn serve_on(ip: &str, app: Router) -> String {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn loopback_allowed() -> SsrfGuard {
    SsrfGuard::allowing(["127.0.0.1/32".parse().unwrap()])
}

fn pages() -> Router {
    Router::new()
        .route(
            "/article",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    "<html><head><title>T</title><script>var secret = 1;</script></head><body>\
                     <h1>Rust news</h1><p>Read <a href=\"https://example.com/more\">more here</a>.</p></body></html>",
                )
            }),
        )
        .route(
            "/latin1",
            get(|| async {
                // "café" in ISO-8859-1, declared only in a <meta> tag.
                let mut body = b"<html><head><meta charset=\"iso-8859-1\"></head><body><p>caf".to_vec();
                body.push(0xe9);
                body.extend_from_slice(b"</p></body></html>");
                ([(header::CONTENT_TYPE, "text/html")], body)
            }),
        )
        .route("/big", get(|| async { ([(header::CONTENT_TYPE, "text/plain")], "x".repeat(4096)) }))
        .route("/binary", get(|| async { ([(header::CONTENT_TYPE, "application/octet-stream")], vec![0u8; 10]) }))
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .route("/to-article", get(|| async { Redirect::temporary("/article") }))
        .route("/to-metadata", get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/") }))
        .route("/to-other-loopback", get(|| async { Redirect::temporary("http://127.0.0.2:9/") }))
        .route("/to-localhost", get(|| async { Redirect::temporary("http://localhost:9/") }))
}

fn fetcher(guard: SsrfGuard, max_bytes: usize) -> WebFetch {
    WebFetch::new(
        guard,
        FetchConfig {
            max_bytes,
            ..FetchConfig::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn fetches_html_as_markdown_or_text_without_scripts() {
    let base = serve(pages()).await;
    let fetch = fetcher(loopback_allowed(), 1 << 20);
    let page = fetch.fetch(&format!("{base}/article"), true).await.unwrap();
    assert!(page.text.contains("# Rust news"), "{}", page.text);
    assert!(
        page.text.contains("more here") && page.text.contains("https://example.com/more"),
        "{}",
        page.text
    );
    assert!(
        !page.text.contains("secret"),
        "scripts are not content: {}",
        page.text
    );
    let plain = fetch
        .fetch(&format!("{base}/article"), false)
        .await
        .unwrap();
    assert!(
        plain.text.contains("more here") && !plain.text.contains("https://example.com/more"),
        "{}",
        plain.text
    );
}

#[tokio::test]
async fn decodes_the_charset_a_page_declares() {
    let base = serve(pages()).await;
    let page = fetcher(loopback_allowed(), 1 << 20)
        .fetch(&format!("{base}/latin1"), false)
        .await
        .unwrap();
    assert!(page.text.contains("café"), "{}", page.text);
}

#[tokio::test]
async fn refuses_bodies_over_the_limit_and_non_text_types() {
    let base = serve(pages()).await;
    let fetch = fetcher(loopback_allowed(), 1024);
    assert!(matches!(
        fetch.fetch(&format!("{base}/big"), false).await,
        Err(Error::TooLarge { limit: 1024 })
    ));
    assert!(matches!(
        fetch.fetch(&format!("{base}/binary"), false).await,
        Err(Error::UnsupportedMediaType(_))
    ));
    assert!(matches!(
        fetch.fetch(&format!("{base}/missing"), false).await,
        Err(Error::Upstream {
            status: Some(404),
            ..
        })
    ));
}

#[tokio::test]
async fn follows_redirects_it_may_follow() {
    let base = serve(pages()).await;
    let page = fetcher(loopback_allowed(), 1 << 20)
        .fetch(&format!("{base}/to-article"), true)
        .await
        .unwrap();
    assert!(page.url.ends_with("/article") && page.text.contains("Rust news"));
}

#[tokio::test]
async fn refuses_every_non_public_address_class_directly() {
    let fetch = fetcher(SsrfGuard::new(), 1 << 20);
    for url in [
        "http://127.0.0.1/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:169.254.169.254]/",
    ] {
        let refused = fetch.fetch(url, false).await;
        assert!(
            matches!(refused, Err(Error::Forbidden(_))),
            "{url}: {refused:?}"
        );
    }
}

#[tokio::test]
async fn refuses_a_host_name_that_resolves_to_a_refused_address() {
    let base = serve(pages()).await;
    let port = base.rsplit(':').next().unwrap();
    let refused = fetcher(SsrfGuard::new(), 1 << 20)
        .fetch(&format!("http://localhost:{port}/article"), false)
        .await;
    match refused {
        Err(Error::Forbidden(message)) => {
            assert!(message.contains("localhost resolves to"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn checks_every_redirect_hop_again() {
    let base = serve(pages()).await;
    let fetch = fetcher(loopback_allowed(), 1 << 20);
    for hop in ["/to-metadata", "/to-other-loopback"] {
        let refused = fetch.fetch(&format!("{base}{hop}"), false).await;
        assert!(
            matches!(refused, Err(Error::Forbidden(_))),
            "{hop}: {refused:?}"
        );
    }
    // A redirect to a host name is checked after resolving it: with only 127.0.0.2 allowed,
    // `localhost` (127.0.0.1) is refused.
    let base = serve_on("127.0.0.2", pages()).await;
    let fetch = fetcher(
        SsrfGuard::allowing(["127.0.0.2/32".parse().unwrap()]),
        1 << 20,
    );
    assert!(fetch.fetch(&format!("{base}/article"), false).await.is_ok());
    let refused = fetch.fetch(&format!("{base}/to-localhost"), false).await;
    assert!(
        matches!(refused, Err(Error::Forbidden(ref m)) if m.contains("localhost")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn web_fetch_tool_reports_a_refusal_as_an_error_the_model_reads() {
    let tool = fetcher(SsrfGuard::new(), 1 << 20);
    let args = serde_json::from_value(json!({"url": "http://169.254.169.254/"})).unwrap();
    let error = tool.call(args, &Default::default()).await.unwrap_err();
    assert!(error.to_string().contains("link-local"), "{error}");
}

/// Speaks the Brave Search API: `GET /res/v1/web/search?q=&count=` with `X-Subscription-Token`.
fn brave() -> Router {
    Router::new().route(
        "/res/v1/web/search",
        get(|headers: HeaderMap, Query(params): Query<Vec<(String, String)>>| async move {
            match headers.get("x-subscription-token").and_then(|v| v.to_str().ok()) {
                Some("good-key") => {}
                Some("busy-key") => return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "3")], String::new()).into_response(),
                _ => return (StatusCode::UNAUTHORIZED, "{\"error\":\"bad token\"}").into_response(),
            }
            let q = params.iter().find(|(k, _)| k == "q").map(|(_, v)| v.clone()).unwrap_or_default();
            let count: usize = params.iter().find(|(k, _)| k == "count").and_then(|(_, v)| v.parse().ok()).unwrap_or(20);
            let results: Vec<Value> = (1..=3)
                .map(|i| json!({"title": format!("{q} result {i}"), "url": format!("https://r{i}.example/"), "description": format!("about {q}"), "type": "search_result"}))
                .take(count)
                .collect();
            axum::Json(json!({"type": "search", "query": {"original": q}, "web": {"type": "search", "results": results}})).into_response()
        }),
    )
}

#[tokio::test]
async fn web_search_speaks_the_brave_api() {
    let base = serve(brave()).await;
    let endpoint = format!("{base}/res/v1/web/search");
    let search = WebSearch::new("good-key", &endpoint).unwrap();
    let args = serde_json::from_value(json!({"query": "rust mcp", "count": 2})).unwrap();
    let out = search.call(args, &Default::default()).await.unwrap();
    let results = out.structured_content.unwrap()["results"].clone();
    assert_eq!(results.as_array().unwrap().len(), 2);
    assert_eq!(results[0]["title"], "rust mcp result 1");
    assert_eq!(results[1]["url"], "https://r2.example/");

    let refused = WebSearch::new("wrong", &endpoint)
        .unwrap()
        .search("x", 1)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            Error::Upstream {
                status: Some(401),
                ..
            }
        ) && refused.to_string().contains("BRAVE_API_KEY")
    );
    let busy = WebSearch::new("busy-key", &endpoint)
        .unwrap()
        .search("x", 1)
        .await
        .unwrap_err();
    assert!(matches!(busy, Error::Overloaded { retry_after } if retry_after.as_secs() == 3));
}

/// A page that sends one byte a second is cut off at the fetch deadline, and other fetches
/// are served meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_that_trickles_is_cut_off_at_the_deadline() {
    let trickle = get(|| async {
        let bytes = futures::stream::unfold(0u64, |sent| async move {
            if sent > 0 {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Some((
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"a")),
                sent + 1,
            ))
        });
        (
            [(header::CONTENT_TYPE, "text/plain")],
            axum::body::Body::from_stream(bytes),
        )
    });
    let base = serve(pages().route("/trickle", trickle)).await;
    let deadline = std::time::Duration::from_secs(2);
    let fetch = WebFetch::new(
        loopback_allowed(),
        FetchConfig {
            timeout: deadline,
            ..FetchConfig::default()
        },
    )
    .unwrap();
    let started = std::time::Instant::now();
    let others = async {
        for _ in 0..3 {
            let page = fetch.fetch(&format!("{base}/article"), true).await.unwrap();
            assert!(page.text.contains("Rust news"));
        }
        started.elapsed()
    };
    let trickle_url = format!("{base}/trickle");
    let (trickled, others_took) = tokio::join!(fetch.fetch(&trickle_url, true), others);
    assert!(matches!(trickled, Err(Error::Timeout(_))), "{trickled:?}");
    let took = started.elapsed();
    assert!(
        took < deadline * 3,
        "the trickling page held the fetch for {took:?}"
    );
    assert!(
        others_took < deadline,
        "other fetches waited {others_took:?}"
    );
}
