"""``tracemill search -c recipe.toml``: verifier-guided search over a problem set, picks and trees stored.

Parse: a ``SearchConfig`` is a run recipe's ``[problems]``/``[engine]``/``[sampling]``/``[storage]``/``[ray]``
sections (the models of ``pipelines.config``) plus ``[search]``: the budgets N, the prompt styles compared
(``step-by-step``, ``chain-of-draft``), one scorer and one table per strategy holding only that strategy's
keys (``search.guided``'s configs refuse the rest). Every check, the PRM checkpoint's loading included,
happens before anything is written.
Build: every (problem, style, strategy, N) cell is one search program; requests of all cells batch through
the engine actors exactly as ``tracemill run``'s do (the pool drops duplicate request keys, so majority
vote and best-of-N at the same N choose among the very same samples).
Save: problems are grouped into shards; a shard's ``problems``, ``search_picks`` and ``search_nodes`` rows are
committed by ``ShardWriter`` once its last cell finishes, so ``--resume`` redoes no committed shard and every
problem and every pick is stored once.

Example::

    tracemill search -c configs/search_sim.toml
    tracemill sql "SELECT style, strategy, budget, avg(correct::INT) FROM search_picks GROUP BY ALL ORDER BY ALL"
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from rich.console import Console
from rich.table import Table

from cluster.engine import request_key
from cluster.problems.problem import Problem
from pipelines.build import actor_spec, new_run_id, sampling_config
from pipelines.config import (
    NAME_PATTERN,
    ConfigError,
    EngineConfig,
    ProblemsConfig,
    RayConfig,
    SamplingSection,
    StorageConfig,
    TransformersEngineConfig,
    _Section,
    load_config,
)
from pipelines.inputs import load_inputs
from pipelines.jobs import check_run_id, engine_pool, recorded_run
from search.guided import STRATEGIES, GuidedResult, make_config, make_scorer
from search.guided.base import aggregate
from search.program import run_programs_async
from search.sampling import SamplingConfig, prompt_messages
from search.tree import node_id
from storage.rejects import reject_row
from storage.shards import ShardWriter
from verifier.answers import judge

DEFAULT_SEARCH_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "search_sim.toml"
Style = Literal["step-by-step", "chain-of-draft"]


class ScorerSection(_Section):
    name: Literal["mc", "tool", "prm", "arith_truth"] = "tool"  # how a step is scored (search.guided.scorers)
    # mc: k, rollout = {...}; prm: path = a folder written by `tracemill train-prm`; arith_truth: delimiter
    options: dict[str, Any] = Field(default_factory=dict)


class SearchSection(_Section):
    budgets: list[int] = Field(default_factory=lambda: [1, 2, 4], min_length=1)  # the Ns of the curve
    styles: list[Style] = Field(default_factory=list)  # prompt styles compared; default: [sampling.style]
    scorer: ScorerSection = ScorerSection()
    # strategy name -> its own options (e.g. beam = {beam_width = 4, keep_frac = 0.25}); n is the budget
    strategies: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"majority": {}, "best_of_n": {}},
                                                  min_length=1)

    @field_validator("budgets")
    @classmethod
    def _budgets_ok(cls, budgets: list[int]) -> list[int]:
        if any(n < 1 for n in budgets) or len(set(budgets)) != len(budgets):
            raise ValueError("budgets are distinct integers >= 1")
        return sorted(budgets)

    @field_validator("styles")
    @classmethod
    def _styles_once(cls, styles: list[str]) -> list[str]:
        if len(set(styles)) != len(styles):
            raise ValueError("each style once")
        return styles


class SearchConfig(_Section):
    name: str = Field("search", pattern=NAME_PATTERN)  # starts the run id, a path component (as a run's name)
    problems: ProblemsConfig = ProblemsConfig()
    engine: EngineConfig = TransformersEngineConfig()
    sampling: SamplingSection = SamplingSection()
    search: SearchSection = SearchSection()
    storage: StorageConfig = StorageConfig()
    ray: RayConfig = RayConfig()


def load_search_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> SearchConfig:
    """Read a search recipe (default: configs/search_sim.toml); errors are ``ConfigError`` lines."""
    cfg = load_config(path, overrides, model=SearchConfig, default=DEFAULT_SEARCH_CONFIG)
    if "n_solutions" in cfg.sampling.model_fields_set:
        raise ConfigError("config error: sampling.n_solutions: not read by search; N comes from search.budgets")
    if "style" in cfg.sampling.model_fields_set and cfg.search.styles:
        raise ConfigError("config error: sampling.style: not read when search.styles lists the styles compared")
    return cfg


@dataclass(frozen=True)
class Cell:
    """One point of a curve: a prompt style, a strategy with its config, and the budget N (``cfg.n``)."""

    style: str
    strategy: str
    cfg: Any  # the strategy's own config (search.guided)

    def pick_id(self, problem_id: str, scorer: str) -> str:
        return request_key(problem_id, self.style, self.strategy, scorer, self.cfg.n)


def styles(cfg: SearchConfig) -> list[str]:
    return list(cfg.search.styles) or [cfg.sampling.style]


def plan(cfg: SearchConfig) -> list[Cell]:
    """Every (style, strategy, N) cell; a strategy option it does not read is a ``ConfigError``.

    Sampling settings come from ``[sampling]`` (a strategy's table may override them for that strategy).
    """
    s = cfg.sampling
    cells = []
    for name, options in cfg.search.strategies.items():
        if name not in STRATEGIES:
            raise ConfigError(f"config error: search.strategies.{name}: unknown strategy; known: {sorted(STRATEGIES)}")
        if "n" in options:
            raise ConfigError(f"config error: search.strategies.{name}.n: N comes from search.budgets")
        own = {f.name for f in fields(STRATEGIES[name].config)}
        base = {"temperature": s.temperature, "top_p": s.top_p, "delimiter": s.delimiter, "seed": s.seed}
        if "max_new_tokens" in own:
            base["max_new_tokens"] = s.max_new_tokens
        for n in cfg.search.budgets:
            try:
                strategy_cfg = make_config(name, {**base, **options, "n": n})
            except (ValueError, TypeError) as err:
                raise ConfigError(f"config error: search.strategies.{name}: {err}") from None
            cells += [Cell(style, name, strategy_cfg) for style in styles(cfg)]
    return cells


def build_scorer(cfg: SearchConfig) -> tuple[str, Any]:
    """The scorer's name and object; a bad option or a PRM folder that does not load is a ``ConfigError``."""
    sc, s = cfg.search.scorer, cfg.sampling
    if not any(STRATEGIES[name].scored for name in cfg.search.strategies):
        if "scorer" in cfg.search.model_fields_set:
            raise ConfigError("config error: search.scorer: no strategy of this recipe reads a scorer")
        return "", None
    options = dict(sc.options)
    objects: dict[str, Any] = {}
    try:
        if sc.name == "mc":
            rollout = {"max_new_tokens": s.max_new_tokens, "temperature": s.temperature, "top_p": s.top_p,
                       "seed": s.seed}
            options["rollout"] = {**rollout, **options.get("rollout", {})}
            objects["judge"] = judge
        elif sc.name == "arith_truth":
            options.setdefault("delimiter", s.delimiter)
        elif sc.name == "prm":
            objects["model"] = _load_prm(options.pop("path", ""))
        return sc.name, make_scorer(sc.name, options, **objects)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"config error: search.scorer.options: {err}") from None


