//! End-to-end: a Talk call through the built-in SFU in headless Chromium (Debian's, driven by
//! Playwright from tests/media/chromium/driver.js). The page (tests/media/chromium/talk.js)
//! speaks Talk's signaling with an MCU: one page publishes fake camera and microphone with
//! simulcast, one subscribes with `requestoffer`. `selectStream` switches the subscriber
//! between the layers and the decoded size follows; the publisher's data-channel messages
//! reach the subscriber on `JanusDataChannel`.
//!
//! Everything runs on 127.0.0.1. Chromium pairs every local address with the SFU's loopback
//! candidate, so each test runs itself again (the same test binary, only this test) inside a
//! network namespace it creates with only `lo` up: hpb, the fake Nextcloud, the driver and
//! Chromium then have nothing but loopback. Where no namespace can be made (not root), the
//! test runs in the machine's namespace and only the SFU's side of the pair must be loopback.
//! The driver's flags keep Chromium off the network either way.
//!
//! Named `exclusive_…`: a network namespace, and a browser encoding three layers and decoding
//! one needs the machine's two cores to itself. With `HPB_E2E_BROWSER_LOGS=1` a passing run
//! prints hpb's log and the driver's whole result (stats, timelines, SDPs) too.

use std::process::Stdio;
use std::time::Duration;

use hpb_test_support::{FakeNextcloud, Hpb, free_config};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Command;

/// Set in the re-run inside the namespace: its name.
const NETNS_ENV: &str = "HPB_E2E_BROWSER_NETNS";

/// A network namespace with only `lo` up, deleted on drop.
struct Netns(String);

impl Netns {
    async fn create() -> Result<Netns, String> {
        let name = format!("hpb-browser-{}", std::process::id());
        ip(&["netns", "add", &name]).await?;
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]).await?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

async fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Where the test body runs.
enum Place {
    /// In a namespace with only loopback (the re-run).
    OwnNetns,
    /// In the machine's namespace: no namespace could be made.
    Machine,
    /// The body already ran, and passed, in the re-run inside a namespace.
    Done,
}

