//! A minimal TURN client for the protocol tests, written from RFC 8489 and RFC 8656 alone:
//! it encodes requests and decodes responses itself (hmac, sha1, md-5, crc32fast, base64) and
//! never uses hpb_turn's message, attribute or auth code, so a bug shared by both sides
//! cannot make a test pass. The encoder is checked against the RFC 5769 test vectors.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub const COOKIE: u32 = 0x2112_A442;
const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// How long any single expected frame may take on loopback before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
    pub const CONNECT: u16 = 0x00a;
}

pub mod attr {
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000a;
    pub const CHANNEL_NUMBER: u16 = 0x000c;
    pub const LIFETIME: u16 = 0x000d;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PRIORITY: u16 = 0x0024;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// RFC 8489 §5: M11..M7 C1 M6..M4 C0 M3..M0.
pub fn message_type(method: u16, class: Class) -> u16 {
    let c: u16 = match class {
        Class::Request => 0,
        Class::Indication => 1,
        Class::Success => 2,
        Class::Error => 3,
    };
    let m = method;
    let mut t = m & 0xf;
    t |= (c & 1) << 4;
    t |= ((m >> 4) & 0x7) << 5;
    t |= ((c >> 1) & 1) << 8;
    t |= ((m >> 7) & 0x1f) << 9;
    t
}

fn split_type(t: u16) -> (u16, Class) {
    let m = (t & 0xf) | (((t >> 5) & 0x7) << 4) | (((t >> 9) & 0x1f) << 7);
    let c = ((t >> 4) & 1) | (((t >> 8) & 1) << 1);
    let class = match c {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    (m, class)
}

pub fn random_txid() -> [u8; 12] {
    rand::random()
}

/// XOR-*-ADDRESS value of `addr` (RFC 8489 §14.2).
pub fn xor_encode(addr: SocketAddr, txid: &[u8; 12]) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&COOKIE.to_be_bytes());
    key.extend_from_slice(txid);
    let mut v = vec![0u8];
    let port = addr.port() ^ 0x2112;
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.push(1);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(ip.octets().iter().zip(&key).map(|(a, k)| a ^ k));
        }
        IpAddr::V6(ip) => {
            v.push(2);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(ip.octets().iter().zip(&key).map(|(a, k)| a ^ k));
        }
    }
    v
}

pub fn xor_decode(v: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&COOKIE.to_be_bytes());
    key.extend_from_slice(txid);
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ 0x2112;
    let raw: Vec<u8> = v[4..].iter().zip(&key).map(|(a, k)| a ^ k).collect();
    let ip = match (v[1], v.len()) {
        (1, 8) => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
        (2, 20) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&raw);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A STUN message to send.
#[derive(Clone, Debug)]
pub struct Msg {
    pub method: u16,
    pub class: Class,
    pub txid: [u8; 12],
    pub attrs: Vec<(u16, Vec<u8>)>,
}

impl Msg {
    pub fn request(method: u16) -> Msg {
        Msg {
            method,
            class: Class::Request,
            txid: random_txid(),
            attrs: Vec::new(),
        }
    }

    pub fn indication(method: u16) -> Msg {
        Msg {
            class: Class::Indication,
            ..Msg::request(method)
        }
    }

    pub fn attr(mut self, typ: u16, value: &[u8]) -> Msg {
        self.attrs.push((typ, value.to_vec()));
        self
    }

    pub fn u32(self, typ: u16, v: u32) -> Msg {
        self.attr(typ, &v.to_be_bytes())
    }

    pub fn xor(self, typ: u16, addr: SocketAddr) -> Msg {
        let v = xor_encode(addr, &self.txid);
        self.attr(typ, &v)
    }

    /// REQUESTED-TRANSPORT with protocol `proto` (17 = UDP).
    pub fn transport(self, proto: u8) -> Msg {
        self.attr(attr::REQUESTED_TRANSPORT, &[proto, 0, 0, 0])
    }

    pub fn channel(self, number: u16) -> Msg {
        let b = number.to_be_bytes();
        self.attr(attr::CHANNEL_NUMBER, &[b[0], b[1], 0, 0])
    }

