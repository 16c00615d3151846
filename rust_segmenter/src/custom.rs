//! User-given regexes, run over the document decoded as text.
//!
//! A pattern goes to the `regex` crate (linear time) when it compiles there, and to
//! `fancy-regex` (backtracking: lookaround, possessive quantifiers, backreferences) only when
//! it must. Iteration follows Python's `finditer`: non-overlapping, leftmost-first, and an empty
//! match may directly follow a non-empty one. One known gap: after an empty match at p, Python
//! would still try a non-empty match at p; we resume the search at the next code point.

use std::fmt;

use crate::error::{Result, SegmenterError};
use crate::symbols::{decode_scalar, utf8_len, Symbols};

/// The most time the backtracking engine may spend matching one document (see
/// `CustomRegex::for_each_match_within`).
pub const MAX_SECONDS_PER_DOCUMENT: f64 = 10.0;

#[derive(Clone)]
enum Engine {
    Linear(regex::Regex),
    Backtracking(fancy_regex::Regex),
}

#[derive(Clone)]
pub struct CustomRegex {
    pattern: String,
    engine: Engine,
}

impl PartialEq for CustomRegex {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}
impl Eq for CustomRegex {}

impl fmt::Debug for CustomRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustomRegex({:?})", self.pattern)
    }
}

impl CustomRegex {
    pub fn new(pattern: &str) -> Result<Self> {
        let linear = if may_be_possessive(pattern) { None } else { regex::Regex::new(pattern).ok() };
        let engine = match linear {
            Some(re) => Engine::Linear(re),
            None => Engine::Backtracking(
                fancy_regex::RegexBuilder::new(pattern)
                    .backtrack_limit(10_000_000)
                    .build()
                    .map_err(|e| SegmenterError::BadRegex { pattern: pattern.into(), reason: e.to_string() })?,
            ),
        };
        Ok(Self { pattern: pattern.into(), engine })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    fn find_at(&self, text: &str, pos: usize) -> Result<Option<(usize, usize)>> {
        match &self.engine {
            Engine::Linear(re) => Ok(re.find_at(text, pos).map(|m| (m.start(), m.end()))),
            Engine::Backtracking(re) => re
                .find_from_pos(text, pos)
                .map(|m| m.map(|m| (m.start(), m.end())))
                .map_err(|e| SegmenterError::MatchFailed { pattern: self.pattern.clone(), reason: e.to_string() }),
        }
    }

    /// Calls `f(start, end)` (byte offsets into `text`) for every match, as Python's finditer.
    pub fn for_each_match(&self, text: &str, f: impl FnMut(usize, usize)) -> Result<()> {
        self.for_each_match_within(text, MAX_SECONDS_PER_DOCUMENT, f)
    }

    /// `for_each_match` with its bound on one document's matching time: the backtracking
    /// engine's `backtrack_limit` bounds one search, not the thousands a document needs, so a
    /// pattern that backtracks heavily at every position could run for minutes on a few KB.
    /// Past `seconds` the document fails with `MatchFailed`, naming the pattern. A wall-clock
    /// bound, because fancy-regex does not report the work a search did; it is far above what
    /// any pattern that is not pathological takes (microseconds to milliseconds per document).
    pub fn for_each_match_within(&self, text: &str, seconds: f64, mut f: impl FnMut(usize, usize)) -> Result<()> {
        let started = matches!(self.engine, Engine::Backtracking(_)).then(std::time::Instant::now);
        let mut pos = 0;
        let mut last_empty_at = None;
        while pos <= text.len() {
            let Some((s, e)) = self.find_at(text, pos)? else { break };
            if let Some(t) = started {
                if t.elapsed().as_secs_f64() > seconds {
                    return Err(SegmenterError::MatchFailed {
                        pattern: self.pattern.clone(),
                        reason: format!(
                            "matching one document of {} bytes took more than {seconds} s (catastrophic \
                             backtracking: bound the pattern's nested repetitions)",
                            text.len()
                        ),
                    });
                }
            }
            if s == e && last_empty_at == Some(s) {
                match text[s..].chars().next() {
                    Some(c) => {
                        pos = s + c.len_utf8();
                        continue;
                    }
                    None => break,
                }
            }
            f(s, e);
            last_empty_at = (s == e).then_some(e);
            pos = e;
        }
        Ok(())
    }
}

/// Whether `pattern` may hold a possessive quantifier (`*+`, `++`, `?+`, `{m,n}+`). The
/// `regex` crate reads `a{1,3}+` as a repeated repetition, a different language, so such
/// patterns go to the backtracking engine, which reads them as Python's `regex` does. A false
/// positive (e.g. `[*+]`) only costs speed.
fn may_be_possessive(pattern: &str) -> bool {
    let mut prev = None;
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            chars.next();
            prev = None;
            continue;
        }
        if c == '+' && matches!(prev, Some('*' | '+' | '?' | '}')) {
            return true;
        }
        prev = Some(c);
    }
    false
}

