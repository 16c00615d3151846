//! Causal levels for generation: bytes in, one level per byte out, in O(1) per byte.
//!
//! The level of a new byte is its level in the mask of the prefix that ends at it (SPEC
//! section 2). A character still incomplete at that byte is, in that prefix, left out of the
//! text, so its bytes get level 0 and the scanner state stays where it was; the character is
//! pushed as one symbol when it completes, or, when a byte shows it never will, its bytes are
//! pushed as invalid "other" symbols (as the full mask then sees them).
//!
//! Custom regexes have no causal scanner: a segmenter with one rescans the whole prefix per
//! byte (exact, but O(prefix)).

use std::sync::Arc;

use crate::causal::{CausalStart, Kind};
use crate::classes::{table, OTHER};
use crate::error::Result;
use crate::scan::Chain;
use crate::segmenter::Segmenter;
use crate::strategy::{EndRule, StartRule};
use crate::symbols::{decode_scalar, utf8_partial, Partial};

#[derive(Clone, Copy, Debug)]
struct RuleState {
    start: Option<CausalStart>,
    chain: Option<Chain>,
}

#[derive(Clone, Debug)]
pub struct LevelStream {
    segmenter: Arc<Segmenter>,
    committed: Vec<RuleState>,
    pending: Vec<u8>,
    /// Every byte so far, kept only for the rescanning path of custom regexes.
    history: Vec<u8>,
    seen: usize,
}

impl LevelStream {
    pub fn new(segmenter: Arc<Segmenter>) -> Self {
        let committed: Vec<RuleState> = segmenter
            .strategies()
            .iter()
            .map(|s| RuleState {
                start: match s.start {
                    Some(StartRule::Word) => Some(CausalStart::new(Kind::Word)),
                    Some(StartRule::Pretok) => Some(CausalStart::new(Kind::Pretok)),
                    Some(StartRule::Punct) => Some(CausalStart::new(Kind::Punct)),
                    _ => None,
                },
                chain: matches!(s.end, Some(EndRule::Chain { .. })).then(Chain::default),
            })
            .collect();
        Self { committed, segmenter, pending: Vec::with_capacity(4), history: Vec::new(), seen: 0 }
    }

    pub fn bytes_seen(&self) -> usize {
        self.seen
    }

    fn push_symbol(segmenter: &Segmenter, states: &mut [RuleState], c: u8) -> u8 {
        let mut level = 0;
        for (i, (state, strategy)) in states.iter_mut().zip(segmenter.strategies()).enumerate() {
            let started = state.start.as_mut().is_some_and(|s| s.push(c));
            let ended = match (&mut state.chain, &strategy.end) {
                (Some(chain), Some(EndRule::Chain { group, moduli })) => chain.push(c, *group, moduli),
                _ => false,
            };
            if started || ended {
                level = (i + 1) as u8;
            }
        }
        level
    }

    fn commit(&mut self, c: u8) -> u8 {
        Self::push_symbol(&self.segmenter, &mut self.committed, c)
    }

    fn push_byte(&mut self, b: u8) -> u8 {
        if !self.pending.is_empty() {
            self.pending.push(b);
            match utf8_partial(&self.pending) {
                Partial::Complete => {
                    let c = table().of(decode_scalar(&self.pending));
                    self.pending.clear();
                    return self.commit(c);
                }
                Partial::Incomplete => return 0,
                Partial::Invalid => {
                    // The bytes before `b` were invalid after all; `b` starts afresh.
                    self.pending.pop();
                    for _ in 0..self.pending.len() {
                        self.commit(OTHER);
                    }
                    self.pending.clear();
                }
            }
        }
        if b < 0x80 {
            return self.commit(table().ascii[b as usize]);
        }
        self.pending.push(b);
        match utf8_partial(&self.pending) {
            Partial::Incomplete => 0,
            _ => {
                self.pending.clear();
                self.commit(OTHER)
            }
        }
    }

    /// Causal levels of `bytes`, appended to everything pushed before.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>> {
        self.seen += bytes.len();
        if self.segmenter.has_custom() {
            let mut out = Vec::with_capacity(bytes.len());
            for &b in bytes {
                self.history.push(b);
                out.push(*self.segmenter.levels(&self.history)?.last().expect("non-empty prefix"));
            }
            return Ok(out);
        }
        Ok(bytes.iter().map(|&b| self.push_byte(b)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Strategy;
    use proptest::prelude::*;

    fn check(seg: &Arc<Segmenter>, bytes: &[u8]) {
        let mut stream = LevelStream::new(seg.clone());
        let streamed = stream.push(bytes).unwrap();
        for p in 0..bytes.len() {
            let full = seg.levels(&bytes[..=p]).unwrap();
            assert_eq!(streamed[p], full[p], "byte {p} of {bytes:?}");
        }
    }

    fn segmenters() -> Vec<Arc<Segmenter>> {
        let keyed = |pairs: &[(&str, &str)]| Arc::new(Segmenter::from_keys(pairs).unwrap());
        vec![
            keyed(&[("word1", "1@1"), ("word2", "2@1"), ("word4", "4@1-3")]),
            keyed(&[("pretok", "")]),
            keyed(&[("punct", ""), ("word", "1@2")]),
            Arc::new(Segmenter::new(vec![Strategy::custom(Some(r"\d(?=\d)"), Some(r"\s+")).unwrap()]).unwrap()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn stream_equals_last_level_of_every_prefix(
            parts in proptest::collection::vec(prop_oneof![
                Just("a".to_string()), Just(" ".to_string()), Just("\n".to_string()), Just("\r\n".to_string()),
                Just("7".to_string()), Just("!".to_string()), Just("é".to_string()), Just("日本".to_string()),
                Just("🙂".to_string()), Just("\u{a0}".to_string()), Just("²".to_string()), Just("\t".to_string()),
            ], 0..40),
            junk in proptest::collection::vec(any::<u8>(), 0..6),
            at in 0usize..40,
        ) {
            let mut bytes = parts.concat().into_bytes();
            let at = at.min(bytes.len());
            bytes.splice(at..at, junk);
            for seg in segmenters() {
                check(&seg, &bytes);
            }
        }
    }

    #[test]
    fn unfinished_character_waits_at_level_zero() {
        let seg = Arc::new(Segmenter::from_keys(&[("word", "1@1")]).unwrap());
        let euro = "€".as_bytes();
        let mut stream = LevelStream::new(seg.clone());
        assert_eq!(stream.push(&euro[..1]).unwrap(), [0]);
        // '€' is an "other" symbol: it starts a match once complete.
        assert_eq!(stream.push(&euro[1..]).unwrap(), [0, 1]);
        assert_eq!(seg.levels(euro).unwrap(), [0, 0, 1]);
        // A lead byte then ASCII: the lead byte is invalid after all, and "other" (level 1).
        let mut stream = LevelStream::new(seg.clone());
        assert_eq!(stream.push(b"\xe2a").unwrap(), [0, 0]);
        assert_eq!(seg.levels(b"\xe2a").unwrap(), [1, 0]);
    }
}