    /// A fresh transaction ID (a new request, not a retransmission).
    pub fn renew(mut self) -> Msg {
        let old = self.txid;
        self.txid = random_txid();
        // XOR addresses depend on the transaction ID for IPv6: re-encode them.
        for (typ, v) in &mut self.attrs {
            if matches!(
                *typ,
                attr::XOR_PEER_ADDRESS | attr::XOR_RELAYED_ADDRESS | attr::XOR_MAPPED_ADDRESS
            ) && let Some(a) = xor_decode(v, &old)
            {
                *v = xor_encode(a, &self.txid);
            }
        }
        self
    }

    /// Encodes with zero padding, optional MESSAGE-INTEGRITY and optional FINGERPRINT.
    pub fn encode(&self, key: Option<&[u8]>, fingerprint: bool) -> Vec<u8> {
        self.encode_with_pad(key, fingerprint, 0)
    }

    /// Encodes with `pad` as the padding byte (RFC 5769 uses spaces).
    pub fn encode_with_pad(&self, key: Option<&[u8]>, fingerprint: bool, pad: u8) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&message_type(self.method, self.class).to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&COOKIE.to_be_bytes());
        b.extend_from_slice(&self.txid);
        for (typ, v) in &self.attrs {
            push_attr(&mut b, *typ, v, pad);
        }
        if let Some(key) = key {
            let len = (b.len() - 20 + 24) as u16;
            b[2..4].copy_from_slice(&len.to_be_bytes());
            let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC key");
            mac.update(&b);
            let tag = mac.finalize().into_bytes();
            push_attr(&mut b, attr::MESSAGE_INTEGRITY, &tag, pad);
        }
        if fingerprint {
            let len = (b.len() - 20 + 8) as u16;
            b[2..4].copy_from_slice(&len.to_be_bytes());
            let crc = crc32fast::hash(&b) ^ FINGERPRINT_XOR;
            push_attr(&mut b, attr::FINGERPRINT, &crc.to_be_bytes(), pad);
        }
        let len = (b.len() - 20) as u16;
        b[2..4].copy_from_slice(&len.to_be_bytes());
        b
    }
}

fn push_attr(b: &mut Vec<u8>, typ: u16, v: &[u8], pad: u8) {
    b.extend_from_slice(&typ.to_be_bytes());
    b.extend_from_slice(&(v.len() as u16).to_be_bytes());
    b.extend_from_slice(v);
    while !b.len().is_multiple_of(4) {
        b.push(pad);
    }
}

/// A decoded STUN message.
#[derive(Clone, Debug)]
pub struct Resp {
    pub method: u16,
    pub class: Class,
    pub txid: [u8; 12],
    /// (type, value, offset of the attribute header).
    pub attrs: Vec<(u16, Vec<u8>, usize)>,
    pub raw: Vec<u8>,
    /// Whether a FINGERPRINT attribute was present (its value is checked by `decode`).
    pub fingerprint: bool,
}

/// Decodes one STUN message strictly; a FINGERPRINT that does not match is an error.
pub fn decode(buf: &[u8]) -> Result<Resp, String> {
    if buf.len() < 20 {
        return Err(format!("{} bytes: too short", buf.len()));
    }
    if buf[0] & 0xc0 != 0 {
        return Err("first two bits set".into());
    }
    if buf[4..8] != COOKIE.to_be_bytes() {
        return Err("no magic cookie".into());
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if !len.is_multiple_of(4) || len + 20 != buf.len() {
        return Err(format!("length {len} vs {} bytes", buf.len()));
    }
    let (method, class) = split_type(u16::from_be_bytes([buf[0], buf[1]]));
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&buf[8..20]);
    let mut attrs = Vec::new();
    let mut pos = 20;
    let mut fingerprint = false;
    while pos < buf.len() {
        if fingerprint {
            return Err("attribute after FINGERPRINT".into());
        }
        if pos + 4 > buf.len() {
            return Err("truncated attribute header".into());
        }
        let typ = u16::from_be_bytes([buf[pos], buf[pos + 1]]);
        let alen = usize::from(u16::from_be_bytes([buf[pos + 2], buf[pos + 3]]));
        let end = pos + 4 + alen;
        let padded = pos + 4 + alen.div_ceil(4) * 4;
        if padded > buf.len() {
            return Err(format!("attribute {typ:#06x} overruns"));
        }
        let value = buf[pos + 4..end].to_vec();
        if typ == attr::FINGERPRINT {
            let want = crc32fast::hash(&buf[..pos]) ^ FINGERPRINT_XOR;
            if value != want.to_be_bytes() {
                return Err("FINGERPRINT mismatch".into());
            }
            fingerprint = true;
        }
        attrs.push((typ, value, pos));
        pos = padded;
    }
    Ok(Resp {
        method,
        class,
        txid,
        attrs,
        raw: buf.to_vec(),
        fingerprint,
    })
}

