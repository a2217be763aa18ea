//! Proves Debian's Chromium starts headless and loads a page served by this test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::{Read, Write},
    net::TcpListener,
    thread,
};

use headless_chrome::{Browser, LaunchOptions};

/// Serves one fixed HTML page on a loopback port, for as many requests as arrive.
fn serve_page(html: &'static str) -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                html.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    Ok(port)
}

#[test]
fn chromium_starts_headless_and_loads_a_local_page() -> anyhow::Result<()> {
    let chromium = std::path::PathBuf::from("/usr/bin/chromium");
    if !chromium.exists() {
        if std::env::var("ISA_REQUIRE_SERVICES").as_deref() == Ok("1") {
            anyhow::bail!("/usr/bin/chromium is missing; deploy/dev/setup-services.sh installs it");
        }
        eprintln!("skipped: /usr/bin/chromium is missing (run ./deploy/dev/test.sh)");
        return Ok(());
    }
    let port = serve_page(
        "<html><head><title>isa test page</title></head><body><h1 id=\"greeting\">Hello from isa</h1></body></html>",
    )?;
    let args = [
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-gpu",
    ]
    .map(std::ffi::OsStr::new);
    let browser = Browser::new(
        LaunchOptions::default_builder()
            .path(Some(chromium))
            .headless(true)
            .sandbox(false)
            .args(args.to_vec())
            .build()?,
    )?;
    let tab = browser.new_tab()?;
    tab.navigate_to(&format!("http://127.0.0.1:{port}/"))?
        .wait_until_navigated()?;
    assert_eq!(tab.get_title()?, "isa test page");
    let text = tab.wait_for_element("#greeting")?.get_inner_text()?;
    assert_eq!(text, "Hello from isa");
    Ok(())
}

mod driver {
    use std::{sync::Arc, time::Duration};

    use axum::{
        Router,
        response::{Html, Redirect},
        routing::get,
    };
    use isa_core::{ActionOutput, BrowserAction, BrowserDriver, BrowserTask, Error};
    use isa_tools::{
        browser::{BrowserConfig, ChromiumDriver, browser_tools},
        web::SsrfGuard,
    };
    use serde_json::json;

    const FORM: &str = r#"<html><head><title>Greeter</title></head><body>
        <input id="name"><button id="go" onclick="document.getElementById('out').textContent = 'Hello, ' + document.getElementById('name').value">Go</button>
        <p id="out">nobody yet</p></body></html>"#;

    /// A page that gathers WebRTC candidates with a STUN server at `127.0.0.1:{port}` (UDP),
    /// and says `#done` once gathering is complete, or after three seconds of it.
    fn webrtc_page(port: u16) -> String {
        format!(
            r#"<html><head><title>rtc</title></head><body><script>
            const pc = new RTCPeerConnection({{iceServers: [{{urls: "stun:127.0.0.1:{port}"}}]}});
            const done = () => {{
              if (!document.getElementById("done")) document.body.insertAdjacentHTML("beforeend", "<p id=done>done</p>");
            }};
            setTimeout(done, 3000);
            pc.onicegatheringstatechange = () => {{
              if (pc.iceGatheringState === "complete") done();
            }};
            pc.createDataChannel("x");
            pc.createOffer().then(offer => pc.setLocalDescription(offer));
            </script></body></html>"#
        )
    }

    /// Shows the cookie and the stored value it finds, then leaves its own for whoever comes next.
    const MEMORY: &str = r#"<html><head><title>memory</title></head><body><p id="out"></p><script>
        document.getElementById("out").textContent =
            "cookie=" + document.cookie + ";storage=" + localStorage.getItem("who");
        document.cookie = "who=alice; max-age=3600";
        localStorage.setItem("who", "alice");
        </script></body></html>"#;

