//! Strategies: what selects the pooling positions of one stage (SPEC section 2).

use crate::custom::CustomRegex;
use crate::error::{Result, SegmenterError};

/// The start regex of the built-in kinds, verbatim (a custom pattern equal to one of these runs
/// on the hand-written scanner).
pub const WORD_START: &str = r"\p{N}{1,3}|(?:[^\s\p{L}\p{N}]{1,3}[\r\n]*)|\s*[\r\n]";
pub const PRETOK_START: &str =
    r"( ?\p{L}{1,16})|\p{N}{1,3}| ?([^\s\p{L}\p{N}]){1,3}+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";
pub const PUNCT_START: &str =
    r"\d{1,3}(?=(\d{3})+(?!\d))|\d{1,3}(?=\D|$)|([^\s\p{L}\p{N}]){1,3}+[\r\n]*|\s*[\r\n]";
pub const KINDS: [&str; 3] = ["word", "pretok", "punct"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartRule {
    Word,
    Pretok,
    Punct,
    Custom(CustomRegex),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndRule {
    /// `(\S+?\s){group}`, keeping match n when n % m == 0 for some m in `moduli`.
    Chain { group: usize, moduli: Vec<usize> },
    /// Any other end regex; every match is kept.
    Custom(CustomRegex),
}

impl EndRule {
    pub fn keeps(moduli: &[usize], n: usize) -> bool {
        moduli.iter().any(|&m| n % m == 0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strategy {
    pub start: Option<StartRule>,
    pub end: Option<EndRule>,
}

/// The kind a config key names by prefix (`word1`, `word_b`, `pretok`), if any.
pub fn kind_of_key(key: &str) -> Option<&'static str> {
    KINDS.iter().copied().find(|k| key.starts_with(k))
}

/// The kind a list-form entry names: a kind followed by nothing but digits and underscores
/// (`word`, `word2`, `punct_a`); any other first element starts a (start, end) regex pair.
pub fn kind_of_name(name: &str) -> Option<&'static str> {
    KINDS
        .iter()
        .copied()
        .find(|k| name.strip_prefix(k).is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit() || b == b'_')))
}

/// A built-in stage's parameter as stages are compared and shown: `word`'s `G@M1-M2` with its
/// numbers as numbers (`" 1@01"` is `1@1`), nothing for the kinds without one. A `word`
/// parameter the core refuses (a stored list from elsewhere) is kept as written, stripped.
pub fn canonical_param(kind: &str, param: &str) -> String {
    if kind != "word" {
        return String::new();
    }
    match parse_word_param(param) {
        Ok((group, moduli)) => {
            let moduli: Vec<String> = moduli.iter().map(usize::to_string).collect();
            format!("{group}@{}", moduli.join("-"))
        }
        Err(_) => param.trim().to_string(),
    }
}

impl Strategy {
    /// A built-in kind named by a config key (`word1`, `word2`, `pretok`...) and its parameter.
    pub fn from_key(key: &str, param: &str) -> Result<Self> {
        let kind = kind_of_key(key).ok_or_else(|| SegmenterError::UnknownKind(key.to_string()))?;
        Self::builtin(kind, param)
    }

    /// One entry of the list form (see `kind_of_name`): a kind with its parameter, or else a
    /// (start, end) regex pair.
    pub fn from_pair(first: Option<&str>, second: Option<&str>) -> Result<Self> {
        if let Some(kind) = first.and_then(kind_of_name) {
            return Self::builtin(kind, second.unwrap_or(""));
        }
        Self::custom(first, second)
    }

    fn builtin(kind: &str, param: &str) -> Result<Self> {
        match kind {
            "word" => {
                let (group, moduli) = parse_word_param(param)?;
                Ok(Self { start: Some(StartRule::Word), end: Some(EndRule::Chain { group, moduli }) })
            }
            "pretok" => Ok(Self { start: Some(StartRule::Pretok), end: None }),
            "punct" => Ok(Self { start: Some(StartRule::Punct), end: None }),
            other => Err(SegmenterError::UnknownKind(other.to_string())),
        }
    }

    /// A custom (start, end) regex pair; either may be absent, not both.
    pub fn custom(start: Option<&str>, end: Option<&str>) -> Result<Self> {
        if start.is_none() && end.is_none() {
            return Err(SegmenterError::Empty("a custom strategy needs a start regex, an end regex, or both".into()));
        }
        let start = start
            .map(|p| -> Result<StartRule> {
                Ok(match p {
                    WORD_START => StartRule::Word,
                    PRETOK_START => StartRule::Pretok,
                    PUNCT_START => StartRule::Punct,
                    _ => StartRule::Custom(CustomRegex::new(p)?),
                })
            })
            .transpose()?;
        let end = end
            .map(|p| -> Result<EndRule> {
                Ok(match chain_group(p) {
                    Some(group) => EndRule::Chain { group, moduli: vec![1] },
                    None => EndRule::Custom(CustomRegex::new(p)?),
                })
            })
            .transpose()?;
        Ok(Self { start, end })
    }

    pub fn is_custom(&self) -> bool {
        matches!(self.start, Some(StartRule::Custom(_))) || matches!(self.end, Some(EndRule::Custom(_)))
    }
}

/// `G@M1-M2-...`: group size G >= 1, moduli M >= 1.
fn parse_word_param(param: &str) -> Result<(usize, Vec<usize>)> {
    let bad = |reason: &str| SegmenterError::BadParameter {
        kind: "word".into(),
        param: param.into(),
        reason: reason.into(),
    };
    let (g, ms) = param.split_once('@').ok_or_else(|| bad("expected G@M1-M2-..., e.g. \"1@1\""))?;
    let positive = |s: &str| s.trim().parse::<usize>().ok().filter(|&v| v >= 1);
    let group = positive(g).ok_or_else(|| bad("group size G must be an integer >= 1"))?;
    let moduli = ms
        .split('-')
        .map(|m| positive(m).ok_or_else(|| bad("each modulus must be an integer >= 1")))
        .collect::<Result<Vec<_>>>()?;
    Ok((group, moduli))
}

/// G when `pattern` is exactly `(\S+?\s){G}`.
fn chain_group(pattern: &str) -> Option<usize> {
    let digits = pattern.strip_prefix(r"(\S+?\s){")?.strip_suffix('}')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<usize>().ok().filter(|&g| g >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_select_kinds_by_prefix() {
        let s = Strategy::from_key("word2", "2@1-3").unwrap();
        assert_eq!(s.end, Some(EndRule::Chain { group: 2, moduli: vec![1, 3] }));
        assert_eq!(Strategy::from_key("pretok_a", "").unwrap().start, Some(StartRule::Pretok));
        assert!(matches!(Strategy::from_key("bpe", "1@1"), Err(SegmenterError::UnknownKind(_))));
    }

    #[test]
    fn word_parameters_are_checked() {
        for bad in ["", "1", "0@1", "1@0", "x@1", "1@1-", "1@a"] {
            assert!(matches!(Strategy::from_key("word", bad), Err(SegmenterError::BadParameter { .. })), "{bad}");
        }
    }

    #[test]
    fn stages_compare_by_kind_and_canonical_parameter() {
        assert_eq!(kind_of_key("word_b"), Some("word"));
        assert_eq!(kind_of_key("bpe"), None);
        assert_eq!(kind_of_name("punct_2"), Some("punct"));
        assert_eq!(kind_of_name("words"), None);
        assert_eq!(canonical_param("word", " 2@01-3"), "2@1-3");
        assert_eq!(canonical_param("word", " 0@1 "), "0@1");
        assert_eq!(canonical_param("pretok", "anything"), "");
    }

    #[test]
    fn pairs_are_kinds_or_regexes() {
        assert_eq!(Strategy::from_pair(Some("punct"), None).unwrap().start, Some(StartRule::Punct));
        let c = Strategy::from_pair(Some(r"\s"), None).unwrap();
        assert!(c.is_custom());
        let same = Strategy::from_pair(Some(WORD_START), Some(r"(\S+?\s){2}")).unwrap();
        assert_eq!(same, Strategy::from_key("word", "2@1").unwrap());
        assert!(matches!(Strategy::from_pair(None, None), Err(SegmenterError::Empty(_))));
        assert!(matches!(Strategy::from_pair(Some("(unclosed"), None), Err(SegmenterError::BadRegex { .. })));
    }
}
