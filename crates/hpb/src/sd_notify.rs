//! systemd's readiness protocol (`Type=notify`, sd_notify(3)) in a few lines of std: one
//! datagram such as `READY=1` to the Unix socket named by `$NOTIFY_SOCKET` (a path, or
//! `@name` for the abstract namespace). Without `$NOTIFY_SOCKET` nothing is sent.

use std::io;
use std::os::unix::net::UnixDatagram;

/// The socket address `$NOTIFY_SOCKET` names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Path(String),
    Abstract(Vec<u8>),
}

fn target(value: &str) -> Option<Target> {
    if let Some(name) = value.strip_prefix('@') {
        return Some(Target::Abstract(name.as_bytes().to_vec()));
    }
    value
        .starts_with('/')
        .then(|| Target::Path(value.to_string()))
}

fn send_to(target: &Target, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match target {
        Target::Path(p) => {
            socket.send_to(state.as_bytes(), p)?;
        }
        Target::Abstract(name) => {
            #[cfg(target_os = "linux")]
            {
                use std::os::linux::net::SocketAddrExt as _;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)?;
            }
            #[cfg(not(target_os = "linux"))]
            {
                let _ = name;
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "abstract Unix sockets exist only on Linux",
                ));
            }
        }
    }
    Ok(())
}

/// Sends `state` (newline-separated `KEY=value` lines) to `$NOTIFY_SOCKET`. Returns whether
/// a notification was sent; a failure is logged, never fatal.
pub fn notify(state: &str) -> bool {
    let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let value = value.to_string_lossy();
    let Some(t) = target(&value) else {
        tracing::warn!(
            "NOTIFY_SOCKET={value:?} is neither a path nor an @abstract name; systemd is not told about {state:?}"
        );
        return false;
    };
    match send_to(&t, state) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("could not notify systemd ({state:?} to NOTIFY_SOCKET={value}): {e}");
            false
        }
    }
}

/// `READY=1` with a status line: every configured listener is up.
pub fn ready(status: &str) -> bool {
    notify(&format!("READY=1\nSTATUS={status}"))
}

/// `STOPPING=1`: shutdown has begun.
pub fn stopping() -> bool {
    notify("STOPPING=1\nSTATUS=shutting down: telling clients to reconnect")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names() {
        assert_eq!(
            target("/run/systemd/notify"),
            Some(Target::Path("/run/systemd/notify".into()))
        );
        assert_eq!(target("@sd"), Some(Target::Abstract(b"sd".to_vec())));
        assert_eq!(target("relative"), None);
        assert_eq!(target(""), None);
    }

    #[test]
    fn sends_one_datagram_to_a_path() {
        let dir = std::env::temp_dir().join(format!("hpb-sd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).expect("bind");
        send_to(
            &Target::Path(path.to_string_lossy().into_owned()),
            "READY=1",
        )
        .expect("sent");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("received");
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("hpb-sd-test-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
        let rx = UnixDatagram::bind_addr(&addr).expect("bind");
        send_to(&Target::Abstract(name.into_bytes()), "STOPPING=1").expect("sent");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("received");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
