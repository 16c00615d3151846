//! A strategy list turned into level masks, one document or many in parallel.

use std::sync::Mutex;

use crate::custom::DecodedText;
use crate::error::{Result, SegmenterError};
use crate::scan;
use crate::strategy::{EndRule, StartRule, Strategy};
use crate::symbols::{decode_into, incomplete_tail, Symbols};

/// Per-thread buffers reused from one document to the next.
#[derive(Default, Debug)]
pub struct Scratch {
    symbols: Symbols,
    masks: scan::Masks,
}

#[derive(Debug, Clone)]
pub struct Segmenter {
    strategies: Vec<Strategy>,
    /// Whether strategy i runs its start (end) rule: an identical rule at a deeper stage marks
    /// a superset of levels, so the shallower copy is skipped (word1 and word2 share a start).
    run_start: Vec<bool>,
    run_end: Vec<bool>,
    has_custom: bool,
    /// (group, level) of the chains whose every match is kept, run together in one pass.
    fast_chains: Vec<(usize, u8)>,
    /// Whether a scanner reads the bit masks of the symbol classes.
    needs_masks: bool,
}

impl Segmenter {
    pub fn new(strategies: Vec<Strategy>) -> Result<Self> {
        if strategies.is_empty() {
            return Err(SegmenterError::Empty("the strategy list is empty".into()));
        }
        if strategies.len() > u8::MAX as usize {
            return Err(SegmenterError::Empty(format!("{} strategies: at most 255 fit a uint8 level", strategies.len())));
        }
        let deeper_has = |i: usize, same: &dyn Fn(&Strategy) -> bool| strategies[i + 1..].iter().any(same);
        let run_start = (0..strategies.len())
            .map(|i| strategies[i].start.is_some() && !deeper_has(i, &|s| s.start == strategies[i].start))
            .collect();
        let run_end = (0..strategies.len())
            .map(|i| strategies[i].end.is_some() && !deeper_has(i, &|s| s.end == strategies[i].end))
            .collect();
        let has_custom = strategies.iter().any(Strategy::is_custom);
        let fast_chains: Vec<(usize, u8)> = strategies
            .iter()
            .zip(&run_end)
            .enumerate()
            .filter_map(|(i, (s, &run))| match &s.end {
                Some(EndRule::Chain { group, moduli }) if run && moduli.contains(&1) => Some((*group, (i + 1) as u8)),
                _ => None,
            })
            .collect();
        let needs_masks = !fast_chains.is_empty() || strategies.iter().any(|s| s.start == Some(StartRule::Word));
        Ok(Self { strategies, run_start, run_end, has_custom, fast_chains, needs_masks })
    }

    /// From config-style (key, parameter) pairs, e.g. [("word1", "1@1"), ("word2", "2@1")].
    pub fn from_keys<K: AsRef<str>, P: AsRef<str>>(pairs: &[(K, P)]) -> Result<Self> {
        Self::new(pairs.iter().map(|(k, p)| Strategy::from_key(k.as_ref(), p.as_ref())).collect::<Result<_>>()?)
    }

    pub fn depth(&self) -> usize {
        self.strategies.len()
    }

    pub fn strategies(&self) -> &[Strategy] {
        &self.strategies
    }

    pub fn has_custom(&self) -> bool {
        self.has_custom
    }

    /// Levels of `bytes` into `out` (same length), reusing `symbols` as scratch.
    pub fn levels_into(&self, bytes: &[u8], out: &mut [u8], scratch: &mut Scratch) -> Result<()> {
        out.fill(0);
        self.levels_into_zeroed(bytes, out, scratch)
    }

    /// `levels_into` for an `out` that is already all zeros (a fresh batch buffer).
    fn levels_into_zeroed(&self, bytes: &[u8], out: &mut [u8], scratch: &mut Scratch) -> Result<()> {
        debug_assert_eq!(bytes.len(), out.len());
        // An unfinished character at the end is left out (its bytes stay 0): SPEC section 2.
        let kept = bytes.len() - incomplete_tail(bytes);
        let (bytes, out) = (&bytes[..kept], &mut out[..kept]);
        let Scratch { symbols, masks } = scratch;
        decode_into(bytes, symbols);
        let text = self.has_custom.then(|| DecodedText::new(bytes, symbols));
        if self.needs_masks {
            masks.build(&symbols.cls);
        }
        let sym = &*symbols;
        for (i, strategy) in self.strategies.iter().enumerate() {
            let level = (i + 1) as u8;
            let mut mark = |s: usize| out[sym.last_byte(s)] = level;
            if self.run_start[i] {
                match strategy.start.as_ref().expect("run_start implies a start rule") {
                    StartRule::Word => scan::word_starts(&sym.cls, masks, &mut mark),
                    StartRule::Pretok => scan::pretok_starts(&sym.cls, &mut mark),
                    StartRule::Punct => scan::punct_starts(&sym.cls, &mut mark),
                    StartRule::Custom(re) => {
                        let t = text.as_ref().expect("decoded for custom rules");
                        re.for_each_match(&t.text, |s, _| {
                            if s < t.text.len() {
                                mark(t.sym_at[s] as usize)
                            }
                        })?
                    }
                }
            }
            if self.run_end[i] {
                match strategy.end.as_ref().expect("run_end implies an end rule") {
                    // Gathered into one pass below.
                    EndRule::Chain { moduli, .. } if moduli.contains(&1) => {}
                    EndRule::Chain { group, moduli } => scan::chain_ends(&sym.cls, *group, moduli, &mut mark),
                    EndRule::Custom(re) => {
                        let t = text.as_ref().expect("decoded for custom rules");
                        re.for_each_match(&t.text, |_, e| {
                            if e > 0 {
                                mark(t.sym_at[e] as usize - 1)
                            }
                        })?
                    }
                }
            }
        }
        if !self.fast_chains.is_empty() {
            scan::chain_ends_all_kept(masks, &self.fast_chains, out, sym);
        }
        Ok(())
    }

