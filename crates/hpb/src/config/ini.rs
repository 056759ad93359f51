//! The syntax of an upstream `server.conf` (goconf-style INI) as a pure function from text
//! to sections of `key = value` entries with their line numbers. It knows nothing about
//! what the keys mean and never panics, whatever the input.

use std::fmt;

/// A parsed INI file, in file order. Sections may repeat and keys may repeat within a
/// section: readers take the last value, as goconf does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ini {
    pub sections: Vec<Section>,
}

/// One `[name]` header and the entries under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name between the brackets, trimmed, as written.
    pub name: String,
    /// 1-based line of the header.
    pub line: usize,
    pub entries: Vec<Entry>,
}

/// One `key = value` (or `key: value`) line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, trimmed, as written (goconf compares keys case-insensitively).
    pub key: String,
    /// The value, trimmed, with a trailing ` #` / ` ;` comment removed. Indented
    /// continuation lines are appended after a `\n`.
    pub value: String,
    /// 1-based line of the key.
    pub line: usize,
}

/// Why a line could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniError {
    /// 1-based line number.
    pub line: usize,
    pub kind: IniErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IniErrorKind {
    /// A `key = value` line before the first `[section]`.
    BeforeSection,
    /// `[name` without the closing bracket.
    UnclosedSection,
    /// `[]`.
    EmptySectionName,
    /// `= value`.
    EmptyKey,
    /// Neither a section, a comment, an entry nor an indented continuation.
    NotAnEntry { text: String },
}

impl fmt::Display for IniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: ", self.line)?;
        match &self.kind {
            IniErrorKind::BeforeSection => f.write_str(
                "`key = value` before any [section]; put it under a section such as [http]",
            ),
            IniErrorKind::UnclosedSection => {
                f.write_str("section header is missing its closing `]`")
            }
            IniErrorKind::EmptySectionName => f.write_str("section header `[]` has no name"),
            IniErrorKind::EmptyKey => {
                f.write_str("entry has no key before `=`; write `key = value`")
            }
            IniErrorKind::NotAnEntry { text } => write!(
                f,
                "expected `key = value`, a `[section]` or a `#` comment, found `{text}`"
            ),
        }
    }
}

impl std::error::Error for IniError {}

impl Ini {
    /// The last value of `key` (case-insensitive) in the last section named `section`
    /// (case-insensitive), with its line.
    pub fn get(&self, section: &str, key: &str) -> Option<&Entry> {
        self.sections
            .iter()
            .rev()
            .filter(|s| s.name.eq_ignore_ascii_case(section))
            .flat_map(|s| s.entries.iter().rev())
            .find(|e| e.key.eq_ignore_ascii_case(key))
    }
}

/// Cut a trailing comment: `;` or `#` preceded by a space or tab (goconf's rule), so a
/// value may itself contain `#` or `;`.
fn strip_comment(s: &str) -> &str {
    let bytes = s.as_bytes();
    for i in 1..bytes.len() {
        if (bytes[i] == b'#' || bytes[i] == b';') && (bytes[i - 1] == b' ' || bytes[i - 1] == b'\t')
        {
            // Both bytes are ASCII, so `i - 1` is a char boundary.
            return &s[..i - 1];
        }
    }
    s
}

