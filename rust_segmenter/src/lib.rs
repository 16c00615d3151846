//! Level masks for the byte-level AU-Net language model (SPEC section 2).
//!
//! Design, once:
//! - Bytes are decoded into symbols (one per code point, or per byte of an invalid sequence),
//!   each reduced to one byte of class flags (letter, number, digit, white space, U+0020,
//!   newline). The classes come from tables generated from the Python `regex` package
//!   (`tools/gen_unicode_tables.py`), because the contract is that package's semantics and its
//!   Unicode version can differ from Rust's regex tables.
//! - The built-in patterns (`word`, `pretok`, `punct`) run as hand-written scanners over the
//!   class bytes: each pattern alternative becomes a branch of a linear scan (`scan.rs`, with
//!   the equivalence argued there and tested against the `regex` package). A regex engine would
//!   need lookahead (`pretok`, `punct`) and possessive quantifiers, i.e. a backtracking engine
//!   at tens of MB/s; the scanners run at hundreds.
//! - User-given patterns use the `regex` crate when they compile there (linear time) and
//!   `fancy-regex` only for lookaround, possessive quantifiers or backreferences (`custom.rs`).
//! - Batches run on threads scoped to the call: no pool outlives a call, so nothing breaks in a
//!   process forked afterwards (PyTorch DataLoader workers), and no global state needs
//!   `pthread_atfork`. Documents are handed out in byte-balanced chunks from a shared queue.
//! - Streaming uses causal versions of the scanners (`causal.rs`): O(1) state per strategy.
//! - The core never panics on input: every byte sequence, valid UTF-8 or not, gives one level
//!   per byte.

mod causal;
pub mod classes;
mod custom;
mod error;
pub mod jsonl;
mod scan;
mod segmenter;
mod strategy;
mod stream;
mod symbols;
#[allow(clippy::all)]
mod unicode_tables;

#[cfg(feature = "python")]
mod py;

pub use classes::class_of;
pub use error::{Result, SegmenterError};
pub use segmenter::Segmenter;
pub use strategy::{canonical_param, kind_of_key, kind_of_name, Strategy, KINDS, PRETOK_START, PUNCT_START, WORD_START};
pub use stream::LevelStream;
pub use symbols::{decode, Symbols};

/// Version of the core, reported to Python so that a stale build is easy to spot.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

