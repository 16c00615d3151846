//! Property-based fuzzing of the public core on arbitrary bytes: never a panic, one level per
//! byte, levels within the depth, batches equal single documents, and streams equal the last
//! level of every prefix. CI runs the default case count; set PROPTEST_CASES for longer runs.

use std::sync::Arc;

use proptest::prelude::*;
use rust_segmenter::{LevelStream, Segmenter, Strategy};

fn segmenters() -> Vec<Segmenter> {
    let keyed = |pairs: &[(&str, &str)]| Segmenter::from_keys(pairs).unwrap();
    vec![
        keyed(&[("word1", "1@1")]),
        keyed(&[("word1", "1@1"), ("word2", "2@1"), ("word4", "4@1")]),
        keyed(&[("word1", "1@2-3"), ("word2", "3@1")]),
        keyed(&[("pretok", "")]),
        keyed(&[("punct", ""), ("word", "2@1")]),
        Segmenter::new(vec![Strategy::custom(Some(r"(?<=\s)\w"), Some(r"\p{P}+")).unwrap()]).unwrap(),
    ]
}

/// Bytes biased towards the interesting ones: ASCII classes, UTF-8 leads and continuations.
fn doc() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::sample::select(b"ab 1\n\r\t.,!7xyz  ".to_vec()),
            2 => 0x80u8..=0xBF,
            2 => 0xC2u8..=0xF4,
            1 => any::<u8>(),
        ],
        0..120,
    )
}

proptest! {
    #[test]
    fn any_bytes_give_one_level_per_byte(data in doc()) {
        for seg in segmenters() {
            let levels = seg.levels(&data).unwrap();
            prop_assert_eq!(levels.len(), data.len());
            prop_assert!(levels.iter().all(|&l| l as usize <= seg.depth()));
        }
    }

    #[test]
    fn batches_equal_single_documents(docs in proptest::collection::vec(doc(), 0..12), threads in 1usize..5) {
        let refs: Vec<&[u8]> = docs.iter().map(|d| d.as_slice()).collect();
        for seg in segmenters() {
            let batch = seg.levels_many(&refs, threads).unwrap();
            let single: Vec<u8> = refs.iter().flat_map(|d| seg.levels(d).unwrap()).collect();
            prop_assert_eq!(batch, single);
        }
    }

    #[test]
    fn streams_equal_every_prefix(data in doc(), cut in 0usize..120) {
        for seg in segmenters() {
            let seg = Arc::new(seg);
            let mut stream = LevelStream::new(seg.clone());
            let cut = cut.min(data.len());
            let mut streamed = stream.push(&data[..cut]).unwrap();
            streamed.extend(stream.push(&data[cut..]).unwrap());
            for p in 0..data.len() {
                prop_assert_eq!(streamed[p], seg.levels(&data[..=p]).unwrap()[p], "byte {}", p);
            }
        }
    }
}
