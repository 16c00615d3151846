//! Bytes to symbols: one symbol per code point, or per byte of an invalid or truncated UTF-8
//! sequence (SPEC section 2), each with its class and the index of its last byte.

use crate::classes::{table, ClassTable, OTHER};

/// A decoded document: each symbol's class and the index of its last byte. `last` is empty
/// when every byte is ASCII (symbol index = byte index); u32 halves the memory traffic of the
/// common case, and `last_wide` takes over for a document of 4 GiB or more.
#[derive(Default, Debug)]
pub struct Symbols {
    pub cls: Vec<u8>,
    pub last: Vec<u32>,
    pub last_wide: Vec<usize>,
}

impl Symbols {
    #[inline(always)]
    pub fn last_byte(&self, sym: usize) -> usize {
        if !self.last.is_empty() {
            self.last[sym] as usize
        } else if !self.last_wide.is_empty() {
            self.last_wide[sym]
        } else {
            sym
        }
    }

    pub fn len(&self) -> usize {
        self.cls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cls.is_empty()
    }
}

/// Length of the valid UTF-8 sequence that starts at `bytes[0]`, or None when it is invalid or
/// truncated. The rules are those of `std::str::from_utf8` (and of Python's decoder).
#[inline]
pub fn utf8_len(bytes: &[u8]) -> Option<usize> {
    let b0 = *bytes.first()?;
    let cont = |i: usize, lo: u8, hi: u8| bytes.get(i).is_some_and(|&b| (lo..=hi).contains(&b));
    let (n, lo, hi) = match b0 {
        0x00..=0x7F => return Some(1),
        0xC2..=0xDF => (2, 0x80, 0xBF),
        0xE0 => (3, 0xA0, 0xBF),
        0xE1..=0xEC | 0xEE..=0xEF => (3, 0x80, 0xBF),
        0xED => (3, 0x80, 0x9F),
        0xF0 => (4, 0x90, 0xBF),
        0xF1..=0xF3 => (4, 0x80, 0xBF),
        0xF4 => (4, 0x80, 0x8F),
        _ => return None,
    };
    if !cont(1, lo, hi) {
        return None;
    }
    for i in 2..n {
        if !cont(i, 0x80, 0xBF) {
            return None;
        }
    }
    Some(n)
}

#[inline]
pub fn decode_scalar(seq: &[u8]) -> u32 {
    match seq.len() {
        1 => seq[0] as u32,
        2 => ((seq[0] as u32 & 0x1F) << 6) | (seq[1] as u32 & 0x3F),
        3 => ((seq[0] as u32 & 0x0F) << 12) | ((seq[1] as u32 & 0x3F) << 6) | (seq[2] as u32 & 0x3F),
        _ => {
            ((seq[0] as u32 & 0x07) << 18)
                | ((seq[1] as u32 & 0x3F) << 12)
                | ((seq[2] as u32 & 0x3F) << 6)
                | (seq[3] as u32 & 0x3F)
        }
    }
}

/// Two lanes decode the two halves in one loop: each character's position depends on the
/// previous one's length (a chain of loads), so two independent chains run faster than one.
/// The halves meet at a byte that is not a continuation byte, where every decoding (valid or
/// not) has a symbol boundary; the second lane writes its symbols from index `mid` on (a lane
/// never has more symbols than bytes) and is moved down at the end. `$step` decodes one symbol
/// from a 4-byte window; the last bytes of each lane go through `careful_step`.
macro_rules! two_lanes_body {
    ($bytes:expr, $t:expr, $out:expr, $step:ident) => {{
        let (bytes, t, out): (&[u8], &ClassTable, &mut Symbols) = ($bytes, $t, $out);
        let n = bytes.len();
        out.cls.resize(n, 0);
        out.last.resize(n, 0);
        let (cls, last) = (&mut out.cls[..], &mut out.last[..]);
        let mid = (n / 2..(n / 2 + 4).min(n)).find(|&m| bytes[m] & 0xC0 != 0x80).unwrap_or(n);
        let (mut ia, mut ka, mut ib, mut kb) = (0, 0, mid, mid);
        while ia < mid && ib + 4 <= n {
            let (c, len) = $step!(bytes, ia, t);
            (cls[ka], last[ka]) = (c, (ia + len - 1) as u32);
            (ia, ka) = (ia + len, ka + 1);
            let (c, len) = $step!(bytes, ib, t);
            (cls[kb], last[kb]) = (c, (ib + len - 1) as u32);
            (ib, kb) = (ib + len, kb + 1);
        }
        for (i, k, end) in [(&mut ia, &mut ka, mid), (&mut ib, &mut kb, n)] {
            while *i < end {
                let (c, len) = if *i + 4 <= n { $step!(bytes, *i, t) } else { careful_step(&bytes[..end], *i, t) };
                (cls[*k], last[*k]) = (c, (*i + len - 1) as u32);
                (*i, *k) = (*i + len, *k + 1);
            }
        }
        cls.copy_within(mid..kb, ka);
        last.copy_within(mid..kb, ka);
        out.cls.truncate(ka + kb - mid);
        out.last.truncate(ka + kb - mid);
    }};
}

