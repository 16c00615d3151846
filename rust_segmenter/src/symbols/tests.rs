//! Tests of `symbols.rs`: decoding, classes and UTF-8 edge cases.

use super::*;
use crate::classes::*;

#[test]
fn multibyte_maps_to_last_byte() {
    let s = decode("aé日".as_bytes());
    assert_eq!(s.cls, vec![LETTER, LETTER, LETTER]);
    assert_eq!(s.last, vec![0, 2, 5]);
}

#[test]
fn every_invalid_byte_is_its_own_symbol() {
    for (input, n) in [(&b"\xff"[..], 1), (b"\x80\x80", 2), (b"x\xe6\x97", 3), (b"\xed\xa0\x80", 3), (b"\xf4\x90\x80\x80", 4), (b"\xc0\xaf", 2)] {
        let s = decode(input);
        assert_eq!(s.len(), n, "{input:?}");
        assert_eq!(s.last_byte(n - 1), input.len() - 1);
    }
}

#[test]
fn every_decoding_path_agrees() {
    let t = table();
    let texts = ["plain ascii, then: é, ж, 日本語, 🙂👍🏽, a\u{0301}, ٣٤٥ and more text", "x", "日", "🙂🙂🙂🙂🙂"];
    for text in texts {
        let bytes = text.as_bytes();
        let mut validating = Symbols::default();
        two_lanes(bytes, t, &mut validating, fast_step);
        let mut generic = Symbols::default();
        two_lanes(bytes, t, &mut generic, valid_step);
        let mut public = Symbols::default();
        decode_into(bytes, &mut public);
        assert_eq!(validating.cls, generic.cls, "{text}");
        assert_eq!(validating.last, generic.last, "{text}");
        if !bytes.is_ascii() {
            assert_eq!(validating.cls, public.cls, "{text}");
            assert_eq!(validating.last, public.last, "{text}");
        }
        assert_eq!(validating.cls.len(), text.chars().count());
    }
}

#[test]
fn incomplete_tails() {
    let euro = "€".as_bytes();
    let emoji = "🙂".as_bytes();
    for (input, tail) in [
        (&b""[..], 0),
        (b"ab", 0),
        (&euro[..1], 1),
        (&euro[..2], 2),
        (euro, 0),
        (&emoji[..3], 3),
        (b"a\xf0\x9f", 2),
        // Never completable: the invalid-byte rule holds.
        (b"a\xff", 0),
        (b"\x80\x80", 0),
        (b"\xe0\x80", 0),
        (b"\xed\xa0", 0),
        (b"\xf4\x90", 0),
        (b"\xf8", 0),
        // Three continuation bytes after a 3-byte lead: the lead is 4 back, so nothing pends.
        (b"\xe2\x82\xac\x80", 0),
        (b"\xc3", 1),
    ] {
        assert_eq!(incomplete_tail(input), tail, "{input:?}");
    }
}

// ---- Every decoder against `std::str::from_utf8` ---------------------------------------
//
// The reference walks the input with `from_utf8`: valid runs give one symbol per char;
// `Utf8Error::error_len() == Some(k)` gives k invalid bytes, one symbol each, classed
// OTHER; `error_len() == None` (the input ends inside a sequence that more bytes could
// complete) is the incomplete tail of SPEC section 2, which is not a symbol. The decoders
// themselves do not know where a document ends, so on the whole input they must treat that
// tail as invalid bytes; on the input without it (what the segmenter feeds them, after
// `incomplete_tail`) they must give exactly the reference's symbols.
//
// Classes: `char::is_whitespace` is the White_Space property, which is what `\s` of the
// `regex` package means (equal on every code point), so WHITE comes from std, SPACE and
// NEWLINE from their definitions. `char::is_alphabetic` / `is_numeric` are not `\p{L}` /
// `\p{N}` (Alphabetic includes marks and Nl; the Unicode versions differ), so LETTER,
// NUMBER and DIGIT come from a binary search of the generated ranges in `unicode_tables`,
// independent of the two-level `ClassTable` that the decoders read.

use crate::unicode_tables as ut;

/// One symbol of the reference decoding: its code point (None: a byte of an invalid
/// sequence), its class (`expected_class`) and the indices of its first and last bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ref {
    cp: Option<char>,
    cls: u8,
    first: usize,
    last: usize,
}

impl Ref {
    fn invalid(j: usize) -> Self {
        Ref { cp: None, cls: OTHER, first: j, last: j }
    }
}

