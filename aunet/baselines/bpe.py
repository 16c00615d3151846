"""The BPE baseline's tokenizer: byte-level BPE trained with HuggingFace `tokenizers`.

Byte-level BPE (the GPT-2 family's scheme) starts from all 256 bytes, so every text is
representable and no byte is lost; merges are learned on the training split only. Ids 0 and 1
are the special tokens `<bos>` and `<eos>`. Each token's length in bytes is what bits per byte
needs (SPEC section 4: BPE bpb = total nats / total bytes / ln 2).

The text is decoded from UTF-8 before tokenization; an invalid byte becomes U+FFFD (three
bytes), so on corpora with invalid UTF-8 the byte count differs slightly from the raw file's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BOS_TOKEN, EOS_TOKEN = "<bos>", "<eos>"


def train_bpe(texts: Iterable[str], vocab_size: int, out: str | Path) -> Path:
    """Learn a byte-level BPE of `vocab_size` ids (specials included) and save it as JSON."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 258:
        raise ValueError(f"BPE vocab_size must be at least 258 (256 bytes + 2 specials), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS_TOKEN, EOS_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out))
    return out


@dataclass
class BPE:
    tokenizer: object
    bos_id: int
    eos_id: int
    token_bytes: np.ndarray
    """Bytes of text each id stands for (0 for the specials)."""

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes)

    def encode_batch(self, docs: list[bytes]) -> list[np.ndarray]:
        texts = [d.decode("utf-8", "replace") for d in docs]
        return [np.asarray(e.ids, dtype=np.int64) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]


def load_bpe(path: str | Path) -> BPE:
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.tokenizer.path: {path}: no such tokenizer file")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the library raises a bare Exception for malformed JSON
        raise ValueError(f"data.tokenizer.path: {path}: not a tokenizers JSON file: {e}") from None
    bos, eos = tok.token_to_id(BOS_TOKEN), tok.token_to_id(EOS_TOKEN)
    if bos is None or eos is None:
        raise ValueError(f"data.tokenizer.path: {path}: needs the special tokens {BOS_TOKEN} and {EOS_TOKEN}")
    vocab = tok.get_vocab(with_added_tokens=True)
    lengths = np.zeros(max(vocab.values()) + 1, dtype=np.int32)
    for token, i in vocab.items():
        # Byte-level tokens spell one character per byte.
        lengths[i] = 0 if i in (bos, eos) else len(token)
    return BPE(tok, bos, eos, lengths)
