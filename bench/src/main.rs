//! `hpb-bench`: the load generators behind `cargo xtask bench`. Each benchmark runs the same
//! work against hpb and against the upstream program it replaces, in one run, and prints
//! the figures side by side with their ratio.

mod pinning;
mod procstat;
mod report;
mod sfu;
mod signaling;
mod turn;
mod upstream;

use anyhow::{Result, bail};

const USAGE: &str = "usage: hpb-bench signaling [--sizes 100,500,1000] [--messages N] [--rate PER_SECOND]
       hpb-bench turn [--clients N] [--messages N] [--length BYTES]
       hpb-bench sfu [--rooms 3] [--publishers 2] [--subscribers 5] [--seconds 20] [--fps 30] [--video-kbps 1500] [--repeat 5] [--muted 0]";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((name, rest)) = args.split_first() else {
        bail!("{USAGE}");
    };
    // bench sfu pins the load generator to one core: one runtime thread there, so that
    // two workers do not take turns waking each other and parking on the sockets (each
    // such wake-up is CPU the generator spends besides its clients, and a client parked on
    // a socket costs the SFU a wake-up per datagram it sends).
    let runtime = if name == "sfu" {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()?;
    match name.as_str() {
        "signaling" => runtime.block_on(signaling::run(signaling_options(rest)?)),
        "turn" => runtime.block_on(turn::run(turn_options(rest)?)),
        "sfu" => runtime.block_on(sfu::run(sfu_options(rest)?)),
        other => bail!("unknown benchmark `{other}`\n{USAGE}"),
    }
}

/// `--flag value` pairs; every flag takes a value.
fn flag_values(args: &[String]) -> Result<Vec<(&str, &str)>> {
    let mut it = args.iter();
    let mut pairs = Vec::new();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else {
            bail!("{flag} needs a value\n{USAGE}");
        };
        pairs.push((flag.as_str(), value.as_str()));
    }
    Ok(pairs)
}

fn signaling_options(args: &[String]) -> Result<signaling::Options> {
    let mut o = signaling::Options::default();
    for (flag, value) in flag_values(args)? {
        match flag {
            "--sizes" => {
                o.sizes = value
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()?;
            }
            "--messages" => o.messages = value.parse()?,
            "--rate" => o.rate = value.parse()?,
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    if o.sizes.iter().any(|&n| n < 2) || o.messages == 0 || o.rate == 0 {
        bail!("sizes must be at least 2, messages and rate at least 1");
    }
    Ok(o)
}

fn turn_options(args: &[String]) -> Result<turn::Options> {
    let mut o = turn::Options::default();
    for (flag, value) in flag_values(args)? {
        match flag {
            "--clients" => o.clients = value.parse()?,
            "--messages" => o.messages = value.parse()?,
            "--length" => o.length = value.parse()?,
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    if o.clients < 2 || o.messages == 0 || o.length == 0 {
        bail!("clients must be at least 2, messages and length at least 1");
    }
    Ok(o)
}

fn sfu_options(args: &[String]) -> Result<sfu::Options> {
    let mut o = sfu::Options::default();
    for (flag, value) in flag_values(args)? {
        match flag {
            "--rooms" => o.rooms = value.parse()?,
            "--publishers" => o.publishers = value.parse()?,
            "--subscribers" => o.subscribers = value.parse()?,
            "--seconds" => o.seconds = value.parse()?,
            "--fps" => o.fps = value.parse()?,
            "--video-kbps" => o.video_kbps = value.parse()?,
            "--repeat" => o.repeat = value.parse()?,
            "--muted" => o.muted = value.parse()?,
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    if [o.rooms, o.publishers, o.subscribers, o.repeat].contains(&0) || o.seconds == 0 || o.fps == 0
    {
        bail!("rooms, publishers, subscribers, seconds, fps and repeat must be at least 1");
    }
    if o.muted > o.publishers {
        bail!(
            "--muted {} is more than the {} publishers per room",
            o.muted,
            o.publishers
        );
    }
    Ok(o)
}
