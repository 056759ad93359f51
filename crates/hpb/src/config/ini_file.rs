//! Reading an upstream `server.conf` unchanged into a layer: `$(VAR)` substitution,
//! backends as the `[<id>]` sections named in `[backend] backends`, and a warning that
//! lists every upstream setting hpb accepts but does not implement.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};

use super::ini::parse_ini;
use super::layer::{LayerBuilder, LayerKind, text};
use super::merged::split_list;
use super::schema::{self, BACKENDS};

/// Replace `$(NAME)` with the environment variable NAME, as upstream does. An unset
/// variable becomes its bare name (upstream's behaviour); its name is added to `missing`.
pub fn substitute(
    value: &str,
    env: &BTreeMap<String, String>,
    missing: &mut Vec<String>,
) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let name_len = after
            .char_indices()
            .take_while(|(i, c)| {
                if *i == 0 {
                    c.is_ascii_alphabetic()
                } else {
                    c.is_ascii_alphanumeric() || *c == '_'
                }
            })
            .count();
        // All name characters are ASCII, so `name_len` is a byte offset.
        if name_len > 0 && after[name_len..].starts_with(')') {
            let name = &after[..name_len];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str(name);
                    missing.push(name.to_string());
                }
            }
            rest = &after[name_len + 1..];
        } else {
            out.push_str("$(");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Settings hpb ignores, grouped by section and reason for one warning each.
#[derive(Default)]
struct Ignored {
    groups: Vec<(String, &'static str, usize, Vec<String>)>,
}

impl Ignored {
    fn add(&mut self, section: &str, hint: &'static str, line: usize, key: Option<&str>) {
        let group = match self
            .groups
            .iter_mut()
            .find(|(s, h, _, _)| s == section && *h == hint)
        {
            Some(g) => g,
            None => {
                self.groups
                    .push((section.to_string(), hint, line, Vec::new()));
                let last = self.groups.len() - 1;
                &mut self.groups[last]
            }
        };
        if let Some(key) = key
            && !group.3.iter().any(|k| k == key)
        {
            group.3.push(key.to_string());
        }
    }

    fn warnings(self, path: &str) -> Vec<String> {
        self.groups
            .into_iter()
            .map(|(section, hint, line, keys)| {
                if keys.is_empty() {
                    format!("{path} line {line}: hpb ignores section [{section}]: {hint}")
                } else {
                    format!(
                        "{path} line {line}: hpb ignores [{section}] {}: {hint}",
                        keys.join(", ")
                    )
                }
            })
            .collect()
    }
}

/// Parse `text` (the file at `path`) into a layer, plus warnings.
pub fn layer(
    path: &str,
    text_in: &str,
    env: &BTreeMap<String, String>,
) -> Result<(LayerBuilder, Vec<String>)> {
    let ini = parse_ini(text_in).map_err(|e| anyhow!("{path} {e}"))?;
    let mut b = LayerBuilder::new(LayerKind::IniFile, path.to_string());
    let mut warnings = Vec::new();
    let mut ignored = Ignored::default();
    let mut missing_vars = Vec::new();
    let mut value_of = |v: &str, line: usize, warnings: &mut Vec<String>| {
        missing_vars.clear();
        let s = substitute(v, env, &mut missing_vars);
        for name in &missing_vars {
            warnings.push(format!(
                "{path} line {line}: $({name}) is not set in the environment, so the value contains the text \"{name}\" (as upstream does); set {name} or write the value into the file"
            ));
        }
        s
    };

    let listed: Vec<String> = match ini.get("backend", "backends") {
        Some(e) => split_list(&value_of(&e.value, e.line, &mut Vec::new())),
        None => Vec::new(),
    };

    for section in &ini.sections {
        let lower = section.name.to_ascii_lowercase();
        if let Some(def) = schema::section(&lower) {
            b.touch(&[def.name], format!("{path} line {}", section.line));
            for e in &section.entries {
                let key = e.key.to_ascii_lowercase();
                match def.keys.iter().find(|k| k.name == key) {
                    Some(k) => {
                        let v = value_of(&e.value, e.line, &mut warnings);
                        b.set(
                            &[def.name, k.name],
                            text(v),
                            format!("{path} line {}", e.line),
                        );
                    }
                    None => ignored.add(
                        def.name,
                        schema::unimplemented_key_hint(def.name, &key),
                        e.line,
                        Some(&e.key),
                    ),
                }
            }
        } else if let Some(id) = listed
            .iter()
            .find(|id| id.eq_ignore_ascii_case(&section.name))
        {
            b.touch(
                &[BACKENDS, id],
                format!("{path} line {}: [{}]", section.line, section.name),
            );
            for e in &section.entries {
                let key = e.key.to_ascii_lowercase();
                match schema::BACKEND_KEYS.iter().find(|k| k.name == key) {
                    Some(k) => {
                        let v = value_of(&e.value, e.line, &mut warnings);
                        b.set(
                            &[BACKENDS, id, k.name],
                            text(v),
                            format!("{path} line {}", e.line),
                        );
                    }
                    None => ignored.add(
                        &section.name,
                        "not a backend setting (a typo?)",
                        e.line,
                        Some(&e.key),
                    ),
                }
            }
        } else if let Some(hint) = schema::unimplemented_section_hint(&lower) {
            if section.entries.is_empty() {
                continue;
            }
            for e in &section.entries {
                ignored.add(&section.name, hint, section.line, Some(&e.key));
            }
        } else if !section.entries.is_empty() {
            ignored.add(
                &section.name,
                "neither an hpb section nor a backend listed in [backend] backends",
                section.line,
                None,
            );
        }
    }
    warnings.extend(ignored.warnings(path));
    Ok((b, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_environment_variables_like_upstream() {
        let env: BTreeMap<String, String> = [("SECRET".to_string(), "s3".to_string())].into();
        let mut missing = Vec::new();
        assert_eq!(substitute("a$(SECRET)b", &env, &mut missing), "as3b");
        assert_eq!(
            substitute("$(NOPE)-$(SECRET)", &env, &mut missing),
            "NOPE-s3"
        );
        assert_eq!(missing, vec!["NOPE".to_string()]);
        assert_eq!(
            substitute("$(1X) $( $(SECRET", &env, &mut missing),
            "$(1X) $( $(SECRET"
        );
        assert_eq!(substitute("é$(SECRET)😀$(", &env, &mut missing), "és3😀$(");
    }
}