/// A short, single-line excerpt of `s` for an error message.
fn excerpt(s: &str) -> String {
    const MAX: usize = 60;
    let mut out: String = s.chars().take(MAX).collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// Parse `server.conf` text. Lines are `[section]`, `key = value`, `key: value`,
/// comments starting with `#` or `;`, blank, or (after an entry) indented continuation
/// lines. A leading byte-order mark and `\r\n` line ends are accepted.
pub fn parse_ini(text: &str) -> Result<Ini, IniError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut ini = Ini::default();
    for (idx, raw) in text.split('\n').enumerate() {
        let line_no = idx + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let rest = strip_comment(rest).trim_end();
            let Some(name) = rest.strip_suffix(']') else {
                return Err(IniError {
                    line: line_no,
                    kind: IniErrorKind::UnclosedSection,
                });
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(IniError {
                    line: line_no,
                    kind: IniErrorKind::EmptySectionName,
                });
            }
            ini.sections.push(Section {
                name: name.to_string(),
                line: line_no,
                entries: Vec::new(),
            });
            continue;
        }
        let Some(section) = ini.sections.last_mut() else {
            return Err(IniError {
                line: line_no,
                kind: IniErrorKind::BeforeSection,
            });
        };
        match line.find(['=', ':']) {
            Some(0) => {
                return Err(IniError {
                    line: line_no,
                    kind: IniErrorKind::EmptyKey,
                });
            }
            Some(i) => {
                // `=` and `:` are ASCII: `i` and `i + 1` are char boundaries.
                let key = line[..i].trim();
                let value = strip_comment(&line[i + 1..]).trim();
                section.entries.push(Entry {
                    key: key.to_string(),
                    value: value.to_string(),
                    line: line_no,
                });
            }
            None => {
                let indented = raw.starts_with([' ', '\t']);
                match section.entries.last_mut() {
                    Some(entry) if indented => {
                        entry.value.push('\n');
                        entry.value.push_str(strip_comment(line).trim());
                    }
                    _ => {
                        return Err(IniError {
                            line: line_no,
                            kind: IniErrorKind::NotAnEntry {
                                text: excerpt(line),
                            },
                        });
                    }
                }
            }
        }
    }
    Ok(ini)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sections_entries_and_comments() {
        let text = "\u{feff}# top comment\r\n[http]\r\nlisten = 127.0.0.1:8080 # inline\n; other\n  [backend]  \nbackends = a, b\nurl: https://x/#frag\nsecret=abc;def ;tail\n";
        let ini = parse_ini(text).expect("parses");
        assert_eq!(ini.sections.len(), 2);
        assert_eq!(ini.sections[0].name, "http");
        assert_eq!(ini.sections[0].line, 2);
        let listen = ini.get("HTTP", "Listen").expect("listen");
        assert_eq!(listen.value, "127.0.0.1:8080");
        assert_eq!(listen.line, 3);
        assert_eq!(ini.get("backend", "backends").expect("b").value, "a, b");
        assert_eq!(
            ini.get("backend", "url").expect("url").value,
            "https://x/#frag"
        );
        assert_eq!(ini.get("backend", "secret").expect("s").value, "abc;def");
    }

    #[test]
    fn later_values_win_and_continuations_append() {
        let ini = parse_ini("[a]\nk = 1\nk = 2\n[a]\nm = x\n  y\n").expect("parses");
        assert_eq!(ini.get("a", "k").expect("k").value, "2");
        assert_eq!(ini.get("a", "m").expect("m").value, "x\ny");
    }

    #[test]
    fn empty_values_are_kept() {
        let ini = parse_ini("[sessions]\nblockkey =\nhashkey = # nothing\n").expect("parses");
        assert_eq!(ini.get("sessions", "blockkey").expect("b").value, "");
        assert_eq!(ini.get("sessions", "hashkey").expect("h").value, "");
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_ini("listen = x\n").expect_err("no section");
        assert_eq!(e.line, 1);
        assert_eq!(e.kind, IniErrorKind::BeforeSection);
        let e = parse_ini("[http]\n\n[backend\n").expect_err("unclosed");
        assert_eq!(e.line, 3);
        assert_eq!(e.kind, IniErrorKind::UnclosedSection);
        let e = parse_ini("[a]\n= v\n").expect_err("empty key");
        assert_eq!((e.line, e.kind), (2, IniErrorKind::EmptyKey));
        let e = parse_ini("[a]\nthis is not valid\n").expect_err("garbage");
        assert_eq!(e.line, 2);
        assert!(
            e.to_string().starts_with("line 2: expected `key = value`"),
            "{e}"
        );
        assert!(parse_ini("[]\n").is_err());
    }

    /// A small deterministic xorshift so the test needs no extra crates.
    fn next(state: &mut u64) -> u64 {
        let mut x = *state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *state = x;
        x
    }

    #[test]
    fn never_panics_on_arbitrary_input() {
        const ALPHABET: &[char] = &[
            '[', ']', '=', ':', '#', ';', ' ', '\t', '\n', '\r', 'a', 'k', '$', '(', ')', 'é',
            '\u{feff}', '😀', '\0', '\\', '"',
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..3000 {
            let len = (next(&mut state) % 48) as usize;
            let s: String = (0..len)
                .map(|_| ALPHABET[(next(&mut state) % ALPHABET.len() as u64) as usize])
                .collect();
            let _ = parse_ini(&s);
        }
        for _ in 0..500 {
            let len = (next(&mut state) % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next(&mut state) as u8).collect();
            let _ = parse_ini(&String::from_utf8_lossy(&bytes));
        }
    }
}