impl Resp {
    pub fn get(&self, typ: u16) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(t, _, _)| *t == typ)
            .map(|(_, v, _)| v.as_slice())
    }

    pub fn has(&self, typ: u16) -> bool {
        self.get(typ).is_some()
    }

    /// (code, reason) of ERROR-CODE.
    pub fn error(&self) -> Option<(u16, String)> {
        let v = self.get(attr::ERROR_CODE)?;
        if v.len() < 4 {
            return None;
        }
        let code = u16::from(v[2] & 0x7) * 100 + u16::from(v[3]);
        Some((code, String::from_utf8_lossy(&v[4..]).into_owned()))
    }

    pub fn code(&self) -> Option<u16> {
        self.error().map(|(c, _)| c)
    }

    pub fn xor(&self, typ: u16) -> Option<SocketAddr> {
        xor_decode(self.get(typ)?, &self.txid)
    }

    pub fn u32(&self, typ: u16) -> Option<u32> {
        let v = self.get(typ)?;
        Some(u32::from_be_bytes(v.try_into().ok()?))
    }

    /// MESSAGE-INTEGRITY verifies with `key` (RFC 8489 §14.5: HMAC-SHA1 up to the
    /// attribute, with the length field covering it).
    pub fn integrity_ok(&self, key: &[u8]) -> bool {
        let Some((_, tag, at)) = self
            .attrs
            .iter()
            .find(|(t, _, _)| *t == attr::MESSAGE_INTEGRITY)
        else {
            return false;
        };
        let mut head = self.raw[..*at].to_vec();
        let len = (*at - 20 + 24) as u16;
        head[2..4].copy_from_slice(&len.to_be_bytes());
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC key");
        mac.update(&head);
        mac.verify_slice(tag).is_ok()
    }

    pub fn describe(&self) -> String {
        format!(
            "{:?} method {:#05x} error {:?}",
            self.class,
            self.method,
            self.error()
        )
    }
}

/// TURN REST credentials as Talk makes them: `<expiry>:<user>`, base64(HMAC-SHA1).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC key");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// (username, password) valid for a day for `user` under `secret`.
pub fn rest_credentials(secret: &str, user: &str) -> (String, String) {
    let username = format!("{}:{user}", unix_now() + 86_400);
    let password = rest_password(secret.as_bytes(), &username);
    (username, password)
}

pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(format!("{username}:{realm}:{password}").as_bytes());
    h.finalize().into()
}

/// One frame from the server.
#[derive(Debug)]
pub enum Frame {
    Stun(Resp),
    /// Channel, data, and the frame's length on the wire (padding included on TCP).
    Channel(u16, Vec<u8>, usize),
}

enum Conn {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream, Vec<u8>),
}

/// A TURN client over UDP or TCP with long-term credentials.
pub struct Client {
    conn: Conn,
    pub username: String,
    pub password: String,
    pub realm: Option<String>,
    pub nonce: Option<Vec<u8>>,
    /// Frames that arrived while a response was awaited (Data indications, ChannelData).
    queued: VecDeque<Frame>,
}

impl Client {
    /// A UDP client on a fresh port of the loopback address of `server`'s family.
    pub async fn udp(server: SocketAddr, username: &str, password: &str) -> Client {
        let local: SocketAddr = if server.is_ipv4() {
            "127.0.0.1:0".parse().expect("addr")
        } else {
            "[::1]:0".parse().expect("addr")
        };
        let sock = UdpSocket::bind(local).await.expect("client UDP socket");
        Client::with_conn(Conn::Udp(sock, server), username, password)
    }

    pub async fn tcp(server: SocketAddr, username: &str, password: &str) -> Client {
        let s = tokio::time::timeout(WAIT, TcpStream::connect(server))
            .await
            .expect("TCP connect in time")
            .expect("TCP connect");
        s.set_nodelay(true).expect("nodelay");
        Client::with_conn(Conn::Tcp(s, Vec::new()), username, password)
    }

