"""Comparing greedy bytes made by two computations that round differently (another batch shape,
padding, process or library): each may legitimately break a near tie of the top two logits its
own way, and from there on the continuations differ. So the bytes must be equal wherever the
reference's winning byte leads by more than TIE, and may part only at a near tie."""

from __future__ import annotations

# The two sides' logits differ by at most about 1e-5 (what the logit comparisons in
# test_hf.py allow): a byte that leads by more than twice that wins on both. 1e-4 leaves room.
TIE = 1e-4


def greedy_margins(gen, prompt: bytes, out: bytes) -> list[float]:
    """At each step of `out`, a continuation of `prompt` recomputed with `gen` (an aunet
    Generator, the prompt alone): how far the chosen byte's logit leads the best other byte's
    (negative where another byte leads)."""
    logits = gen.prefill([prompt])
    margins = []
    for i, byte in enumerate(out):
        row = logits[0, :256].float().clone()  # only bytes are candidates (BOS/EOS never are)
        chosen = float(row[byte])
        row[byte] = float("-inf")
        margins.append(chosen - float(row.max()))
        if i + 1 < len(out):
            logits = gen.step([byte])
    return margins


def agreed_length(gen, prompt: bytes, want: bytes) -> int:
    """How many leading bytes of `want` any faithful greedy computation must reproduce: all of
    them, unless a step wins by at most TIE (then the bytes before that step)."""
    for i, margin in enumerate(greedy_margins(gen, prompt, want)):
        assert margin >= -TIE, f"byte {i} of {want!r} is not greedy: another byte leads it by {-margin}"
        if margin <= TIE:
            return i
    return len(want)


def assert_same_greedy(got: bytes, want: bytes, gen, prompt: bytes) -> None:
    """`got` equals `want` (the greedy continuation of `prompt` under `gen`) byte for byte, up
    to the first near tie of `want`'s path if it has one."""
    n = agreed_length(gen, prompt, want)
    if n == len(want):
        assert got == want
    else:
        assert got[:n] == want[:n], (n, got, want)
