//! The POSIX shell-words lexer exe.dev runs over every `/exec` body, and the
//! quoting that feeds it.
//!
//! One place for the grammar: the client quotes with [`quote`]/[`join`], the
//! emulator splits with [`split`], and a property test proves that any string
//! without NUL survives the round trip. exe.dev rejects a NUL byte with 400,
//! so [`quote`] refuses it rather than sending something that cannot work.

/// Why a body could not be split into words, or a word could not be quoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordsError {
    #[error("unbalanced quote in command")]
    UnbalancedQuote,
    #[error("trailing backslash in command")]
    TrailingBackslash,
    #[error("a value contains a NUL byte, which exe.dev cannot carry")]
    Nul,
}

/// Splits a command line into words as a POSIX shell would, without
/// expansions: single quotes are literal, double quotes honour `\` before
/// `$`, `` ` ``, `"`, `\` and newline, an unquoted `\` escapes the next
/// character, and unquoted whitespace separates words.
pub fn split(input: &str) -> Result<Vec<String>, WordsError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\0' => return Err(WordsError::Nul),
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => cur.push(ch),
                        None => return Err(WordsError::UnbalancedQuote),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('$' | '`' | '"' | '\\')) => cur.push(ch),
                            Some('\n') => {}
                            Some(ch) => {
                                cur.push('\\');
                                cur.push(ch);
                            }
                            None => return Err(WordsError::UnbalancedQuote),
                        },
                        Some(ch) => cur.push(ch),
                        None => return Err(WordsError::UnbalancedQuote),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(ch) => {
                    in_word = true;
                    cur.push(ch);
                }
                None => return Err(WordsError::TrailingBackslash),
            },
            other => {
                in_word = true;
                cur.push(other);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Quotes one word so that [`split`] (and a POSIX shell) yields it back
/// exactly. Plain words stay bare so request logs remain readable.
pub fn quote(word: &str) -> Result<String, WordsError> {
    if word.contains('\0') {
        return Err(WordsError::Nul);
    }
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+%".contains(&b))
    {
        return Ok(word.to_string());
    }
    Ok(single_quote(word))
}

/// Always single-quotes (`it's` → `'it'\''s'`): what setup scripts use, so
/// that every interpolated value is visibly one literal word. Callers refuse
/// NUL first (a shell cannot carry it).
pub fn single_quote(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Quotes and joins words into one command line.
pub fn join<S: AsRef<str>>(words: &[S]) -> Result<String, WordsError> {
    let quoted: Result<Vec<_>, _> = words.iter().map(|w| quote(w.as_ref())).collect();
    Ok(quoted?.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(split("ls --json").unwrap(), ["ls", "--json"]);
        assert_eq!(split("  a   b ").unwrap(), ["a", "b"]);
        assert_eq!(split("comment vm ''").unwrap(), ["comment", "vm", ""]);
        assert_eq!(
            split(r#"a "b c" 'd e' f\ g"#).unwrap(),
            ["a", "b c", "d e", "f g"]
        );
        assert_eq!(split(r#""a\"b\$c\n""#).unwrap(), [r#"a"b$c\n"#]);
        assert_eq!(split("x'y'\"z\"").unwrap(), ["xyz"]);
        assert_eq!(split("").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn rejects_bad_syntax() {
        assert_eq!(split("a 'b"), Err(WordsError::UnbalancedQuote));
        assert_eq!(split("a \"b"), Err(WordsError::UnbalancedQuote));
        assert_eq!(split("a \\"), Err(WordsError::TrailingBackslash));
        assert_eq!(split("a\0b"), Err(WordsError::Nul));
        assert_eq!(quote("a\0b"), Err(WordsError::Nul));
    }

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(quote("web-a").unwrap(), "web-a");
        assert_eq!(quote("--name=web-a").unwrap(), "--name=web-a");
        assert_eq!(quote("").unwrap(), "''");
        assert_eq!(quote("it's").unwrap(), r"'it'\''s'");
        assert_eq!(quote("$(rm -rf /)").unwrap(), "'$(rm -rf /)'");
    }

    /// The same quoted string, read by a real POSIX shell, gives the same words.
    #[test]
    fn real_shell_agrees() {
        let words = [
            "a b",
            "it's",
            "$HOME",
            "`x`",
            "\\",
            "\"",
            "",
            "new\nline",
            "é✓",
        ];
        let line = join(&words).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("for w in {line}; do printf '%s\\0' \"$w\"; done"))
            .output()
            .unwrap();
        let got: Vec<&str> = std::str::from_utf8(&out.stdout)
            .unwrap()
            .split_terminator('\0')
            .collect();
        assert_eq!(got, words);
    }

    proptest! {
        #[test]
        fn any_string_without_nul_round_trips(words in proptest::collection::vec("[^\0]{0,12}", 0..6)) {
            let line = join(&words).unwrap();
            prop_assert_eq!(split(&line).unwrap(), words);
        }

        #[test]
        fn arbitrary_bytes_never_panic(s in "\\PC{0,40}") {
            let _ = split(&s);
        }
    }
}