    pub fn levels(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        let mut out = vec![0; bytes.len()];
        self.levels_into_zeroed(bytes, &mut out, &mut Scratch::default())?;
        Ok(out)
    }

    /// Levels with BOS (full depth) before and EOS (0) after, as SPEC section 2 defines them.
    pub fn levels_framed(&self, bytes: &[u8], bos: bool, eos: bool) -> Result<Vec<u8>> {
        let head = bos as usize;
        let mut out = vec![0; bytes.len() + head + eos as usize];
        if bos {
            out[0] = self.depth() as u8;
        }
        self.levels_into_zeroed(bytes, &mut out[head..head + bytes.len()], &mut Scratch::default())?;
        Ok(out)
    }

    /// Levels of many documents, concatenated in order, computed on `threads` threads.
    ///
    /// Threads are scoped to the call (no pool outlives it), so a process that forks after
    /// using the segmenter (a DataLoader worker) inherits no dead pool.
    pub fn levels_many(&self, docs: &[&[u8]], threads: usize) -> Result<Vec<u8>> {
        let total: usize = docs.iter().map(|d| d.len()).sum();
        let mut out = vec![0u8; total];
        let threads = threads.clamp(1, docs.len().max(1));
        if threads == 1 {
            let mut scratch = Scratch::default();
            let mut off = 0;
            for d in docs {
                self.levels_into_zeroed(d, &mut out[off..off + d.len()], &mut scratch)?;
                off += d.len();
            }
            return Ok(out);
        }
        // Chunks of similar byte size, several per thread, handed out from a shared queue.
        let target = total / (threads * 8) + 1;
        let mut chunks = Vec::new();
        let mut rest: &mut [u8] = &mut out;
        let (mut first, mut bytes) = (0, 0);
        for (i, d) in docs.iter().enumerate() {
            bytes += d.len();
            if bytes >= target || i + 1 == docs.len() {
                let (head, tail) = std::mem::take(&mut rest).split_at_mut(bytes);
                chunks.push((first..i + 1, head));
                rest = tail;
                first = i + 1;
                bytes = 0;
            }
        }
        let queue = Mutex::new(chunks.into_iter());
        let failure = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    let mut scratch = Scratch::default();
                    loop {
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                        let Some((range, buf)) = next else { return };
                        let mut off = 0;
                        for d in &docs[range] {
                            if let Err(e) = self.levels_into_zeroed(d, &mut buf[off..off + d.len()], &mut scratch) {
                                failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                                return;
                            }
                            off += d.len();
                        }
                    }
                });
            }
        });
        match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example() {
        let seg = Segmenter::from_keys(&[("word1", "1@1"), ("word2", "2@1")]).unwrap();
        let levels = seg.levels(b"The cat sat.").unwrap();
        //                  T  h  e  _  c  a  t  _  s  a  t  .
        assert_eq!(levels, [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2]);
    }

    #[test]
    fn multibyte_levels_land_on_last_byte() {
        let seg = Segmenter::from_keys(&[("word", "1@1")]).unwrap();
        let levels = seg.levels("é€ x".as_bytes()).unwrap();
        // 'é' (2 bytes), '€' (3 bytes, "other": a start), ' ' (end of word), 'x'
        assert_eq!(levels, [0, 0, 0, 0, 1, 1, 0]);
    }

    #[test]
    fn framing_and_batches() {
        let seg = Segmenter::from_keys(&[("word1", "1@1"), ("word2", "2@1")]).unwrap();
        assert_eq!(seg.levels_framed(b"a b", true, true).unwrap(), [2, 0, 1, 0, 0]);
        let docs: Vec<Vec<u8>> = (0..300).map(|i| format!("doc {i}: some words, 12345.\n").repeat(i % 7).into_bytes()).collect();
        let refs: Vec<&[u8]> = docs.iter().map(|d| d.as_slice()).collect();
        let one = seg.levels_many(&refs, 1).unwrap();
        let four = seg.levels_many(&refs, 4).unwrap();
        assert_eq!(one, four);
        let concat: Vec<u8> = refs.iter().flat_map(|d| seg.levels(d).unwrap()).collect();
        assert_eq!(one, concat);
    }

    #[test]
    fn unfinished_character_at_the_end_is_left_out() {
        let seg = Segmenter::from_keys(&[("word1", "1@1"), ("word2", "2@1")]).unwrap();
        let wo = "我".as_bytes();
        assert_eq!(seg.levels(wo).unwrap(), [0, 0, 0]);
        for cut in 1..3 {
            assert_eq!(seg.levels(&wo[..cut]).unwrap(), vec![0; cut], "{cut}");
        }
        // "ab " then a lone lead byte: the text is segmented as "ab ".
        let mut text = b"ab ".to_vec();
        text.push(wo[0]);
        assert_eq!(seg.levels(&text).unwrap(), [0, 0, 1, 0]);
        // A byte that can never start a character is still an "other" symbol (level 2).
        assert_eq!(seg.levels(b"ab \xff").unwrap(), [0, 0, 1, 2]);
        let batch = seg.levels_many(&[&wo[..1], b"x", &wo[..2]], 1).unwrap();
        assert_eq!(batch, [0, 0, 0, 0]);
    }

    #[test]
    fn custom_pairs_mark_starts_and_ends() {
        let seg = Segmenter::new(vec![Strategy::custom(Some(r"\d+"), Some(r"[a-z]+")).unwrap()]).unwrap();
        assert_eq!(seg.levels(b"ab 12").unwrap(), [0, 1, 0, 1, 0]);
    }
}
