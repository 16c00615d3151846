//! Causal (streaming) versions of the built-in start scanners.
//!
//! `push(c)` answers: in the document that ends with this symbol, does a match of the start
//! pattern begin at this symbol? Each state is a few bytes and each push is O(1). The rules
//! follow from the scanners in `scan.rs` read with the end of the text right after the symbol:
//! - a white-space run matches at its first scan position iff a newline is in it, so with the
//!   text ending inside the run, only the run's first symbol can start a match, when it is a
//!   newline (word, punct);
//! - a digit run of length D splits as ((D-1) % 3) + 1, 3, 3...: its last digit starts a chunk
//!   only when D == 1 (punct);
//! - in pretok, with the text ending inside a run the run's scan positions are its start, and
//!   the symbol right after its last newline (`\s*[\r\n]` then `\s+(?!\S)` at the end); a letter
//!   or "other" symbol right after a U+0020 that ends a run is part of ` ?\p{L}` or ` ?[^...]`.
//! Tests check every prefix of random class sequences against the full scanners.

use crate::classes::{is_other, DIGIT, LETTER, NEWLINE, NUMBER, SPACE, WHITE};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Free,
    Letters(u8),
    Number(u8),
    Digits,
    Other(u8),
    OtherNewlines,
    White { prev_newline: bool, prev_space: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Word,
    Pretok,
    Punct,
}

#[derive(Clone, Copy, Debug)]
pub struct CausalStart {
    kind: Kind,
    mode: Mode,
}

impl CausalStart {
    pub fn new(kind: Kind) -> Self {
        Self { kind, mode: Mode::Free }
    }

    /// Continue the current match or run when `c` extends it; None when `c` sits at a scan
    /// position instead.
    #[inline]
    fn extend(&mut self, c: u8) -> Option<bool> {
        match self.mode {
            Mode::Letters(k) if k < 16 && c & LETTER != 0 => {
                self.mode = Mode::Letters(k + 1);
                Some(false)
            }
            Mode::Number(k) if k < 3 && c & NUMBER != 0 => {
                self.mode = Mode::Number(k + 1);
                Some(false)
            }
            Mode::Digits if c & DIGIT != 0 => Some(false),
            Mode::Other(k) if k < 3 && is_other(c) => {
                self.mode = Mode::Other(k + 1);
                Some(false)
            }
            Mode::Other(_) | Mode::OtherNewlines if c & NEWLINE != 0 => {
                self.mode = Mode::OtherNewlines;
                Some(false)
            }
            Mode::White { prev_newline, .. } if c & WHITE != 0 => {
                let newline = c & NEWLINE != 0;
                self.mode = Mode::White { prev_newline: newline, prev_space: c & SPACE != 0 };
                Some(self.kind == Kind::Pretok && prev_newline && !newline)
            }
            _ => None,
        }
    }

    #[inline]
    pub fn push(&mut self, c: u8) -> bool {
        if let Some(start) = self.extend(c) {
            return start;
        }
        let after_space = matches!(self.mode, Mode::White { prev_space: true, .. });
        let white = Mode::White { prev_newline: c & NEWLINE != 0, prev_space: c & SPACE != 0 };
        let (mode, start) = match self.kind {
            Kind::Word => {
                if c & NUMBER != 0 {
                    (Mode::Number(1), true)
                } else if c & LETTER != 0 {
                    (Mode::Free, false)
                } else if c & WHITE != 0 {
                    (white, c & NEWLINE != 0)
                } else {
                    (Mode::Other(1), true)
                }
            }
            Kind::Punct => {
                if c & DIGIT != 0 {
                    (Mode::Digits, true)
                } else if c & (LETTER | NUMBER) != 0 {
                    (Mode::Free, false)
                } else if c & WHITE != 0 {
                    (white, c & NEWLINE != 0)
                } else {
                    (Mode::Other(1), true)
                }
            }
            Kind::Pretok => {
                if c & WHITE != 0 {
                    (white, true)
                } else if c & LETTER != 0 {
                    (Mode::Letters(1), !after_space)
                } else if c & NUMBER != 0 {
                    (Mode::Number(1), true)
                } else {
                    (Mode::Other(1), !after_space)
                }
            }
        };
        self.mode = mode;
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::OTHER;
    use crate::scan;
    use proptest::prelude::*;

    const CLASSES: [u8; 9] = [
        LETTER,
        NUMBER,
        NUMBER | DIGIT,
        WHITE,
        WHITE | SPACE,
        WHITE | NEWLINE,
        OTHER,
        OTHER,
        LETTER,
    ];

    fn full(kind: Kind, cls: &[u8]) -> Vec<usize> {
        let mut out = vec![];
        match kind {
            Kind::Word => {
                let mut masks = scan::Masks::default();
                masks.build(cls);
                scan::word_starts(cls, &masks, |q| out.push(q))
            }
            Kind::Pretok => scan::pretok_starts(cls, |q| out.push(q)),
            Kind::Punct => scan::punct_starts(cls, |q| out.push(q)),
        }
        out
    }

    fn check(kind: Kind, cls: &[u8]) {
        let mut causal = CausalStart::new(kind);
        for p in 0..cls.len() {
            let expected = full(kind, &cls[..=p]).last() == Some(&p);
            assert_eq!(causal.push(cls[p]), expected, "{kind:?} at {p} of {cls:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn causal_equals_full_scan_of_every_prefix(idx in proptest::collection::vec(0usize..CLASSES.len(), 0..60)) {
            let cls: Vec<u8> = idx.iter().map(|&i| CLASSES[i]).collect();
            for kind in [Kind::Word, Kind::Pretok, Kind::Punct] {
                check(kind, &cls);
            }
        }
    }
}
