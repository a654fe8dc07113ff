//! Baton's Docker example app, with the standard library only so that it
//! links statically into a `FROM scratch` image. It listens on $PORT, answers
//! /health, says which release it is, and misbehaves on request:
//! STARTUP_DELAY_MS (a slow boot), FAIL_HEALTH=1 (503 on /health),
//! EXIT_CODE=N (exit at once, as a broken release would),
//! /slow?ms=N (a long request).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let release: String = std::env::var("BATON_RELEASE")
        .unwrap_or_else(|_| "unknown".into())
        .chars()
        .take(12)
        .collect();
    let fail_health = std::env::var("FAIL_HEALTH").as_deref() == Ok("1");
    if let Some(code) = std::env::var("EXIT_CODE").ok().and_then(|v| v.parse().ok()) {
        eprintln!("exiting at start on purpose (EXIT_CODE={code})");
        std::process::exit(code);
    }
    if let Some(ms) = std::env::var("STARTUP_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        println!("starting slowly: waiting {ms} ms");
        std::thread::sleep(Duration::from_millis(ms));
    }
    let listener = match TcpListener::bind(format!("0.0.0.0:{port}")) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on port {port}: {e}");
            std::process::exit(2);
        }
    };
    println!("release {release} listening on 0.0.0.0:{port}");
    for stream in listener.incoming().flatten() {
        let release = release.clone();
        std::thread::spawn(move || serve(stream, &release, fail_health));
    }
}

/// Serves one keep-alive connection, request after request.
fn serve(stream: TcpStream, release: &str, fail_health: bool) {
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        let mut close = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        let mut body = vec![0u8; length];
        if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let (status, text) = if path == "/health" {
            if fail_health {
                (
                    "503 Service Unavailable",
                    "unhealthy on purpose (FAIL_HEALTH=1)\n".to_string(),
                )
            } else {
                ("200 OK", "ok\n".to_string())
            }
        } else {
            if let Some(ms) = path.strip_prefix("/slow?ms=").and_then(|v| v.parse().ok()) {
                std::thread::sleep(Duration::from_millis(ms));
            }
            (
                "200 OK",
                format!("Hello from Baton's Docker example!\nrelease: {release}\npath: {path}\n"),
            )
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{text}",
            text.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if writer.write_all(response.as_bytes()).is_err() || close {
            return;
        }
    }
}
