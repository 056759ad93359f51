//! Just enough STUN parsing to demultiplex a new 5-tuple: find the local ufrag in a binding
//! request's USERNAME attribute (`<our ufrag>:<their ufrag>`).

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

/// True if the datagram looks like STUN (RFC 7983: first byte 0..=3, magic cookie).
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= 20 && buf[0] < 4 && buf[4..8] == MAGIC_COOKIE
}

/// The local (first) part of the USERNAME attribute of a STUN message, if any.
pub fn local_ufrag(buf: &[u8]) -> Option<&str> {
    if !is_stun(buf) {
        return None;
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let body = buf.get(20..20 + len)?;
    let mut i = 0;
    while i + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[i], body[i + 1]]);
        let alen = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        let value = body.get(i + 4..i + 4 + alen)?;
        if typ == ATTR_USERNAME {
            let s = std::str::from_utf8(value).ok()?;
            return s.split(':').next();
        }
        // Attributes are padded to 4 bytes.
        i += 4 + alen.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&0x0024u16.to_be_bytes()); // PRIORITY first
        attrs.extend_from_slice(&4u16.to_be_bytes());
        attrs.extend_from_slice(&[0, 0, 0, 1]);
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn finds_the_local_ufrag() {
        let m = binding_request("abcd:xyz1");
        assert!(is_stun(&m));
        assert_eq!(local_ufrag(&m), Some("abcd"));
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert_eq!(local_ufrag(b"hello world, this is not stun"), None);
        assert_eq!(local_ufrag(&[]), None);
        let m = binding_request("abcd:xyz1");
        assert_eq!(local_ufrag(&m[..m.len() - 3]), None);
        let mut rtp = m.clone();
        rtp[0] = 0x80;
        assert!(!is_stun(&rtp));
    }
}
