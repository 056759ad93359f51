//! `cargo xtask dist`: a release build of `hpb`, copied to
//! `target/dist/hpb-<version>-<target triple>` with its SHA-256 in a `.sha256` file beside it
//! (`sha256sum -c` format), and its size, checksum and linkage printed.
//!
//! Linkage: on `*-linux-gnu` the binary is linked statically against glibc
//! (`-C target-feature=+crt-static`, built with an explicit `--target` so build scripts and
//! proc macros stay dynamic), so one file runs on any Linux of the same architecture,
//! whatever its glibc version. hpb needs nothing from glibc that a static link breaks: no
//! dlopen, no iconv/locale; host names (the Nextcloud URL) resolve through getaddrinfo, whose
//! `files` and `dns` sources are part of libc itself since glibc 2.34 (glibc warns at link
//! time because *other* NSS modules, e.g. nss-resolve or LDAP, are still loaded at run time
//! from the host; with `hosts: files dns`, the default of Debian and containers, that never
//! happens). `--dynamic` builds the ordinary dynamically linked binary instead.
//!
//! The release profile keeps line tables for backtraces (most of a 110 MiB file); with
//! `objcopy` present they move to `<name>.debug` beside the binary (linked by
//! `.gnu_debuglink`, so debuggers and symbolizers find them), leaving a ~25 MiB binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{proc, workspace};

/// How the binary is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linkage {
    /// glibc (or musl) linked in: `+crt-static`.
    Static,
    /// The platform default.
    Dynamic,
}

/// `cargo xtask dist [--dynamic]`.
pub fn parse_options(args: &[String]) -> Result<Linkage> {
    match args {
        [] => Ok(Linkage::Static),
        [a] if a == "--dynamic" => Ok(Linkage::Dynamic),
        [a] if a == "--static" => Ok(Linkage::Static),
        other => bail!("dist: unknown options {other:?}; usage: cargo xtask dist [--dynamic]"),
    }
}

/// Whether `+crt-static` is worth asking for on `triple` (gnu and musl Linux targets).
fn supports_crt_static(triple: &str) -> bool {
    triple.contains("-linux-gnu") || triple.contains("-linux-musl")
}

/// The `cargo build` arguments for `linkage` on `triple`.
fn build_args(triple: &str, linkage: Linkage) -> Vec<String> {
    let mut args: Vec<String> = ["build", "--release", "--locked", "-p", "hpb"]
        .map(String::from)
        .to_vec();
    if linkage == Linkage::Static && supports_crt_static(triple) {
        // With an explicit --target, target.<triple>.rustflags apply to the target's
        // artifacts only; build scripts and proc macros (which cannot be static) are not
        // touched.
        args.extend([
            "--target".to_string(),
            triple.to_string(),
            "--config".to_string(),
            format!("target.{triple}.rustflags=[\"-C\", \"target-feature=+crt-static\"]"),
        ]);
    }
    args
}

/// Where cargo puts the binary for those arguments.
fn built_path(target_dir: &Path, triple: &str, linkage: Linkage) -> PathBuf {
    let name = format!("hpb{}", std::env::consts::EXE_SUFFIX);
    if linkage == Linkage::Static && supports_crt_static(triple) {
        target_dir.join(triple).join("release").join(name)
    } else {
        target_dir.join("release").join(name)
    }
}

/// One line of a `sha256sum` file: the hex digest, two spaces (text mode), the file name.
pub fn checksum_line(hex: &str, name: &str) -> String {
    format!("{hex}  {name}\n")
}

/// The digest from `sha256sum <name>`'s output, checked to be one line for `name`.
pub fn parse_sha256sum(output: &str, name: &str) -> Result<String> {
    let line = output.lines().next().unwrap_or_default();
    let Some((hex, file)) = line.split_once(' ') else {
        bail!("sha256sum printed {output:?}, not `<digest>  {name}`");
    };
    let file = file.trim_start_matches([' ', '*']);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) || file != name {
        bail!("sha256sum printed {output:?}, not `<64 hex digits>  {name}`");
    }
    Ok(hex.to_ascii_lowercase())
}

/// `12.3 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Whether an ELF file is statically linked (no `PT_INTERP` program header): `None` if it is
/// not a 64-bit little-endian ELF file.
pub fn elf_is_static(bytes: &[u8]) -> Option<bool> {
    if bytes.get(..4)? != b"\x7fELF" || *bytes.get(4)? != 2 || *bytes.get(5)? != 1 {
        return None;
    }
    let u16_at = |o: usize| -> Option<usize> {
        Some(u16::from_le_bytes(bytes.get(o..o + 2)?.try_into().ok()?).into())
    };
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(o..o + 4)?.try_into().ok()?))
    };
    let phoff =
        usize::try_from(u64::from_le_bytes(bytes.get(0x20..0x28)?.try_into().ok()?)).ok()?;
    let phentsize = u16_at(0x36)?;
    let phnum = u16_at(0x38)?;
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        if u32_at(phoff.checked_add(i.checked_mul(phentsize)?)?)? == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

/// Moves the debug info of `dist/<name>` into `dist/<debug_name>` with objcopy; `false`
/// (nothing done) without objcopy.
fn split_debug_info(dist: &Path, name: &str, debug_name: &str) -> Result<bool> {
    if proc::which("objcopy").is_none() {
        return Ok(false);
    }
    proc::run(
        Command::new("objcopy")
            .args(["--only-keep-debug", name, debug_name])
            .current_dir(dist),
    )?;
    proc::run(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(format!("--add-gnu-debuglink={debug_name}"))
            .arg(name)
            .current_dir(dist),
    )?;
    Ok(true)
}

