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