def _load_prm(path: str) -> Any:
    from verifier.prm import ProcessRewardModel

    if not path or not Path(path).is_dir():
        raise ConfigError(f"config error: search.scorer.options.path: not a folder written by train-prm: {path!r}")
    try:
        return ProcessRewardModel.load(path)
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"config error: search.scorer.options.path: cannot load {path}: {err}") from None


# ---------------------------------------------------------------- rows of one finished cell


def pick_rows(run_id: str, problem: Problem, cell: Cell, scorer: str, result: GuidedResult) -> dict[str, list[dict]]:
    """The cell's ``search_picks`` row and its tree as ``search_nodes`` rows (explored prefixes, pruned too)."""
    pick_id = cell.pick_id(problem.problem_id, scorer)
    root = node_id("", problem.problem_id)
    nodes: dict[str, dict[str, Any]] = {}

    def add(steps: list[str], scores: list[float]) -> str:
        parent = root
        for depth, step in enumerate(steps, 1):
            nid = node_id(parent, step)
            row = nodes.setdefault(nid, {"run_id": run_id, "pick_id": pick_id, "problem_id": problem.problem_id,
                                         "node_id": nid, "parent_id": parent, "depth": depth, "text": step,
                                         "score": None, "terminal": False, "answer": None, "correct": None,
                                         "chosen": False})
            if depth <= len(scores):
                row["score"] = scores[depth - 1]
            parent = nid
        return parent

    for cand in result.explored:
        add(cand.steps, cand.scores)
    ends = []
    for cand in result.candidates:
        end = add(cand.steps, cand.scores)
        ends.append(end)
        if end != root:
            nodes[end].update(terminal=True, answer=cand.answer, correct=cand.correct)
    chosen = result.candidates[result.chosen] if result.chosen is not None else None
    if chosen is not None:
        nid = ends[result.chosen]
        while nid in nodes:
            nodes[nid]["chosen"] = True
            nid = nodes[nid]["parent_id"]
    aggregation = getattr(cell.cfg, "aggregation", None)
    pick = {"run_id": run_id, "pick_id": pick_id, "problem_id": problem.problem_id, "style": cell.style,
            "strategy": cell.strategy, "scorer": scorer if STRATEGIES[cell.strategy].scored else "",
            "budget": cell.cfg.n, "answer": result.answer, "correct": result.correct,
            "chosen_index": result.chosen,
            "chosen_node_id": ends[result.chosen] if chosen is not None else None,
            "chosen_text": chosen.text if chosen is not None else None,
            "chosen_tokens": chosen.n_tokens if chosen is not None else None,
            "chosen_score": aggregate(chosen, aggregation) if chosen is not None and aggregation else None,
            "n_candidates": len(result.candidates), "completion_tokens": result.completion_tokens,
            "config_json": json.dumps(asdict(cell.cfg), sort_keys=True)}
    return {"search_picks": [pick], "search_nodes": list(nodes.values())}


