//! Character classes of the built-in patterns, one byte of flags per symbol.
//!
//! Every symbol is exactly one of: letter (`\p{L}`), number (`\p{N}`), white space (`\s`), or
//! other. `DIGIT` (`\d`) refines numbers; `SPACE` (U+0020) and `NEWLINE` (CR, LF) refine white
//! space. An invalid UTF-8 byte is "other", as U+FFFD would be.

use std::sync::OnceLock;

use crate::unicode_tables;

pub const LETTER: u8 = 1;
pub const NUMBER: u8 = 2;
pub const DIGIT: u8 = 4;
pub const WHITE: u8 = 8;
pub const SPACE: u8 = 16;
pub const NEWLINE: u8 = 32;
/// Class of an invalid byte and of every symbol that is none of the above.
pub const OTHER: u8 = 0;

#[inline(always)]
pub fn is_other(c: u8) -> bool {
    c & (LETTER | NUMBER | WHITE) == 0
}

/// Two-level lookup: 256-code-point blocks, deduplicated (about 120 distinct blocks).
pub struct ClassTable {
    pub ascii: [u8; 128],
    index: Vec<u16>,
    blocks: Vec<[u8; 256]>,
}

impl ClassTable {
    fn build() -> Self {
        let mut flat = vec![OTHER; 0x110000];
        let mut paint = |ranges: &[(u32, u32)], bits: u8| {
            for &(a, b) in ranges {
                for c in &mut flat[a as usize..=b as usize] {
                    *c |= bits;
                }
            }
        };
        paint(unicode_tables::LETTER, LETTER);
        paint(unicode_tables::NUMBER, NUMBER);
        paint(unicode_tables::DIGIT, DIGIT);
        paint(unicode_tables::WHITE_SPACE, WHITE);
        flat[0x20] |= SPACE;
        flat[0x0A] |= NEWLINE;
        flat[0x0D] |= NEWLINE;

        let mut ascii = [0u8; 128];
        ascii.copy_from_slice(&flat[..128]);
        let mut index = Vec::with_capacity(0x1100);
        let mut blocks: Vec<[u8; 256]> = Vec::new();
        let mut seen = std::collections::HashMap::new();
        for chunk in flat.chunks_exact(256) {
            let block: [u8; 256] = chunk.try_into().expect("256-byte chunk");
            let id = *seen.entry(block).or_insert_with(|| {
                blocks.push(block);
                blocks.len() - 1
            });
            index.push(id as u16);
        }
        Self { ascii, index, blocks }
    }

    #[inline(always)]
    pub fn of(&self, cp: u32) -> u8 {
        self.blocks[self.index[(cp >> 8) as usize] as usize][(cp & 0xFF) as usize]
    }
}

pub fn table() -> &'static ClassTable {
    static TABLE: OnceLock<ClassTable> = OnceLock::new();
    TABLE.get_or_init(ClassTable::build)
}

/// Class flags of one code point (for tests and the Python table check).
pub fn class_of(cp: u32) -> u8 {
    if cp >= 0x110000 {
        return OTHER;
    }
    table().of(cp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_classes() {
        assert_eq!(class_of('a' as u32), LETTER);
        assert_eq!(class_of('7' as u32), NUMBER | DIGIT);
        assert_eq!(class_of(' ' as u32), WHITE | SPACE);
        assert_eq!(class_of('\n' as u32), WHITE | NEWLINE);
        assert_eq!(class_of('\t' as u32), WHITE);
        assert_eq!(class_of('.' as u32), OTHER);
    }

    #[test]
    fn unicode_classes() {
        assert_eq!(class_of('ж' as u32), LETTER);
        assert_eq!(class_of('日' as u32), LETTER);
        assert_eq!(class_of('²' as u32), NUMBER);
        assert_eq!(class_of('٣' as u32), NUMBER | DIGIT);
        assert_eq!(class_of(0x3000), WHITE);
        assert_eq!(class_of(0x1F600), OTHER);
        // \x1c-\x1f are str.isspace() in Python but not \s in the regex package.
        assert_eq!(class_of(0x1C), OTHER);
    }
}
