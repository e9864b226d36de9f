//! A look at a YAML text's nodes before it is deserialized: serde-saphyr
//! decodes `!!binary` scalars into strings silently and lets other tags
//! through, and nothing stops an ESC or a CR inside a quoted scalar. This
//! walks the parser's events (serde-saphyr's own parser, `granit_parser`)
//! and reports, with line and column, every node carrying a tag outside the
//! YAML core schema (`!!str`, `!!int`, ... are fine) and every scalar (keys
//! included) holding a control character ([`crate::base::text::is_control`]).
//!
//! Pure. Reports never quote the scalar: the text may hold credentials.

use serde_saphyr::granit_parser::{Event, Parser};

/// What is wrong with one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A tag outside the core schema, as written (`!!binary`, `!foo`).
    Tag(String),
    /// A control character (its code point) in a scalar.
    Control(u32),
}

/// One refused node: 1-based line and column of its content (after any
/// tag, so a `!!binary` value points at the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub line: usize,
    pub column: usize,
    pub problem: Problem,
}

impl Issue {
    /// What is wrong, without the node's value.
    pub fn message(&self) -> String {
        match &self.problem {
            Problem::Tag(t) => format!(
                "the YAML tag {} is not accepted (only plain values and the core tags !!str, !!int, !!float, !!bool, !!null, !!seq, !!map)",
                crate::base::text::one_line(t)
            ),
            Problem::Control(c) => format!(
                "a value holds the control character U+{c:04X} (escape sequences, carriage returns, tabs and other invisible characters are refused)"
            ),
        }
    }
}

/// Every refused node of `source`, in file order. A syntax error ends the
/// walk: deserializing reports it, with its own location.
pub fn check(source: &str) -> Vec<Issue> {
    let mut issues = Vec::new();
    for event in Parser::new_from_str(source) {
        let Ok((event, span)) = event else { break };
        let at = |problem| Issue {
            line: span.start.line(),
            column: span.start.col() + 1,
            problem,
        };
        let (tag, value) = match &event {
            Event::Scalar(value, _, _, tag) => (tag, Some(value)),
            Event::SequenceStart(_, _, tag) | Event::MappingStart(_, _, tag) => (tag, None),
            _ => continue,
        };
        if let Some(tag) = tag
            && tag.core_suffix().is_none()
        {
            issues.push(at(Problem::Tag(tag.original())));
        }
        if let Some(c) = value.and_then(|v| v.chars().find(|c| crate::base::text::is_control(*c))) {
            issues.push(at(Problem::Control(c as u32)));
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_yaml_passes() {
        let ok = "a: 1\nb: [x, 'y', \"z\"]\nc: !!str 5\nd: !!int 7\ne: {f: null}\n";
        assert_eq!(check(ok), []);
    }

    #[test]
    fn every_refused_tag_and_character_is_located() {
        let cases: &[(&str, usize, usize, Problem)] = &[
            (
                "image: !!binary aGk=\n",
                1,
                17,
                Problem::Tag("!!binary".into()),
            ),
            ("a:\n  b: !foo x\n", 2, 11, Problem::Tag("!foo".into())),
            ("a: !!set {x: null}\n", 1, 10, Problem::Tag("!!set".into())),
            (
                "a: !!timestamp 2001-12-14\n",
                1,
                16,
                Problem::Tag("!!timestamp".into()),
            ),
            ("x: \"a\\e[31mb\"\n", 1, 4, Problem::Control(0x1b)),
            ("x:\n  - \"a\\rb\"\n", 2, 5, Problem::Control(0x0d)),
            ("x: \"tab\\there\"\n", 1, 4, Problem::Control(0x09)),
            ("\"k\\u202e\": v\n", 1, 1, Problem::Control(0x202e)),
            ("x: |\n  two\n  lines\n", 2, 3, Problem::Control(0x0a)),
        ];
        for (yaml, line, column, problem) in cases {
            let got = check(yaml);
            assert_eq!(
                got,
                [Issue {
                    line: *line,
                    column: *column,
                    problem: problem.clone()
                }],
                "{yaml:?}"
            );
        }
    }

    #[test]
    fn messages_never_quote_the_value() {
        for issue in check("token: \"s3cret\\e\"\nkey: !!binary czNjcmV0\n") {
            assert!(!issue.message().contains("s3cret"), "{}", issue.message());
            assert!(!issue.message().contains("czNjcmV0"));
        }
    }

    #[test]
    fn a_syntax_error_stops_the_walk() {
        assert_eq!(check("a: [unclosed\n"), []);
    }
}