def problem_row(run_id: str, problem: Problem) -> dict[str, Any]:
    return {"run_id": run_id, "problem_id": problem.problem_id, "source": problem.source,
            "question": problem.question, "gold_answer": problem.gold_answer, "meta_json": problem.meta_json()}


# ---------------------------------------------------------------- the job


@dataclass
class SearchSummary:
    run_id: str
    root: str
    problems: int = 0
    picks: int = 0
    failed_picks: int = 0
    rejects: int = 0
    skipped_shards: int = 0
    completion_tokens: int = 0  # what the pool generated, each request once (scorer rollouts included)
    wall_s: float = 0.0
    report: str = ""
    # (style, strategy) -> N -> [correct picks, picks]
    accuracy: dict[str, dict[int, list[int]]] = field(default_factory=dict)

    def add(self, pick: dict[str, Any]) -> None:
        cell = self.accuracy.setdefault(f"{pick['style']} / {pick['strategy']}", {})
        counts = cell.setdefault(pick["budget"], [0, 0])
        counts[0] += bool(pick["correct"])
        counts[1] += 1
        self.picks += 1

    def stats(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("run_id", "root", "report", "accuracy")}
        out["accuracy"] = {arm: {str(n): c / t for n, (c, t) in by_n.items()} for arm, by_n in self.accuracy.items()}
        return out


def execute_search(cfg: SearchConfig, run_id: str | None = None, resume: bool = False,
                   report: bool = True) -> SearchSummary:
    """Run (or resume) a search recipe end to end. A bad recipe raises ``ConfigError`` before any write."""
    root = Path(cfg.storage.root).resolve()
    check_run_id(root, cfg, run_id, resume)
    cells = plan(cfg)
    scorer_name, scorer = build_scorer(cfg)
    problems, load_rejects = load_inputs(cfg.problems)
    job = SearchPlan(cfg, run_id or new_run_id(cfg), root, cells, scorer_name, scorer,
                     sampling_config(cfg),  # the run's prompt (few-shot, system prompt); its n_solutions is not read
                     actor_spec(cfg), resume)
    summary = SearchSummary(job.run_id, str(root))
    start = time.perf_counter()

    def stats() -> dict[str, Any]:
        summary.wall_s = time.perf_counter() - start
        return summary.stats()

    with recorded_run(root, job.run_id, cfg, stats):
        _search(job, problems, load_rejects, summary)
    if report:
        from pipelines.report import write_report

        summary.report = str(write_report(root, job.run_id))
    return summary


