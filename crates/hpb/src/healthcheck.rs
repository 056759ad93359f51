//! `hpb healthcheck`: the container image's HEALTHCHECK without curl or wget in the image.
//! It loads the same configuration as the server (so the same environment finds the same
//! `[http] listen`), sends one `GET` over loopback and succeeds on a 2xx answer. Loopback
//! is what `/api/v1/stats`'s default `[stats] allowed_ips` lets in.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

/// Where to connect for a server listening on `listen`: the address itself, or loopback
/// for an unspecified one (IPv4 first: a `[::]` socket is usually dual-stack).
fn targets(listen: SocketAddr) -> Vec<SocketAddr> {
    let port = listen.port();
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))]
        }
        IpAddr::V6(ip) if ip.is_unspecified() => vec![
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        ],
        _ => vec![listen],
    }
}

/// The status code of an HTTP/1 response's first line.
fn status_code(response: &[u8]) -> Option<u16> {
    let line = response.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16> {
    let mut tcp = TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    // One write: a server that answers after the first bytes must not see a second one.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: hpb-healthcheck\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = tcp.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    status_code(&head).ok_or_else(|| anyhow!("the answer from {addr} is not HTTP"))
}

/// Runs the check; `Ok` with a one-line summary when the server answered 2xx.
pub fn check(listen: SocketAddr, path: &str, timeout: Duration) -> Result<String> {
    if !path.starts_with('/') {
        bail!("the path must start with /, like /api/v1/stats");
    }
    let mut errors = Vec::new();
    for addr in targets(listen) {
        match get(addr, path, timeout) {
            Ok(code) if (200..300).contains(&code) => {
                return Ok(format!("ok: GET http://{addr}{path} answered {code}"));
            }
            Ok(code) => bail!(
                "GET http://{addr}{path} answered {code}{}",
                match code {
                    403 => " (is loopback in [stats] allowed_ips?)",
                    503 => " (starting or shutting down)",
                    _ => "",
                }
            ),
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    bail!(
        "hpb does not answer on [http] listen {listen}: {}",
        errors.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_for_unspecified_addresses() {
        let t = |s: &str| {
            targets(s.parse().expect("addr"))
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(t("[::]:8081"), ["127.0.0.1:8081", "[::1]:8081"]);
        assert_eq!(t("0.0.0.0:80"), ["127.0.0.1:80"]);
        assert_eq!(t("10.0.0.5:8080"), ["10.0.0.5:8080"]);
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\nx: y\r\n"), Some(200));
        assert_eq!(
            status_code(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b""), None);
    }

    #[test]
    fn against_a_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            for answer in ["HTTP/1.1 200 OK\r\n\r\n", "HTTP/1.1 403 Forbidden\r\n\r\n"] {
                let (mut s, _) = l.accept().expect("accept");
                let mut request = Vec::new();
                let mut buf = [0u8; 512];
                while !request.ends_with(b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                assert!(request.starts_with(b"GET /api/v1/stats HTTP/1.1\r\n"));
                let _ = s.write_all(answer.as_bytes());
            }
        });
        let t = Duration::from_secs(5);
        assert!(check(addr, "/api/v1/stats", t).is_ok());
        let e = check(addr, "/api/v1/stats", t).expect_err("403");
        assert!(e.to_string().contains("allowed_ips"), "{e}");
        let _ = server.join();
        assert!(check(addr, "/api/v1/stats", t).is_err(), "nobody listens");
    }
}
