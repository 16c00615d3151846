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
    """Assembles each window from slices of the documents it spans with one concatenation:
    per document only a length look-up and two slices happen in Python."""

    def __init__(self, order: DocOrder | SequentialOrder, seq_len: int, add_bos: bool, add_eos: bool):
        self.order, self.seq_len, self.add_bos, self.add_eos = order, seq_len, add_bos, add_eos
        self.depth = order.source.depth
        self.bos, self.eos = order.source.bos_id, order.source.eos_id
        self.pending: list[tuple[int, int]] = []  # documents drawn and not yet fully emitted
        self.offset = 0  # tokens of pending[0] already behind the next window's start
        self._lengths: list[int] = []  # framed length of each pending document
        self._bos = (np.array([self.bos], dtype=np.int64), np.array([self.depth], dtype=np.uint8))
        self._eos = (np.array([self.eos], dtype=np.int64), np.array([0], dtype=np.uint8))
        share = getattr(order, "share", None)  # an endless order: its rank's documents per epoch
        self._share_documents = share.end - share.start if share is not None else float("inf")

    def _doc_len(self, ref: tuple[int, int]) -> int:
        return self.order.source.length(*ref) + int(self.add_bos) + int(self.add_eos)

    def next_window(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Tokens and levels of the next window (seq_len + 1 each), and how many of its targets
        are real: seq_len, fewer only in the padded last window of a finite order. Raises
        StopIteration once a finite order has no target left."""
        need = self.seq_len + 1
        head, source = int(self.add_bos), self.order.source
        pending, lengths = self.pending, self._lengths
        toks: list[np.ndarray] = []
        levs: list[np.ndarray] = []
        have, i, empty = 0, 0, 0
        while have < need:
            if i == len(pending):
                try:
                    ref = self.order.next()
                except StopIteration:
                    return self._last_window(toks, levs, have)
                pending.append(ref)
                lengths.append(self._doc_len(ref))
                empty = empty + 1 if lengths[-1] == 0 else 0
                if empty > self._share_documents:
                    # A whole epoch of this rank's documents gave no token (empty documents,
                    # BOS and EOS off): no window can ever fill.
                    raise ValueError(f"data source {source.directory}: every document of rank {self.order.rank}'s share "
                                     f"({self._share_documents} documents) is empty and BOS/EOS are off: no tokens to train on")
            start = self.offset if i == 0 else 0
            take = min(lengths[i] - start, need - have)
            if take > 0:
                # Tokens start..end of the document's [BOS] + bytes + [EOS].
                end = start + take
                if head and start == 0:
                    toks.append(self._bos[0])
                    levs.append(self._bos[1])
                text, mask = source.document(*pending[i])
                lo, hi = max(start - head, 0), min(end - head, len(text))
                if hi > lo:
                    toks.append(text[lo:hi])
                    levs.append(mask[lo:hi])
                if self.add_eos and end == lengths[i]:
                    toks.append(self._eos[0])
                    levs.append(self._eos[1])
            have += take
            i += 1
        tokens, levels = self._join(toks, levs, need)
        # Advance by seq_len: the window's last token opens the next one.
        advance, offset, done = self.seq_len, self.offset, 0
        while True:
            length = lengths[done] - offset
            if advance < length:
                offset += advance
                break
            advance -= length
            done += 1
            offset = 0
        del pending[:done], lengths[:done]
        self.offset = offset
        return tokens, levels, self.seq_len

    @staticmethod
    def _join(toks: list[np.ndarray], levs: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
        tokens = np.zeros(size, dtype=np.int64)
        levels = np.zeros(size, dtype=np.uint8)
        if toks:
            n = sum(len(t) for t in toks)
            np.concatenate(toks, out=tokens[:n], casting="unsafe")
            np.concatenate(levs, out=levels[:n], casting="unsafe")
        return tokens, levels

    def _last_window(self, toks: list[np.ndarray], levs: list[np.ndarray], have: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The order ran out after `have` tokens: pad them into a last window, or stop when
        one token (already the previous window's last target) or none is left."""
        self.pending, self._lengths, self.offset = [], [], 0
        if have <= 1:
            raise StopIteration
        tokens, levels = self._join(toks, levs, self.seq_len + 1)
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
        self._lengths = [self._doc_len(r) for r in self.pending]
        self.offset = state["offset"]
        self.order.load_state_dict(state["order"])