/// Runs test `name` (its path in the test binary) again inside a fresh namespace, unless
/// this is that run already.
async fn place(name: &str) -> Place {
    if std::env::var_os(NETNS_ENV).is_some() {
        return Place::OwnNetns;
    }
    let ns = match Netns::create().await {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("no network namespace ({e}); running in the machine's namespace");
            return Place::Machine;
        }
    };
    let exe = std::env::current_exe().expect("path of the test binary");
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .arg(exe)
            .args([
                name,
                "--exact",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(NETNS_ENV, &ns.0)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the run inside the namespace ends within 180 s")
    .expect("run the test binary inside the namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "the test failed inside network namespace {} ({})",
        ns.0,
        out.status
    );
    Place::Done
}

/// The width the publisher captures at; its layers are 1/4, 1/2 and 1 of it.
const WIDTH: u64 = 640;
const HEIGHT: u64 = 360;

fn driver() -> String {
    format!("{}/media/chromium/driver.js", env!("CARGO_MANIFEST_DIR"))
}

/// One call's setup.
#[derive(Default)]
struct CallOptions {
    /// `rid` (sendEncodings) or `sim` (Talk's SDP munging on Chromium).
    simulcast: &'static str,
    /// Leave Chromium's limit on legacy simulcast layers for small frames on (it sends two
    /// of the three layers announced at 640x360), as for Talk users; off, all three are sent.
    layer_limit: bool,
    /// hpb also has its public TLS port (a self-signed certificate), which the SFU announces
    /// as its passive ICE-TCP candidate, and the pages use only TCP candidates.
    ice_tcp: bool,
    /// The driver also measures the frame rate at temporal layer 0 and 2.
    temporal: bool,
    /// Instead of the layer switches, the driver mutes the publisher's microphone for a
    /// while.
    mute: bool,
    /// hpb runs with `[sfu] thin_silent_audio`.
    thin: bool,
    /// hpb runs with `[sfu] opus_dtx`.
    dtx: bool,
}

impl CallOptions {
    fn rid() -> CallOptions {
        CallOptions {
            simulcast: "rid",
            ..CallOptions::default()
        }
    }
}

/// Runs the driver for one call with `simulcast` and returns its result object.
async fn call_in_chromium(simulcast: &'static str, layer_limit: bool) -> Value {
    call_with(CallOptions {
        simulcast,
        layer_limit,
        ..CallOptions::default()
    })
    .await
}

/// Runs the driver for one call and returns its result object, with the SFU's metrics
/// (`sfuMetrics`, the `hpb_sfu_*` lines) added.
async fn call_with(o: CallOptions) -> Value {
    let CallOptions {
        simulcast,
        layer_limit,
        ice_tcp,
        temporal,
        mute,
        thin,
        dtx,
    } = o;
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("call");
    let dir = std::env::temp_dir().join(format!(
        "hpb-browser-{}",
        hpb_test_support::random_string(10)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut extra = String::from("[sfu]\nlisten = \"127.0.0.1:0\"\n");
    if thin {
        extra.push_str("thin_silent_audio = true\n");
    }
    if dtx {
        extra.push_str("opus_dtx = true\n");
    }
    if ice_tcp {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, c.cert.pem()).expect("write cert");
        std::fs::write(&key, c.signing_key.serialize_pem()).expect("write key");
        extra.push_str(&format!(
            "[https]\nlisten = \"127.0.0.1:0\"\ncertificate = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ));
    }
    let hpb = Hpb::start(&free_config(&nc, &extra)).await;
    let config = json!({
        "iceTcp": ice_tcp,
        "temporal": temporal,
        "mute": mute,
        "ws": hpb.ws_url(),
        "backend": nc.backend_url(),
        "room": "call",
        "simulcast": simulcast,
        "width": WIDTH,
        "height": HEIGHT,
        "legacyLayerLimit": layer_limit,
        "publisher": {"user": "alice", "ticket": nc.ticket("alice")},
        "subscriber": {"user": "bob", "ticket": nc.ticket("bob")},
    });
    let mut child = Command::new("node")
        .arg(driver())
        .arg(config.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node (cargo xtask deps installs nodejs, chromium and playwright-core)");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();

    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("both pages join within 30 s")
        .expect("driver output")
        .unwrap_or_else(|| {
            panic!(
                "the driver ended before joining (its stderr is above; `cargo xtask deps` \
                 installs chromium and playwright-core); hpb:\n{}",
                hpb.logs()
            )
        });
    let ready: Value = serde_json::from_str(&ready).expect("JSON ready line");
    if let Some(result) = ready.get("result") {
        panic!(
            "the driver failed before joining: {result:#}\nhpb:\n{}",
            hpb.logs()
        );
    }
    assert!(ready["ready"]["publisher"].is_string(), "{ready}");
    // Talk puts the participants in the call through the backend; requestoffer needs it.
    nc.put_everyone_in_call(&hpb.http_url(), "call").await;
    stdin.write_all(b"go\n").await.expect("tell the driver");
    stdin.flush().await.expect("flush");

    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .expect("the driver finishes within 120 s")
        .expect("driver output")
        .expect("a result line");
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let out: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("result line {line:?}: {e}"));
    let mut result = out["result"].clone();
    result["hpbStdout"] = json!(hpb.stdout());
    let metrics = match reqwest::get(format!("{}/metrics", hpb.http_url())).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => e.to_string(),
    };
    let sfu: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("hpb_sfu"))
        .collect();
    result["sfuMetrics"] = json!(sfu.join("\n"));
    if std::env::var_os("HPB_E2E_BROWSER_LOGS").is_some() {
        eprintln!("hpb:\n{}\nresult: {result}", hpb.logs());
    }
    if result.get("failure").is_some() || result["initial"]["met"] != true {
        panic!(
            "the browser call failed: {result:#}\nhpb:\n{}\nSFU metrics:\n{}",
            hpb.logs(),
            sfu.join("\n")
        );
    }
    result
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Everything both simulcast flavours must show; `only_loopback`: the machine has no other
/// address (inside the namespace), so both ends of each ICE pair are 127.0.0.1.
fn check(r: &Value, only_loopback: bool) {
    let initial = &r["initial"];
    assert_eq!(initial["connection"], "connected", "{r:#}");
    assert!(num(&initial["video"]["framesDecoded"]) >= 30, "{r:#}");
    assert!(
        num(&initial["audio"]["packetsReceived"]) > 0,
        "audio arrives: {r:#}"
    );
    // Media between Chromium and the SFU crossed loopback only.
    let ends: &[&str] = if only_loopback {
        &["local", "remote"]
    } else {
        &["remote"]
    };
    for page in ["publisher", "subscriber"] {
        // AES-GCM SRTP, and the SFU is always the DTLS server.
        let dtls = &r[page]["dtls"];
        let cipher = dtls["cipher"].as_str().unwrap_or_default();
        assert!(
            cipher.contains("AEAD_AES_") && cipher.ends_with("_GCM"),
            "{page} SRTP {cipher}: {r:#}"
        );
        assert_eq!(dtls["role"], "client", "{page}'s DTLS role: {r:#}");
        let pair = &r[page]["pair"];
        for end in ends {
            let addr = pair[end].as_str().unwrap_or_default();
            assert!(addr.starts_with("127.0.0.1:"), "{page} {end} {addr}: {r:#}");
        }
    }
    // The publisher encodes three layers of 1/4, 1/2 and 1 of its capture size.
    let widths: Vec<u64> = r["publisher"]["outbound"]
        .as_array()
        .map(|a| a.iter().map(|o| num(&o["frameWidth"])).collect())
        .unwrap_or_default();
    assert_eq!(
        widths,
        vec![WIDTH / 4, WIDTH / 2, WIDTH],
        "the publisher's layers: {r:#}"
    );
    // By default the subscriber gets the highest layer.
    let top = num(&initial["video"]["frameWidth"]);
    assert_eq!(top, WIDTH, "the highest layer is forwarded first: {r:#}");
    for (step, want) in [("low", WIDTH / 4), ("medium", WIDTH / 2), ("high", WIDTH)] {
        let s = &r[step];
        assert_eq!(s["switched"], true, "selectStream {step}: {r:#}");
        assert_eq!(num(&s["frameWidth"]), want, "selectStream {step}: {r:#}");
        assert!(
            num(&s["framesAfterSwitch"]) >= 15,
            "frames keep coming after switching to {step}: {r:#}"
        );
    }
    let dc = &r["datachannel"];
    assert!(
        dc["channels"]
            .as_array()
            .is_some_and(|c| c.iter().any(|l| l == "JanusDataChannel")),
        "{r:#}"
    );
    assert!(
        num(&dc["received"]) > 0,
        "the publisher's data channel messages reach the subscriber: {r:#}"
    );
    assert_eq!(r["subscriber"]["errors"], json!([]), "{r:#}");
}

/// Per layer switch (low, medium, high): how far the subscriber's RTP timestamps moved
/// beyond the wall-clock time between the last frame before and the first after the switch,
/// in 90 kHz ticks. About 0 when the SFU keeps one continuous timeline across layers.
fn rtp_jumps(r: &Value) -> Vec<i64> {
    ["low", "medium", "high"]
        .iter()
        .map(|step| {
            let tl = r[*step]["timeline"].as_array().cloned().unwrap_or_default();
            let (Some(first), Some(last)) = (tl.first(), tl.last()) else {
                return 0;
            };
            let ts = |e: &Value| e[5].as_u64().unwrap_or(0) as u32;
            let at = |e: &Value| e[6].as_i64().unwrap_or(0);
            let d_rtp = i64::from(ts(last).wrapping_sub(ts(first)) as i32);
            d_rtp - (at(last) - at(first)) * 90
        })
        .collect()
}

/// Runs the call with `simulcast` in the right place and checks it; `name` is the test's.
async fn run(name: &str, simulcast: &'static str) -> Option<Value> {
    let only_loopback = match place(&format!("browser::{name}")).await {
        Place::Done => return None,
        Place::OwnNetns => true,
        Place::Machine => false,
    };
    let r = call_in_chromium(simulcast, false).await;
    check(&r, only_loopback);
    // For the log: how long each switch took and how the RTP timeline moved (observed,
    // not asserted here).
    eprintln!(
        "{simulcast}: switch waits low {} ms, medium {} ms, high {} ms; RTP timeline jumps {:?} \
         ticks; {} data channel messages",
        r["low"]["switchWaitMs"],
        r["medium"]["switchWaitMs"],
        r["high"]["switchWaitMs"],
        rtp_jumps(&r),
        r["datachannel"]["received"]
    );
    Some(r)
}

/// Simulcast as `sendEncodings` with rids low / medium / high (the way Firefox publishes).
/// Chromium encodes each VP8 layer with three temporal layers (L1T3): `selectStream` with
/// `temporal: 0` leaves only the base layer, a quarter of the frames, and `temporal: 2`
/// brings them all back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_chromium_rid_simulcast_with_select_stream() {
    let name = "exclusive_chromium_rid_simulcast_with_select_stream";
    let only_loopback = match place(&format!("browser::{name}")).await {
        Place::Done => return,
        Place::OwnNetns => true,
        Place::Machine => false,
    };
    let r = call_with(CallOptions {
        temporal: true,
        ..CallOptions::rid()
    })
    .await;
    check(&r, only_loopback);
    let modes: Vec<&str> = r["publisher"]["outbound"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o["scalabilityMode"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let t = &r["temporal"];
    let (base, all) = (
        t["base"].as_f64().unwrap_or(0.0),
        t["all"].as_f64().unwrap_or(0.0),
    );
    eprintln!("temporal layers {modes:?}: {base:.1} fps at temporal 0, {all:.1} fps at 2");
    if modes.iter().any(|m| m.ends_with("T3") || m.ends_with("T2")) {
        assert!(base > 0.0, "the base temporal layer still plays: {t}");
        assert!(
            base < all * 0.7,
            "temporal 0 forwards fewer frames than temporal 2 ({base:.1} vs {all:.1} fps): {r:#}"
        );
    }
}

/// Talk on Chromium with a camera below 960x540: the offer announces three SIM layers but
/// Chromium sends two (at 640x360: the group's first SSRC at 320 px, the second at 640 px;
/// the third stays silent). The viewer still gets video, the highest layer sent by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_chromium_legacy_sim_with_chromiums_layer_limit() {
    let name = "exclusive_chromium_legacy_sim_with_chromiums_layer_limit";
    if let Place::Done = place(&format!("browser::{name}")).await {
        return;
    }
    let r = call_in_chromium("sim", true).await;
    let initial = &r["initial"];
    assert!(num(&initial["video"]["framesDecoded"]) >= 30, "{r:#}");
    assert_eq!(num(&initial["video"]["frameWidth"]), WIDTH, "{r:#}");
}

/// A layer switch keeps the subscriber's RTP timeline continuous (the SFU rewrites the
/// timestamps of the new layer onto the old one's), so the viewer's jitter buffer doesn't
/// stall. Chromium starts each layer at a random RTP timestamp: forwarded as is, the
/// timeline jumps by up to 2^31 ticks at each switch and Chromium sometimes holds all
/// frames for about 3 s before it decodes the new layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_chromium_layer_switches_keep_the_rtp_timeline() {
    let name = "exclusive_chromium_layer_switches_keep_the_rtp_timeline";
    let Some(r) = run(name, "rid").await else {
        return;
    };
    for (step, jump) in ["low", "medium", "high"].iter().zip(rtp_jumps(&r)) {
        assert!(
            jump.abs() < 90_000,
            "the RTP timeline jumped by {jump} ticks switching to {step}: {:#}",
            r[*step]
        );
    }
}

/// Simulcast as Talk enables it on Chromium: `a=ssrc-group:SIM` munged into the offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_chromium_legacy_sim_simulcast_with_select_stream() {
    run(
        "exclusive_chromium_legacy_sim_simulcast_with_select_stream",
        "sim",
    )
    .await;
}

/// A client whose firewall lets only TCP out: the same call (rid simulcast, layer
/// switches, data channel), with both pages connected to the SFU over ICE-TCP (RFC 6544,
/// RFC 4571 framing) on hpb's shared public TLS port, the one that also serves HTTPS, WSS
/// and TURN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_chromium_over_ice_tcp_on_the_shared_port() {
    let name = "exclusive_chromium_over_ice_tcp_on_the_shared_port";
    let only_loopback = match place(&format!("browser::{name}")).await {
        Place::Done => return,
        Place::OwnNetns => true,
        Place::Machine => false,
    };
    let r = call_with(CallOptions {
        ice_tcp: true,
        ..CallOptions::rid()
    })
    .await;
    check(&r, only_loopback);
    let public = r["hpbStdout"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("listening: https://"))
        .map(|a| a.trim().to_owned())
        .unwrap_or_else(|| panic!("no https listener: {r:#}"));
    for page in ["publisher", "subscriber"] {
        let remote = r[page]["pair"]["remote"].as_str().unwrap_or_default();
        assert!(
            remote.starts_with(&format!("{public} tcp")),
            "{page} is connected to the shared port {public} over TCP, not {remote}: {r:#}"
        );
    }
}

