//! The failed tests of a nextest JUnit report, as a short summary: CI shows only the end of
//! its log, so `.ci/run` prints this summary last instead of leaving the failures hundreds
//! of lines up, above the fmt, clippy and fuzz output.

/// One failed (or errored) test case.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    /// `binary-id test-name`, as nextest names it (`hpb-e2e::it tls::a_test`).
    pub test: String,
    /// The failure text up to the stack backtrace, at most [`MAX_LINES`] lines.
    pub message: String,
}

/// How much of each failure's text the summary keeps.
pub const MAX_LINES: usize = 25;

/// The failed test cases of `xml`, in report order.
pub fn failures(xml: &str) -> Vec<Failure> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<testcase ") {
        rest = &rest[start..];
        let head_end = rest.find('>').unwrap_or(rest.len());
        let head = &rest[..head_end];
        if head.ends_with('/') {
            // `<testcase … />`: passed.
            rest = &rest[head_end..];
            continue;
        }
        let end = rest
            .find("</testcase>")
            .map_or(rest.len(), |e| e + "</testcase>".len());
        let case = &rest[..end];
        rest = &rest[end..];
        let Some(kind) = ["<failure", "<error"]
            .into_iter()
            .find(|k| case.contains(k))
        else {
            continue;
        };
        let name = attr(head, "name").unwrap_or_default();
        let class = attr(head, "classname").unwrap_or_default();
        out.push(Failure {
            test: format!("{class} {name}").trim().to_string(),
            message: element_text(case, kind)
                .map(|t| shorten(&unescape(&t)))
                .unwrap_or_default(),
        });
    }
    out
}

/// The summary printed at the end of CI.
pub fn summary(failures: &[Failure]) -> String {
    let mut s = format!("{} test(s) failed:\n", failures.len());
    for f in failures {
        s.push_str(&format!("  FAIL {}\n", f.test));
    }
    for f in failures {
        s.push_str(&format!("\n--- {} ---\n{}\n", f.test, f.message.trim_end()));
    }
    s
}

/// The unescaped value of `name="…"` in a start tag.
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(unescape(&tag[start..start + len]))
}

/// The text inside the first `kind` element of `case` (`<failure …>TEXT</failure>`), or its
/// `message` attribute if it has no text.
fn element_text(case: &str, kind: &str) -> Option<String> {
    let start = case.find(kind)?;
    let el = &case[start..];
    let head_end = el.find('>')?;
    let head = &el[..head_end];
    if head.ends_with('/') {
        return attr(head, "message");
    }
    let close = format!("</{}>", &kind[1..]);
    let body = &el[head_end + 1..];
    Some(body[..body.find(&close).unwrap_or(body.len())].to_string())
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Up to the stack backtrace, at most [`MAX_LINES`] lines.
fn shorten(text: &str) -> String {
    let text = text.split("\nstack backtrace:").next().unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut s = lines[..lines.len().min(MAX_LINES)].join("\n");
    if lines.len() > MAX_LINES {
        s.push_str(&format!("\n… ({} more lines)", lines.len() - MAX_LINES));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="3" failures="1" errors="1">
    <testsuite name="hpb-e2e::it" tests="3">
        <testcase name="smoke::passes" classname="hpb-e2e::it" time="0.088"/>
        <testcase name="tls::a_new_certificate" classname="hpb-e2e::it" time="0.504">
            <failure message="panicked at tests/it/tls.rs:51:28" type="test failure">thread &apos;tls::a_new_certificate&apos; panicked at tests/it/tls.rs:51:28:
no https listener: &lt;none&gt; &amp; more

stack backtrace:
   0: __rustc::rust_begin_unwind</failure>
            <system-out>running 1 test</system-out>
        </testcase>
        <testcase name="slow::one" classname="hpb-e2e::it" time="300.0">
            <error message="test timed out" type="timeout"/>
        </testcase>
    </testsuite>
</testsuites>"#;

    #[test]
    fn failed_and_timed_out_cases_are_found_with_their_messages() {
        let f = failures(REPORT);
        assert_eq!(
            f,
            vec![
                Failure {
                    test: "hpb-e2e::it tls::a_new_certificate".into(),
                    message: "thread 'tls::a_new_certificate' panicked at tests/it/tls.rs:51:28:\n\
                              no https listener: <none> & more"
                        .into(),
                },
                Failure {
                    test: "hpb-e2e::it slow::one".into(),
                    message: "test timed out".into(),
                },
            ]
        );
        let s = summary(&f);
        assert!(
            s.starts_with(
                "2 test(s) failed:\n  FAIL hpb-e2e::it tls::a_new_certificate\n  FAIL hpb-e2e::it slow::one\n"
            ),
            "{s}"
        );
        assert!(
            s.contains("--- hpb-e2e::it slow::one ---\ntest timed out"),
            "{s}"
        );
    }

    #[test]
    fn a_report_of_passes_or_garbage_has_no_failures() {
        assert!(failures(r#"<testcase name="a" classname="b"/>"#).is_empty());
        assert!(failures("<testcase name=\"a").is_empty());
        assert!(failures("").is_empty());
    }

    #[test]
    fn long_failures_are_cut() {
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let s = shorten(&text);
        assert_eq!(s.lines().count(), MAX_LINES + 1);
        assert!(s.ends_with("… (75 more lines)"), "{s}");
    }
}
