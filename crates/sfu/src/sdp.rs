//! SDP text helpers around str0m's parser: parse client SDP into offers/answers with errors
//! that say what was wrong (including unusable ICE credentials and DTLS fingerprints), and
//! read mids, m-lines, rids and SIM groups. Public only for the fuzz targets (`fuzzing`).

use str0m::change::{SdpAnswer, SdpOffer};

/// Why a client's SDP was refused (`invalid_sdp`).
#[derive(Debug, thiserror::Error)]
pub enum SdpProblem {
    #[error("the SDP is empty")]
    Empty,
    #[error("the SDP has no m= line (nothing to publish or receive)")]
    NoMedia,
    #[error("the SDP does not parse: {0}")]
    Parse(String),
    #[error("the SDP has no a={0} attribute (needed for ICE and DTLS)")]
    Missing(&'static str),
    #[error("the SDP's a={attr} is unusable: {why}")]
    Bad { attr: &'static str, why: String },
}

fn precheck(sdp: &str) -> Result<(), SdpProblem> {
    if sdp.trim().is_empty() {
        return Err(SdpProblem::Empty);
    }
    if !sdp.lines().any(|l| l.starts_with("m=")) {
        return Err(SdpProblem::NoMedia);
    }
    Ok(())
}

/// Run str0m's SDP parser; it runs on the worker thread outside the per-peer panic guard, so
/// a panic in it is caught here and becomes a refusal instead of stopping the SFU.
fn str0m_parse<T, E: std::fmt::Display>(
    f: impl FnOnce() -> Result<T, E> + std::panic::UnwindSafe,
) -> Result<T, SdpProblem> {
    match std::panic::catch_unwind(f) {
        Ok(r) => r.map_err(|e| SdpProblem::Parse(e.to_string())),
        Err(_) => Err(SdpProblem::Parse("the SDP crashed the parser".into())),
    }
}

pub fn parse_offer(sdp: &str) -> Result<SdpOffer, SdpProblem> {
    precheck(sdp)?;
    let offer = str0m_parse(|| SdpOffer::from_sdp_string(sdp))?;
    check_transport(sdp)?;
    Ok(offer)
}

pub fn parse_answer(sdp: &str) -> Result<SdpAnswer, SdpProblem> {
    precheck(sdp)?;
    let answer = str0m_parse(|| SdpAnswer::from_sdp_string(sdp))?;
    check_transport(sdp)?;
    Ok(answer)
}

/// Longest value shown back in an error message.
const SHOW_MAX: usize = 40;

fn shown(v: &str) -> String {
    match v.char_indices().nth(SHOW_MAX) {
        Some((i, _)) => format!("{}…", &v[..i]),
        None => v.to_owned(),
    }
}

/// RFC 8839 §5.4: `ice-char = ALPHA / DIGIT / "+" / "/"`.
fn check_ice_value(attr: &'static str, v: &str, min: usize) -> Result<(), SdpProblem> {
    let bad = |why: String| SdpProblem::Bad { attr, why };
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '+' || *c == '/'))
    {
        return Err(bad(format!(
            "{:?} has {c:?}; ICE allows only A-Z a-z 0-9 + /",
            shown(v)
        )));
    }
    if !(min..=256).contains(&v.len()) {
        return Err(bad(format!(
            "{:?} has {} characters; ICE needs {min} to 256",
            shown(v),
            v.len()
        )));
    }
    Ok(())
}

/// Digest length in bytes of the hash functions RFC 8122 §5 names.
fn digest_len(hash: &str) -> Option<usize> {
    Some(match hash.to_ascii_lowercase().as_str() {
        "sha-1" => 20,
        "sha-224" => 28,
        "sha-256" => 32,
        "sha-384" => 48,
        "sha-512" => 64,
        "md5" | "md2" => 16,
        _ => return None,
    })
}