@dataclass(frozen=True)
class SearchPlan:
    """One search run, built from its recipe."""

    cfg: SearchConfig
    run_id: str
    root: Path
    cells: list[Cell]
    scorer_name: str
    scorer: Any
    sampling: SamplingConfig
    spec: Any  # ActorSpec
    resume: bool


def _search(job: SearchPlan, problems: list[Problem], load_rejects: list[dict], summary: SearchSummary) -> None:
    cfg, run_id, cells, scorer_name = job.cfg, job.run_id, job.cells, job.scorer_name
    size = cfg.storage.shard_size
    shards = {f"shard-{i // size:06d}": problems[i:i + size] for i in range(0, len(problems), size)}
    writer = ShardWriter(job.root, run_id)
    done = writer.committed() if job.resume else set()
    if load_rejects:
        writer.commit("load-rejects", {"rejects": load_rejects})
        summary.rejects += len(load_rejects)
    todo = {name: shard for name, shard in shards.items() if name not in done}
    summary.skipped_shards = len(shards) - len(todo)
    if not todo:
        return
    with engine_pool(job.spec, cfg) as pool:
        todo_problems = [p for shard in todo.values() for p in shard]
        arms = [(p, style) for p in todo_problems for style in styles(cfg)]
        texts = pool.apply_chat_template([prompt_messages(p, replace(job.sampling, style=style)) for p, style in arms])
        prompts = {(p.problem_id, style): text for (p, style), text in zip(arms, texts, strict=True)}
        owner = {p.problem_id: (name, p) for name, shard in todo.items() for p in shard}
        jobs = {c.pick_id(p.problem_id, scorer_name): (p, c) for p in todo_problems for c in cells}
        left = {name: len(shard) * len(cells) for name, shard in todo.items()}
        buffers: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for name, shard in todo.items():
            buffers[name]["problems"] = [problem_row(run_id, p) for p in shard]

        def finished(key: str, rows: dict[str, list[dict]]) -> None:
            name = owner[jobs[key][0].problem_id][0]
            for table, table_rows in rows.items():
                buffers[name][table].extend(table_rows)
            left[name] -= 1
            if left[name] == 0:
                writer.commit(name, buffers.pop(name))
                summary.problems += len(todo[name])

        def on_done(key: str, result: GuidedResult) -> None:
            problem, cell = jobs[key]
            rows = pick_rows(run_id, problem, cell, scorer_name, result)
            summary.add(rows["search_picks"][0])
            finished(key, rows)

        def on_failed(key: str, error: str) -> None:
            problem, cell = jobs[key]
            summary.failed_picks += 1
            summary.rejects += 1
            finished(key, {"rejects": [reject_row("generate", key, problem.question,
                                                  f"{cell.style} {cell.strategy} N={cell.cfg.n}: {error}")]})

        programs = ((key, STRATEGIES[c.strategy].run(p, prompts[(p.problem_id, c.style)], c.cfg, job.scorer, judge))
                    for key, (p, c) in jobs.items())
        run_programs_async(programs, pool, on_done=on_done, on_failed=on_failed,
                           max_active=max(64, 8 * cfg.engine.replicas))
        summary.completion_tokens = pool.stats()["usage"].completion_tokens


def print_search_summary(console: Console, s: SearchSummary) -> None:
    """Accuracy per (style, strategy) and N, then where the data is."""
    budgets = sorted({n for by_n in s.accuracy.values() for n in by_n})
    t = Table(title=f"search {s.run_id}: accuracy of the picks")
    t.add_column("style / strategy")
    for n in budgets:
        t.add_column(f"N={n}", justify="right")
    for arm, by_n in s.accuracy.items():
        t.add_row(arm, *(f"{by_n[n][0] / by_n[n][1]:.1%}" if n in by_n else "" for n in budgets))
    console.print(t)
    console.print(f"{s.problems} problems, {s.picks} picks" + (f", {s.failed_picks} failed" if s.failed_picks else "")
                  + (f", {s.skipped_shards} shards already committed" if s.skipped_shards else "")
                  + f", {s.completion_tokens:,} generated tokens, {s.wall_s:.1f} s")
    if s.report:
        console.print(f"report: {s.report}")
    console.print(f'query: tracemill sql --root {s.root} "SELECT style, strategy, budget, avg(correct::INT) '
                  f'FROM search_picks GROUP BY ALL ORDER BY ALL" --run {s.run_id}')
