"""Generated tokens/s of the transformers engine's shared-prefix path against plain ``model.generate``.

Run: ``PYTHONPATH=. python benchmarks/engine_cpu.py [--model smollm2-135m-instruct] [--repeats 3]``.
Three ways to sample ``n`` continuations, measured side by side in one run (same model object, prefix
length, max_new_tokens and sampling settings), each repeated and summarised by its median:

  (a) ``model.generate(num_return_sequences=n)`` from one prefix — prefills n copies of it;
  (b) the engine, one request with ``n`` samples on the same prefix — prefills it once;
  (c) ``model.generate`` of n distinct prefixes batched with left padding — the cost of n unrelated rollouts.

Goals: b/a >= 1.5 and b/c >= 0.8. Tokens counted are generated positions up to and including EOS.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from cluster.engine import GenRequest
from cluster.transformers_config import TransformersConfig
from cluster.transformers_engine import FINISH_EOS, TransformersEngine

FILLER = " ".join(f"Step {i}: {i} apples plus {3 * i} pears make {4 * i} fruits." for i in range(400))


def _prefix_text(engine: TransformersEngine, tokens: int, offset: int) -> str:
    """A text of about ``tokens`` tokens, cut from the filler at a different place for each offset."""
    ids = engine.tokenizer(FILLER, add_special_tokens=False)["input_ids"]
    return engine.tokenizer.decode(ids[offset * tokens : (offset + 1) * tokens])


def _hf_generate(engine: TransformersEngine, prompts: list[str], args: argparse.Namespace, copies: int) -> int:
    """Sample with ``model.generate``; returns the number of generated tokens (up to and including EOS)."""
    tok = engine.tokenizer
    tok.padding_side = "left"
    batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = engine.model.generate(
        **batch,
        do_sample=True,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.new_tokens,
        num_return_sequences=copies,
        pad_token_id=engine.pad_id,
    )
    new = out[:, batch["input_ids"].shape[1] :]
    is_eos = torch.isin(new, torch.tensor(sorted(engine.eos_ids)))
    first_eos = torch.where(is_eos.any(-1), is_eos.int().argmax(-1) + 1, new.shape[1])
    return int(first_eos.sum())


def _engine_generate(engine: TransformersEngine, prompt: str, args: argparse.Namespace, seed: int) -> int:
    request = GenRequest(
        request_key=f"bench{seed}",
        prompt=prompt,
        n=args.n,
        max_new_tokens=args.new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=seed,
    )
    [result] = engine.generate([request])
    return result.completion_tokens + sum(s.finish_reason == FINISH_EOS for s in result.samples)


def _timed(fn: Callable[[int], int], seed: int) -> tuple[float, int]:
    start = time.perf_counter()
    tokens = fn(seed)
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="registered name or local HF folder")
    parser.add_argument("--prefix-tokens", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64, help="max_new_tokens for every mode")
    parser.add_argument("--n", type=int, default=8, help="samples per prefix / distinct prefixes in (c)")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode; the median is reported")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy box)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = TransformersEngine(TransformersConfig(args.model, max_batch_size=args.n))
    shared = _prefix_text(engine, args.prefix_tokens, 0)
    distinct = [_prefix_text(engine, args.prefix_tokens, i + 1) for i in range(args.n)]
    modes: dict[str, Callable[[int], int]] = {
        "(a) generate, num_return_sequences": lambda seed: _hf_generate(engine, [shared], args, args.n),
        "(b) engine, shared prefix n samples": lambda seed: _engine_generate(engine, shared, args, seed),
        "(c) generate, distinct prompts batch": lambda seed: _hf_generate(engine, distinct, args, 1),
    }
    with torch.inference_mode():
        engine.generate([GenRequest("warmup", shared, max_new_tokens=2)])
        runs: dict[str, list[tuple[float, int]]] = {name: [] for name in modes}
        for seed in range(args.repeats):  # interleaved, so drifting machine load hits every mode alike
            torch.manual_seed(seed)
            for name, fn in modes.items():
                runs[name].append(_timed(fn, seed))
    rate = {name: statistics.median(tokens / secs for secs, tokens in r) for name, r in runs.items()}
    context = len(engine.encode(GenRequest("len", shared)))
    print(f"model={args.model} context={context} tokens, n={args.n}, new_tokens={args.new_tokens}, "
          f"threads={args.threads}, repeats={args.repeats}")
    print(f"{'mode':40s} {'median s':>9s} {'tokens':>7s} {'tok/s':>8s}")
    for name, r in runs.items():
        print(f"{name:40s} {statistics.median(s for s, _ in r):9.2f} "
              f"{statistics.median(t for _, t in r):7.0f} {rate[name]:8.1f}")
    a, b, c = rate.values()
    print(f"b/a = {b / a:.2f} (goal >= 1.5)   b/c = {b / c:.2f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
