"""``tracemill report RUN_ID``: one self-contained HTML page about a run — plots, its dataset, a tree viewer.

Load: the run's tables through the catalog (empty or missing tables give empty sections, never errors).
Build: plots rendered with matplotlib to PNG and inlined as base64 (the page needs no network and no files
beside it), and per-problem tree data as JSON inside ``<script type="application/json">`` elements that the
viewer (``report_assets/report.js``) parses only when that problem is opened, so a large run stays quick.
Save: ``<root>/runs/<run_id>/report.html`` unless told otherwise.

Example:
    >>> write_report("tracemill_data", "sim-20250101-000000-abc123")  # doctest: +SKIP
    PosixPath('tracemill_data/runs/sim-20250101-000000-abc123/report.html')
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2
from matplotlib.figure import Figure

from search.guided.base import majority_answer
from storage.catalog import Catalog
from storage.layout import RunPaths
from storage.manifest import Manifest
from verifier.arith_claims import check_step

Row = dict[str, Any]
ASSETS = files("pipelines") / "report_assets"
REPORT_FILE = "report.html"
FIG_SIZE = (6.4, 3.4)  # inches; at PLOT_DPI the images are 512 x 272 px
UNKNOWN_ERROR = -1  # first_error value meaning "no step labeled bad"

_SQL = {
    "runs": "SELECT * FROM runs",
    "problems": "SELECT problem_id, question, gold_answer, source FROM problems ORDER BY problem_id",
    "solutions": "SELECT problem_id, solution_id, sample_index, n_tokens, answer, correct, first_error, "
                 "true_first_error, node_ids FROM solutions ORDER BY problem_id, sample_index",
    "values": "SELECT depth, value FROM nodes WHERE value IS NOT NULL AND depth > 0",
    "strategies": "SELECT problem_id, mode() WITHIN GROUP (ORDER BY strategy) AS strategy FROM step_labels GROUP BY 1",
    "rollouts": "SELECT problem_id, count(*) AS rollouts, coalesce(sum(n_tokens), 0) AS tokens FROM rollouts GROUP BY 1",
    "traces": "SELECT trace_id, problem_id, kind, n_tokens, node_ids, segment_kinds, length_ratio FROM traces "
              "ORDER BY problem_id, kind, trace_id",
    "rejects": "SELECT stage, reason, count(*) AS n FROM rejects GROUP BY ALL "
               "UNION ALL SELECT 'filter:' || table_name, filter, count(*) FROM filtered GROUP BY ALL ORDER BY 3 DESC",
    # the dataset: only these prm_dataset columns are relied on (the table's other columns may change)
    "prm": "SELECT example_id, problem_id, first_error, labels, soft_labels FROM prm_dataset ORDER BY example_id",
    "label_depths": "SELECT n.depth, count(*) AS labels, count(*) FILTER (WHERE l.hard) AS good FROM step_labels l "
                    "JOIN nodes n USING (run_id, node_id) WHERE l.hard IS NOT NULL GROUP BY 1 ORDER BY 1",
    "soft_values": "SELECT soft FROM step_labels WHERE soft IS NOT NULL",
    "label_sources": "SELECT coalesce(label_source, 'none') AS source, count(*) AS labels FROM step_labels "
                     "GROUP BY 1 ORDER BY 2 DESC, 1",
    "good_steps": "SELECT DISTINCT n.node_id, n.text FROM step_labels l JOIN nodes n USING (run_id, node_id) "
                  "WHERE l.hard ORDER BY n.node_id",
    "search_picks": "SELECT p.problem_id, p.style, p.strategy, p.scorer, p.budget, p.correct, p.chosen_tokens, "
                    "p.completion_tokens, p.chosen_text, q.gold_answer FROM search_picks p "
                    "LEFT JOIN problems q USING (run_id, problem_id) ORDER BY p.problem_id, p.strategy, p.budget, p.style",
    "counts": "SELECT (SELECT count(*) FROM nodes) AS nodes, (SELECT count(*) FROM rollouts) AS rollouts, "
              "(SELECT count(*) FROM step_labels) AS step_labels, (SELECT count(*) FROM traces) AS traces",
}
_TREE_NODES_SQL = ("SELECT node_id, parent_id, problem_id, depth, text, terminal, answer, outcome_correct, origin, "
                   "n, n_correct, value FROM nodes WHERE problem_id IN (SELECT unnest($ids)) ORDER BY depth, node_id")
_TREE_LABELS_SQL = ("SELECT node_id, strategy, hard, soft, label_source FROM step_labels "
                    "WHERE problem_id IN (SELECT unnest($ids)) ORDER BY strategy")


@dataclass(frozen=True)
class ReportConfig:
    """How the report is computed; the defaults suit runs of a few to a few thousand problems."""

    vote_draws: int = 200  # random subsets per (problem, N) for majority vote when not enumerating all
    seed: int = 0  # of those draws
    dpi: int = 80  # plot resolution
    max_tree_problems: int = 300  # problems whose trees are embedded (first by id); plots use all problems
    max_reason_chars: int = 60  # reject reasons are cut to this many characters in the plot
    soft_bins: int = 20  # histogram bins over [0, 1] for soft labels (k = 4 rollouts give 5 distinct values)
    max_flagged_steps: int = 20  # good-labeled steps with a wrong claim listed by text (all are counted)
    max_step_chars: int = 120  # step text in that list is cut to this many characters

    def __post_init__(self) -> None:
        if self.vote_draws < 1 or self.dpi < 10 or self.max_tree_problems < 0 or self.soft_bins < 1:
            raise ValueError("vote_draws >= 1, dpi >= 10, max_tree_problems >= 0 and soft_bins >= 1 are required")


@dataclass
class RunData:
    """The rows the report is built from, one list of dicts per query in ``_SQL``."""

    run_id: str
    tables: dict[str, list[Row]]
    shards: list[dict] = field(default_factory=list)  # manifest entries: committed_at and rows per table

    def __getattr__(self, name: str) -> list[Row]:
        try:
            return self.__dict__["tables"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def run(self) -> Row:
        return self.runs[0] if self.runs else {}

    @property
    def stats(self) -> dict[str, Any]:
        return json.loads(self.run.get("stats_json") or "{}")


def load_run(cat: Catalog, run_id: str) -> RunData:
    """Every table the report reads, for one run (missing tables are empty views in the catalog)."""
    tables = {name: cat.sql(query, run_id=run_id).to_pylist() for name, query in _SQL.items()}
    manifest = Manifest.load(RunPaths(cat.root, run_id))
    return RunData(run_id, tables, sorted(manifest.shards.values(), key=lambda s: s["committed_at"]))


# ---------------------------------------------------------------- metrics (pure functions, tested directly)

def vote_curves(solutions: list[Row], draws: int = 200, seed: int = 0) -> dict[str, list[float]]:
    """Accuracy against N solutions per problem: single-sample mean, majority vote and oracle best-of-N.

    For each problem with M >= N solutions, ``oracle`` (any of N correct) is exact:
    1 - C(M - c, N) / C(M, N). Majority vote is averaged over all N-subsets when there are at most ``draws``
    of them, else over ``draws`` random ones; a tie goes to the tied answer sampled first (``majority_answer``),
    and solutions without an answer do not vote. Problems with fewer than N solutions are left out
    of that N's average.
    """
    by_problem: dict[str, list[Row]] = defaultdict(list)
    for s in solutions:
        by_problem[s["problem_id"]].append(s)
    if not by_problem:
        return {"n": [], "mean": [], "majority": [], "oracle": []}
    top = max(map(len, by_problem.values()))
    ns = sorted({2**i for i in range(top.bit_length()) if 2**i <= top} | {top})
    rng = random.Random(seed)
    out: dict[str, list[float]] = {"n": [float(n) for n in ns], "mean": [], "majority": [], "oracle": []}
    for n in ns:
        groups = [sols for sols in by_problem.values() if len(sols) >= n]
        mean = [sum(bool(s["correct"]) for s in g) / len(g) for g in groups]
        oracle = [1 - math.comb(len(g) - sum(bool(s["correct"]) for s in g), n) / math.comb(len(g), n) for g in groups]
        majority = [_majority(g, n, draws, rng) for g in groups]
        for name, values in (("mean", mean), ("majority", majority), ("oracle", oracle)):
            out[name].append(sum(values) / len(values))
    return out


def _majority(sols: list[Row], n: int, draws: int, rng: random.Random) -> float:
    """Expected majority-vote correctness over N-subsets of one problem's solutions.

    Each subset votes with ``majority_answer`` in sample order, the rule guided search's majority vote
    uses, so a tie goes to the tied answer sampled first here too.
    """
    right = {s["answer"] for s in sols if s["correct"] and s["answer"] is not None}
    if math.comb(len(sols), n) <= draws:
        subsets = [list(c) for c in itertools.combinations(range(len(sols)), n)]
    else:
        subsets = [sorted(rng.sample(range(len(sols)), n)) for _ in range(draws)]
    score = 0
    for subset in subsets:
        score += majority_answer([sols[i]["answer"] for i in subset]) in right
    return score / len(subsets)


def cost_by_strategy(data: RunData) -> dict[str, dict[str, float]]:
    """Rollouts and rollout tokens per sampled solution, per labeling strategy (a problem's main strategy)."""
    strategy = {r["problem_id"]: r["strategy"] for r in data.strategies}
    n_solutions = Counter(s["problem_id"] for s in data.solutions)
    sums: dict[str, Counter] = defaultdict(Counter)
    for r in data.rollouts:
        name = strategy.get(r["problem_id"], "unlabeled")
        sums[name].update(rollouts=r["rollouts"], tokens=r["tokens"])
    for pid, n in n_solutions.items():
        sums[strategy.get(pid, "unlabeled")].update(solutions=n)
    return {name: {"rollouts": c["rollouts"] / c["solutions"], "tokens": c["tokens"] / c["solutions"]}
            for name, c in sorted(sums.items()) if c["solutions"]}


def wrong_claims(text: str) -> list[str]:
    """Wrong arithmetic claims in a step (``verifier.arith_claims``), each as "expr = claimed (is actual)"."""
    return [f"{c} (is {c.actual})" for c in check_step(text).wrong]


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "—"


@dataclass(frozen=True)
class DatasetStats:
    """What the report says about a run's training data: PRM rows, step labels and what the checker flags."""

    prm_rows: int
    prm_negative: int  # rows with first_error >= 0 (a bad step to learn from)
    prm_labels: Counter  # PRM label entries: True (good), False (bad), None (masked)
    good_steps: int  # distinct steps with a hard-good label (any strategy)
    flagged: list[tuple[str, list[str]]]  # (text, wrong claims) of the good steps the arithmetic checker refutes
    by_depth: list[Row]  # depth, labels, good
    sources: list[Row]  # source, labels

    def facts(self) -> list[str]:
        """One sentence per headline number, as the page shows them."""
        labeled = self.prm_labels[True] + self.prm_labels[False]
        n_labels = sum(r["labels"] for r in self.sources)
        return [
            f"PRM rows {self.prm_rows}, with a negative {self.prm_negative} "
            f"({_share(self.prm_negative, self.prm_rows)})",
            f"PRM step labels {labeled}, good {self.prm_labels[True]} ({_share(self.prm_labels[True], labeled)}), "
            f"masked {self.prm_labels[None]}",
            f"Step labels {n_labels}, by source: " + (", ".join(
                f"{r['source']} {r['labels']} ({_share(r['labels'], n_labels)})" for r in self.sources) or "none"),
            f"MC-good steps with a wrong arithmetic claim {len(self.flagged)} of {self.good_steps} "
            f"({_share(len(self.flagged), self.good_steps)})",
        ]


def dataset_stats(data: RunData) -> DatasetStats:
    """Counts over the run's ``prm_dataset`` rows and step labels; the checker runs on every good-labeled step."""
    entries = Counter(v for r in data.prm for v in r["labels"] or [])
    flagged = [((r["text"] or "").strip(), claims) for r in data.good_steps if (claims := wrong_claims(r["text"] or ""))]
    return DatasetStats(
        prm_rows=len(data.prm),
        prm_negative=sum(r["first_error"] is not None and r["first_error"] >= 0 for r in data.prm),
        prm_labels=entries, good_steps=len(data.good_steps), flagged=flagged,
        by_depth=data.label_depths, sources=data.label_sources)


def dataset_tables(stats: DatasetStats, cfg: ReportConfig) -> list[dict[str, Any]]:
    """The small tables of the Dataset section: caption, column names, rows of cells."""
    cut = cfg.max_step_chars
    n_labels = sum(r["labels"] for r in stats.sources)
    return [
        {"key": "label-depth", "caption": "Label balance by step depth", "columns": ["depth", "labels", "good"],
         "rows": [[r["depth"], r["labels"], _share(r["good"], r["labels"])] for r in stats.by_depth]},
        {"key": "label-source", "caption": "Step labels by source", "columns": ["label_source", "labels", "share"],
         "rows": [[r["source"], r["labels"], _share(r["labels"], n_labels)] for r in stats.sources]},
        {"key": "flagged", "caption": "MC-good steps the arithmetic checker flags"
         + (f" (first {cfg.max_flagged_steps})" if len(stats.flagged) > cfg.max_flagged_steps else ""),
         "columns": ["step", "wrong claims"],
         "rows": [[text[:cut] + ("…" if len(text) > cut else ""), "; ".join(claims)]
                  for text, claims in stats.flagged[: cfg.max_flagged_steps]]},
    ]


# ---------------------------------------------------------------- plots: each returns (figure or None, note)

Panel = tuple[Figure | None, str]


def _figure(ncols: int = 1) -> tuple[Figure, list[Any]]:
    fig = Figure(figsize=FIG_SIZE, layout="constrained")
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


def plot_accuracy(data: RunData, cfg: ReportConfig) -> Panel:
    curves = vote_curves(data.solutions, cfg.vote_draws, cfg.seed)
    if not curves["n"]:
        return None, "No solutions stored."
    fig, (ax,) = _figure()
    for name, style in (("oracle", "o-"), ("majority", "s-"), ("mean", "--")):
        ax.plot(curves["n"], curves[name], style, label={"oracle": "best-of-N (oracle: any correct)",
                                                         "majority": "majority vote", "mean": "single sample"}[name])
    ax.set(xscale="log", xlabel="N solutions per problem", ylabel="accuracy", ylim=(-0.02, 1.02))
    ax.set_xticks(curves["n"], [str(int(n)) for n in curves["n"]])
    ax.legend(fontsize="small")
    return fig, (f"Answer accuracy {curves['mean'][0]:.1%} per sample; subsets of the N = {int(curves['n'][-1])} "
                 "stored solutions per problem.")


def plot_values(data: RunData, cfg: ReportConfig) -> Panel:
    by_depth: dict[int, list[float]] = defaultdict(list)
    for r in data.values:
        by_depth[r["depth"]].append(r["value"])
    if not by_depth:
        return None, "No node has rollouts (no MC values)."
    depths = sorted(by_depth)
    fig, (ax,) = _figure()
    ax.boxplot([by_depth[d] for d in depths], positions=depths, showmeans=True)
    ax.set(xlabel="step depth", ylabel="MC value (correct rollouts / rollouts)", ylim=(-0.05, 1.05))
    return fig, "Box: quartiles of node values at each depth; triangle: mean. " + ", ".join(
        f"depth {d}: {len(by_depth[d])} nodes" for d in depths)


def plot_first_errors(data: RunData, cfg: ReportConfig) -> Panel:
    series = {name: Counter(s[col] for s in data.solutions if s[col] is not None)
              for name, col in (("labeled", "first_error"), ("ground truth", "true_first_error"))}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None, "No solution has a first-error position."
    positions = sorted(set().union(*series.values()))
    fig, (ax,) = _figure()
    width = 0.8 / len(series)
    for i, (name, counts) in enumerate(series.items()):
        ax.bar([p + i * width for p in positions], [counts[p] for p in positions], width, label=name)
    ax.set_xticks([p + width * (len(series) - 1) / 2 for p in positions],
                  ["none" if p == UNKNOWN_ERROR else str(p) for p in positions])
    ax.set(xlabel="first wrong step (0-based)", ylabel="solutions")
    ax.legend(fontsize="small")
    return fig, "Index of each solution's first step labeled bad (\"none\": every step good)."


def plot_cost(data: RunData, cfg: ReportConfig) -> Panel:
    cost = cost_by_strategy(data)
    if not cost:
        return None, "No labeled solutions."
    fig, axes = _figure(2)
    for ax, key, label in zip(axes, ("rollouts", "tokens"), ("rollouts / solution", "rollout tokens / solution"),
                              strict=True):
        bars = ax.bar(list(cost), [c[key] for c in cost.values()])
        ax.bar_label(bars, fmt="%.1f", fontsize="small")
        ax.margins(y=0.15)  # room for the bar labels
        ax.set(ylabel=label)
    return fig, "Labeling cost per sampled solution, by the strategy that labeled the problem."


def plot_traces(data: RunData, cfg: ReportConfig) -> Panel:
    if not data.traces:
        return None, "No mined traces in this run (run `tracemill mine`)."
    kinds = Counter(t["kind"] for t in data.traces)
    ratios = [t["length_ratio"] for t in data.traces if t["length_ratio"] is not None]
    fig, (left, right) = _figure(2)
    left.bar(list(kinds), list(kinds.values()))
    left.set(ylabel="traces")
    note = ", ".join(f"{k}: {v}" for k, v in kinds.items())
    if ratios:
        right.hist(ratios, bins=min(20, max(5, len(ratios) // 3)))
        right.axvline(1.0, color="k", lw=0.8)
        right.set(xlabel="tokens / median correct solution", ylabel="traces")
        note += f". Shortest traces use {1 - sum(ratios) / len(ratios):.0%} fewer tokens than the median correct."
    return fig, note


def plot_throughput(data: RunData, cfg: ReportConfig) -> Panel:
    """Each engine's generated tokens/s over the search phase (sampled by ``cluster.monitor``), and the rows
    committed over the run (from the manifest)."""
    stats = data.stats
    timeline = stats.get("engine_timeline") or {}
    engines = timeline.get("tokens") or {}
    shards = [s for s in data.shards if "solutions" in s["files"] or "rollouts" in s["files"]]
    start = data.run.get("started_at")
    if not engines and (not shards or start is None):
        return None, "No engine timeline and no timed shard commits."
    fig, axes = _figure(2 if engines and shards and start is not None else 1)
    notes = []
    if engines:
        ax, width = axes[0], timeline["bucket_s"]
        for name, tokens in sorted(engines.items()):
            # the last bucket ends where the search phase ended, usually before a whole bucket width
            spans = [width] * (len(tokens) - 1) + [max(timeline["end_s"] - width * (len(tokens) - 1), 1e-3)]
            ax.plot([width * i + span / 2 for i, span in enumerate(spans)],
                    [t / span for t, span in zip(tokens, spans, strict=True)], label=name)
        ax.set(xlabel="seconds into the search phase", ylabel="generated tokens/s")
        ax.legend(fontsize="small")
        restarts = stats.get("engine_restarts", 0)
        notes.append(f"Generated tokens/s of each engine in {width:g} s buckets (engine: "
                     f"{data.run.get('engine') or '?'}; {stats.get('search_tokens_per_s', 0):.0f} tokens/s over the "
                     f"search phase, orchestration overhead {stats.get('orchestration_overhead', 0):.1%}"
                     + (f"; {restarts} engine restart(s), earlier work included" if restarts else "") + ").")
    if shards and start is not None:
        ax = axes[-1]
        times = [(datetime.fromisoformat(s["committed_at"]) - start).total_seconds() for s in shards]
        for table in ("solutions", "rollouts"):
            counts = [s["files"].get(table, {}).get("rows", 0) for s in shards]
            ax.step(times, [sum(counts[: i + 1]) for i in range(len(counts))], where="post", label=table)
        ax.set(xlabel="seconds since run start", ylabel="rows committed", yscale="symlog")
        ax.legend(fontsize="small")
        notes.append("Cumulative rows by shard commit time (from the run manifest).")
    return fig, " ".join(notes)


def plot_rejects(data: RunData, cfg: ReportConfig) -> Panel:
    if not data.rejects:
        return None, "No rejects and no filtered rows."
    cut = cfg.max_reason_chars
    labels = [f"{r['stage']}: {r['reason'][:cut]}{'…' if len(r['reason']) > cut else ''}" for r in data.rejects]
    fig = Figure(figsize=(FIG_SIZE[0], max(1.6, 0.35 * len(labels) + 0.8)), layout="constrained")
    ax = fig.subplots()
    ax.barh(labels[::-1], [r["n"] for r in data.rejects][::-1])
    ax.tick_params(axis="y", labelsize="small")
    ax.set(xlabel="rows")
    return fig, f"{sum(r['n'] for r in data.rejects)} rows rejected or filtered, by stage and reason."


def plot_label_balance(data: RunData, cfg: ReportConfig) -> Panel:
    rows = data.label_depths
    if not rows:
        return None, "No step labels on stored nodes."
    fig, (ax,) = _figure()
    depths = [r["depth"] for r in rows]
    bars = ax.bar(depths, [r["good"] / r["labels"] for r in rows])
    ax.bar_label(bars, labels=[str(r["labels"]) for r in rows], fontsize="small")
    ax.set(xlabel="step depth", ylabel="share of good hard labels", ylim=(0, 1.1))
    ax.set_xticks(depths)
    return fig, "Bar height: share of step labels at that depth that are good (hard label 1); above it: labels."


def plot_soft_values(data: RunData, cfg: ReportConfig) -> Panel:
    values = [r["soft"] for r in data.soft_values]
    if not values:
        return None, "No soft labels (no step label has an MC value)."
    fig, (ax,) = _figure()
    ax.hist(values, bins=cfg.soft_bins, range=(0.0, 1.0))
    ax.set(xlabel="soft label (MC value)", ylabel="step labels")
    return fig, f"{len(values)} soft labels; mean {sum(values) / len(values):.2f}."


def search_curves(picks: list[Row]) -> dict[tuple[str, str], tuple[list[int], list[float]]]:
    """(style, strategy) -> (budgets N, accuracy of the picks at each N) of a ``tracemill search`` run."""
    cells: dict[tuple[str, str], dict[int, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for p in picks:
        cells[(p["style"], p["strategy"])][p["budget"]].append(bool(p["correct"]))
    return {arm: (sorted(by_n), [sum(by_n[n]) / len(by_n[n]) for n in sorted(by_n)]) for arm, by_n in cells.items()}


def style_comparison(picks: list[Row]) -> dict[str, dict[str, float]]:
    """Per prompt style: pick accuracy, tokens of the chosen solution, tokens generated per pick and the mean
    relative length reward (``verifier.rewards.length_reward``: the styles' chosen solutions to one
    (problem, strategy, N) are one group; a correct one shorter than the group's mean earns its saving)."""
    from verifier.rewards import length_reward

    groups: dict[tuple, list[Row]] = defaultdict(list)
    for p in picks:
        groups[(p["problem_id"], p["strategy"], p["budget"])].append(p)
    rewards: dict[str, list[float]] = defaultdict(list)
    for key, members in groups.items():
        texts = [m["chosen_text"] or "" for m in members]
        golds = [m["gold_answer"] or "" for m in members]
        for m, r in zip(members, length_reward([str(key)] * len(members), texts, answer=golds), strict=True):
            rewards[m["style"]].append(r)
    out: dict[str, dict[str, float]] = {}
    for style in sorted({p["style"] for p in picks}):
        mine = [p for p in picks if p["style"] == style]
        out[style] = {"picks": len(mine), "accuracy": sum(bool(p["correct"]) for p in mine) / len(mine),
                      "chosen_tokens": sum(p["chosen_tokens"] or 0 for p in mine) / len(mine),
                      "generated_tokens": sum(p["completion_tokens"] or 0 for p in mine) / len(mine),
                      "length_reward": sum(rewards[style]) / len(rewards[style])}
    return out


_NO_SEARCH = "No guided search in this run (`tracemill search -c configs/search_sim.toml`)."


def plot_search(data: RunData, cfg: ReportConfig) -> Panel:
    curves = search_curves(data.search_picks)
    if not curves:
        return None, _NO_SEARCH
    fig, (ax,) = _figure()
    budgets = sorted({n for ns, _ in curves.values() for n in ns})
    strategies = sorted({strategy for _, strategy in curves})
    styles = sorted({style for style, _ in curves})
    for (style, strategy), (ns, acc) in sorted(curves.items()):
        color = f"C{strategies.index(strategy)}"
        ax.plot(ns, acc, ("o-", "s--", "^:")[styles.index(style) % 3], color=color,
                label=strategy if len(styles) == 1 else f"{strategy} ({style})")
    ax.set(xscale="log", xlabel="N (solutions, or candidate steps per round)", ylabel="accuracy", ylim=(-0.02, 1.02))
    ax.set_xticks(budgets, [str(n) for n in budgets])
    ax.minorticks_off()
    ax.legend(fontsize="x-small", ncol=2)
    scorers = sorted({p["scorer"] for p in data.search_picks if p["scorer"]})
    n_problems = len({p["problem_id"] for p in data.search_picks})
    return fig, (f"Accuracy of the chosen answer over {n_problems} problems; scorer: {', '.join(scorers) or 'none'}. "
                 "Majority vote breaks ties by the answer sampled first, like the majority curve above.")


def plot_styles(data: RunData, cfg: ReportConfig) -> Panel:
    table = style_comparison(data.search_picks)
    if not table:
        return None, _NO_SEARCH
    fig, axes = _figure(2)
    styles = list(table)
    for ax, key, label in zip(axes, ("accuracy", "chosen_tokens"), ("accuracy", "tokens of the chosen solution"),
                              strict=True):
        bars = ax.bar(styles, [table[s][key] for s in styles], color=[f"C{i}" for i in range(len(styles))])
        ax.bar_label(bars, fmt="%.2f" if key == "accuracy" else "%.0f", fontsize="small")
        ax.margins(y=0.15)
        ax.set(ylabel=label)
    return fig, "Prompt styles on the same problems, strategies and N: " + "; ".join(
        f"{s}: accuracy {t['accuracy']:.1%}, {t['chosen_tokens']:.0f} tokens per chosen solution, "
        f"{t['generated_tokens']:.0f} generated per pick, relative length reward {t['length_reward']:.3f}"
        for s, t in table.items()) + "."


PanelFn = Callable[[RunData, ReportConfig], Panel]

SECTIONS: dict[str, tuple[str, PanelFn]] = {
    "accuracy": ("Accuracy against N (majority vote, best-of-N)", plot_accuracy),
    "values": ("MC value by step depth", plot_values),
    "first-errors": ("First-error positions", plot_first_errors),
    "cost": ("Rollouts and tokens per solution by strategy", plot_cost),
    "traces": ("Mined traces", plot_traces),
    "throughput": ("Throughput", plot_throughput),
    "rejects": ("Rejects by reason", plot_rejects),
}
SEARCH_PANELS: dict[str, tuple[str, PanelFn]] = {  # shown for runs of `tracemill search` only
    "search": ("Guided search: accuracy against N", plot_search),
    "search-styles": ("Guided search: prompt styles on accuracy and tokens", plot_styles),
}
DATASET_PANELS: dict[str, tuple[str, PanelFn]] = {
    "label-balance": ("Label balance by step depth", plot_label_balance),
    "soft-values": ("Soft label values", plot_soft_values),
}


def _render_panels(panels: dict[str, tuple[str, PanelFn]], data: RunData, cfg: ReportConfig) -> list[dict]:
    out = []
    for key, (title, plot) in panels.items():
        fig, note = plot(data, cfg)
        out.append({"key": key, "title": title, "note": note, "png": _png(fig, cfg.dpi) if fig else None})
    return out


def _png(fig: Figure, dpi: int) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------- tree viewer data

def tree_data(cat: Catalog, data: RunData, cfg: ReportConfig) -> list[dict]:
    """Per problem: its question, node table (parent index, text, value, labels, wrong claims), solutions and
    traces as node-index paths. Index 0 is the root (the question); nodes are ordered parents first."""
    problems = data.problems[: cfg.max_tree_problems]
    ids = [p["problem_id"] for p in problems]
    params = {"ids": ids}
    nodes = cat.sql(_TREE_NODES_SQL, run_id=data.run_id, params=params).to_pylist() if ids else []
    labels: dict[str, list[list]] = defaultdict(list)
    for r in cat.sql(_TREE_LABELS_SQL, run_id=data.run_id, params=params).to_pylist() if ids else []:
        labels[r["node_id"]].append([r["strategy"], r["hard"], r["soft"], r["label_source"]])
    by_problem: dict[str, list[Row]] = defaultdict(list)
    for n in nodes:
        by_problem[n["problem_id"]].append(n)
    solutions, traces = defaultdict(list), defaultdict(list)
    for s in data.solutions:
        solutions[s["problem_id"]].append(s)
    for t in data.traces:
        traces[t["problem_id"]].append(t)
    return [_problem_tree(p, by_problem[p["problem_id"]], labels, solutions[p["problem_id"]],
                          traces[p["problem_id"]]) for p in problems]


def _problem_tree(problem: Row, nodes: list[Row], labels: dict[str, list[list]], solutions: list[Row],
                  traces: list[Row]) -> dict:
    root = next((n for n in nodes if n["depth"] == 0), None)
    index = {n["node_id"]: 0 for n in nodes if n["depth"] == 0}
    rows = [[-1, problem["question"], root and root["value"], root["n"] if root else 0,
             root["n_correct"] if root else 0, False, None, None, "root", [], []]]
    for n in nodes:
        if n["depth"] == 0:
            continue
        index[n["node_id"]] = len(rows)
        rows.append([index.get(n["parent_id"], 0), n["text"], n["value"], n["n"] or 0, n["n_correct"] or 0,
                     bool(n["terminal"]), n["answer"], n["outcome_correct"], n["origin"],
                     labels.get(n["node_id"], []), wrong_claims(n["text"] or "")])
    return {
        "id": problem["problem_id"], "question": problem["question"], "gold": problem["gold_answer"],
        "columns": ["parent", "text", "value", "n", "n_correct", "terminal", "answer", "outcome_correct",
                    "origin", "labels", "wrong_claims"],
        "nodes": rows,
        "solutions": [{"index": s["sample_index"], "correct": s["correct"], "answer": s["answer"],
                       "first_error": s["first_error"], "n_tokens": s["n_tokens"],
                       "path": [index[i] for i in s["node_ids"] if i in index]} for s in solutions],
        "traces": [{"kind": t["kind"], "n_tokens": t["n_tokens"], "length_ratio": t["length_ratio"],
                    "path": [index[i] for i in t["node_ids"] if i in index]} for t in traces],
    }


def _json_script(obj: object) -> str:
    """JSON safe inside ``<script>``: ``<`` is escaped, so no text can close the element early."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str).replace("<", "\\u003c")


# ---------------------------------------------------------------- the page

def render_report(cat: Catalog, run_id: str, cfg: ReportConfig | None = None) -> str:
    """The report page of ``run_id`` as one HTML string."""
    cfg = cfg or ReportConfig()
    data = load_run(cat, run_id)
    stats = dataset_stats(data)
    dataset = {"facts": stats.facts(), "tables": dataset_tables(stats, cfg),
               "panels": _render_panels(DATASET_PANELS, data, cfg)}
    trees = tree_data(cat, data, cfg)
    n_correct = sum(bool(s["correct"]) for s in data.solutions)
    summary = {"problems": len(data.problems), "solutions": len(data.solutions),
               "accuracy": f"{n_correct / len(data.solutions):.1%}" if data.solutions else "—",
               **(data.counts[0] if data.counts else {}),
               "rejected or filtered": sum(r["n"] for r in data.rejects)}
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string((ASSETS / "report.html.j2").read_text(encoding="utf-8"))
    return template.render(
        run_id=run_id, run=data.run, stats=data.stats, summary=summary,
        sections=_render_panels(SECTIONS, data, cfg)
        + (_render_panels(SEARCH_PANELS, data, cfg) if data.search_picks else []), dataset=dataset,
        css=(ASSETS / "report.css").read_text(encoding="utf-8"), js=(ASSETS / "report.js").read_text(encoding="utf-8"),
        problems=[{"id": t["id"], "question": t["question"], "n_nodes": len(t["nodes"]) - 1,
                   "n_solutions": len(t["solutions"]), "n_correct": sum(bool(s["correct"]) for s in t["solutions"]),
                   "n_traces": len(t["traces"])} for t in trees],
        trees=[_json_script(t) for t in trees],
        omitted=max(0, len(data.problems) - len(trees)), run_missing=not data.runs)


def write_report(root: Path | str, run_id: str, out_path: Path | str | None = None,
                 cfg: ReportConfig | None = None) -> Path:
    """Write the report of ``run_id`` under data root ``root``; returns the HTML file's path.

    Default path: ``<root>/runs/<run_id>/report.html`` (beside the run's tables, outside every table folder).
    """
    paths = RunPaths(Path(root), run_id)
    if not paths.run_dir.is_dir():
        raise FileNotFoundError(f"no run {run_id!r} under {paths.root}")
    with Catalog(root, save=False) as cat:
        page = render_report(cat, run_id, cfg)
    out = Path(out_path) if out_path else paths.run_dir / REPORT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