/// The document as text for the custom engines: invalid bytes become U+FFFD, one per byte,
/// so that code point i of the text is symbol i. `sym_at[b]` maps a text byte offset at a
/// character boundary (or the end) to its symbol index.
pub struct DecodedText {
    pub text: String,
    pub sym_at: Vec<u32>,
}

impl DecodedText {
    pub fn new(bytes: &[u8], symbols: &Symbols) -> Self {
        let mut text = String::with_capacity(bytes.len() + 8);
        let mut sym_at = Vec::with_capacity(bytes.len() + 8);
        let mut i = 0;
        let mut sym = 0u32;
        while i < bytes.len() {
            let c = match utf8_len(&bytes[i..]) {
                Some(n) => {
                    let c = char::from_u32(decode_scalar(&bytes[i..i + n])).unwrap_or('\u{FFFD}');
                    i += n;
                    c
                }
                None => {
                    i += 1;
                    '\u{FFFD}'
                }
            };
            sym_at.extend(std::iter::repeat_n(sym, c.len_utf8()));
            text.push(c);
            sym += 1;
        }
        sym_at.push(sym);
        debug_assert_eq!(sym as usize, symbols.len());
        Self { text, sym_at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(p: &str, t: &str) -> Vec<(usize, usize)> {
        let mut out = vec![];
        CustomRegex::new(p).unwrap().for_each_match(t, |s, e| out.push((s, e))).unwrap();
        out
    }

    #[test]
    fn empty_matches_follow_python() {
        // Python: [m.span() for m in regex.finditer('x*', 'abxd')] == [(0,0),(1,1),(2,3),(3,3),(4,4)]
        assert_eq!(matches("x*", "abxd"), vec![(0, 0), (1, 1), (2, 3), (3, 3), (4, 4)]);
    }

    #[test]
    fn lookaround_and_possessive_use_the_backtracking_engine() {
        assert_eq!(matches(r"\d(?=\d)", "1234"), vec![(0, 1), (1, 2), (2, 3)]);
        assert_eq!(matches(r"a{1,3}+b", "aaaab"), vec![(1, 5)]);
    }

    #[test]
    fn a_pattern_that_backtracks_at_every_position_is_bounded_per_document() {
        // Each search backtracks through 2^20-odd ways to split a run of a's, then matches the
        // `aax` after it: under the per-search limit every time, unbounded in total.
        let re = CustomRegex::new(r"((a|aa)+)\1x").unwrap();
        let text = format!("{}yaax", "a".repeat(24)).repeat(200); // seconds unbounded
        let err = re.for_each_match_within(&text, 0.05, |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("took more than 0.05 s"), "{err}");
        // The same pattern on a plain document is not affected.
        assert!(re.for_each_match_within("aax aax", 0.05, |_, _| {}).is_ok());
    }

    #[test]
    fn invalid_bytes_become_one_replacement_each() {
        let bytes = b"a\xffb\xe6\x97";
        let s = crate::symbols::decode(bytes);
        let d = DecodedText::new(bytes, &s);
        assert_eq!(d.text, "a\u{FFFD}b\u{FFFD}\u{FFFD}");
        assert_eq!(d.sym_at[d.text.len()], 5);
    }
}
