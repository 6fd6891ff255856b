"""``sim``: a synthetic policy over arith problems that writes real step text and knows the exact truth.

It reads the arith question back out of the prompt, then writes one step per operation
("She gives half of 48 to her brother: 48 / 2 = 24.") and a final "The answer is 31.". At each step it may
slip: an arithmetic error (a wrong result), a logic error (wrong operation or operand, arithmetic right), and
once off track it computes on from its own wrong value, sometimes landing back on the true value by a
compensating slip ("recovery": the false-positive case for Monte Carlo labels). Each problem has a latent
skill drawn from its question text, so MC values vary between problems. ``cluster.problems.arith.first_error`` gives
the exact first wrong step of anything it writes.

It continues from any prefix: it parses the values already written and goes on from the last one (right or
wrong), so rollouts from a wrong step inherit the error. Sampling is a pure function of the request and the
config's seed: step ``j`` of sample ``i`` draws from ``seed + i``, the prompt and the text of steps before it,
so continuing a prefix with the same seed reproduces what one call would have written. Tokens are
whitespace-separated words, ids are word hashes; there is no cache, so ``cached_tokens`` is 0.

Example::

    >>> from cluster.problems.arith import generate
    >>> eng = SimEngine(SimConfig())
    >>> prompt = eng.apply_chat_template([{"role": "user", "content": generate(1, 0)[0].question}])
    >>> out = eng.generate([GenRequest("k", prompt, n=2, seed=7)])[0]
    >>> [s.finish_reason for s in out.samples]
    ['eos', 'eos']
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from cluster import sim_code
from cluster.engine import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, GenRequest, GenResult, Sample
from cluster.problems.arith import OPS, ArithSpec, format_answer, format_step, parse_question, parse_step
from cluster.problems.steps import step_texts
from cluster.requests import StopChecker, make_result

ARITH_SLIPS = (-10, -2, -1, 1, 2, 10)  # how far a wrong result lands from the computed one
OPERAND_SLIPS = (-2, -1, 1, 2)  # how far a logic error moves the operand
WRONG_OP = {"+": "-", "-": "+", "*": "+", "/": "-"}  # the operation a logic error uses instead
STEP_OPENERS = ("", "So ", "Now ", "Next, ")  # surface variety: equal steps are not always equal text
STEP_LINKS = (": ", ", so ", ", which gives ")
WRONG_OP_SHARE = 0.5  # of logic errors, the share that swap the operation (the rest change the operand)
CANNOT_PARSE_STEPS = (  # the first step for a non-arith prompt; the answer "0" follows
    "I cannot parse this problem.", "I can't read this as a problem I know.",
    "This is not a problem I can solve.", "I do not understand the question.",
)
_QUESTION_RE = re.compile(r"[A-Z][a-z]+ has \d+ \w+\..*?have now\?", re.S)
_WORD_RE = re.compile(r"\S+")


@dataclass(frozen=True)
class SimConfig:
    """Error rates are per step, for a problem of average skill; unknown keys fail at construction."""

    arith_error_rate: float = 0.05  # P(a step writes a wrong result for its own equation)
    logic_error_rate: float = 0.05  # P(a step uses a wrong operation or operand, computed correctly)
    recovery_rate: float = 0.2  # P(a step, once off track, lands back on the true value by a compensating slip)
    code_rate: float = 0.0  # P(an operation step computes in a ```python block; see cluster/sim_code.py)
    code_error_rate: float = 0.1  # of code steps: P(the code crashes)
    misstate_rate: float = 0.1  # of code steps that ran: P(the step states another value than the output)
    skill_spread: float = 1.0  # per-problem rates are 1-(1-r)^f, f = exp(spread * U(-1, 1)); 0 = same for all
    seed: int = 0  # mixed into every sample: engines with different seeds are different policies
    force_error_at: int = -1  # step index that always gets an arithmetic error (planting errors in tests)
    delimiter: str = "\n\n"  # between steps
    vocab_size: int = 49_152  # token ids are word hashes modulo this
    latency_s: float = 0.0  # sleep per generate call, to simulate a slow engine
    latency_per_request_s: float = 0.0  # extra sleep per request in a call
    # calls overlap as on an engine with continuous batching (vLLM): each call waits its own latency
    # concurrently with the others (``ContinuousSimEngine``), instead of merged calls sleeping one batch at a time
    continuous: bool = False
    engine_id: str = "sim"

    def __post_init__(self) -> None:
        for name in ("arith_error_rate", "logic_error_rate", "recovery_rate", "code_rate", "code_error_rate",
                     "misstate_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.skill_spread < 0 or self.latency_s < 0 or self.latency_per_request_s < 0:
            raise ValueError("skill_spread and latencies must be >= 0")
        if not self.delimiter or self.vocab_size < 1:
            raise ValueError("delimiter must be non-empty and vocab_size >= 1")


@dataclass(frozen=True)
class _Problem:
    """What the sim knows about one prompt: the spec (None if not arith), its error rates, its hash."""

    spec: ArithSpec | None
    chain: tuple[int, ...]  # true values; (0, 0) for a prompt it cannot parse (one step, then "0")
    arith_rate: float
    logic_rate: float
    base_hash: int  # of engine seed + prompt; chained with each step's text to seed the next step


@dataclass(frozen=True)
class _Resume:
    """Where a prefix leaves off: the next step index, the hash of the steps so far, the value written last,
    and the text of a step the prefix ends inside ("" if it ends on a delimiter)."""

    step: int
    hash: int
    value: int
    partial: str


class SimEngine:
    """The ``Engine`` protocol over arith problems; deterministic given each request."""

    def __init__(self, config: SimConfig | None = None):
        self.config = config or SimConfig()
        self._read = lru_cache(maxsize=4096)(self._read_prompt)

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        """A fixed plain format: ``<|role|>\\ncontent\\n`` per message, ending where the assistant starts."""
        return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages) + "<|assistant|>\n"

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        delay = self._delay(requests)
        if delay:
            time.sleep(delay)
        return [self._one(req) for req in requests]

    def _delay(self, requests: list[GenRequest]) -> float:
        return self.config.latency_s + self.config.latency_per_request_s * len(requests)

    def _one(self, req: GenRequest) -> GenResult:
        problem = self._read(req.prompt)
        resume = self._resume(req.prefix, problem)  # parsed once, shared by the n samples
        # greedy decoding (temperature 0) makes every sample the same
        samples = [self._sample(req, problem, resume, req.seed if req.temperature == 0 else req.seed + i)
                   for i in range(req.n)]
        return make_result(req, samples, _n_words(req.prompt) + _n_words(req.prefix),
                           engine_id=self.config.engine_id)

    def _read_prompt(self, prompt: str) -> _Problem:
        """The last arith question in the prompt (few-shot examples come before it) and its skill."""
        cfg = self.config
        base_hash = zlib.crc32(f"{cfg.seed}\x1f{prompt}".encode())
        matches = _QUESTION_RE.findall(prompt)
        spec = parse_question(matches[-1]) if matches else None
        if spec is None:
            return _Problem(None, (0, 0), 0.0, 0.0, base_hash)
        u = zlib.crc32(spec.question.encode()) / 2**32  # the latent skill, fixed per question
        f = math.exp(cfg.skill_spread * (2 * u - 1))
        return _Problem(spec, tuple(spec.chain), 1 - (1 - cfg.arith_error_rate) ** f,
                        1 - (1 - cfg.logic_error_rate) ** f, base_hash)

    def _sample(self, req: GenRequest, problem: _Problem, resume: _Resume | None, seed: int) -> Sample:
        """Write steps until the answer, a stop string or the token limit; keep the stop text."""
        stops = StopChecker(req.stop)
        used, finish = 0, FINISH_EOS
        for chunk in self._chunks(resume, problem, seed) if resume else ():
            words = _n_words(chunk)
            if used + words > req.max_new_tokens:
                chunk, finish = _first_words(chunk, req.max_new_tokens - used), FINISH_LENGTH
            used += words
            end = stops.feed(chunk)
            if end is not None:
                stops.text, finish = stops.text[:end], FINISH_STOP
            if finish != FINISH_EOS:
                break
        out = stops.text
        vocab = self.config.vocab_size
        return Sample(out, [zlib.crc32(w.encode()) % vocab for w in out.split()], finish)

    def _resume(self, prefix: str, problem: _Problem) -> _Resume | None:
        """Where a prefix leaves off; None when it already holds a whole solution."""
        delim = self.config.delimiter
        tail = prefix.rsplit(delim, 1)[-1]
        partial = tail if tail.strip() else ""
        done = step_texts(prefix[:len(prefix) - len(partial)], delim)
        h, value = problem.base_hash, problem.chain[0]
        for step in done:
            parsed = parse_step(step)
            if isinstance(parsed, int):
                return None  # the prefix already gave its answer
            if parsed is not None:
                value = parsed[3]
            h = zlib.crc32(step.encode(), h)
        return _Resume(len(done), h, value, partial) if len(done) < len(problem.chain) else None

    def _chunks(self, resume: _Resume, problem: _Problem, seed: int) -> Iterator[str]:
        """The continuation as text pieces (steps with their delimiters), lazily so a stop ends it early.

        Step ``j`` is drawn from ``seed`` and the text of steps ``0..j-1``, so continuing a prefix gives the
        same text as generating in one go; a prefix ending inside a step is finished as that step would be
        (or, if the sim would not have written it, closed with a delimiter and continued from its value).
        """
        delim = self.config.delimiter
        h, value, partial = resume.hash, resume.value, resume.partial
        last = len(problem.chain) - 1  # the answer step: one step per operation before it
        for j in range(resume.step, last + 1):
            step, new_value = self._write(problem, j, value, random.Random((seed << 32) ^ h))
            piece = step + (delim if j < last else "")
            if partial and j < last and sim_code.awaits_statement(partial):  # its code ran: state the output
                rng = random.Random((seed << 32) ^ zlib.crc32(partial.encode(), h))
                said, new_value = sim_code.state(
                    partial, problem.chain[j + 1], value != problem.chain[j],
                    (self.config.recovery_rate, self.config.misstate_rate, problem.arith_rate), rng)
                piece, step, partial = said + delim, partial + said, ""
            elif partial:  # the prefix ends inside step j
                if piece.startswith(partial):
                    piece = piece[len(partial):]
                else:
                    parsed = parse_step(partial)
                    if isinstance(parsed, int) or j == last:
                        return
                    piece, step = delim, partial
                    new_value = parsed[3] if parsed is not None else value
                partial = ""
            yield piece
            h, value = zlib.crc32(step.encode(), h), new_value

    def _write(self, problem: _Problem, j: int, value: int, rng: random.Random) -> tuple[str, int]:
        """Step ``j`` (no delimiter) written from the (possibly wrong) ``value``, and the value it ends on."""
        spec, cfg = problem.spec, self.config
        if spec is None:
            return (rng.choice(CANNOT_PARSE_STEPS), 0) if j == 0 else (format_answer(0), 0)
        if j == len(spec.steps):
            return format_answer(value), value
        op, b = spec.steps[j].op, spec.steps[j].operand
        if cfg.code_rate and rng.random() < cfg.code_rate:
            return self._write_code(problem, j, value, rng)
        if value != problem.chain[j] and rng.random() < cfg.recovery_rate:
            result = problem.chain[j + 1]  # a compensating slip: wrong arithmetic landing on the true value
        else:
            if rng.random() < problem.logic_rate:
                if rng.random() < WRONG_OP_SHARE:
                    op = WRONG_OP[op]
                else:
                    b = max(1, b + rng.choice(OPERAND_SLIPS))
            result = OPS[op](value, b)
            if j == cfg.force_error_at or rng.random() < problem.arith_rate:
                result += rng.choice(ARITH_SLIPS)
        clause = spec.step_clause(j, value)
        opener = rng.choice(STEP_OPENERS)
        if opener:
            clause = opener + clause[0].lower() + clause[1:]
        return format_step(clause, value, op, b, result, rng.choice(STEP_LINKS)), result


    def _write_code(self, problem: _Problem, j: int, value: int, rng: random.Random) -> tuple[str, int]:
        """A code step as written in one go (no driver ran it: the statement is mental arithmetic).

        A tool-running driver stops it at the closing fence; ``_chunks`` then states the printed value.
        """
        spec, cfg = problem.spec, self.config
        assert spec is not None
        op, b = spec.steps[j].op, spec.steps[j].operand
        if rng.random() < problem.logic_rate:
            if rng.random() < WRONG_OP_SHARE:
                op = WRONG_OP[op]
            else:
                b = max(1, b + rng.choice(OPERAND_SLIPS))
        crash = rng.random() < cfg.code_error_rate
        result = OPS[op](value, b)
        clause = spec.step_clause(j, value)
        opener = rng.choice(STEP_OPENERS)
        if opener:
            clause = opener + clause[0].lower() + clause[1:]
        return f"{clause}:\n" + sim_code.code_block(value, op, b, crash) + sim_code.statement(value, op, b, result), \
            result


def _n_words(text: str) -> int:
    return len(text.split())


def _first_words(text: str, k: int) -> str:
    """``text`` up to the end of its ``k``-th word (empty for k <= 0)."""
    if k <= 0:
        return ""
    for i, m in enumerate(_WORD_RE.finditer(text)):
        if i == k - 1:
            return text[:m.end()]
    return text


class ContinuousSimEngine(SimEngine):
    """The sim as an engine with its own scheduler (``agenerate``): the actor awaits each call directly, so a
    call that arrives while others wait on their latency starts at once, as a new request joins vLLM's running
    batch. The latency-bound benchmark uses it: there, throughput is set by how many calls the search keeps in
    flight, not by calls queueing behind a batch in progress."""

    async def agenerate(self, requests: list[GenRequest]) -> list[GenResult]:
        delay = self._delay(requests)
        if delay:
            await asyncio.sleep(delay)
        return [self._one(req) for req in requests]