    fn with_conn(conn: Conn, username: &str, password: &str) -> Client {
        Client {
            conn,
            username: username.into(),
            password: password.into(),
            realm: None,
            nonce: None,
            queued: VecDeque::new(),
        }
    }

    pub fn is_stream(&self) -> bool {
        matches!(self.conn, Conn::Tcp(..))
    }

    pub fn local_addr(&self) -> SocketAddr {
        match &self.conn {
            Conn::Udp(s, _) => s.local_addr().expect("local addr"),
            Conn::Tcp(s, _) => s.local_addr().expect("local addr"),
        }
    }

    pub fn key(&self) -> [u8; 16] {
        let realm = self.realm.as_deref().expect("realm learned from a 401");
        long_term_key(&self.username, realm, &self.password)
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        match &mut self.conn {
            Conn::Udp(s, to) => {
                s.send_to(bytes, *to).await.expect("UDP send");
            }
            Conn::Tcp(s, _) => s.write_all(bytes).await.expect("TCP write"),
        }
    }

    /// Sends ChannelData (padded to 4 bytes on TCP, RFC 8656 §12.5).
    pub async fn send_channel_data(&mut self, channel: u16, data: &[u8]) {
        let f = channel_frame(channel, data, self.is_stream());
        self.send_raw(&f).await;
    }

    /// The next frame, or `None` if none arrives within `wait` (or the stream closed).
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Frame> {
        if let Some(f) = self.queued.pop_front() {
            return Some(f);
        }
        match &mut self.conn {
            Conn::Udp(s, from) => {
                let mut buf = vec![0u8; 65_536];
                loop {
                    let (n, src) = tokio::time::timeout(wait, s.recv_from(&mut buf))
                        .await
                        .ok()?
                        .expect("UDP receive");
                    if src != *from {
                        continue;
                    }
                    return Some(parse_frame(&buf[..n], false));
                }
            }
            Conn::Tcp(s, buf) => loop {
                if let Some(len) = stream_frame_len(buf)
                    && buf.len() >= len
                {
                    let frame: Vec<u8> = buf.drain(..len).collect();
                    return Some(parse_frame(&frame, true));
                }
                let mut chunk = [0u8; 4096];
                let n = tokio::time::timeout(wait, s.read(&mut chunk))
                    .await
                    .ok()?
                    .ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            },
        }
    }

    /// The next frame (a relayed Data indication or ChannelData in these tests).
    pub async fn recv_data(&mut self) -> Frame {
        self.try_recv(WAIT)
            .await
            .expect("a frame from the server in time")
    }

