"""AU-Net as a model of EleutherAI's lm-evaluation-harness (SPEC section 7).

    aunet lm-eval run --model aunet --model_args path=EXPORT_DIR --tasks hellaswag ...

or from Python, after `import aunet.inference.lm_eval_adapter` (which registers the name "aunet"):

    lm_eval.simple_evaluate(model="aunet", model_args="path=EXPORT_DIR", tasks=[...])
    lm_eval.simple_evaluate(model=AUNetLM(path=...), tasks=[...])

The stock `lm_eval` command cannot find the model by itself: the harness has no plug-in
discovery for models, only the `register_model` decorator, which runs when this module is
imported. `aunet lm-eval ...` imports it and then hands every argument to the harness's own
command line, so its options and subcommands are the harness's.

Choices the harness leaves to the model:
- Tokens are bytes: a request's context and continuation are UTF-8 encoded and scored byte by
  byte after a BOS, so `loglikelihood_rolling` sums over exactly the document's bytes and the
  harness's `bits_per_byte` is the model's bpb on that text.
- Levels follow generation by default (`levels=generate`, SPEC section 7): the context gets
  its full-document levels, as a prompt does, and each scored byte its causal level (its level
  in the mask of the prefix that ends at it, what the generator gives a byte it samples), so a
  score is the probability the generator would give the continuation, and never depends on a
  scored byte that comes after it. `levels=full` uses the whole window's mask, as training and
  `aunet eval` do.
- Text longer than `max_length` bytes (default: the training `data.seq_len`) is scored in
  windows of BOS + up to `max_length - 1` bytes: the first window is filled, later ones predict
  half a window each and keep the other half as context (see `plan_windows`).
- Requests are sorted by length and scored `batch_size` at a time in one forward pass, right
  padded (every stage is causal, so padding changes no earlier logit).
- `generate_until` uses the cached generator (greedy unless `do_sample`), `batch_size` requests
  with the same generation options at a time, as one batch; the output is cut before the
  first `until` string; `max_gen_toks` counts bytes. A prompt longer than `prompt_room` keeps
  its last bytes, with a warning.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from aunet.config.model import BOS_ID, EOS_ID
from aunet.inference.export import load_model
from aunet.inference.generate import Generator, decode_utf8
from aunet.inference.placement import pick_device, pick_dtype
from aunet.model.lengths import bucketed_length, stage_lengths
from aunet.segment.segmenter import Segmenter

DEFAULT_BATCH = 16
DEFAULT_GEN_BYTES = 256


def plan_windows(n: int, first: int, width: int) -> Iterator[tuple[int, int, int]]:
    """Windows (start, first_target, end) that score bytes [first, n) of an n-byte text exactly
    once, each window holding bytes [start, end) with end - start <= width. The first window
    is as full as possible; later ones predict width // 2 new bytes after width - width // 2
    bytes of context."""
    if width < 2:
        raise ValueError(f"window width must be at least 2 bytes, got {width}")
    stride = width // 2
    pos = first
    while pos < n:
        end = min(n, max(pos + stride, width))
        yield max(0, end - width), pos, end
        pos = end


@register_model("aunet")
class AUNetLM(LM):
    def __init__(
        self,
        path: str | None = None,
        model=None,
        config=None,
        batch_size: int | str = DEFAULT_BATCH,
        max_batch_size: int | None = None,
        max_length: int | None = None,
        levels: str = "generate",
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        """Either `path` (an `aunet export` directory) or an in-memory `model` and its `config`.
        `dtype` (float32, bfloat16, float16): by default the config's `eval.generator.dtype` on
        a GPU, float32 on a CPU."""
        super().__init__()
        if (path is None) == (model is None):
            raise ValueError("aunet lm-eval: give model_args path=EXPORT_DIR (or, from Python, model= and config=)")
        if path is not None:
            model, config = load_model(Path(path), device="cpu")
        if config.data.tokenizer.name != "bytes":
            raise ValueError(f"aunet lm-eval: byte-level models only; this one reads {config.data.tokenizer.name} tokens")
        if levels not in ("generate", "full"):
            raise ValueError(f"aunet lm-eval: levels must be 'generate' or 'full', got {levels!r}")
        self.device_ = pick_device(device, strict=False)
        try:
            chosen = pick_dtype(self.device_, config.eval.generator.dtype, dtype)
        except ValueError as e:
            raise ValueError(f"aunet lm-eval: {e}") from None
        self.model = model.to(self.device_, chosen).eval()
        self.config = config
        self.levels_mode = levels
        self.batch_size = int(batch_size) if not str(batch_size).startswith("auto") else DEFAULT_BATCH
        if max_batch_size is not None:
            self.batch_size = min(self.batch_size, int(max_batch_size))
        limit = self.model.args.max_seqlens[0]
        self.max_length = int(max_length) if max_length is not None else int(config.data.seq_len)
        if limit != -1:
            self.max_length = min(self.max_length, limit)
        if self.max_length < 2:
            raise ValueError(f"aunet lm-eval: max_length must be at least 2, got {self.max_length}")
        regex = config.data.regex
        self.strategy = regex.strategy if regex is not None and self.model.n_levels > 0 else None
        self.segmenter = None
        if self.strategy is not None:
            self.segmenter = Segmenter(self.strategy)

    @property
    def device(self):
        return self.device_

    # --- scoring -------------------------------------------------------------------------

    def window_levels(self, data: bytes, scored: int) -> list[int]:
        """Levels of [BOS] + data, whose last `scored` bytes are scored (BOS opens a segment at
        every stage)."""
        depth = self.model.n_levels
        if self.segmenter is None or depth == 0:
            return [depth] + [0] * len(data)
        if self.levels_mode == "full":
            return self.segmenter.levels(data, bos=True).tolist()
        context = data[: len(data) - scored]
        stream = self.segmenter.stream()
        stream.push(context)
        return self.segmenter.levels(context, bos=True).tolist() + stream.push(data[len(context):]).tolist()

    def score(self, texts: list[tuple[bytes, bytes]]) -> list[tuple[float, bool]]:
        """(sum of log-probabilities in nats, whether every byte was the argmax) of each
        continuation given its context."""
        width = self.max_length - 1  # bytes per window after BOS
        windows = []  # (request index, window bytes, number of scored bytes at its end)
        for i, (context, continuation) in enumerate(texts):
            data = context + continuation
            for start, first, end in plan_windows(len(data), len(context), width):
                windows.append((i, data[start:end], end - first))
        totals = [0.0] * len(texts)
        greedy = [True] * len(texts)
        order = sorted(range(len(windows)), key=lambda w: -len(windows[w][1]))
        for b in range(0, len(order), self.batch_size):
            chunk = [windows[w] for w in order[b:b + self.batch_size]]
            for (i, _, _), (logprob, is_greedy) in zip(chunk, self._score_batch([(d, k) for _, d, k in chunk])):
                totals[i] += logprob
                greedy[i] = greedy[i] and is_greedy
        return list(zip(totals, greedy))

    @torch.no_grad()
    def _score_batch(self, batch: list[tuple[bytes, int]]) -> list[tuple[float, bool]]:
        # Padded on the right to a bucket, and each stage run on what the batch needs: a bounded
        # set of shapes, so compiled code and FlexAttention masks are reused across batches.
        T = bucketed_length(1 + max(len(d) for d, _ in batch), self.model.args)
        tokens = torch.full((len(batch), T), EOS_ID, dtype=torch.long)
        levels = torch.zeros((len(batch), T), dtype=torch.long)
        for j, (data, k) in enumerate(batch):
            tokens[j, 0] = BOS_ID
            tokens[j, 1:1 + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8).long() if data else 0
            levels[j, :1 + len(data)] = torch.tensor(self.window_levels(data, k))
        lengths = stage_lengths(levels, self.model.args)
        logits, _ = self.model(tokens.to(self.device_), levels.to(self.device_), stage_lengths=lengths)
        logprobs = logits.float().log_softmax(-1).cpu()
        results = []
        for j, (data, k) in enumerate(batch):
            n = 1 + len(data)
            if k == 0:
                results.append((0.0, True))
                continue
            lp = logprobs[j, n - k - 1:n - 1]
            target = tokens[j, n - k:n]
            results.append((float(lp.gather(-1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all())))
        return results

    def _fit_prompt(self, prompt: bytes, max_bytes: int) -> bytes:
        room = prompt_room(self.max_length, max_bytes)
        if len(prompt) <= room:
            return prompt
        import warnings

        warnings.warn(f"aunet lm-eval: a {len(prompt)}-byte prompt keeps its last {room} bytes "
                      f"(max_length {self.max_length}, max_gen_toks {max_bytes})", stacklevel=3)
        return prompt[len(prompt) - room:]

    # --- the harness's interface ------------------------------------------------------------

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [(_utf8(r.args[0]), _utf8(r.args[1])) for r in requests]
        results = self.score(pairs)
        for r, res in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", r.args, res)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        results = [logprob for logprob, _ in self.score([(b"", _utf8(r.args[0])) for r in requests])]
        for r, res in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood_rolling", r.args, res)
        return results

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        generator = Generator(self.model, self.strategy)
        jobs = []  # (request index, prompt, options): options are hashable, to group requests
        for n, r in enumerate(requests):
            context, kwargs = r.args[0], dict(r.args[1] or {})
            until = kwargs.pop("until", None) or []
            until = (until,) if isinstance(until, str) else tuple(until)
            max_bytes = int(kwargs.pop("max_gen_toks", DEFAULT_GEN_BYTES))
            # As HF models do: sampling without a temperature samples at 1.0.
            temperature = float(kwargs.pop("temperature", 1.0)) if kwargs.pop("do_sample", False) else 0.0
            top_k = int(kwargs.pop("top_k", 0) or 0)
            top_p = float(kwargs.pop("top_p", 1.0) or 1.0)
            seed = int(kwargs.pop("seed", 0))
            prompt = self._fit_prompt(_utf8(context), max_bytes)
            jobs.append((n, prompt, (max_bytes, temperature, top_k, top_p, until, seed)))
        results: list[str] = [""] * len(jobs)
        # Requests with the same options run as one batch (longest first, so that a batch's
        # prompts have similar lengths); each sequence samples as it would alone.
        groups: dict[tuple, list[tuple[int, bytes]]] = {}
        for n, prompt, options in jobs:
            groups.setdefault(options, []).append((n, prompt))
        for options, members in groups.items():
            max_bytes, temperature, top_k, top_p, until, seed = options
            members.sort(key=lambda m: -len(m[1]))
            stops = [s.encode() for s in until if s]
            for b in range(0, len(members), self.batch_size):
                chunk = members[b:b + self.batch_size]
                outs = generator.generate([p for _, p in chunk], max_bytes, temperature, top_k, top_p, stops, seed)
                for (n, _), out in zip(chunk, outs):
                    text = decode_utf8(out)
                    cut = min((text.find(s) for s in until if s and s in text), default=len(text))
                    results[n] = text[:cut]
        for r, text in zip(requests, results):
            self.cache_hook.add_partial("generate_until", r.args, text)
        return results


def prompt_room(max_length: int, max_bytes: int) -> int:
    """Prompt bytes kept for generation: what leaves room for `max_bytes` new bytes inside
    `max_length` (BOS included), but never less than half of `max_length`, so that a large
    `max_gen_toks` (the harness's default is 256) cannot starve the prompt; generation may then
    run past `max_length` (the cached generator's windows allow it)."""
    return max(max_length - 1 - max_bytes, max_length // 2)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def main(argv: list[str] | None = None) -> int:
    """The harness's command line with the "aunet" model registered."""
    import sys

    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    sys.argv = ["aunet lm-eval", *(sys.argv[1:] if argv is None else argv)]
    setup_logging()
    parser = HarnessCLI()
    parser.execute(parser.parse_args())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