pub fn run(linkage: Linkage) -> Result<PathBuf> {
    let triple = workspace::host_triple()?;
    let linkage = if linkage == Linkage::Static && !supports_crt_static(&triple) {
        println!("    {triple}: no static C runtime here, building the default (dynamic) binary");
        Linkage::Dynamic
    } else {
        linkage
    };
    proc::step("build release", || {
        proc::run(workspace::cargo().args(build_args(&triple, linkage)))
    })?;
    proc::step("package", || {
        let target = workspace::target_dir()?;
        let name = format!("hpb-{}-{triple}", workspace::package_version("hpb")?);
        let dist = target.join("dist");
        std::fs::create_dir_all(&dist).with_context(|| format!("creating {}", dist.display()))?;

        let built = built_path(&target, &triple, linkage);
        let dest = dist.join(&name);
        std::fs::copy(&built, &dest)
            .with_context(|| format!("copying {} to {}", built.display(), dest.display()))?;
        let bytes = std::fs::read(&dest).with_context(|| format!("reading {}", dest.display()))?;
        let linked = match elf_is_static(&bytes) {
            Some(true) => "statically linked",
            Some(false) => "dynamically linked (glibc)",
            None => "not an ELF file",
        };
        if linkage == Linkage::Static && elf_is_static(&bytes) == Some(false) {
            bail!(
                "{} asked for +crt-static but is dynamically linked; build with --dynamic",
                dest.display()
            );
        }

        let debug_name = format!("{name}.debug");
        let split = split_debug_info(&dist, &name, &debug_name)?;
        let size = std::fs::metadata(&dest)
            .with_context(|| format!("reading {}", dest.display()))?
            .len();

        // Run in dist/ so the file names the binary without a path, as `sha256sum -c` wants.
        let mut files = vec![name.clone()];
        if split {
            files.push(debug_name.clone());
        }
        let mut sums = String::new();
        let mut hex = String::new();
        for f in &files {
            let out = proc::output(Command::new("sha256sum").arg(f).current_dir(&dist))?;
            let h = parse_sha256sum(&out, f)?;
            sums.push_str(&checksum_line(&h, f));
            if *f == name {
                hex = h;
            }
        }
        let sum_file = dist.join(format!("{name}.sha256"));
        std::fs::write(&sum_file, sums)
            .with_context(|| format!("writing {}", sum_file.display()))?;

        println!("    {}", dest.display());
        println!("    size:   {} ({size} bytes), {linked}", human_size(size));
        if split {
            println!("    debug info: {}", dist.join(&debug_name).display());
        } else {
            println!("    (no objcopy: the line tables stay in the binary)");
        }
        println!("    sha256: {hex}");
        println!(
            "    {} (check with: cd {} && sha256sum -c {name}.sha256)",
            sum_file.display(),
            dist.display()
        );
        Ok(dest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn checksum_file_is_sha256sum_format() {
        assert_eq!(
            checksum_line(HEX, "hpb-0.1.0-x86_64-unknown-linux-gnu"),
            format!("{HEX}  hpb-0.1.0-x86_64-unknown-linux-gnu\n")
        );
        // What sha256sum prints round-trips.
        let name = "hpb-0.1.0-x86_64-unknown-linux-gnu";
        let out = checksum_line(HEX, name);
        assert_eq!(parse_sha256sum(&out, name).expect("parses"), HEX);
        assert_eq!(
            parse_sha256sum(&format!("{HEX} *{name}\n"), name).expect("binary mode"),
            HEX
        );
        assert!(parse_sha256sum(&format!("{HEX}  other\n"), name).is_err());
        assert!(parse_sha256sum("abc  hpb\n", "hpb").is_err());
        assert!(parse_sha256sum("", "hpb").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(2048), "2.0 KiB");
        assert_eq!(human_size(25 * 1024 * 1024 + 512 * 1024), "25.5 MiB");
    }

    #[test]
    fn options_and_cargo_arguments() {
        assert_eq!(parse_options(&[]).expect("default"), Linkage::Static);
        assert_eq!(
            parse_options(&["--dynamic".into()]).expect("dynamic"),
            Linkage::Dynamic
        );
        assert!(parse_options(&["--fast".into()]).is_err());

        let gnu = "x86_64-unknown-linux-gnu";
        let args = build_args(gnu, Linkage::Static);
        assert!(args.windows(2).any(|w| w[0] == "--target" && w[1] == gnu));
        assert!(
            args.iter()
                .any(|a| a == "target.x86_64-unknown-linux-gnu.rustflags=[\"-C\", \"target-feature=+crt-static\"]")
        );
        assert_eq!(
            built_path(Path::new("/t"), gnu, Linkage::Static),
            Path::new("/t/x86_64-unknown-linux-gnu/release/hpb")
        );
        let dynamic = build_args(gnu, Linkage::Dynamic);
        assert!(!dynamic.iter().any(|a| a == "--target"));
        assert_eq!(
            built_path(Path::new("/t"), gnu, Linkage::Dynamic),
            Path::new("/t/release/hpb")
        );
        // Not on targets without a static C runtime.
        assert!(!build_args("aarch64-apple-darwin", Linkage::Static).contains(&"--target".into()));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn tells_static_from_dynamic_elf() {
        // The test executable itself is an ordinary dynamically linked program.
        let exe = std::env::current_exe().expect("test executable");
        let bytes = std::fs::read(exe).expect("read it");
        assert_eq!(elf_is_static(&bytes), Some(false));
        assert_eq!(elf_is_static(b"#!/bin/sh\n"), None);
        assert_eq!(elf_is_static(b"\x7fELF"), None);
        // A minimal ELF64 header with no program headers: nothing asks for an interpreter.
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        assert_eq!(elf_is_static(&elf), Some(true));
    }
}
