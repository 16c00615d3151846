//! Hand-written scanners for the built-in patterns over a document's symbol classes.
//!
//! Each function reports exactly the offsets that Python's `regex.finditer` yields for the
//! pattern (match starts for start patterns, `end - 1` of kept matches for the end pattern).
//! Why they are equivalent, per pattern alternative, is written next to each branch; the
//! differential tests against the `regex` package check it.

use crate::classes::{is_other, DIGIT, LETTER, NEWLINE, NUMBER, SPACE, WHITE};
use crate::strategy::EndRule;

#[inline(always)]
fn run_len(cls: &[u8], from: usize, max: usize, pred: impl Fn(u8) -> bool) -> usize {
    let end = cls.len().min(from.saturating_add(max));
    cls[from..end].iter().position(|&c| !pred(c)).unwrap_or(end - from)
}

/// End of the white-space run at `q` and the last newline in it.
#[inline(always)]
fn white_run(cls: &[u8], q: usize) -> (usize, Option<usize>) {
    let mut r = q;
    let mut last_nl = None;
    while r < cls.len() && cls[r] & WHITE != 0 {
        if cls[r] & NEWLINE != 0 {
            last_nl = Some(r);
        }
        r += 1;
    }
    (r, last_nl)
}

/// `[^\s\p{L}\p{N}]{1,3}[\r\n]*` at `q` (q is "other"): the match end.
#[inline(always)]
fn other_chunk_end(cls: &[u8], q: usize) -> usize {
    let mut e = q + run_len(cls, q, 3, is_other);
    while e < cls.len() && cls[e] & NEWLINE != 0 {
        e += 1;
    }
    e
}

/// Bit masks of the letter, number, white-space and newline symbols, 64 symbols a word:
/// run ends and "is there a newline in this run" become a few bit operations instead of a
/// byte loop whose exit the branch predictor misses once per word.
#[derive(Default, Debug)]
pub struct Masks {
    letter: Vec<u64>,
    number: Vec<u64>,
    white: Vec<u64>,
    newline: Vec<u64>,
}

impl Masks {
        pub fn build(&mut self, cls: &[u8]) {
        for v in [&mut self.letter, &mut self.number, &mut self.white, &mut self.newline] {
            v.clear();
        }
        let mut padded = [0u8; 64];
        for block in cls.chunks(64) {
            let full: &[u8; 64] = match block.try_into() {
                Ok(full) => full,
                Err(_) => {
                    // Padding is class 0 ("other"): no flag set past the end.
                    padded.fill(0);
                    padded[..block.len()].copy_from_slice(block);
                    &padded
                }
            };
            let [l, n, w, nl] = block_masks(full, [LETTER, NUMBER, WHITE, NEWLINE]);
            self.letter.push(l);
            self.number.push(n);
            self.white.push(w);
            self.newline.push(nl);
        }
    }

    /// First position >= q whose bit in `mask` is clear (or the end of the last word).
    #[inline(always)]
    fn next_clear(mask: &[u64], q: usize, n: usize) -> usize {
        let mut w = q / 64;
        let mut bits = !mask[w] >> (q % 64);
        if bits != 0 {
            return (q + bits.trailing_zeros() as usize).min(n);
        }
        loop {
            w += 1;
            if w == mask.len() {
                return n;
            }
            bits = !mask[w];
            if bits != 0 {
                return (w * 64 + bits.trailing_zeros() as usize).min(n);
            }
        }
    }

    /// Whether any bit of `mask` is set in positions a..b.
    #[inline(always)]
    fn any_in(mask: &[u64], a: usize, b: usize) -> bool {
        let (mut w, last) = (a / 64, (b - 1) / 64);
        let bits = mask[w] >> (a % 64);
        if w == last {
            let len = b - a;
            return bits & (u64::MAX >> (64 - len)) != 0;
        }
        if bits != 0 {
            return true;
        }
        loop {
            w += 1;
            let m = if w == last { mask[w] & (u64::MAX >> (63 - (b - 1) % 64)) } else { mask[w] };
            if m != 0 {
                return true;
            }
            if w == last {
                return false;
            }
        }
    }
}

/// `\p{N}{1,3}|(?:[^\s\p{L}\p{N}]{1,3}[\r\n]*)|\s*[\r\n]` (`masks` built from `cls`)
pub fn word_starts(cls: &[u8], masks: &Masks, mut emit: impl FnMut(usize)) {
    let n = cls.len();
    let mut q = 0;
    while q < n {
        let c = cls[q];
        if c & LETTER != 0 {
            // No alternative starts with a letter.
            q = Masks::next_clear(&masks.letter, q, n);
        } else if c & NUMBER != 0 {
            emit(q);
            q = Masks::next_clear(&masks.number, q, n).min(q + 3);
        } else if c & WHITE == 0 {
            emit(q);
            q = other_chunk_end(cls, q);
        } else {
            // `\s*[\r\n]` matches from q to the run's last newline, if it has one; the rest of
            // the run then holds no newline, so no later position in it matches.
            let r = Masks::next_clear(&masks.white, q, n);
            if Masks::any_in(&masks.newline, q, r) {
                emit(q);
            }
            q = r;
        }
    }
}