/// `bytes` decoded by std: the symbols, and the length of the incomplete tail (not among
/// the symbols).
fn std_symbols(bytes: &[u8]) -> (Vec<Ref>, usize) {
    fn push_str(syms: &mut Vec<Ref>, s: &str, base: usize) {
        for (o, c) in s.char_indices() {
            syms.push(Ref { cp: Some(c), cls: expected_class(Some(c)), first: base + o, last: base + o + c.len_utf8() - 1 });
        }
    }
    let mut syms = Vec::new();
    let mut i = 0;
    loop {
        match std::str::from_utf8(&bytes[i..]) {
            Ok(s) => {
                push_str(&mut syms, s, i);
                return (syms, 0);
            }
            Err(e) => {
                let valid = std::str::from_utf8(&bytes[i..i + e.valid_up_to()]).expect("valid_up_to");
                push_str(&mut syms, valid, i);
                i += e.valid_up_to();
                match e.error_len() {
                    Some(k) => {
                        syms.extend((i..i + k).map(Ref::invalid));
                        i += k;
                    }
                    None => return (syms, bytes.len() - i),
                }
            }
        }
    }
}

fn in_ranges(ranges: &[(u32, u32)], cp: u32) -> bool {
    ranges
        .binary_search_by(|&(a, b)| {
            if b < cp {
                std::cmp::Ordering::Less
            } else if a > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// The class a symbol must get, from sources other than `ClassTable`.
fn expected_class(cp: Option<char>) -> u8 {
    let Some(c) = cp else { return OTHER };
    let u = c as u32;
    let mut cls = OTHER;
    for (ranges, bit) in [(ut::LETTER, LETTER), (ut::NUMBER, NUMBER), (ut::DIGIT, DIGIT)] {
        if in_ranges(ranges, u) {
            cls |= bit;
        }
    }
    if c.is_whitespace() {
        cls |= WHITE;
    }
    if c == ' ' {
        cls |= SPACE;
    }
    if c == '\n' || c == '\r' {
        cls |= NEWLINE;
    }
    cls
}

#[test]
fn class_oracle_is_sound() {
    for ranges in [ut::LETTER, ut::NUMBER, ut::DIGIT, ut::WHITE_SPACE] {
        let sorted = ranges.windows(2).all(|w| w[0].1 < w[1].0) && ranges.iter().all(|&(a, b)| a <= b);
        assert!(sorted, "binary search needs sorted, disjoint ranges");
    }
    // The std predicate used for WHITE is the table's `\s` on every code point.
    for c in (0..0x11_0000).filter_map(char::from_u32) {
        assert_eq!(c.is_whitespace(), in_ranges(ut::WHITE_SPACE, c as u32), "U+{:04X}", c as u32);
    }
}

/// Where the decoder must put its last-byte map.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum MapKind {
    /// `last` (u32), one entry per symbol.
    Narrow,
    /// `last_wide` (usize), one entry per symbol.
    Wide,
    /// `decode_into`: nothing for all-ASCII input (symbol = byte), else `last`.
    Public,
}

struct Decoder {
    name: &'static str,
    run: fn(&[u8], &mut Symbols),
    valid_only: bool,
    map: MapKind,
}

fn portable_checked(bytes: &[u8], out: &mut Symbols) {
    two_lanes(bytes, table(), out, fast_step)
}

fn portable_unchecked(bytes: &[u8], out: &mut Symbols) {
    two_lanes(bytes, table(), out, valid_step)
}

fn wide(bytes: &[u8], out: &mut Symbols) {
    decode_wide(bytes, table(), out)
}

#[cfg(target_arch = "x86_64")]
fn bmi2(bytes: &[u8], out: &mut Symbols) {
    assert!(std::is_x86_feature_detected!("bmi2"));
    // SAFETY: the CPU has BMI2 (asserted just above).
    unsafe { decode_valid_bmi2(bytes, table(), out) }
}

/// The BMI2 decoder, when this CPU can run it.
fn bmi2_decoder() -> Option<Decoder> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("bmi2") {
        return Some(Decoder { name: "decode_valid_bmi2", run: bmi2, valid_only: true, map: MapKind::Narrow });
    }
    None
}

/// First difference between a decoding and the reference, if any.
fn mismatch(got: &Symbols, want: &[Ref], map: MapKind, ascii: bool) -> Option<String> {
    let n = got.len();
    let (narrow, wide) = match map {
        MapKind::Narrow => (n, 0),
        MapKind::Wide => (0, n),
        MapKind::Public if ascii => (0, 0),
        MapKind::Public => (n, 0),
    };
    if (got.last.len(), got.last_wide.len()) != (narrow, wide) {
        return Some(format!(
            "map sizes: last {} last_wide {}, want {narrow} {wide} for {n} symbols",
            got.last.len(),
            got.last_wide.len()
        ));
    }
    for (k, r) in want.iter().enumerate().take(n) {
        let (cls, last) = (got.cls[k], got.last_byte(k));
        let want_cls = r.cls;
        if (cls, last) != (want_cls, r.last) {
            let what = r.cp.map_or("invalid byte".to_string(), |c| format!("U+{:04X} {c:?}", c as u32));
            return Some(format!(
                "symbol {k} ({what}, bytes {}..={}): class {cls:#04x} last byte {last}, std says class {want_cls:#04x} last byte {}",
                r.first, r.last, r.last
            ));
        }
    }
    (n != want.len()).then(|| format!("{n} symbols, std says {}", want.len()))
}

/// One input with its reference decoding; `want` covers the whole input (the incomplete
/// tail, if any, as invalid bytes), `want[..kept_syms]` the input without the tail.
struct Case {
    bytes: Vec<u8>,
    want: Vec<Ref>,
    kept: usize,
    kept_syms: usize,
}

/// Checks `d` on every case (with and without its incomplete tail) against std; panics
/// with the first difference, else returns the number of inputs it ran on and how many of
/// those come from a case that ends in an incomplete sequence (with or without it).
fn check_decoder(d: &Decoder) -> (usize, usize) {
    let mut reuse = Symbols::default();
    let (mut runs, mut with_tail) = (0, 0);
    for case in corpus() {
        let whole = (&case.bytes[..], &case.want[..]);
        let without_tail = (&case.bytes[..case.kept], &case.want[..case.kept_syms]);
        let inputs = if case.kept == case.bytes.len() { vec![whole] } else { vec![without_tail, whole] };
        for (input, want) in inputs {
            if d.valid_only && std::str::from_utf8(input).is_err() {
                continue;
            }
            let mut fresh = Symbols::default();
            // `decode_into` reuses the caller's buffers; the others expect empty ones.
            let out = if d.map == MapKind::Public { &mut reuse } else { &mut fresh };
            (d.run)(input, out);
            if let Some(why) = mismatch(out, want, d.map, input.is_ascii()) {
                let text = input.escape_ascii().to_string();
                panic!("{} disagrees with std::str::from_utf8 on {text:?} ({} bytes): {why}", d.name, input.len());
            }
            runs += 1;
            with_tail += usize::from(case.bytes.len() > case.kept);
        }
    }
    (runs, with_tail)
}

/// Hand-picked symbols and sequences: every class, 1-4 byte characters at the ends of
/// each length range, and each kind of invalid or truncated sequence.
fn edge_pieces() -> Vec<Vec<u8>> {
    let chars = [
        // ASCII: letters, digits, white space, newlines, other, controls (\x1c-\x1f are
        // not \s in the `regex` package).
        "a", "Z", "7", " ", "\n", "\r", "\t", "\x0b", "\x0c", ".", "\0", "\x1c", "\x1f", "\x7f",
        // 2 bytes: first and last, letters, numbers, digits, white space, marks, other.
        "\u{80}", "\u{7ff}", "é", "ж", "א", "²", "٣", "\u{85}", "\u{a0}", "\u{301}", "§",
        // 3 bytes: first, around the surrogates, last; CJK, Hangul, Thai, Devanagari digit,
        // Roman numeral (Nl), white space, BOM, replacement character, other.
        "\u{800}", "\u{d7ff}", "\u{e000}", "\u{fffd}", "\u{ffff}", "日", "한", "ๆ", "५", "Ⅻ", "\u{1680}",
        "\u{2028}", "\u{3000}", "\u{feff}", "€",
        // 4 bytes: first, last, emoji, mathematical letter and digit, CJK ext B, Gothic (Nl).
        "\u{10000}", "\u{10ffff}", "🙂", "𝐀", "𝟘", "𠀀", "𐍈",
    ];
    let mut pieces: Vec<Vec<u8>> = chars.iter().map(|c| c.as_bytes().to_vec()).collect();
    let invalid: &[&[u8]] = &[
        // Lone continuation bytes, and runs of them (no lane split point within 4 bytes).
        b"\x80", b"\xbf", b"\x80\x80\x80\x80\x80\x80\x80\x80",
        // Overlong 2, 3 and 4 byte forms.
        b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x9f\xbf", b"\xf0\x80\x80\x80", b"\xf0\x8f\xbf\xbf",
        // Surrogates encoded in UTF-8, and a CESU-8 pair.
        b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\xa0\xbd\xed\xb8\x82",
        // Above U+10FFFF, and leads that no sequence may start with.
        b"\xf4\x90\x80\x80", b"\xf7\xbf\xbf\xbf", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80",
        b"\xfe", b"\xff",
        // Truncated sequences followed by ASCII, by another lead, by a valid character.
        b"\xc3a", b"\xe2\x82a", b"\xf0\x9f\x99a", b"\xc3\xc3\xa9", b"\xe2\x82\xe2\x82\xac", b"\xf0\x9f\xf0\x9f\x99\x82",
        b"\xe0\xa0 ", b"\xf4\x8f\xbf.",
        // Too many continuation bytes.
        "é\u{80}".as_bytes(), b"\xc3\xa9\x80", b"\xe2\x82\xac\x80\x80",
        // Truncated: an incomplete tail when last (more bytes could complete it) ...
        b"\xc3", b"\xe2\x82", b"\xf0\x9f\x99", b"\xf0\x9f", b"\xe0\xa0", b"\xed\x9f", b"\xf4\x8f\xbf",
        // ... and prefixes that nothing completes (invalid bytes even when last).
        b"\xed\xa0", b"\xe0\x80", b"\xf4\x90",
    ];
    pieces.extend(invalid.iter().map(|b| b.to_vec()));
    pieces
}

/// Edge pieces alone, between fillers that shift them across the decoders' block
/// boundaries (the 4-byte window, the lane split at n/2 and the careful last bytes of each
/// lane), and in pairs.
fn edge_inputs() -> Vec<Vec<u8>> {
    let pieces = edge_pieces();
    let mut inputs = vec![Vec::new()];
    for p in &pieces {
        for filler in [&b"a"[..], "é".as_bytes(), "日".as_bytes(), b"\x80"] {
            for before in 0..10 {
                for after in 0..10 {
                    let mut v = filler.repeat(before);
                    v.extend_from_slice(p);
                    v.extend(filler.repeat(after));
                    inputs.push(v);
                }
            }
        }
        for q in &pieces {
            for pad in 0..4 {
                let mut v = b"x".repeat(pad);
                v.extend_from_slice(p);
                v.extend_from_slice(q);
                inputs.push(v);
            }
        }
    }
    inputs
}

/// xorshift64: deterministic, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn char_in(&mut self, lo: u32, hi: u32) -> char {
        loop {
            if let Some(c) = char::from_u32(lo + (self.next() % u64::from(hi - lo)) as u32) {
                return c;
            }
        }
    }
}