/// Length of a UTF-8 sequence by the high nibble of its first byte; 0 for a continuation byte.
const UTF8_LEN: [u8; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 2, 2, 3, 4];
/// By length: (mask, value) that the continuation bytes must show in the big-endian word, and
/// the smallest code point that length may encode (shorter would be overlong).
const UTF8_CHECKS: [(u32, u32, u32); 5] = [
    (0, 1, 0),
    (0, 0, 0),
    (0x00C0_0000, 0x0080_0000, 0x80),
    (0x00C0_C000, 0x0080_8000, 0x800),
    (0x00C0_C0C0, 0x0080_8080, 0x1_0000),
];

/// Decode `bytes` into `out`, reusing its allocations.
pub fn decode_into(bytes: &[u8], out: &mut Symbols) {
    let t = table();
    out.cls.clear();
    out.last.clear();
    out.last_wide.clear();
    if bytes.is_ascii() {
        out.cls.extend(bytes.iter().map(|&b| t.ascii[b as usize]));
        return;
    }
    if bytes.len() > u32::MAX as usize {
        decode_wide(bytes, t, out);
        return;
    }
    // Valid UTF-8 is the common case and is checked with SIMD at several GB/s; it then needs
    // no per-character checks, and with BMI2 one PEXT extracts the code point.
    if simdutf8::basic::from_utf8(bytes).is_ok() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("bmi2") {
            // SAFETY: the CPU has BMI2 (checked just above).
            unsafe { decode_valid_bmi2(bytes, t, out) };
            return;
        }
        two_lanes(bytes, t, out, valid_step);
        return;
    }
    two_lanes(bytes, t, out, fast_step);
}

/// One symbol at a time with `careful_step`, last bytes in `last_wide` (documents of 4 GiB or
/// more, whose indices do not fit in u32). `out` must be empty.
fn decode_wide(bytes: &[u8], t: &ClassTable, out: &mut Symbols) {
    let mut i = 0;
    while i < bytes.len() {
        let (c, len) = careful_step(bytes, i, t);
        out.cls.push(c);
        out.last_wide.push(i + len - 1);
        i += len;
    }
}

/// PEXT masks selecting the payload bits of a 1-4 byte sequence in a big-endian 4-byte word.
const PAYLOAD: [u32; 5] = [0x7F00_0000, 0x7F00_0000, 0x1F3F_0000, 0x0F3F_3F00, 0x073F_3F3F];

