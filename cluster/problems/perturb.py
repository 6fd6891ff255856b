"""Problem variants with other names and numbers, gold answers recomputed: fresh problems from known ones.

Two sources of variation, found through ``PERTURBERS`` by problem source:

- ``arith`` problems (``cluster.problems.arith``): the question parses back into its exact spec; a variant keeps the
  operations and phrasings and draws a new name, object, start value and free operands, keeping every
  intermediate value valid (positive, exact divisions, small products). The gold answer is the new chain's end.
- templates in the GSM-Symbolic format (``question_annotated`` with ``{var,default}`` slots and ``#init:``,
  ``#conditions:``, ``#answer:`` sections; ``answer_annotated`` with ``{expr}`` slots): variables are drawn
  by the ``#init`` lines, redrawn until every condition holds, and the answer expression gives the gold.

Template expressions are evaluated with Python's ``eval`` over a small namespace (no builtins beyond the
helpers below, no dunder names): templates are data from a trusted file, never user input from a network.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from cluster.problems import arith
from cluster.problems.problem import Problem

SYMBOLIC_SOURCE = "gsm-symbolic"

# Small default word lists for the named lists GSM-Symbolic templates sample from; pass ``vocab`` to extend.
DEFAULT_VOCAB: dict[str, list[Any]] = {
    "names_female": ["Ava", "Mia", "Zoe", "Lena", "Priya", "Sofia", "Hana", "Grace"],
    "names_male": ["Liam", "Noah", "Omar", "Ravi", "Mateo", "Kenji", "Ethan", "Yusuf"],
    "weekdays": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "colors": ["red", "blue", "green", "yellow", "purple", "orange"],
    "fruits": ["apples", "pears", "oranges", "peaches", "plums"],
    "sports": ["soccer", "tennis", "basketball", "hockey"],
    "cities": ["Lisbon", "Denver", "Osaka", "Nairobi", "Lyon"],
    "currencies_sym": ["$", "€", "£"],
    "multi_times": [2, 3, 4, 5],  # "N times as many"
    "multiple_ice": [2, 3, 4],
    "multiple": [2, 3, 4],
    "fractions": [Fraction(1, 2), Fraction(1, 3), Fraction(1, 4), Fraction(1, 5), Fraction(3, 4)],
    "fraction_nums": [Fraction(1, 2), Fraction(1, 3), Fraction(1, 4), Fraction(2, 3), Fraction(3, 4)],
    "fraction_alnum": [Fraction(1, 2), Fraction(1, 3), Fraction(1, 4), Fraction(1, 5)],
    "fraction_alph": [Fraction(1, 2), Fraction(1, 4)],
    "fraction_decimals": [0.25, 0.5, 0.75],
    "weights_sm": [1, 2, 3, 4, 5],
    "weights_med": [10, 20, 25, 50],
    "length_lg": [100, 200, 500],
}
DEFAULT_VOCAB["names"] = DEFAULT_VOCAB["names_female"] + DEFAULT_VOCAB["names_male"]


@dataclass(frozen=True)
class PerturbConfig:
    n_variants: int = 4  # variants per problem or template
    seed: int = 0  # variant i of a problem depends only on (seed, problem, i)
    max_tries: int = 500  # draws per variant before giving up on it (conditions that rarely hold)
    vocab: dict[str, list] = field(default_factory=dict)  # extra or replacement GSM-Symbolic word lists

    def __post_init__(self) -> None:
        if self.n_variants < 1 or self.max_tries < 1:
            raise ValueError("n_variants and max_tries must be at least 1")


# ---------------------------------------------------------------- arith


def _arith_feasible(spec: arith.ArithSpec) -> bool:
    value = spec.start
    for s in spec.steps:
        if s.op == "/" and value % s.operand or s.op == "*" and value * s.operand > arith.MUL_MAX_RESULT:
            return False
        value = arith.OPS[s.op](value, s.operand)
        if value < 1:
            return False
    return True


def _arith_draw(spec: arith.ArithSpec, rng: random.Random) -> arith.ArithSpec:
    name, pronoun = rng.choice(arith.NAMES)
    steps = []
    for s in spec.steps:
        operand = arith.TEMPLATES[s.template].fixed or _arith_operand(s.op, rng)
        steps.append(replace(s, operand=operand))
    return arith.ArithSpec(name, pronoun, rng.choice(arith.OBJECTS), rng.randint(*arith.START_RANGE),
                           tuple(steps))


def _arith_operand(op: str, rng: random.Random) -> int:
    if op in "+-":
        return rng.randint(*arith.ADD_RANGE)
    return rng.choice(arith.DIVISORS)  # free multipliers and divisors are both small (2-5)


def perturb_arith(problem: Problem, cfg: PerturbConfig) -> list[Problem]:
    """Variants of an arith problem; none if its question is not an arith question."""
    spec = arith.parse_question(problem.question)
    if spec is None:
        return []
    out = []
    for i in range(cfg.n_variants):
        rng = random.Random(f"perturb:{cfg.seed}:{problem.problem_id}:{i}")
        draw = next((d for d in (_arith_draw(spec, rng) for _ in range(cfg.max_tries)) if _arith_feasible(d)),
                    None)
        if draw is not None and draw.question != problem.question:
            record = arith.to_record(draw)
            meta = {**record["meta"], "perturbed_from": problem.problem_id, "variant": i}
            out.append(Problem.make(record["question"], record["gold_answer"], problem.source, meta))
    return out


# ---------------------------------------------------------------- GSM-Symbolic templates

_SLOT = re.compile(r"\{(\w+)\s*,[^{}]*\}")  # question slot {var,default}
_EXPR = re.compile(r"\{([^{}]+)\}")  # answer slot {expression}
_INIT = re.compile(r"-\s*(\$?[\w\s,$]+?)\s*=\s*(.+)")


@dataclass(frozen=True)
class SymbolicTemplate:
    template_id: str
    question: str  # with {var,default} slots
    answer: str  # worked solution with {expr} slots
    init: tuple[tuple[tuple[str, ...], str, bool], ...]  # (names, expression, numeric "$" variable)
    conditions: tuple[str, ...]
    answer_expr: str

    @staticmethod
    def parse(obj: dict, template_id: str = "") -> SymbolicTemplate:
        """From one template JSON object (``question_annotated``, ``answer_annotated``)."""
        text = obj["question_annotated"]
        question, _, rest = text.partition("#init:")
        init_part, _, rest = rest.partition("#conditions:")
        if "#answer:" in init_part:  # templates without conditions
            init_part, rest = init_part.split("#answer:", 1)
            cond_part, answer_expr = "", rest
        else:
            cond_part, _, answer_expr = rest.partition("#answer:")
        init = []
        for line in init_part.strip().splitlines():
            m = _INIT.match(line.strip())
            if m:
                names = tuple(n.strip().lstrip("$") for n in m[1].split(","))
                init.append((names, m[2].strip(), m[1].strip().startswith("$")))
        conditions = tuple(c.strip()[1:].strip() for c in cond_part.strip().splitlines() if c.strip())
        return SymbolicTemplate(template_id or str(obj.get("id_shuffled", "")), question.strip(),
                                obj["answer_annotated"], tuple(init), conditions, answer_expr.strip())


def _helpers(rng: random.Random) -> dict[str, Any]:
    """The functions GSM-Symbolic templates call, all drawing from ``rng`` so instances are reproducible."""
    def sample(seq: Any, k: int | None = None) -> Any:
        items = list(seq)
        return rng.choice(items) if k is None else rng.sample(items, k)

    def sample_sequential(seq: Any, k: int) -> list:
        items = list(seq)
        start = rng.randrange(len(items) - k + 1)
        return items[start:start + k]

    def shuffle_list(seq: Any) -> list:
        items = list(seq)
        rng.shuffle(items)
        return items

    def randint(low: int, high: int, size: int | None = None) -> Any:
        draws = [rng.randrange(low, high) for _ in range(size or 1)]
        return draws if size else draws[0]

    return {
        "sample": sample, "sample_sequential": sample_sequential, "shuffle_list": shuffle_list,
        "range": range, "list": list, "int": int, "float": float, "round": round, "abs": abs, "min": min,
        "max": max, "sum": sum, "len": len, "str": str, "Fraction": Fraction,
        "numbers_within": lambda lo, hi: range(lo, hi + 1),
        "frange": lambda lo, hi, step: [round(float(v), 4) for v in np.arange(lo, hi, step)],
        "fix_floats": lambda seq: [round(float(v), 4) for v in seq],
        "divides": lambda a, b: b != 0 and a % b == 0,
        "is_int": lambda x: float(x).is_integer(),
        "format_frac": lambda f: f"{Fraction(f).numerator}/{Fraction(f).denominator}",
        "np": SimpleNamespace(arange=np.arange, random=SimpleNamespace(randint=randint)),
    }


def _eval(expr: str, env: dict[str, Any]) -> Any:
    if "__" in expr:
        raise ValueError(f"refusing expression with a dunder name: {expr!r}")
    return eval(expr, {"__builtins__": {}}, env)  # noqa: S307 - trusted template data, no builtins


def _show(value: Any) -> str:
    """How a value is written into text: integral numbers without decimals, fractions as a/b."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, Fraction) and value.denominator == 1:
        return str(value.numerator)
    return str(value)


