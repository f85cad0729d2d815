//! The callback listener under attack (issue #25, item 3): connections that
//! send half a head, or a head announcing a body that never comes, must not
//! take the places of Cronofy's callbacks. Enterprise Connect callbacks are
//! not retried by Cronofy, so a refused one is lost.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use fake_cronofy::sign_callback;
use tokio::{
    io::AsyncWriteExt,
    net::{TcpSocket, TcpStream},
};

use crate::support::*;

/// A connection from `from` (any 127/8 address is loopback on Linux, so
/// the attacker is a different peer from Cronofy's posts).
async fn connect_from(from: &str, to: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(format!("{from}:0").parse().ok()?).ok()?;
    socket.connect(to).await.ok()
}

/// Keeps `connections` connections from `from` open, each sending `opening`
/// and then nothing; a connection calgate closes is opened again.
fn hold_open(from: &'static str, to: SocketAddr, connections: usize, opening: String, stop: Arc<AtomicBool>) {
    for _ in 0..connections {
        let (opening, stop) = (opening.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Some(mut stream) = connect_from(from, to).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if stream.write_all(opening.as_bytes()).await.is_err() {
                    continue;
                }
                // Wait until calgate closes it (or the test ends).
                let mut buf = [0u8; 256];
                loop {
                    tokio::select! {
                        read = tokio::io::AsyncReadExt::read(&mut stream, &mut buf) => {
                            if matches!(read, Ok(0) | Err(_)) { break }
                        }
                        () = tokio::time::sleep(Duration::from_millis(200)) => {
                            if stop.load(Ordering::Relaxed) { return }
                        }
                    }
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_answered_while_peers_hold_half_heads_and_missing_bodies() {
    let (app, base) = spawn_app_with_callbacks(|_| {}).await;
    let addr: SocketAddr = base.trim_start_matches("http://").parse().expect("callback address");
    let grant = app.connect(Some("ada")).await;
    let url = wait_for(|| app.fake.channels(&grant.sub).first().map(|(_, url)| url.clone())).await;
    let path = url.trim_start_matches(&base).to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    // 32 heads announcing 64 KiB bodies that never come.
    let no_body = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n");
    hold_open("127.0.0.2", addr, 32, no_body, stop.clone());
    // 300 half heads.
    let half_head = format!("POST {path} HTTP/1.1\r\nHost: x\r\n");
    hold_open("127.0.0.2", addr, 300, half_head, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    let http = reqwest::Client::new();
    let mut answered = 0;
    let mut refused = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..100 {
        let body = format!(
            r#"{{"notification":{{"type":"change","changes_since":"2026-01-01T00:{:02}:{:02}Z"}},"channel":{{}}}}"#,
            i / 60,
            i % 60
        );
        let sent = http
            .post(&url)
            .header("content-type", "application/json; charset=utf-8")
            .header("Cronofy-HMAC-SHA256", sign_callback(ACME_SECRET, body.as_bytes()))
            .body(body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == 200 => answered += 1,
            Ok(response) => *refused.entry(response.status().to_string()).or_default() += 1,
            Err(error) => {
                *refused
                    .entry(format!("{error:?}").chars().take(120).collect())
                    .or_default() += 1
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    // 200 is answered only once the notification is recorded for processing.
    assert!(
        answered >= 95,
        "{answered} of 100 answered 200; the others: {refused:?}"
    );
}

/// Polls `found` until it gives a value (10 s at most).
async fn wait_for<T>(mut found: impl FnMut() -> Option<T>) -> T {
    for _ in 0..100 {
        if let Some(value) = found() {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not found within 10 s");
}
