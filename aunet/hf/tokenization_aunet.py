"""`AUNetTokenizer`: the byte-level tokenizer of SPEC section 1 for HuggingFace transformers.

Ids 0-255 are the bytes of the text's UTF-8 encoding, 256 is BOS, 257 is EOS (also used for
padding: the vocabulary has no other id; the attention mask marks padding). Encoding adds BOS
in front (as training documents begin) and no EOS unless ``add_eos_token``.

Text is always bytes: a literal "<|bos|>" in the input is encoded as its 7 bytes, never as the
special id (``split_special_tokens`` defaults to True), so no input can forge a document
boundary. Decoding is UTF-8 with ``errors="replace"``: any id sequence decodes, invalid bytes
become U+FFFD, ids outside the vocabulary too. A str holding lone surrogates encodes with
``surrogatepass``, as `aunet generate` encodes its prompts.

Copied into every exported directory; needs transformers only, not aunet.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizer

BOS_ID = 256
EOS_ID = 257
BOS_TEXT = "<|bos|>"
EOS_TEXT = "<|eos|>"


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte-level alphabet: a printable character for every byte (what the Rust
    ByteLevel decoder maps back to bytes)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), ord("\xff") + 1)]
    chars = {b: chr(b) for b in printable}
    extra = 256
    for b in range(256):
        if b not in chars:
            chars[b] = chr(extra)
            extra += 1
    return chars


class AUNetTokenizer(PreTrainedTokenizer):
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, bos_token=BOS_TEXT, eos_token=EOS_TEXT, pad_token=EOS_TEXT, add_bos_token=True,
                 add_eos_token=False, split_special_tokens=True, padding_side="left", **kwargs):
        super().__init__(bos_token=bos_token, eos_token=eos_token, pad_token=pad_token, add_bos_token=add_bos_token,
                         add_eos_token=add_eos_token, split_special_tokens=split_special_tokens,
                         padding_side=padding_side, **kwargs)
        self.add_bos_token, self.add_eos_token = add_bos_token, add_eos_token

    @property
    def vocab_size(self) -> int:
        return 258

    @property
    def _tokenizer(self):
        """The same ids as a Rust `tokenizers.Tokenizer` (bytes in GPT-2's byte-level alphabet,
        no merges, BOS and EOS special), for code that decodes through one: `transformers
        serve` streams with its `DecodeStream`. Encoding and decoding here stay this class's."""
        if getattr(self, "_rust", None) is None:
            from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

            alphabet = _byte_alphabet()
            rust = Tokenizer(models.BPE(vocab={alphabet[b]: b for b in range(256)}, merges=[]))
            rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
            rust.decoder = decoders.ByteLevel()
            rust.add_special_tokens([AddedToken(BOS_TEXT, special=True), AddedToken(EOS_TEXT, special=True)])
            self._rust = rust
        return self._rust

    def get_vocab(self) -> dict[str, int]:
        vocab = {chr(i): i for i in range(256)}
        vocab.update({BOS_TEXT: BOS_ID, EOS_TEXT: EOS_ID})
        return vocab

    # Tokens are one-character strings chr(byte), the usual byte-level convention (ByT5).
    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return [chr(b) for b in text.encode("utf-8", "surrogatepass")]

    def _convert_token_to_id(self, token: str) -> int:
        if token == BOS_TEXT:
            return BOS_ID
        if token == EOS_TEXT:
            return EOS_ID
        if len(token) == 1 and ord(token) < 256:
            return ord(token)
        raise ValueError(f"{token!r} is not a byte token (one character below U+0100) nor a special token")

    def _convert_id_to_token(self, index: int) -> str:
        if index == BOS_ID:
            return BOS_TEXT
        if index == EOS_ID:
            return EOS_TEXT
        return chr(index) if 0 <= index < 256 else "\ufffd"

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self._text(self.convert_tokens_to_ids(tokens), skip_special_tokens=False)

    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None, **kwargs) -> str:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        return self._text([int(i) for i in token_ids], skip_special_tokens)

    def _text(self, ids: list[int], skip_special_tokens: bool) -> str:
        """Runs of byte ids decode together (a character may span several ids); specials are
        written as their text unless skipped; an id outside the vocabulary is U+FFFD."""
        parts, run = [], bytearray()
        for i in ids:
            if 0 <= i < 256:
                run.append(i)
                continue
            parts.append(run.decode("utf-8", errors="replace"))
            run = bytearray()
            if i in (BOS_ID, EOS_ID):
                if not skip_special_tokens:
                    parts.append(BOS_TEXT if i == BOS_ID else EOS_TEXT)
            else:
                parts.append("\ufffd")
        parts.append(run.decode("utf-8", errors="replace"))
        return "".join(parts)

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None) -> list[int]:
        def one(ids: list[int]) -> list[int]:
            return ([BOS_ID] if self.add_bos_token else []) + list(ids) + ([EOS_ID] if self.add_eos_token else [])

        return one(token_ids_0) + ([] if token_ids_1 is None else one(token_ids_1))

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens: bool = False) -> list[int]:
        if already_has_special_tokens:
            return [int(i >= 256) for i in token_ids_0 + (token_ids_1 or [])]

        def one(ids):
            return [1] * self.add_bos_token + [0] * len(ids) + [1] * self.add_eos_token

        return one(token_ids_0) + ([] if token_ids_1 is None else one(token_ids_1))

    def create_token_type_ids_from_sequences(self, token_ids_0, token_ids_1=None) -> list[int]:
        return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()  # the vocabulary is fixed: nothing to write
