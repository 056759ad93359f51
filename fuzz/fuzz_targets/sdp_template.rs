// Shared by the SDP fuzz targets (included with `include!`): a Chromium-style publisher
// offer with audio, SIM-simulcast video with RTX, rid simulcast and a data channel, into
// which the fuzz input is spliced so the fuzzer starts from SDP the SFU really sees.

pub const OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1 2\r\n\
a=msid-semantic: WMS stream\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:S5hk\r\n\
a=ice-pwd:0zV/Yu3y8aDzbHgqWhnVQhqP\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 8C:64:ED:03:76:D0:3D:B4:88:08:91:64:08:80:A8:C6:5A:BF:8B:4E:38:27:96:CA:08:49:25:73:46:60:20:DC\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=sendonly\r\n\
a=msid:stream audio\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=ssrc:5 cname:fuzz\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:S5hk\r\n\
a=ice-pwd:0zV/Yu3y8aDzbHgqWhnVQhqP\r\n\
a=fingerprint:sha-256 8C:64:ED:03:76:D0:3D:B4:88:08:91:64:08:80:A8:C6:5A:BF:8B:4E:38:27:96:CA:08:49:25:73:46:60:20:DC\r\n\
a=setup:actpass\r\n\
a=mid:1\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
a=sendonly\r\n\
a=msid:stream video\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 nack\r\n\
a=rtcp-fb:96 nack pli\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=ssrc-group:FID 10 11\r\n\
a=ssrc-group:FID 20 21\r\n\
a=ssrc-group:SIM 10 20\r\n\
a=ssrc:10 cname:fuzz\r\n\
a=ssrc:11 cname:fuzz\r\n\
a=ssrc:20 cname:fuzz\r\n\
a=ssrc:21 cname:fuzz\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:2\r\n\
a=sendonly\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rid:h send\r\n\
a=rid:l send\r\n\
a=simulcast:send h;l\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:3\r\n\
a=sctp-port:5000\r\n\
a=max-message-size:262144\r\n";

/// The template with the fuzz text in place of line `at` (chosen by the input's first byte).
pub fn spliced(data: &[u8]) -> Option<String> {
    let (first, rest) = data.split_first()?;
    let text = std::str::from_utf8(rest).ok()?;
    let lines: Vec<&str> = OFFER.split_inclusive("\r\n").collect();
    let at = usize::from(*first) % lines.len();
    let mut out = String::with_capacity(OFFER.len() + text.len());
    for (i, l) in lines.iter().enumerate() {
        if i == at {
            out.push_str(text);
            if first & 0x80 == 0 {
                continue; // replace the line; otherwise insert before it
            }
        }
        out.push_str(l);
    }
    Some(out)
}
