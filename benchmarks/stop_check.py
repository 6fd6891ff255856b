"""Stop-string checking per generated token: decoding the whole sample each time vs ``cluster.requests``.

The transformers engine used to decode all of a sample's tokens after every token to look for a stop string
(cost grows with the sample's length, quadratic over a sample); now ``TextStream`` decodes only the newest
token(s) and ``StopChecker`` searches only where a stop string can newly end. Both are run side by side on
the same token stream (a real tokenizer's ids of a long solution without the stop string, so every token is
checked) and must find the same stop string.

    PYTHONPATH=. python -m benchmarks.stop_check [--model smollm2-135m-instruct] [--tokens 512 1024]
"""

from __future__ import annotations

import argparse
import time

from transformers import AutoTokenizer

from cluster.models import resolve_model
from cluster.requests import StopChecker, TextStream, first_stop_end

STOP = ("\n\n",)
STEP = "So 48 / 2 = 24 apples, and then 24 + 7 = 31 pears remain in the basket. "  # no stop string inside


def _full_decode(tok, ids: list[int]) -> int | None:
    """The old check: decode every token so far, search the whole text."""
    for k in range(1, len(ids) + 1):
        if (end := first_stop_end(tok.decode(ids[:k]), STOP)) is not None:
            return end
    return None


def _incremental(tok, ids: list[int]) -> int | None:
    stream, checker = TextStream(tok), StopChecker(STOP)
    for token in ids:
        if (end := checker.feed(stream.push(token))) is not None:
            return end
    return None


def _time(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 512, 1024])
    args = parser.parse_args()
    tok = AutoTokenizer.from_pretrained(resolve_model(args.model))
    print(f"{'tokens':>7} {'full decode ms':>15} {'incremental ms':>15} {'ratio':>7}")
    for n in args.tokens:
        ids = tok(STEP * (n // 10), add_special_tokens=False)["input_ids"][: n - 1]
        ids += tok("\n\n", add_special_tokens=False)["input_ids"]  # the stop string arrives last
        full_s, full_end = _time(_full_decode, tok, ids)
        inc_s, inc_end = _time(_incremental, tok, ids)
        assert full_end == inc_end is not None, (full_end, inc_end)
        print(f"{len(ids):>7} {full_s * 1e3:>15.1f} {inc_s * 1e3:>15.1f} {full_s / inc_s:>6.1f}x")


if __name__ == "__main__":
    main()
