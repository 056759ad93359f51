//! The two systems the SFU benchmark compares, each started fresh on this host: hpb with its
//! built-in SFU, and Debian's Janus (videoroom, websockets, ICE on one host address, full
//! trickle) behind Debian's nextcloud-spreed-signaling (`[mcu] type = janus`, NATS
//! `:loopback:`); the processes stop when dropped.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hpb_test_support::{FakeNextcloud, Hpb, free_config};

use crate::upstream::{UPSTREAM_SIGNALING, free_port, signaling_conf};

pub const JANUS: &str = "/usr/bin/janus";
const JANUS_LIB: &str = "/usr/lib/x86_64-linux-gnu/janus";

/// A server under test: where clients connect, and the processes to measure.
pub trait System {
    /// `ws://…/spreed`-style address the signaling clients connect to.
    fn addr(&self) -> String;
    /// Base URL of the backend API (`POST /api/v1/room/…`).
    fn http(&self) -> String;
    /// The media server's pid (hpb: the one process).
    fn media_pid(&self) -> u32;
    /// The separate signaling server's pid, if any.
    fn signaling_pid(&self) -> Option<u32>;
    /// The Talk `roomType` the publishers use.
    fn room_type(&self) -> &'static str {
        "video"
    }
    /// The address the str0m clients bind to.
    fn client_ip(&self) -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }
}

/// This host's primary IPv4 address (the source of the default route), if any. libnice
/// never gathers loopback candidates, so Janus's host candidate is on this address; traffic
/// to a local address still stays on the loopback device.
fn primary_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("198.51.100.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

pub struct HpbSystem(Hpb);

impl HpbSystem {
    /// `thin_silent_audio`: with `[sfu] thin_silent_audio`.
    pub async fn start(nc: &FakeNextcloud, thin_silent_audio: bool) -> Result<HpbSystem> {
        let cfg = free_config(
            nc,
            &format!(
                "[sfu]\nlisten = \"127.0.0.1:0\"\nthin_silent_audio = {thin_silent_audio}\n\n[log]\nlevel = \"warn\"\n"
            ),
        );
        Ok(HpbSystem(Hpb::start(&cfg).await))
    }
}

impl System for HpbSystem {
    fn addr(&self) -> String {
        self.0.addr().to_string()
    }
    fn http(&self) -> String {
        self.0.http_url()
    }
    fn media_pid(&self) -> u32 {
        self.0.pid()
    }
    fn signaling_pid(&self) -> Option<u32> {
        None
    }
}

fn wait_listening(addr: SocketAddr, child: &mut Child, log: &Path, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status}:\n{}", read(log));
        }
        if Instant::now() > deadline {
            bail!("{what} did not listen on {addr}:\n{}", read(log));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn spawn(program: &str, args: &[&str], log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {program}"))
}

/// Janus + nextcloud-spreed-signaling.
pub struct UpstreamSystem {
    janus: Child,
    signaling: Child,
    addr: SocketAddr,
    dir: PathBuf,
    media_ip: IpAddr,
}

impl UpstreamSystem {
    pub fn start(secret: &str) -> Result<UpstreamSystem> {
        for bin in [JANUS, UPSTREAM_SIGNALING] {
            if !Path::new(bin).is_file() {
                bail!("{bin} is missing: run `cargo xtask deps`");
            }
        }
        let janus_port = free_port()?;
        let dir = std::env::temp_dir().join(format!("hpb-bench-sfu-{janus_port}"));
        std::fs::create_dir_all(&dir)?;
        let media_ip = primary_ip().unwrap_or(IpAddr::from([127, 0, 0, 1]));
        write_janus_config(&dir, janus_port, media_ip)?;
        let janus_log = dir.join("janus.log");
        let conf = dir.join("janus.jcfg");
        let mut janus = spawn(
            JANUS,
            &[
                "-C",
                &conf.to_string_lossy(),
                "-F",
                &dir.to_string_lossy(),
                "-L",
                &janus_log.to_string_lossy(),
                "--disable-colors",
            ],
            &dir.join("janus.stdout"),
        )?;
        let janus_addr: SocketAddr = format!("127.0.0.1:{janus_port}").parse()?;
        if let Err(e) = wait_listening(janus_addr, &mut janus, &dir.join("janus.stdout"), "janus") {
            let _ = janus.kill();
            return Err(e);
        }

        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let conf = signaling_conf(
            addr,
            secret,
            &format!(
                "type = janus\nurl = ws://{janus_addr}\nmaxstreambitrate = 10000000\n\
                 maxscreenbitrate = 10000000"
            ),
        );
        let path = dir.join("server.conf");
        std::fs::write(&path, conf)?;
        let log = dir.join("server.log");
        let mut signaling = match spawn(
            UPSTREAM_SIGNALING,
            &["--config", &path.to_string_lossy()],
            &log,
        ) {
            Ok(c) => c,
            Err(e) => {
                let _ = janus.kill();
                return Err(e);
            }
        };
        let up = wait_listening(addr, &mut signaling, &log, "nextcloud-spreed-signaling");
        let s = UpstreamSystem {
            janus,
            signaling,
            addr,
            dir,
            media_ip,
        };
        up?;
        // The MCU connection is made at start; wait until it is there.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !s.log().contains("Connected to Janus") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(s)
    }

    pub fn log(&self) -> String {
        read(&self.dir.join("server.log"))
    }

    pub fn janus_log(&self) -> String {
        read(&self.dir.join("janus.log"))
    }
}

impl System for UpstreamSystem {
    fn addr(&self) -> String {
        self.addr.to_string()
    }
    fn http(&self) -> String {
        format!("http://{}", self.addr)
    }
    fn media_pid(&self) -> u32 {
        self.janus.id()
    }
    fn signaling_pid(&self) -> Option<u32> {
        Some(self.signaling.id())
    }
    /// Debian's 0.4.1 cannot publish `video`: its `build-with-sdp-3.4.patch` changed the SDP
    /// type check in `isSdpAllowedToSendLocked` to `sdpValue.([]byte)`, which a JSON string
    /// never is, so every camera offer fails with "payload does not contain a valid sdp".
    /// `screen` publishers skip that check; for Janus the stream is the same videoroom
    /// publisher with the same audio and video.
    fn room_type(&self) -> &'static str {
        "screen"
    }
    fn client_ip(&self) -> IpAddr {
        self.media_ip
    }
}