def _draw_vars(tpl: SymbolicTemplate, rng: random.Random, vocab: dict[str, list]) -> dict[str, Any]:
    env = {**vocab, **_helpers(rng)}
    for names, expr, numeric in tpl.init:
        value = _eval(expr, env)
        sequence = isinstance(value, (range, list, tuple, np.ndarray))
        if len(names) == 1 and sequence and (numeric or isinstance(value, (range, np.ndarray))):
            value = rng.choice(list(value))  # "$x = range(...)" and "x = range(...)" mean one draw
        values = list(value) if len(names) > 1 else [value]
        if len(values) != len(names):
            raise ValueError(f"{names} = {expr} gave {len(values)} values")
        env.update(zip(names, values, strict=True))
    return env


def instantiate(tpl: SymbolicTemplate, seed: int, vocab: dict[str, list] | None = None,
                max_tries: int = 500) -> Problem | None:
    """One instance of ``tpl`` whose conditions hold (None after ``max_tries`` draws).

    Raises the template's own error (NameError for an unknown word list, ...) so callers can record why.
    """
    rng = random.Random(f"symbolic:{tpl.template_id}:{seed}")
    words = {**DEFAULT_VOCAB, **(vocab or {})}
    for _ in range(max_tries):
        env = _draw_vars(tpl, rng, words)
        if not all(_eval(c, env) for c in tpl.conditions):
            continue
        gold = _show(_eval(tpl.answer_expr, env))
        question = _SLOT.sub(lambda m, env=env: _show(env[m[1]]), tpl.question)
        solution = _EXPR.sub(lambda m, env=env: _show(_eval(m[1], env)), tpl.answer)
        meta = {"template_id": tpl.template_id, "seed": seed, "solution": solution}
        return Problem.make(question, gold, SYMBOLIC_SOURCE, meta)
    return None


