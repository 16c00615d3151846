//! Level masks for the byte-level AU-Net language model.
//!
//! The crate has two layers:
//! - the pure core (this file and the modules it declares), plain Rust with plain errors, tested
//!   by `cargo test` without a Python interpreter;
//! - `py`, the PyO3 skin compiled only with the `python` feature; maturin builds it into the
//!   private module `aunet._segmenter`, and the Python package `aunet` owns the public API.

#[cfg(feature = "python")]
mod py;

/// Version of the core, reported to Python so that a stale build is easy to spot.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Number of UTF-8 code points in `bytes`, counting every byte of an invalid or truncated
/// sequence as one symbol of its own (the rule of SPEC section 2).
pub fn count_symbols(bytes: &[u8]) -> usize {
    let mut count = 0;
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                count += valid.chars().count();
                break;
            }
            Err(err) => {
                let good = err.valid_up_to();
                count += std::str::from_utf8(&rest[..good]).map_or(0, |s| s.chars().count());
                let bad = err.error_len().unwrap_or(rest.len() - good);
                count += bad;
                rest = &rest[good + bad..];
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_valid_text_by_code_point() {
        assert_eq!(count_symbols("héllo".as_bytes()), 5);
        assert_eq!(count_symbols("日本".as_bytes()), 2);
        assert_eq!(count_symbols(b""), 0);
    }

    #[test]
    fn counts_each_invalid_byte_once() {
        // 0xff is never valid; a lone continuation byte and a truncated 3-byte lead count 1 per byte.
        assert_eq!(count_symbols(b"a\xffb"), 3);
        assert_eq!(count_symbols(b"\x80\x80"), 2);
        assert_eq!(count_symbols(b"x\xe6\x97"), 3);
    }
}