impl Drop for UpstreamSystem {
    fn drop(&mut self) {
        for c in [&mut self.signaling, &mut self.janus] {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::env::var_os("HPB_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn write_janus_config(dir: &Path, ws_port: u16, media_ip: IpAddr) -> Result<()> {
    let plugins = [
        "audiobridge",
        "duktape",
        "echotest",
        "lua",
        "nosip",
        "recordplay",
        "sip",
        "streaming",
        "textroom",
        "videocall",
        "voicemail",
    ]
    .map(|p| format!("libjanus_{p}.so"))
    .join(",");
    let transports = ["http", "mqtt", "nanomsg", "pfunix", "rabbitmq"]
        .map(|p| format!("libjanus_{p}.so"))
        .join(",");
    let main = format!(
        "general: {{\n\
         \tconfigs_folder = \"{dir}\"\n\
         \tplugins_folder = \"{JANUS_LIB}/plugins\"\n\
         \ttransports_folder = \"{JANUS_LIB}/transports\"\n\
         \tevents_folder = \"{JANUS_LIB}/events\"\n\
         \tloggers_folder = \"{JANUS_LIB}/loggers\"\n\
         \tdebug_level = 3\n\
         \tsession_timeout = 60\n\
         }}\n\
         certificates: {{\n}}\n\
         media: {{\n\trtp_port_range = \"40000-59999\"\n}}\n\
         nat: {{\n\tfull_trickle = true\n\tice_enforce_list = \"{enforce}\"\n}}\n\
         plugins: {{\n\tdisable = \"{plugins}\"\n}}\n\
         transports: {{\n\tdisable = \"{transports}\"\n}}\n\
         loggers: {{\n\tdisable = \"libjanus_jsonlog.so\"\n}}\n\
         events: {{\n\tbroadcast = false\n}}\n",
        dir = dir.display(),
        enforce = if media_ip.is_loopback() {
            "lo".to_string()
        } else {
            media_ip.to_string()
        },
    );
    std::fs::write(dir.join("janus.jcfg"), main)?;
    std::fs::write(
        dir.join("janus.transport.websockets.jcfg"),
        format!(
            "general: {{\n\tjson = \"plain\"\n\tws = true\n\tws_port = {ws_port}\n\tws_ip = \"127.0.0.1\"\n\twss = false\n}}\n\
             admin: {{\n\tadmin_ws = false\n}}\n"
        ),
    )?;
    std::fs::write(dir.join("janus.plugin.videoroom.jcfg"), "general: {\n}\n")?;
    Ok(())
}
