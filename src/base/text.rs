//! Text that came from outside (exe.dev's replies, VMs, Kubernetes, the
//! fleet file) made safe to show: on a terminal, in a pull-request comment
//! (markdown), in JSON. One rule for which characters are dangerous,
//! [`is_control`], used by every output form and by the fleet validator.
//!
//! Pure: strings in, strings out.

use std::borrow::Cow;
use std::fmt::Write;

/// Characters that must never reach a terminal or a document raw: C0
/// controls (ESC starts terminal sequences, CR overwrites a line, BEL, ...),
/// DEL, C1 controls (8-bit CSI/OSC), the Unicode line and paragraph
/// separators, and the bidirectional overrides and isolates that make text
/// display in another order than it reads ("Trojan Source").
pub fn is_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn escape_with(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_control(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_control(c) && !keep(c) {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s` on one line with every control character written as a visible
/// escape (`\u{1b}`, `\n`): for names, values and messages from outside.
pub fn one_line(s: &str) -> Cow<'_, str> {
    escape_with(s, |_| false)
}

/// Like [`one_line`] but keeps line feeds: for this tool's own multi-line
/// messages (an error and its advice) that quote outside text.
pub fn lines(s: &str) -> Cow<'_, str> {
    escape_with(s, |c| c == '\n')
}

/// JSON text with every [`is_control`] character inside strings written as
/// a `\uXXXX` escape. serde_json escapes C0 controls itself but passes DEL,
/// C1 controls and bidi overrides raw; outside strings JSON text is ASCII,
/// so this only ever touches string contents and the result parses to the
/// same value.
pub fn json_safe(json: &str) -> Cow<'_, str> {
    if !json.chars().any(is_control_not_json_whitespace) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if is_control_not_json_whitespace(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Pretty JSON's own newlines and indentation are whitespace between
/// tokens, not string content: serde_json never leaves them raw in strings.
fn is_control_not_json_whitespace(c: char) -> bool {
    is_control(c) && !matches!(c, '\n' | '\r' | '\t' | ' ')
}

/// Markdown text (a table cell, a list item, a quote): controls escaped,
/// line breaks flattened, every character markdown or HTML would act on
/// neutralised. `<` and `>` become entities, so `<!--` cannot open a
/// comment that hides the rest of a pull-request comment; the punctuation
/// that starts emphasis, links and images (`[`), code, table cells,
/// headings, strikethrough or math is backslash-escaped.
pub fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in one_line(s).chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '|' | '~' | '$' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A markdown code span holding `s` literally: fenced with one backtick
/// more than the longest run inside (and padded when `s` starts or ends
/// with one), controls escaped, line breaks flattened, `|` escaped (GFM
/// splits table cells on it even inside code spans).
pub fn md_code(s: &str) -> String {
    let flat = one_line(s).replace('|', "\\|");
    let longest = flat.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if flat.starts_with('`') || flat.ends_with('`') || flat.is_empty() {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{flat}{pad}{fence}")
}

/// A fence for a markdown code block around `body`: backticks, one more
/// than the longest run of backticks in it (at least three), so no line of
/// `body` can close the block early.
pub fn md_fence(body: &str) -> String {
    let longest = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat((longest + 1).max(3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn terminal_sequences_become_visible() {
        let evil = "x\u{1b}]0;TITLE\u{7}\u{1b}[31mred\r\n\u{9b}2J\u{202e}gpj.exe";
        let shown = one_line(evil);
        assert!(!shown.chars().any(is_control), "{shown}");
        assert_eq!(
            shown,
            "x\\u{1b}]0;TITLE\\u{7}\\u{1b}[31mred\\r\\n\\u{9b}2J\\u{202e}gpj.exe"
        );
        assert_eq!(lines("a\nb\u{1b}"), "a\nb\\u{1b}");
        assert!(matches!(one_line("plain-text 1.2"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_keeps_its_value_and_loses_raw_controls() {
        let v = serde_json::json!({"c": "a\u{1b}b\u{7f}c\u{9b}d\u{202e}e\nf"});
        let text = serde_json::to_string_pretty(&v).unwrap_or_default();
        let safe = json_safe(&text);
        assert!(!safe.chars().any(is_control_not_json_whitespace), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap_or_default();
        assert_eq!(back, v);
    }

    #[test]
    fn markdown_cannot_open_comments_tags_or_code() {
        let m = md_text("x<!-- hidden --> <img src=x> `code` a|b *b* [l](u)\nnext");
        assert!(!m.contains('<') && !m.contains('>'), "{m}");
        assert!(!m.contains('\n'));
        assert!(m.contains("\\|") && m.contains("\\`") && m.contains("\\*"));
        assert_eq!(md_code("demo-cp1"), "`demo-cp1`");
        assert_eq!(md_code("a`b"), "``a`b``");
        assert_eq!(md_code("`x"), "`` `x ``");
        assert_eq!(md_code("a|b"), "`a\\|b`");
        assert_eq!(md_fence("no ticks"), "```");
        assert_eq!(md_fence("a ```` b"), "`````");
    }

    proptest! {
        #[test]
        fn nothing_dangerous_survives(s in "\\PC*|[\\x00-\\x1f\\x7f-\\u{9f}\\u{2028}-\\u{202e}<>`|]*") {
            prop_assert!(!one_line(&s).chars().any(is_control));
            let l = lines(&s);
            prop_assert!(!l.chars().any(|c| is_control(c) && c != '\n'));
            let m = md_text(&s);
            prop_assert!(!m.chars().any(is_control));
            prop_assert!(!m.contains('<') && !m.contains('>'));
            // Every backtick and pipe in markdown text is escaped.
            let unescaped = m.replace("\\\\", "").replace("\\`", "").replace("\\|", "");
            prop_assert!(!unescaped.contains('`') && !unescaped.contains('|'));
            let code = md_code(&s);
            prop_assert!(!code.chars().any(is_control));
        }
    }
}