    /// Whether the TCP connection was closed by the server within `wait`.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let Conn::Tcp(s, _) = &mut self.conn else {
            panic!("only for TCP");
        };
        let mut chunk = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }

    /// Sends `msg` encoded with `key` and FINGERPRINT and waits for its response; other
    /// frames are queued for `recv`.
    pub async fn transact(&mut self, msg: &Msg, key: Option<&[u8]>) -> Resp {
        let bytes = msg.encode(key, true);
        self.transact_raw(&bytes, msg.txid).await
    }

    pub async fn transact_raw(&mut self, bytes: &[u8], txid: [u8; 12]) -> Resp {
        self.send_raw(bytes).await;
        let mut other = Vec::new();
        let resp = loop {
            let f = self
                .try_recv(WAIT)
                .await
                .expect("a response from the server in time");
            match f {
                Frame::Stun(r)
                    if r.txid == txid && matches!(r.class, Class::Success | Class::Error) =>
                {
                    break r;
                }
                f => other.push(f),
            }
        };
        self.queued.extend(other);
        assert!(
            resp.fingerprint,
            "every response carries FINGERPRINT: {}",
            resp.describe()
        );
        resp
    }

    /// Signs `msg` with USERNAME, REALM, NONCE and MESSAGE-INTEGRITY.
    pub fn sign(&self, msg: &Msg) -> Vec<u8> {
        let signed = self.with_credentials(msg.clone());
        signed.encode(Some(&self.key()), true)
    }

    fn with_credentials(&self, msg: Msg) -> Msg {
        let realm = self.realm.clone().expect("realm");
        let nonce = self.nonce.clone().expect("nonce");
        msg.attr(attr::USERNAME, self.username.clone().as_bytes())
            .attr(attr::REALM, realm.as_bytes())
            .attr(attr::NONCE, &nonce)
    }

    /// Learns REALM and NONCE from a 401 or 438.
    pub fn learn(&mut self, r: &Resp) {
        let realm = r.get(attr::REALM).expect("challenge carries REALM");
        let nonce = r.get(attr::NONCE).expect("challenge carries NONCE");
        assert!(!nonce.is_empty(), "NONCE is not empty");
        self.realm = Some(String::from_utf8(realm.to_vec()).expect("REALM is UTF-8"));
        self.nonce = Some(nonce.to_vec());
    }

    /// Sends `msg` with the long-term credentials: first unauthenticated to get a 401
    /// challenge if no nonce is known yet, and again with a new nonce after 438. Checks
    /// that the final response is signed with our key (unless it is a 401).
    pub async fn request(&mut self, msg: Msg) -> Resp {
        let mut msg = msg;
        if self.nonce.is_none() {
            let r = self.transact(&msg, None).await;
            assert_eq!(r.class, Class::Error, "unauthenticated: {}", r.describe());
            assert_eq!(r.code(), Some(401), "challenge: {}", r.describe());
            assert!(
                !r.has(attr::MESSAGE_INTEGRITY),
                "a 401 challenge is not signed"
            );
            self.learn(&r);
            msg = msg.renew();
        }
        let mut r = self.signed(&msg).await;
        if r.code() == Some(438) {
            self.learn(&r);
            r = self.signed(&msg.renew()).await;
        }
        if r.code() != Some(401) {
            assert!(
                r.integrity_ok(&self.key()),
                "the response to an authenticated request is signed with our key: {}",
                r.describe()
            );
        }
        r
    }

    /// One signed transaction (no challenge handling).
    pub async fn signed(&mut self, msg: &Msg) -> Resp {
        let bytes = self.sign(msg);
        self.transact_raw(&bytes, msg.txid).await
    }

    /// Allocate (UDP relay) that must succeed: returns (relayed, mapped, lifetime).
    pub async fn allocate_with(&mut self, msg: Msg) -> (SocketAddr, SocketAddr, u32) {
        let r = self.request(msg).await;
        assert_eq!(r.class, Class::Success, "Allocate: {}", r.describe());
        let relayed = r
            .xor(attr::XOR_RELAYED_ADDRESS)
            .expect("XOR-RELAYED-ADDRESS");
        let mapped = r.xor(attr::XOR_MAPPED_ADDRESS).expect("XOR-MAPPED-ADDRESS");
        let lifetime = r.u32(attr::LIFETIME).expect("LIFETIME");
        (relayed, mapped, lifetime)
    }

    pub async fn allocate(&mut self) -> SocketAddr {
        let (relayed, mapped, _) = self
            .allocate_with(Msg::request(method::ALLOCATE).transport(17))
            .await;
        assert_eq!(
            mapped,
            self.local_addr(),
            "XOR-MAPPED-ADDRESS is our address"
        );
        relayed
    }

    pub async fn create_permission(&mut self, peer: SocketAddr) -> Resp {
        self.request(Msg::request(method::CREATE_PERMISSION).xor(attr::XOR_PEER_ADDRESS, peer))
            .await
    }

    pub async fn permit(&mut self, peer: SocketAddr) {
        let r = self.create_permission(peer).await;
        assert_eq!(
            r.class,
            Class::Success,
            "CreatePermission: {}",
            r.describe()
        );
    }

    pub async fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Resp {
        self.request(
            Msg::request(method::CHANNEL_BIND)
                .channel(channel)
                .xor(attr::XOR_PEER_ADDRESS, peer),
        )
        .await
    }

    pub async fn refresh(&mut self, lifetime: Option<u32>) -> Resp {
        let mut m = Msg::request(method::REFRESH);
        if let Some(l) = lifetime {
            m = m.u32(attr::LIFETIME, l);
        }
        self.request(m).await
    }

    /// A Send indication carrying `data` to `peer` (no response).
    pub async fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let m = Msg::indication(method::SEND)
            .xor(attr::XOR_PEER_ADDRESS, peer)
            .attr(attr::DATA, data);
        let b = m.encode(None, true);
        self.send_raw(&b).await;
    }

    /// The next relayed packet as (peer, data) from a Data indication; panics on ChannelData.
    pub async fn data_indication(&mut self) -> (SocketAddr, Vec<u8>) {
        match self.recv_data().await {
            Frame::Stun(r) => {
                assert_eq!(
                    (r.method, r.class),
                    (method::DATA, Class::Indication),
                    "a Data indication: {}",
                    r.describe()
                );
                (
                    r.xor(attr::XOR_PEER_ADDRESS).expect("XOR-PEER-ADDRESS"),
                    r.get(attr::DATA).expect("DATA").to_vec(),
                )
            }
            Frame::Channel(c, d, _) => {
                panic!("expected a Data indication, got ChannelData {c:#06x} {d:?}")
            }
        }
    }

    /// The next relayed packet as ChannelData (channel, data, wire length).
    pub async fn channel_data(&mut self) -> (u16, Vec<u8>, usize) {
        match self.recv_data().await {
            Frame::Channel(c, d, n) => (c, d, n),
            Frame::Stun(r) => panic!("expected ChannelData, got {}", r.describe()),
        }
    }
}