/// Random documents mixing ASCII, random 2-4 byte characters and edge pieces, and when
/// `invalid` also random bytes, continuation bytes and truncated characters.
fn random_inputs(seed: u64, count: usize, invalid: bool) -> Vec<Vec<u8>> {
    let mut rng = XorShift(seed);
    let pieces = edge_pieces();
    let valid_pieces: Vec<&Vec<u8>> = pieces.iter().filter(|p| std::str::from_utf8(p).is_ok()).collect();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let target = if rng.below(10) == 0 { rng.below(3000) } else { rng.below(80) };
        let mut doc = Vec::new();
        let mut buf = [0u8; 4];
        while doc.len() < target {
            match rng.below(if invalid { 10 } else { 6 }) {
                0 => doc.push(b"ab Z7\n\r\t.,!"[rng.below(11)]),
                1 => doc.push(rng.below(0x80) as u8),
                2 => doc.extend(rng.char_in(0x80, 0x800).encode_utf8(&mut buf).as_bytes()),
                3 => doc.extend(rng.char_in(0x800, 0x1_0000).encode_utf8(&mut buf).as_bytes()),
                4 => doc.extend(rng.char_in(0x1_0000, 0x11_0000).encode_utf8(&mut buf).as_bytes()),
                5 => doc.extend(valid_pieces[rng.below(valid_pieces.len())]),
                6 => doc.push(0x80 + rng.below(0x80) as u8),
                7 => doc.push(rng.below(256) as u8),
                8 => doc.extend(&pieces[rng.below(pieces.len())]),
                _ => {
                    let s = rng.char_in(0x80, 0x11_0000).encode_utf8(&mut buf).len();
                    let cut = 1 + rng.below(s - 1);
                    doc.extend(&buf[..cut]);
                }
            }
        }
        out.push(doc);
    }
    out
}

