//! Errors in a fleet file, each pointing at a place in it.
//!
//! The user fixes a fleet file in an editor, so every error carries
//! `file:line:column` (a format editors and terminals turn into links) and a
//! hint saying what to write instead. All errors are collected, so one run
//! shows every problem.

use std::fmt;

/// One problem in a fleet file (or with a secret it references).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetError {
    /// The fleet file's name as given by the user; empty when unknown.
    pub file: String,
    /// 1-based line; 0 when the problem has no place in the file.
    pub line: u64,
    /// 1-based column; 0 when unknown.
    pub column: u64,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub hint: Option<String>,
}

impl FleetError {
    /// An error at a known place.
    pub fn at(
        file: &str,
        line: u64,
        column: u64,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        FleetError {
            file: file.to_string(),
            line,
            column,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    /// An error with no place in the file (an unset variable, a missing file).
    pub fn global(message: impl Into<String>, hint: impl Into<String>) -> Self {
        FleetError {
            file: String::new(),
            line: 0,
            column: 0,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.file.is_empty(), self.line) {
            (true, 0) => {}
            (false, 0) => write!(f, "{}: ", self.file)?,
            (_, line) => write!(f, "{}:{}:{}: ", self.file, line, self.column)?,
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FleetError {}

/// Every problem found in a fleet file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetErrors(pub Vec<FleetError>);

impl FleetErrors {
    /// The errors, for callers that render them differently.
    pub fn errors(&self) -> &[FleetError] {
        &self.0
    }
}

impl From<FleetError> for FleetErrors {
    fn from(e: FleetError) -> Self {
        FleetErrors(vec![e])
    }
}

impl fmt::Display for FleetErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FleetErrors {}