/// Talk mutes the microphone by disabling its track, and Chromium then sends silence: 50
/// packets a second whose audio level is -127 dBov. With `[sfu] thin_silent_audio` the
/// viewer gets only a few of them, and every packet again once the microphone is back on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_chromium_muted_microphone_is_thinned() {
    let name = "exclusive_chromium_muted_microphone_is_thinned";
    if let Place::Done = place(&format!("browser::{name}")).await {
        return;
    }
    let r = call_with(CallOptions {
        mute: true,
        thin: true,
        ..CallOptions::rid()
    })
    .await;
    let m = &r["mute"];
    let (on, muted, again) = (num(&m["on"]), num(&m["muted"]), num(&m["onAgain"]));
    eprintln!("audio packets per 2 s: {on} on, {muted} muted, {again} on again");
    assert!(
        on >= 50 && again >= 50,
        "audio flows with the microphone on: {r:#}"
    );
    assert!(
        muted * 4 <= on,
        "the muted microphone's silence is thinned: {r:#}"
    );
    assert!(
        crate::sfu::metric(
            r["sfuMetrics"].as_str().unwrap_or_default(),
            "hpb_sfu_silent_audio_thinned_total"
        )
        .is_some_and(|n| n > 0),
        "counted: {}",
        r["sfuMetrics"]
    );
}