/// Every Unicode scalar value, in documents of 1500, each shifted by 0-3 ASCII bytes.
fn every_scalar_value() -> Vec<Vec<u8>> {
    let chars: Vec<char> = (0..0x11_0000).filter_map(char::from_u32).collect();
    let shifted = |(k, chunk): (usize, &[char])| "a".repeat(k % 4).chars().chain(chunk.iter().copied()).collect::<String>();
    chars.chunks(1500).enumerate().map(|kc| shifted(kc).into_bytes()).collect()
}

/// Edge cases, random documents (mixed valid and invalid, and valid only) and every scalar
/// value, each with its std decoding; built once for all the tests.
fn corpus() -> &'static [Case] {
    static CORPUS: std::sync::OnceLock<Vec<Case>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut inputs = edge_inputs();
        inputs.extend(random_inputs(0x9E37_79B9_7F4A_7C15, 4000, true));
        inputs.extend(random_inputs(0xD1B5_4A32_D192_ED03, 2000, false));
        inputs.extend(every_scalar_value());
        inputs
            .into_iter()
            .map(|bytes| {
                let (mut want, tail) = std_symbols(&bytes);
                let (kept, kept_syms) = (bytes.len() - tail, want.len());
                want.extend((kept..bytes.len()).map(Ref::invalid));
                Case { bytes, want, kept, kept_syms }
            })
            .collect()
    })
}