    async fn site() -> String {
        let app = Router::new()
            .route("/form", get(|| async { Html(FORM) }))
            .route("/memory", get(|| async { Html(MEMORY) }))
            .route(
                "/webrtc/{port}",
                get(
                    |axum::extract::Path(port): axum::extract::Path<u16>| async move {
                        Html(webrtc_page(port))
                    },
                ),
            )
            .route(
                "/to-metadata",
                get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/") }),
            )
            .route(
                "/to-other-loopback",
                get(|| async { Redirect::temporary("http://127.0.0.2:18999/secret") }),
            )
            .route(
                "/stuck",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    Html("too late")
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }

    async fn driver() -> Option<Arc<ChromiumDriver>> {
        if !std::path::Path::new("/usr/bin/chromium").exists() {
            assert!(
                std::env::var("ISA_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "chromium is required"
            );
            eprintln!("skipped: /usr/bin/chromium is missing (run ./deploy/dev/test.sh)");
            return None;
        }
        let config = BrowserConfig {
            guard: SsrfGuard::allowing(["127.0.0.1/32".parse().unwrap()]),
            // Room for a fill, a click and a screenshot while the test command loads both cores;
            // the stuck-page test sets its own short deadline.
            max_task_timeout: Duration::from_secs(20),
            max_tabs: 2,
            ..BrowserConfig::default()
        };
        Some(Arc::new(ChromiumDriver::new(config).await.unwrap()))
    }

    fn task(url: String, actions: Vec<BrowserAction>) -> BrowserTask {
        BrowserTask {
            url,
            actions,
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn reads_fills_clicks_and_screenshots_through_the_tools() {
        let Some(driver) = driver().await else { return };
        let base = site().await;
        let tools = browser_tools(driver.clone());
        let by_name = |n: &str| tools.iter().find(|t| t.spec().name == n).unwrap().clone();

        let read = by_name("browser_read_page")
            .call(
                serde_json::from_value(json!({"url": format!("{base}/form"), "selector": "#out"}))
                    .unwrap(),
                &Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(read.content[1], isa_core::Content::text("nobody yet"));

        let interact = by_name("browser_interact")
            .call(
                serde_json::from_value(json!({"url": format!("{base}/form"), "steps": [
                    {"action": "fill", "selector": "#name", "value": "Ada"},
                    {"action": "click", "selector": "#go"}
                ], "screenshot": true}))
                .unwrap(),
                &Default::default(),
            )
            .await
            .unwrap();
        let text = format!("{:?}", interact.content);
        assert!(text.contains("Hello, Ada"), "{text}");
        assert!(
            matches!(interact.content.last(), Some(isa_core::Content::Image { mime_type, .. }) if mime_type == "image/png")
        );

        let shot = driver
            .run(task(
                format!("{base}/form"),
                vec![BrowserAction::Screenshot],
            ))
            .await
            .unwrap();
        match &shot.outputs[0] {
            ActionOutput::Screenshot { png } => assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n"),
            other => panic!("expected a screenshot, got {other:?}"),
        }
        assert_eq!(shot.title, "Greeter");
    }

    /// WebRTC cannot go around the guarding proxy: a page's STUN request never leaves as UDP.
    #[tokio::test(flavor = "multi_thread")]
    async fn webrtc_sends_no_udp_around_the_proxy() {
        let Some(driver) = driver().await else { return };
        let base = site().await;
        let stun = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = stun.local_addr().unwrap().port();
        let gathered = driver
            .run(BrowserTask {
                url: format!("{base}/webrtc/{port}"),
                actions: vec![BrowserAction::WaitFor {
                    selector: "#done".into(),
                }],
                timeout: Duration::from_secs(20),
            })
            .await;
        assert!(gathered.is_ok(), "{gathered:?}");
        let mut packet = [0u8; 512];
        let sent = stun.try_recv_from(&mut packet);
        assert!(
            sent.is_err(),
            "a STUN request reached 127.0.0.1:{port} over UDP: {sent:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_guard_refuses_direct_and_redirected_destinations() {
        let Some(driver) = driver().await else { return };
        let base = site().await;
        let direct = driver
            .run(task(
                "http://169.254.169.254/latest/meta-data/".into(),
                vec![],
            ))
            .await;
        assert!(matches!(direct, Err(Error::Forbidden(_))), "{direct:?}");
        for hop in ["/to-metadata", "/to-other-loopback"] {
            let redirected = driver
                .run(task(
                    format!("{base}{hop}"),
                    vec![BrowserAction::ReadText { selector: None }],
                ))
                .await;
            assert!(
                matches!(redirected, Err(Error::Forbidden(_))),
                "{hop}: {redirected:?}"
            );
        }
    }

    /// One caller's task leaves nothing (cookies, local storage) for the next caller's.
    #[tokio::test(flavor = "multi_thread")]
    async fn every_task_starts_with_a_profile_of_its_own() {
        let Some(driver) = driver().await else { return };
        let base = site().await;
        for visit in ["first", "second", "third"] {
            let outcome = driver
                .run(task(
                    format!("{base}/memory"),
                    vec![BrowserAction::ReadText {
                        selector: Some("#out".into()),
                    }],
                ))
                .await
                .unwrap();
            assert!(
                matches!(&outcome.outputs[0], ActionOutput::Text { text } if text == "cookie=;storage=null"),
                "{visit} visit: {:?}",
                outcome.outputs
            );
        }
        assert_eq!(driver.contexts_not_disposed(), 0);
    }

    /// Chromium runs with its sandbox on (its renderers under a seccomp filter) and, when the
    /// tests run as root, as an unprivileged account.
    #[tokio::test(flavor = "multi_thread")]
    async fn chromium_runs_sandboxed_and_never_as_root() {
        let Some(driver) = driver().await else { return };
        let base = site().await;
        driver
            .run(task(format!("{base}/form"), vec![]))
            .await
            .unwrap();
        let pid = driver.chromium_pid().unwrap();
        let status = |pid: u32, field: &str| -> Option<String> {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{field}:")))
                .map(|v| v.split_whitespace().next().unwrap_or_default().to_owned())
        };
        let our_uid = status(std::process::id(), "Uid").unwrap();
        let chromium_uid = status(pid, "Uid").unwrap();
        if our_uid == "0" {
            assert_ne!(chromium_uid, "0", "Chromium runs as root");
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(!cmdline.contains("--no-sandbox"), "{cmdline}");
        // The renderers are descendants of the browser process, each under seccomp (mode 2).
        let renderers: Vec<u32> = descendants(pid)
            .into_iter()
            .filter(|child| {
                std::fs::read(format!("/proc/{child}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--type=renderer"))
            })
            .collect();
        assert!(!renderers.is_empty(), "no renderer under {pid}");
        for renderer in renderers {
            assert_eq!(
                status(renderer, "Seccomp").as_deref(),
                Some("2"),
                "renderer {renderer}"
            );
        }
    }

    /// Every process below `pid`, read off `/proc`.
    fn descendants(pid: u32) -> Vec<u32> {
        let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| {
                let child: u32 = entry.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                // The parent is the second field after the parenthesised command name.
                let parent = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                Some((child, parent))
            })
            .collect();
        let mut found = vec![pid];
        let mut i = 0;
        while i < found.len() {
            let parent = found[i];
            found.extend(
                parents
                    .iter()
                    .filter(|(_, p)| *p == parent)
                    .map(|(c, _)| *c),
            );
            i += 1;
        }
        found.remove(0);
        found
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_stuck_page_times_out_and_frees_its_tab() {
        let Some(driver) = driver().await else { return };
        let base = site().await;
        let stuck = BrowserTask {
            url: format!("{base}/stuck"),
            actions: vec![],
            timeout: Duration::from_secs(2),
        };
        let (a, b) = tokio::join!(driver.run(stuck.clone()), driver.run(stuck));
        assert!(
            matches!(a, Err(Error::Timeout(_))) && matches!(b, Err(Error::Timeout(_))),
            "{a:?} {b:?}"
        );
        // Both tabs were stuck; the pool still serves the next task. A stuck thread usually
        // lets its tab go before the timeout is answered; on a machine loaded enough that it
        // does not, the pool refuses fast (overloaded) until it does.
        let give_up = std::time::Instant::now() + Duration::from_secs(60);
        let after = loop {
            match driver.run(task(format!("{base}/form"), vec![])).await {
                Err(Error::Overloaded { .. }) if std::time::Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => break other.unwrap(),
            }
        };
        assert_eq!(after.title, "Greeter");
    }
}