/// With `[sfu] opus_dtx` the SFU's answer asks the publisher for Opus DTX, and Chromium,
/// muted as Talk mutes it, then sends its silence as DTX does: a few packets per 2 s
/// instead of a hundred. Nothing is thinned at the SFU (that option is off): the
/// publisher itself sends less, and the viewer gets what it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_chromium_muted_microphone_sends_dtx_when_asked() {
    let name = "exclusive_chromium_muted_microphone_sends_dtx_when_asked";
    if let Place::Done = place(&format!("browser::{name}")).await {
        return;
    }
    let r = call_with(CallOptions {
        mute: true,
        dtx: true,
        ..CallOptions::rid()
    })
    .await;
    let m = &r["mute"];
    let sent = (
        num(&m["sentOn"]),
        num(&m["sentMuted"]),
        num(&m["sentOnAgain"]),
    );
    let got = (num(&m["on"]), num(&m["muted"]), num(&m["onAgain"]));
    eprintln!("audio packets per 2 s, sent {sent:?} and received {got:?} (on, muted, on again)");
    assert!(
        sent.0 >= 50 && sent.2 >= 50 && got.0 >= 50 && got.2 >= 50,
        "audio flows with the microphone on: {r:#}"
    );
    assert!(
        sent.1 * 4 <= sent.0,
        "the muted publisher sends its silence as DTX: {r:#}"
    );
    assert!(got.1 * 4 <= got.0, "and the viewer gets only that: {r:#}");
    assert_eq!(
        crate::sfu::metric(
            r["sfuMetrics"].as_str().unwrap_or_default(),
            "hpb_sfu_silent_audio_thinned_total"
        ),
        Some(0),
        "the SFU thinned nothing: {}",
        r["sfuMetrics"]
    );
}