fn check_fingerprint(v: &str, first: bool) -> Result<(), SdpProblem> {
    let bad = |why: String| SdpProblem::Bad {
        attr: "fingerprint",
        why,
    };
    let Some((hash, digest)) = v.split_once(' ') else {
        return Err(bad(format!(
            "{:?} is not \"<hash function> <hex bytes>\"",
            shown(v)
        )));
    };
    let Some(want) = digest_len(hash) else {
        return Err(bad(format!("unknown hash function {:?}", shown(hash))));
    };
    let bytes: Vec<&str> = digest.trim().split(':').collect();
    if let Some(b) = bytes
        .iter()
        .find(|b| b.len() != 2 || !b.bytes().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(bad(format!(
            "{:?} is not a hex byte (the digest is AA:BB:…)",
            shown(b)
        )));
    }
    if bytes.len() != want {
        return Err(bad(format!(
            "a {hash} digest has {want} bytes, this one {}",
            bytes.len()
        )));
    }
    // str0m checks the peer's certificate against the first fingerprint, by SHA-256 only.
    if first && hash != "sha-256" {
        return Err(bad(format!(
            "the first fingerprint uses {:?}; the SFU verifies only \"sha-256\"",
            shown(hash)
        )));
    }
    Ok(())
}

/// The client's ICE credentials and DTLS fingerprint must be present and well-formed, or
/// the connection could never come up (and str0m would only say so much later).
pub fn check_transport(sdp: &str) -> Result<(), SdpProblem> {
    let (mut ufrag, mut pwd, mut fingerprint) = (false, false, false);
    for l in sdp.lines().map(str::trim_end) {
        if let Some(v) = l.strip_prefix("a=ice-ufrag:") {
            check_ice_value("ice-ufrag", v, 4)?;
            ufrag = true;
        } else if let Some(v) = l.strip_prefix("a=ice-pwd:") {
            check_ice_value("ice-pwd", v, 22)?;
            pwd = true;
        } else if let Some(v) = l.strip_prefix("a=fingerprint:") {
            check_fingerprint(v, !fingerprint)?;
            fingerprint = true;
        }
    }
    match (ufrag, pwd, fingerprint) {
        (false, _, _) => Err(SdpProblem::Missing("ice-ufrag")),
        (_, false, _) => Err(SdpProblem::Missing("ice-pwd")),
        (_, _, false) => Err(SdpProblem::Missing("fingerprint")),
        _ => Ok(()),
    }
}

/// The mid of the first m-line (what a trickled server candidate is tagged with).
pub fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .map(str::to_owned)
}

/// One m-line of an SDP as the SFU cares about it.
#[derive(Debug, PartialEq, Eq)]
pub struct Section {
    /// `audio`, `video` or `application`.
    pub kind: String,
    pub mid: String,
    /// Simulcast layers the sender announces (`a=rid:<id> send`).
    pub send_rids: Vec<String>,
}

/// Every m-line that has a mid.
pub fn media_sections(sdp: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut kind: Option<String> = None;
    let mut current: Option<Section> = None;
    for l in sdp.lines().map(str::trim_end) {
        if let Some(m) = l.strip_prefix("m=") {
            out.extend(current.take());
            kind = m.split(' ').next().map(str::to_owned);
            current = kind.clone().map(|kind| Section {
                kind,
                mid: String::new(),
                send_rids: Vec::new(),
            });
        } else if let (Some(mid), Some(c)) = (l.strip_prefix("a=mid:"), current.as_mut()) {
            c.mid = mid.to_owned();
        } else if let (Some(rid), Some(c)) = (l.strip_prefix("a=rid:"), current.as_mut()) {
            let mut parts = rid.split(' ');
            if let (Some(id), Some("send")) = (parts.next(), parts.next()) {
                c.send_rids.push(id.to_owned());
            }
        }
    }
    out.extend(current);
    let _ = kind;
    out.retain(|s| !s.mid.is_empty());
    out
}

/// A legacy simulcast group (`a=ssrc-group:SIM`, SDP munging as Talk does on Chromium and
/// Safari): the layers' SSRCs from low to high, each with its RTX SSRC if announced.
#[derive(Debug, PartialEq, Eq)]
pub struct SimGroup {
    pub mid: String,
    pub layers: Vec<(u32, Option<u32>)>,
}

