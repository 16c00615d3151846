//! The core's errors. The Python skin turns each into an exception in one place (`py.rs`).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmenterError {
    /// A strategy key or kind that names no known kind.
    UnknownKind(String),
    /// A malformed parameter of a known kind, e.g. `word` without `G@M`.
    BadParameter { kind: String, param: String, reason: String },
    /// A custom pattern that neither regex engine accepts.
    BadRegex { pattern: String, reason: String },
    /// A strategy without any pattern, or an empty strategy list.
    Empty(String),
    /// A custom pattern failed while matching (backtracking limit of the lookaround engine).
    MatchFailed { pattern: String, reason: String },
}

impl fmt::Display for SegmenterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKind(k) => write!(
                f,
                "unknown strategy kind {k:?}: expected a key starting with word, pretok or punct, \
                 or a (start_regex, end_regex) pair"
            ),
            Self::BadParameter { kind, param, reason } => {
                write!(f, "bad parameter {param:?} for strategy kind {kind:?}: {reason}")
            }
            Self::BadRegex { pattern, reason } => write!(f, "invalid regex {pattern:?}: {reason}"),
            Self::Empty(what) => write!(f, "{what}"),
            Self::MatchFailed { pattern, reason } => {
                write!(f, "regex {pattern:?} failed while matching: {reason}")
            }
        }
    }
}

impl std::error::Error for SegmenterError {}

pub type Result<T> = std::result::Result<T, SegmenterError>;