def symbolic_problems(folder: Path) -> list[Problem]:
    """One ``Problem`` per template file (``*.json``), the template kept in ``meta`` for ``perturb_symbolic``."""
    out = []
    for path in sorted(Path(folder).glob("*.json")):
        obj = json.loads(path.read_text(encoding="utf-8"))
        answer = obj["answer"].rsplit("####", 1)[-1].strip()
        meta = {k: obj[k] for k in ("question_annotated", "answer_annotated")} | {"file": path.name}
        out.append(Problem.make(obj["question"], answer, SYMBOLIC_SOURCE, meta))
    return out


def perturb_symbolic(problem: Problem, cfg: PerturbConfig) -> list[Problem]:
    """Variants of a problem whose ``meta`` holds its GSM-Symbolic template (``question_annotated``, ...)."""
    tpl = SymbolicTemplate.parse(problem.meta, problem.problem_id)
    variants = (instantiate(tpl, cfg.seed * 1_000_003 + i, cfg.vocab, cfg.max_tries)
                for i in range(cfg.n_variants))
    return [replace(v, meta={**v.meta, "perturbed_from": problem.problem_id}) for v in variants if v]


PERTURBERS: dict[str, Callable[[Problem, PerturbConfig], list[Problem]]] = {
    "arith": perturb_arith,
    SYMBOLIC_SOURCE: perturb_symbolic,
}


def perturb(problems: list[Problem], cfg: PerturbConfig) -> tuple[list[Problem], list[dict]]:
    """Variants of every problem, and a reject row (``REJECTS`` columns) for each that gave none."""
    out: list[Problem] = []
    rejects: list[dict] = []
    for p in problems:
        fn = PERTURBERS.get(p.source)
        try:
            variants = fn(p, cfg) if fn else []
            reason = "no variant met the conditions" if fn else f"no perturber for source {p.source!r}"
        except Exception as err:  # a template's own error: keep going, record it
            variants, reason = [], f"{type(err).__name__}: {err}"
        out += variants
        if not variants:
            rejects.append({"stage": "perturb", "source": p.problem_id, "row": p.question[:500],
                            "reason": reason})
    return out, rejects
