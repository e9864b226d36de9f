//! The one convention for advice: an error says what went wrong in its
//! `Display` and, separately, what to do in [`Hint::hint`]. The CLI prints
//! the message, its causes, then the hint once; nothing else appends
//! advice to a message.

/// What the user should do about an error.
pub trait Hint {
    /// The advice, if the error has any.
    fn hint(&self) -> Option<String> {
        None
    }
}

/// An error as one text: its message, then `hint: …` on its own line when
/// it has one. What the CLI prints, and what a report line (a VM whose
/// change failed) carries.
pub fn describe<E: std::fmt::Display + Hint + ?Sized>(e: &E) -> String {
    match e.hint() {
        Some(h) => format!("{e}\n  hint: {h}"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E(Option<&'static str>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("it broke")
        }
    }
    impl Hint for E {
        fn hint(&self) -> Option<String> {
            self.0.map(str::to_string)
        }
    }

    #[test]
    fn the_hint_stands_on_its_own_line() {
        assert_eq!(describe(&E(Some("fix it"))), "it broke\n  hint: fix it");
        assert_eq!(describe(&E(None)), "it broke");
    }
}