/// `valid_step` with one PEXT for the code point; a macro so that it expands inside the bmi2
/// function (a bmi2 `fn` is not inlined into it: measured, it stayed a call per character).
#[cfg(target_arch = "x86_64")]
macro_rules! pext_step {
    ($bytes:expr, $i:expr, $t:expr) => {{
        let (bytes, i): (&[u8], usize) = ($bytes, $i);
        let w = u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let len = UTF8_LEN[(w >> 28) as usize] as usize;
        let cp = std::arch::x86_64::_pext_u32(w, PAYLOAD[len]);
        ($t.of(cp), len.max(1))
    }};
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi2")]
unsafe fn decode_valid_bmi2(bytes: &[u8], t: &ClassTable, out: &mut Symbols) {
    // The lane driver is expanded here (a macro, not a generic call), so that the PEXT step,
    // a bmi2 function, is inlined: it could not be into a driver compiled without bmi2.
    two_lanes_body!(bytes, t, out, pext_step)
}

/// The 4-byte window at `i` (big-endian), the sequence length its first byte announces (0 for
/// a continuation byte) and the code point that length decodes to, without any checks. The
/// length picks one of the formulas, so mixed-script text costs no mispredicted branch.
#[inline(always)]
fn window(bytes: &[u8], i: usize) -> (u32, usize, u32) {
    let w = u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let len = UTF8_LEN[(w >> 28) as usize] as usize;
    let b = |k: u32| (w >> (24 - 8 * k)) & 0xFF;
    let cp = [
        b(0),
        b(0),
        (b(0) & 0x1F) << 6 | (b(1) & 0x3F),
        (b(0) & 0x0F) << 12 | (b(1) & 0x3F) << 6 | (b(2) & 0x3F),
        (b(0) & 0x07) << 18 | (b(1) & 0x3F) << 12 | (b(2) & 0x3F) << 6 | (b(3) & 0x3F),
    ][len];
    (w, len, cp)
}

/// One character of valid UTF-8 from the 4-byte window at `i` (no checks needed).
#[inline(always)]
fn valid_step(bytes: &[u8], i: usize, t: &ClassTable) -> (u8, usize) {
    let (_, len, cp) = window(bytes, i);
    (t.of(cp), len.max(1))
}

/// `two_lanes_body!` with a plain (non-bmi2) step function.
fn two_lanes(bytes: &[u8], t: &ClassTable, out: &mut Symbols, step: impl Fn(&[u8], usize, &ClassTable) -> (u8, usize)) {
    macro_rules! generic_step {
        ($bytes:expr, $i:expr, $t:expr) => {
            step($bytes, $i, $t)
        };
    }
    two_lanes_body!(bytes, t, out, generic_step)
}

/// One symbol from the 4-byte window at `i` (requires i + 4 <= len), for text that may be
/// invalid: a sequence that fails any check of `utf8_len` (continuation bytes, overlong,
/// surrogate, > U+10FFFF) makes byte i an invalid symbol of length 1, exactly as
/// `careful_step` would.
#[inline(always)]
fn fast_step(bytes: &[u8], i: usize, t: &ClassTable) -> (u8, usize) {
    let (w, len, cp) = window(bytes, i);
    let b0 = w >> 24;
    let (cont_mask, cont_value, min_cp) = UTF8_CHECKS[len];
    let valid = (w & cont_mask == cont_value)
        & (cp >= min_cp)
        & (cp <= 0x10FFFF)
        & !(0xD800..=0xDFFF).contains(&cp)
        & (b0 < 0xF8);
    if valid {
        (t.of(cp.min(0x10FFFF)), len)
    } else {
        (OTHER, 1)
    }
}

/// One symbol at `i`, checking each byte against the end of `bytes`.
#[inline]
fn careful_step(bytes: &[u8], i: usize, t: &ClassTable) -> (u8, usize) {
    match utf8_len(&bytes[i..]) {
        Some(n) => (t.of(decode_scalar(&bytes[i..i + n])), n),
        None => (OTHER, 1),
    }
}

pub fn decode(bytes: &[u8]) -> Symbols {
    let mut s = Symbols::default();
    decode_into(bytes, &mut s);
    s
}

/// Where a byte sequence stands as the beginning of one UTF-8 character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partial {
    Complete,
    Incomplete,
    Invalid,
}

/// Number of bytes at the end of `bytes` that form an incomplete character (a lead byte plus
/// fewer continuation bytes than it announces, which more bytes could still complete): 0-3.
/// SPEC section 2: such a tail is not a symbol; its bytes get level 0 and the text before it is
/// segmented as if they were absent (the reference's `shrink_to_valid_bytes`).
pub fn incomplete_tail(bytes: &[u8]) -> usize {
    let n = bytes.len();
    for k in 1..=n.min(3) {
        if bytes[n - k] & 0xC0 != 0x80 {
            return if utf8_partial(&bytes[n - k..]) == Partial::Incomplete { k } else { 0 };
        }
    }
    0
}

pub fn utf8_partial(seq: &[u8]) -> Partial {
    match utf8_len(seq) {
        Some(n) if n == seq.len() => Partial::Complete,
        Some(_) => Partial::Invalid, // longer than one character: the caller feeds one at a time
        None => {
            // Valid so far when padding with the smallest allowed continuation completes it.
            let mut padded = [0u8; 4];
            padded[..seq.len()].copy_from_slice(seq);
            let need = match seq[0] {
                0xC2..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF4 => 4,
                _ => return Partial::Invalid,
            };
            if seq.len() >= need {
                return Partial::Invalid;
            }
            for fill in seq.len()..need {
                padded[fill] = match (fill, seq[0]) {
                    (1, 0xE0) => 0xA0,
                    (1, 0xF0) => 0x90,
                    _ => 0x80,
                };
            }
            if utf8_len(&padded[..need]) == Some(need) {
                Partial::Incomplete
            } else {
                Partial::Invalid
            }
        }
    }
}

#[cfg(test)]
mod tests;