/// `( ?\p{L}{1,16})|\p{N}{1,3}| ?([^\s\p{L}\p{N}]){1,3}+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+`
/// Some alternative matches at every position, so the matches tile the document.
pub fn pretok_starts(cls: &[u8], mut emit: impl FnMut(usize)) {
    let n = cls.len();
    let mut q = 0;
    while q < n {
        let c = cls[q];
        emit(q);
        let next = cls.get(q + 1).copied();
        if c & LETTER != 0 {
            q += run_len(cls, q, 16, |c| c & LETTER != 0);
        } else if c & NUMBER != 0 {
            q += run_len(cls, q, 3, |c| c & NUMBER != 0);
        } else if c & WHITE == 0 {
            q = other_chunk_end(cls, q);
        } else if c & SPACE != 0 && next.is_some_and(|d| d & LETTER != 0) {
            q += 1 + run_len(cls, q + 1, 16, |c| c & LETTER != 0);
        } else if c & SPACE != 0 && next.is_some_and(is_other) {
            q = other_chunk_end(cls, q + 1);
        } else {
            let (r, last_nl) = white_run(cls, q);
            q = match last_nl {
                // `\s*[\r\n]`
                Some(l) => l + 1,
                // `\s+(?!\S)` gives back the run's last character when a non-space follows.
                None if r - q >= 2 && r < n => r - 1,
                // `\s+(?!\S)` at the end of the text, or `\s+` for a lone space before \S.
                None => r,
            };
        }
    }
}

/// `\d{1,3}(?=(\d{3})+(?!\d))|\d{1,3}(?=\D|$)|([^\s\p{L}\p{N}]){1,3}+[\r\n]*|\s*[\r\n]`
pub fn punct_starts(cls: &[u8], mut emit: impl FnMut(usize)) {
    let n = cls.len();
    let mut q = 0;
    while q < n {
        let c = cls[q];
        if c & DIGIT != 0 {
            // A run of D digits splits as thousands groups from the right: a first chunk of
            // ((D-1) % 3) + 1 digits, then chunks of three.
            let d = run_len(cls, q, usize::MAX, |c| c & DIGIT != 0);
            let mut s = q;
            emit(s);
            s += (d - 1) % 3 + 1;
            while s < q + d {
                emit(s);
                s += 3;
            }
            q += d;
        } else if c & (LETTER | NUMBER) != 0 {
            q += 1;
        } else if c & WHITE == 0 {
            emit(q);
            q = other_chunk_end(cls, q);
        } else {
            let (r, last_nl) = white_run(cls, q);
            if last_nl.is_some() {
                emit(q);
            }
            q = r;
        }
    }
}

/// `(\S+?\s){G}`: G words, each followed by exactly one white-space character. The decision at
/// each white-space character depends only on the past, so the same state machine serves full
/// documents and streams.
#[derive(Clone, Copy, Debug, Default)]
pub struct Chain {
    in_word: bool,
    words: usize,
    matches: usize,
}

impl Chain {
    /// Feed one symbol; true when a kept match ends with it.
    #[inline(always)]
    pub fn push(&mut self, c: u8, group: usize, moduli: &[usize]) -> bool {
        if c & WHITE == 0 {
            self.in_word = true;
            return false;
        }
        if !self.in_word {
            // Two white-space characters in a row break the chain; the next attempt starts
            // at the next word.
            self.words = 0;
            return false;
        }
        self.in_word = false;
        self.words += 1;
        if self.words < group {
            return false;
        }
        self.words = 0;
        self.matches += 1;
        EndRule::keeps(moduli, self.matches - 1)
    }
}

pub fn chain_ends(cls: &[u8], group: usize, moduli: &[usize], mut emit: impl FnMut(usize)) {
    let mut chain = Chain::default();
    for (q, &c) in cls.iter().enumerate() {
        if chain.push(c, group, moduli) {
            emit(q);
        }
    }
}

/// Bit i set when symbol i of the (up to 64-symbol) block has any bit of `flag`.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn block_mask(block: &[u8], flag: u8) -> u64 {
    let mut m = 0u64;
    for (i, &c) in block.iter().enumerate() {
        m |= ((c & flag != 0) as u64) << i;
    }
    m
}