/// Take the SIM-group SSRCs out of an offer (str0m would fold all layers into one stream)
/// and return them, so the caller declares each layer as its own stream with a synthetic rid.
pub fn extract_sim_groups(sdp: &str) -> (String, Vec<SimGroup>) {
    let mut groups = Vec::new();
    let mut drop_ssrcs: Vec<u32> = Vec::new();
    // First pass: per m-section, the SIM group and the FID (RTX) pairs.
    let mut mid = String::new();
    let mut sim: Vec<u32> = Vec::new();
    let mut fid: Vec<(u32, u32)> = Vec::new();
    let mut flush = |mid: &str, sim: &mut Vec<u32>, fid: &mut Vec<(u32, u32)>| {
        if sim.len() > 1 {
            let layers: Vec<(u32, Option<u32>)> = sim
                .iter()
                .map(|s| (*s, fid.iter().find(|(m, _)| m == s).map(|(_, r)| *r)))
                .collect();
            for (s, r) in &layers {
                drop_ssrcs.push(*s);
                drop_ssrcs.extend(r);
            }
            groups.push(SimGroup {
                mid: mid.to_owned(),
                layers,
            });
        }
        sim.clear();
        fid.clear();
    };
    for l in sdp.lines().map(str::trim_end) {
        if l.starts_with("m=") {
            flush(&mid, &mut sim, &mut fid);
            mid.clear();
        } else if let Some(m) = l.strip_prefix("a=mid:") {
            mid = m.to_owned();
        } else if let Some(g) = l.strip_prefix("a=ssrc-group:SIM ") {
            sim = g.split(' ').filter_map(|x| x.parse().ok()).collect();
        } else if let Some(g) = l.strip_prefix("a=ssrc-group:FID ") {
            let v: Vec<u32> = g.split(' ').filter_map(|x| x.parse().ok()).collect();
            if let [main, rtx] = v[..] {
                fid.push((main, rtx));
            }
        }
    }
    flush(&mid, &mut sim, &mut fid);
    if groups.is_empty() {
        return (sdp.to_owned(), groups);
    }
    // Second pass: drop the a=ssrc and a=ssrc-group lines that mention those SSRCs.
    let mentions = |rest: &str| {
        rest.split([' ', ':'])
            .filter_map(|x| x.parse::<u32>().ok())
            .any(|x| drop_ssrcs.contains(&x))
    };
    let mut out = String::with_capacity(sdp.len());
    for l in sdp.split_inclusive('\n') {
        let t = l.trim_end();
        let drop = if let Some(rest) = t.strip_prefix("a=ssrc-group:") {
            mentions(rest)
        } else if let Some(rest) = t.strip_prefix("a=ssrc:") {
            rest.split(' ')
                .next()
                .and_then(|x| x.parse::<u32>().ok())
                .is_some_and(|x| drop_ssrcs.contains(&x))
        } else {
            false
        };
        if !drop {
            out.push_str(l);
        }
    }
    (out, groups)
}