/// A ChannelData frame, padded for stream transports.
pub fn channel_frame(channel: u16, data: &[u8], pad: bool) -> Vec<u8> {
    let mut f = Vec::with_capacity(data.len() + 8);
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(data.len() as u16).to_be_bytes());
    f.extend_from_slice(data);
    if pad {
        while !f.len().is_multiple_of(4) {
            f.push(0);
        }
    }
    f
}

/// Length of the next frame on a TURN stream, once its 4-byte header is in.
fn stream_frame_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 4 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    match buf[0] >> 6 {
        0 => Some(20 + len),
        1 => Some(4 + len.div_ceil(4) * 4),
        _ => panic!("the server sent a frame starting with {:#04x}", buf[0]),
    }
}

fn parse_frame(b: &[u8], stream: bool) -> Frame {
    if b[0] >> 6 == 1 {
        assert!(b.len() >= 4, "ChannelData header");
        let ch = u16::from_be_bytes([b[0], b[1]]);
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if stream {
            assert_eq!(
                b.len(),
                4 + len.div_ceil(4) * 4,
                "padded ChannelData on a stream"
            );
        } else {
            assert_eq!(b.len(), 4 + len, "ChannelData over UDP is not padded");
        }
        return Frame::Channel(ch, b[4..4 + len].to_vec(), b.len());
    }
    Frame::Stun(decode(b).unwrap_or_else(|e| panic!("the server sent a bad STUN message: {e}")))
}

/// A UDP peer on loopback.
pub struct Peer {
    pub sock: UdpSocket,
}

impl Peer {
    pub async fn v4() -> Peer {
        Peer {
            sock: UdpSocket::bind("127.0.0.1:0").await.expect("peer socket"),
        }
    }

    pub async fn v6() -> Peer {
        Peer {
            sock: UdpSocket::bind("[::1]:0").await.expect("peer socket"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("peer addr")
    }

    pub async fn recv(&self) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 65_536];
        let (n, from) = tokio::time::timeout(WAIT, self.sock.recv_from(&mut buf))
            .await
            .expect("the peer receives in time")
            .expect("peer receive");
        (buf[..n].to_vec(), from)
    }

    pub async fn send(&self, data: &[u8], to: SocketAddr) {
        self.sock.send_to(data, to).await.expect("peer send");
    }
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// RFC 5769 test vectors against this client's encoder and decoder.
#[cfg(test)]
mod rfc5769 {
    use super::*;

    const TXID: [u8; 12] = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];
    const SHORT_TERM: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