/// The masks of four flags for one full 64-symbol block.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn block_masks(block: &[u8; 64], flags: [u8; 4]) -> [u64; 4] {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86_64 baseline; the loads read 4 x 16 bytes of a 64-byte array.
    unsafe {
        let zero = _mm_setzero_si128();
        let lanes: [__m128i; 4] = std::array::from_fn(|i| _mm_loadu_si128(block.as_ptr().add(16 * i) as *const __m128i));
        flags.map(|flag| {
            let f = _mm_set1_epi8(flag as i8);
            let mut m = 0u64;
            for (i, lane) in lanes.iter().enumerate() {
                let clear = _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_and_si128(*lane, f), zero)) as u32;
                m |= ((!clear & 0xFFFF) as u64) << (16 * i);
            }
            m
        })
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn block_masks(block: &[u8; 64], flags: [u8; 4]) -> [u64; 4] {
    flags.map(|f| block_mask(block, f))
}

/// `chain_ends` for every chain whose matches are all kept (a modulus of 1), all chains in one
/// pass over 64-symbol blocks of white-space bit masks. A word ends at a white-space symbol
/// after a non-space one; a white-space symbol after another breaks every chain. With G = 1
/// every word end is a match, so no state is needed; larger G count word ends between breaks.
/// Raises `out[last_byte(q)]` to each chain's level at its match ends.
pub fn chain_ends_all_kept(masks: &Masks, chains: &[(usize, u8)], out: &mut [u8], symbols: &crate::symbols::Symbols) {
    let mut words = vec![0usize; chains.len()];
    let mut prev_top = 1u64; // the document start behaves like white space: no word before it
    for (b, &white) in masks.white.iter().enumerate() {
        let prev_white = (white << 1) | prev_top;
        prev_top = white >> 63;
        let word_end = white & !prev_white;
        let broken = white & prev_white;
        if word_end == 0 && broken == 0 {
            continue;
        }
        for ((group, level), words) in chains.iter().zip(words.iter_mut()) {
            let mut hits = if *group == 1 {
                word_end
            } else {
                let mut hits = 0u64;
                let mut events = word_end | broken;
                while events != 0 {
                    let i = events.trailing_zeros();
                    events &= events - 1;
                    if broken >> i & 1 != 0 {
                        *words = 0;
                    } else {
                        *words += 1;
                        if *words == *group {
                            *words = 0;
                            hits |= 1 << i;
                        }
                    }
                }
                hits
            };
            while hits != 0 {
                let q = b * 64 + hits.trailing_zeros() as usize;
                hits &= hits - 1;
                let pos = symbols.last_byte(q);
                out[pos] = out[pos].max(*level);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::decode;

    fn starts(f: fn(&[u8], &mut dyn FnMut(usize)), text: &str) -> Vec<usize> {
        let s = decode(text.as_bytes());
        let mut out = vec![];
        f(&s.cls, &mut |q| out.push(q));
        out
    }

    fn masked(cls: &[u8]) -> Masks {
        let mut m = Masks::default();
        m.build(cls);
        m
    }

    #[test]
    fn word_start_examples() {
        let w = |c: &[u8], e: &mut dyn FnMut(usize)| word_starts(c, &masked(c), e);
        // "The cat sat." -> only the final '.'
        assert_eq!(starts(w, "The cat sat."), vec![11]);
        assert_eq!(starts(w, "12345 x"), vec![0, 3]);
        assert_eq!(starts(w, "a  \n b"), vec![1]);
        assert_eq!(starts(w, "!!!!\n\n x"), vec![0, 3]);
    }

    #[test]
    fn pretok_examples() {
        let p = |c: &[u8], e: &mut dyn FnMut(usize)| pretok_starts(c, e);
        // "Hello", " world", "!!!\n", "  ", " x"
        assert_eq!(starts(p, "Hello world!!!\n   x"), vec![0, 5, 11, 15, 17]);
    }

    #[test]
    fn punct_examples() {
        let p = |c: &[u8], e: &mut dyn FnMut(usize)| punct_starts(c, e);
        assert_eq!(starts(p, "1234567"), vec![0, 1, 4]);
        assert_eq!(starts(p, "abc 12, x"), vec![4, 6]);
    }

    #[test]
    fn chain_examples() {
        let s = decode(b"The cat sat on  the mat ");
        let mut out = vec![];
        chain_ends(&s.cls, 2, &[1], |q| out.push(q));
        // "The cat ", "sat on ", then the double space starts a new chain: "the mat ".
        assert_eq!(out, vec![7, 14, 23]);
        out.clear();
        chain_ends(&s.cls, 1, &[2], |q| out.push(q));
        assert_eq!(out, vec![3, 11, 19]);
    }
}