/// Synthetic rids for `n` SIM layers, low to high (ranked like real rids).
pub fn sim_rids(n: usize) -> &'static [&'static str] {
    match n {
        0 | 1 => &[],
        2 => &["l", "h"],
        _ => &["l", "m", "h"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_named() {
        assert!(matches!(parse_offer(""), Err(SdpProblem::Empty)));
        assert!(matches!(parse_offer("hello"), Err(SdpProblem::NoMedia)));
        let e = parse_offer("v=0\r\nm=audio x\r\n").expect_err("broken");
        assert!(e.to_string().contains("does not parse"), "{e}");
    }

    const GOOD: &str = "a=ice-ufrag:S5hk\r\na=ice-pwd:0zV/Yu3y8aDzbHgqWhnVQhqP\r\n\
        a=fingerprint:sha-256 8C:64:ED:03:76:D0:3D:B4:88:08:91:64:08:80:A8:C6:5A:BF:8B:4E:38:27:96:CA:08:49:25:73:46:60:20:DC\r\n";

    #[test]
    fn transport_attributes_are_checked() {
        assert!(check_transport(GOOD).is_ok());
        let named = |sdp: &str| check_transport(sdp).expect_err("refused").to_string();
        let e = named(&GOOD.replace("a=ice-ufrag:S5hk\r\n", ""));
        assert!(e.contains("a=ice-ufrag"), "{e}");
        let e = named(&GOOD.replace("a=ice-pwd:", "a=x-pwd:"));
        assert!(e.contains("a=ice-pwd"), "{e}");
        let e = named(&GOOD.replace("a=fingerprint", "a=x"));
        assert!(e.contains("a=fingerprint"), "{e}");
        for (from, to, attr) in [
            ("S5hk", "S5", "a=ice-ufrag"),
            ("S5hk", "S5 hk", "a=ice-ufrag"),
            ("0zV/Yu3y8aDzbHgqWhnVQhqP", "short", "a=ice-pwd"),
            (
                "0zV/Yu3y8aDzbHgqWhnVQhqP",
                "0zV/Yu3y8aDzbHgqWhnVQh-P",
                "a=ice-pwd",
            ),
            ("sha-256 8C:64", "sha-256 8C:6Z", "a=fingerprint"),
            ("sha-256 8C:64", "sha-256 8C:64:00", "a=fingerprint"),
            ("sha-256 8C:64", "sha-999 8C:64", "a=fingerprint"),
            ("sha-256 8C:64", "sha-2568C:64", "a=fingerprint"),
        ] {
            let e = named(&GOOD.replace(from, to));
            assert!(e.contains(attr) && e.contains("unusable"), "{to}: {e}");
        }
        let sha1 =
            "a=fingerprint:sha-1 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33\r\n";
        let e = named(&GOOD.replace("a=fingerprint:", &format!("{sha1}a=fingerprint:")));
        assert!(e.contains("sha-256"), "{e}");
        assert!(
            check_transport(&format!("{GOOD}{sha1}")).is_ok(),
            "extra fingerprints are fine"
        );
        // Long garbage is cut in the message.
        let e = named(&GOOD.replace("S5hk", &"é".repeat(300)));
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn sim_groups_are_extracted() {
        let sdp = "v=0\r\nm=audio 9 x 111\r\na=mid:0\r\na=ssrc:5 cname:a\r\n\
                   m=video 9 x 96 97\r\na=mid:1\r\n\
                   a=ssrc-group:FID 10 11\r\na=ssrc-group:FID 20 21\r\n\
                   a=ssrc-group:SIM 10 20\r\n\
                   a=ssrc:10 cname:a\r\na=ssrc:11 cname:a\r\na=ssrc:20 cname:a\r\na=ssrc:21 cname:a\r\n";
        let (out, groups) = extract_sim_groups(sdp);
        assert_eq!(
            groups,
            vec![SimGroup {
                mid: "1".into(),
                layers: vec![(10, Some(11)), (20, Some(21))]
            }]
        );
        assert!(out.contains("a=ssrc:5 cname:a\r\n"), "{out}");
        assert!(!out.contains("a=ssrc:1"), "{out}");
        assert!(!out.contains("ssrc-group"), "{out}");
        assert!(out.contains("a=mid:1\r\n"));
        let (same, none) = extract_sim_groups("v=0\r\nm=video 9 x 96\r\na=ssrc:1 cname:x\r\n");
        assert!(none.is_empty());
        assert!(same.contains("a=ssrc:1"));
        assert_eq!(sim_rids(3), &["l", "m", "h"]);
    }

    #[test]
    fn first_mid_is_found() {
        let sdp =
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 x 96\r\na=mid:1\r\n";
        assert_eq!(first_mid(sdp).as_deref(), Some("0"));
        assert_eq!(first_mid("v=0\r\n"), None);
        let sdp = format!("{sdp}a=rid:h send\r\na=rid:l send\r\na=simulcast:send h;l\r\n");
        let s = media_sections(&sdp);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].kind.as_str(), s[0].mid.as_str()), ("audio", "0"));
        assert!(s[0].send_rids.is_empty());
        assert_eq!((s[1].kind.as_str(), s[1].mid.as_str()), ("video", "1"));
        assert_eq!(s[1].send_rids, vec!["h".to_owned(), "l".to_owned()]);
    }
}