fn agrees_with_std(test: &str, d: Decoder) {
    let (runs, with_tail) = check_decoder(&d);
    assert!(runs > 10_000 && with_tail > 1000, "{} ran on only {runs} inputs, {with_tail} with a tail", d.name);
    println!("{test}: {} agrees with std on {runs} inputs ({with_tail} around an incomplete tail)", d.name);
}

#[test]
fn portable_checked_decoder_agrees_with_std() {
    let d = Decoder { name: "two_lanes(fast_step)", run: portable_checked, valid_only: false, map: MapKind::Narrow };
    agrees_with_std("portable_checked_decoder_agrees_with_std", d);
}

#[test]
fn portable_unchecked_decoder_agrees_with_std() {
    let d = Decoder { name: "two_lanes(valid_step)", run: portable_unchecked, valid_only: true, map: MapKind::Narrow };
    agrees_with_std("portable_unchecked_decoder_agrees_with_std", d);
}

#[test]
fn wide_decoder_agrees_with_std() {
    let d = Decoder { name: "decode_wide", run: wide, valid_only: false, map: MapKind::Wide };
    agrees_with_std("wide_decoder_agrees_with_std", d);
}

#[test]
fn bmi2_decoder_agrees_with_std() {
    match bmi2_decoder() {
        Some(d) => agrees_with_std("bmi2_decoder_agrees_with_std", d),
        None => println!("bmi2_decoder_agrees_with_std: SKIPPED decode_valid_bmi2: this CPU has no BMI2 (or is not x86_64)"),
    }
}

#[test]
fn public_decode_agrees_with_std() {
    let d = Decoder { name: "decode_into", run: decode_into, valid_only: false, map: MapKind::Public };
    agrees_with_std("public_decode_agrees_with_std", d);
    let path = if bmi2_decoder().is_some() { "decode_valid_bmi2" } else { "two_lanes(valid_step)" };
    println!("public_decode_agrees_with_std: on this CPU decode_into decodes valid UTF-8 with {path}");
}

/// The helpers that read one character, and the incomplete-tail rule, against std.
#[test]
fn utf8_len_and_incomplete_tail_agree_with_std() {
    for bytes in edge_inputs().iter().chain(&random_inputs(0x2545_F491_4F6C_DD1D, 4000, true)) {
        let (want, tail) = std_symbols(bytes);
        let text = bytes.escape_ascii().to_string();
        assert_eq!(incomplete_tail(bytes), tail, "incomplete_tail of {text:?}");
        if tail > 0 {
            assert_eq!(utf8_partial(&bytes[bytes.len() - tail..]), Partial::Incomplete, "{text:?}");
        }
        for r in &want {
            let len = utf8_len(&bytes[r.first..]);
            match r.cp {
                Some(c) => {
                    assert_eq!(len, Some(c.len_utf8()), "utf8_len at {} of {text:?}", r.first);
                    assert_eq!(decode_scalar(&bytes[r.first..=r.last]), c as u32, "decode_scalar at {} of {text:?}", r.first);
                }
                None => assert_eq!(len, None, "utf8_len at {} of {text:?}", r.first),
            }
        }
        for j in bytes.len() - tail..bytes.len() {
            assert_eq!(utf8_len(&bytes[j..]), None, "utf8_len in the tail of {text:?}");
        }
    }
}
