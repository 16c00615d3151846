"""Documents into fixed windows of seq_len + 1 tokens (SPEC section 6).

The token stream of one source on one rank is the concatenation of [BOS] + bytes + [EOS] per
document, with levels [depth] + mask + [0] (for a tokenized source: its token ids, BOS and EOS). Window k is stream[k*S : k*S + S + 1]: consecutive
windows share one token, so input = window[:-1] and target = window[1:] skip no target.
The state is the list of drawn documents that the next window still needs, with the offset
into the first: small, and enough to rebuild the stream exactly.

Training packs an endless shuffled order (`DocOrder`); evaluation packs each rank's documents
once (`SequentialOrder`), and its last window is padded with zeros.
"""

from __future__ import annotations

import numpy as np

from aunet.data.doc_order import DocOrder, SequentialOrder


class Packer:
    def __init__(self, order: DocOrder | SequentialOrder, seq_len: int, add_bos: bool, add_eos: bool):
        self.order, self.seq_len, self.add_bos, self.add_eos = order, seq_len, add_bos, add_eos
        self.depth = order.source.depth
        self.bos, self.eos = order.source.bos_id, order.source.eos_id
        self.pending: list[tuple[int, int]] = []  # documents drawn and not yet fully emitted
        self.offset = 0  # tokens of pending[0] already behind the next window's start

    def _doc_len(self, ref: tuple[int, int]) -> int:
        return self.order.source.length(*ref) + int(self.add_bos) + int(self.add_eos)

    def _copy(self, ref: tuple[int, int], start: int, take: int, tokens: np.ndarray, levels: np.ndarray, at: int) -> None:
        """Tokens start..start+take of the document's [BOS] + bytes + [EOS] into tokens[at:]."""
        text, mask = self.order.source.document(*ref)
        head = int(self.add_bos)
        end = start + take
        if head and start == 0:
            tokens[at], levels[at] = self.bos, self.depth
            at, start = at + 1, 1
        lo, hi = start - head, min(end - head, len(text))
        if hi > lo:
            tokens[at : at + hi - lo] = text[lo:hi]
            levels[at : at + hi - lo] = mask[lo:hi]
            at += hi - lo
        if self.add_eos and end == len(text) + head + 1:
            tokens[at], levels[at] = self.eos, 0

    def next_window(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Tokens and levels of the next window (seq_len + 1 each), and how many of its targets
        are real: seq_len, fewer only in the padded last window of a finite order. Raises
        StopIteration once a finite order has no target left."""
        need = self.seq_len + 1
        tokens = np.empty(need, dtype=np.int64)
        levels = np.empty(need, dtype=np.uint8)
        have, i = 0, 0
        while have < need:
            if i == len(self.pending):
                try:
                    self.pending.append(self.order.next())
                except StopIteration:
                    return self._last_window(tokens, levels, have)
            start = self.offset if i == 0 else 0
            take = min(self._doc_len(self.pending[i]) - start, need - have)
            if take > 0:
                self._copy(self.pending[i], start, take, tokens, levels, have)
            have += take
            i += 1
        # Advance by seq_len: the window's last token opens the next one.
        advance = self.seq_len
        while True:
            length = self._doc_len(self.pending[0]) - self.offset
            if advance < length:
                self.offset += advance
                break
            advance -= length
            self.pending.pop(0)
            self.offset = 0
        return tokens, levels, self.seq_len

    def _last_window(self, tokens: np.ndarray, levels: np.ndarray, have: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The order ran out after `have` tokens: pad them into a last window, or stop when
        one token (already the previous window's last target) or none is left."""
        self.pending, self.offset = [], 0
        if have <= 1:
            raise StopIteration
        tokens[have:], levels[have:] = 0, 0
        return tokens, levels, have - 1

    def snapshot(self) -> tuple:
        return (list(self.pending), self.offset, self.order.snapshot())

    @staticmethod
    def as_state(snap: tuple) -> dict:
        pending, offset, order = snap
        return {"pending": [list(r) for r in pending], "offset": offset, "order": DocOrder.as_state(order)}

    def state_dict(self) -> dict:
        return self.as_state(self.snapshot())

    def load_state_dict(self, state: dict) -> None:
        self.pending = [tuple(r) for r in state["pending"]]
        self.offset = state["offset"]
        self.order.load_state_dict(state["order"])
