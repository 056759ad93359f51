//! Where things are: the repository root, cargo's target directory, the host triple and the
//! hpb version, found with cargo and rustc themselves so nothing is hard-coded.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::proc;

/// The repository root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

/// A `cargo` command run from the repository root, using the cargo that runs xtask.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root());
    cmd
}

fn metadata() -> Result<String> {
    proc::output(cargo().args(["metadata", "--format-version", "1", "--no-deps"]))
}

/// Cargo's target directory, from `cargo metadata` (honours CARGO_TARGET_DIR and config).
pub fn target_dir() -> Result<PathBuf> {
    let json = metadata()?;
    let dir = json_string_after(&json, "\"target_directory\":")
        .context("`cargo metadata` printed no \"target_directory\"")?;
    Ok(PathBuf::from(dir))
}

/// The version of workspace package `name`, from `cargo metadata`.
pub fn package_version(name: &str) -> Result<String> {
    let json = metadata()?;
    // Cargo writes each package object as {"name":...,"version":...,...}; a dependency entry
    // has "name" followed by "source" or "req", so this finds the package itself.
    let key = format!("\"name\":\"{name}\",\"version\":");
    json_string_after(&json, &key)
        .with_context(|| format!("`cargo metadata` lists no package `{name}` with a version"))
}

/// The JSON string value that follows `key` in `json`, unescaped. Enough for paths and
/// versions without pulling in a JSON parser.
fn json_string_after(json: &str, key: &str) -> Option<String> {
    let start = json.find(key)? + key.len();
    let rest = json[start..].trim_start().strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = rest.chars();
    loop {
        match chars.next()? {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
}

/// The host target triple, from `rustc -vV`.
pub fn host_triple() -> Result<String> {
    let out = proc::output(Command::new("rustc").arg("-vV"))?;
    match out.lines().find_map(|l| l.strip_prefix("host: ")) {
        Some(triple) => Ok(triple.trim().to_owned()),
        None => bail!("`rustc -vV` printed no `host:` line"),
    }
}

#[cfg(test)]
mod tests {
    use super::json_string_after;

    #[test]
    fn finds_escaped_strings() {
        let json = r#"{"packages":[],"target_directory":"/a \"b\"\\c","version":1}"#;
        assert_eq!(
            json_string_after(json, "\"target_directory\":").as_deref(),
            Some(r#"/a "b"\c"#)
        );
        assert_eq!(json_string_after(json, "\"missing\":"), None);
    }

    #[test]
    fn finds_package_version_not_dependency() {
        let json = r#"{"packages":[{"name":"hpb-e2e","version":"9.9.9","dependencies":[{"name":"hpb","source":null}]},{"name":"hpb","version":"0.1.0"}]}"#;
        assert_eq!(
            json_string_after(json, r#""name":"hpb","version":"#).as_deref(),
            Some("0.1.0")
        );
    }
}
