//! A forward proxy in front of Chromium that applies the [`SsrfGuard`] to every request the
//! browser makes: navigations, redirects and subresources, over HTTP (absolute-URI requests)
//! and HTTPS (`CONNECT`). Chromium is started with `--proxy-server` pointing here and with
//! loopback not bypassed, so nothing reaches the network without the guard's consent.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::web::SsrfGuard;

/// Largest request head the proxy reads.
const MAX_HEAD: usize = 64 * 1024;

/// Starts the proxy on a loopback port; it runs until the runtime stops.
pub async fn start(guard: SsrfGuard) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let guard = guard.clone();
            tokio::spawn(async move {
                if let Err(error) = handle(client, guard).await {
                    tracing::debug!(%error, "browser proxy connection ended");
                }
            });
        }
    });
    Ok(addr)
}

async fn handle(mut client: TcpStream, guard: SsrfGuard) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(4096);
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if head.len() > MAX_HEAD {
            return refuse(&mut client, "400 Bad Request", "request head too large").await;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut request_line = text.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        request_line.next().unwrap_or_default(),
        request_line.next().unwrap_or_default(),
    );

    if method.eq_ignore_ascii_case("CONNECT") {
        let Some((host, port)) = split_authority(target, 443) else {
            return refuse(&mut client, "400 Bad Request", "bad CONNECT target").await;
        };
        let mut upstream = match connect(&guard, &host, port).await {
            Ok(s) => s,
            Err(why) => return refuse(&mut client, "403 Forbidden", &why).await,
        };
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        upstream.write_all(&head[end..]).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }

    let Ok(url) = reqwest::Url::parse(target) else {
        return refuse(
            &mut client,
            "400 Bad Request",
            "the proxy takes absolute URLs only",
        )
        .await;
    };
    if url.scheme() != "http" {
        return refuse(
            &mut client,
            "400 Bad Request",
            "only http goes through without CONNECT",
        )
        .await;
    }
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let mut upstream = match connect(&guard, &host, port).await {
        Ok(s) => s,
        Err(why) => return refuse(&mut client, "403 Forbidden", &why).await,
    };
    // Origin-form request line, one request per connection (so the checked host is the only
    // host this connection ever reaches), proxy headers dropped.
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let mut forwarded = format!("{method} {path} HTTP/1.1\r\n");
    for line in text.lines().skip(1).take_while(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if !matches!(
            name.as_str(),
            "connection" | "proxy-connection" | "keep-alive" | "proxy-authorization"
        ) {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    upstream.write_all(forwarded.as_bytes()).await?;
    upstream.write_all(&head[end..]).await?;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    Ok(())
}

/// Resolves through the guard and connects to the first permitted address.
async fn connect(guard: &SsrfGuard, host: &str, port: u16) -> Result<TcpStream, String> {
    let addrs = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            guard.check_ip(ip).map_err(|e| e.to_string())?;
            vec![SocketAddr::new(ip, port)]
        }
        Err(_) => guard.resolve(host, port).await.map_err(|e| e.to_string())?,
    };
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

fn split_authority(target: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = match target.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().ok()?),
        _ => (target, default_port),
    };
    let host = host.trim_matches(['[', ']']);
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

async fn refuse(client: &mut TcpStream, status: &str, why: &str) -> std::io::Result<()> {
    tracing::info!(%why, "browser request refused");
    let body = format!("isa refused this request: {why}\n");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes()).await
}