    /// §2.1: the encoder reproduces the sample request byte for byte.
    #[test]
    fn sample_request() {
        let want = hex("000100582112a442b7e7a701bc34d686fa87dfae
             802200105354554e207465737420636c69656e74
             002400046e0001ff
             80290008932ff9b151263b36
             000600096576746a3a68367659202020
             000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2
             80280004e57a3bcf");
        let m = Msg {
            method: method::BINDING,
            class: Class::Request,
            txid: TXID,
            attrs: vec![
                (attr::SOFTWARE, b"STUN test client".to_vec()),
                (attr::PRIORITY, vec![0x6e, 0x00, 0x01, 0xff]),
                (
                    attr::ICE_CONTROLLED,
                    vec![0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36],
                ),
                (attr::USERNAME, b"evtj:h6vY".to_vec()),
            ],
        };
        assert_eq!(m.encode_with_pad(Some(SHORT_TERM), true, 0x20), want);
        let r = decode(&want).expect("decodes");
        assert!(r.fingerprint);
        assert!(r.integrity_ok(SHORT_TERM));
        assert!(!r.integrity_ok(b"wrong"));
        assert_eq!((r.method, r.class), (method::BINDING, Class::Request));
    }

    /// §2.2: the IPv4 sample response (XOR-MAPPED-ADDRESS 192.0.2.1:32853).
    #[test]
    fn sample_ipv4_response() {
        let want = hex("0101003c2112a442b7e7a701bc34d686fa87dfae
             8022000b7465737420766563746f7220
             002000080001a147e112a643
             000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7
             80280004c07d4c96");
        let r = decode(&want).expect("decodes");
        assert_eq!((r.method, r.class), (method::BINDING, Class::Success));
        let addr: SocketAddr = "192.0.2.1:32853".parse().expect("addr");
        assert_eq!(r.xor(attr::XOR_MAPPED_ADDRESS), Some(addr));
        assert!(r.integrity_ok(SHORT_TERM));
        let m = Msg {
            method: method::BINDING,
            class: Class::Success,
            txid: TXID,
            attrs: vec![(attr::SOFTWARE, b"test vector".to_vec())],
        }
        .xor(attr::XOR_MAPPED_ADDRESS, addr);
        assert_eq!(m.encode_with_pad(Some(SHORT_TERM), true, 0x20), want);
    }

    /// §2.3: the IPv6 sample response.
    #[test]
    fn sample_ipv6_response() {
        let want = hex("010100482112a442b7e7a701bc34d686fa87dfae
             8022000b7465737420766563746f7220
             002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9
             00080014a382954e4be67bf11784c97c8292c275bfe3ed41
             80280004c8fb0b4c");
        let r = decode(&want).expect("decodes");
        let addr: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .expect("addr");
        assert_eq!(r.xor(attr::XOR_MAPPED_ADDRESS), Some(addr));
        assert!(r.integrity_ok(SHORT_TERM));
        let m = Msg {
            method: method::BINDING,
            class: Class::Success,
            txid: TXID,
            attrs: vec![(attr::SOFTWARE, b"test vector".to_vec())],
        }
        .xor(attr::XOR_MAPPED_ADDRESS, addr);
        assert_eq!(m.encode_with_pad(Some(SHORT_TERM), true, 0x20), want);
    }

    /// §2.4: long-term credentials; the key is MD5(username ":" realm ":" SASLprep(password)).
    #[test]
    fn sample_long_term_request() {
        let want = hex("000100602112a44278ad3433c6ad72c029da412e
             00060012e3839ee38388e383aae38383e382afe382b90000
             0015001c662f2f3439396b39353464364f4c33346f4c394653547679363473 41
             0014000b6578616d706c652e6f726700
             00080014f67024656dd64a3e02b8e0712e85c9a28ca89666");
        let username = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
        let key = long_term_key(username, "example.org", "TheMatrIX");
        let r = decode(&want).expect("decodes");
        assert!(!r.fingerprint);
        assert_eq!(r.get(attr::USERNAME), Some(username.as_bytes()));
        assert!(r.integrity_ok(&key));
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&want[8..20]);
        let m = Msg {
            method: method::BINDING,
            class: Class::Request,
            txid,
            attrs: vec![
                (attr::USERNAME, username.as_bytes().to_vec()),
                (attr::NONCE, b"f//499k954d6OL34oL9FSTvy64sA".to_vec()),
                (attr::REALM, b"example.org".to_vec()),
            ],
        };
        assert_eq!(m.encode(Some(&key), false), want);
    }

    #[test]
    fn message_types() {
        assert_eq!(message_type(method::ALLOCATE, Class::Error), 0x0113);
        assert_eq!(message_type(method::DATA, Class::Indication), 0x0017);
        assert_eq!(message_type(method::CHANNEL_BIND, Class::Success), 0x0109);
        for m in [1u16, 3, 4, 6, 7, 8, 9, 0xa, 0xfff] {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                assert_eq!(split_type(message_type(m, c)), (m, c));
            }
        }
    }

    /// The Talk/PHP computation: base64_encode(hash_hmac('sha1', $user, $secret, true)).
    #[test]
    fn rest_password_like_talk() {
        assert_eq!(
            rest_password(b"secret", "1700000000:user"),
            "I/MZeIG6MwzOV8Uubr9liB2556o="
        );
    }
}
