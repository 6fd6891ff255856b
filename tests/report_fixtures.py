"""A small stored run for the report tests, made in about a second without Ray or a model.

Problems are arith questions solved by the sim engine; half of them are labeled ``linear``, half
``binary`` (so per-strategy plots have two bars), each problem is one committed shard, and the run row carries
the summary counters a real ``tracemill run`` writes. Traces and rejects are added so every section of the
report has data.
"""

from __future__ import annotations

import random
from pathlib import Path

from cluster.problems import arith
from cluster.problems.loaders import load_arith
from cluster.problems.problem import problem_id
from cluster.sim_engine import SimConfig, SimEngine
from search.labeling import STRATEGIES, make_config, rows
from search.program import run_programs
from search.sampling import SamplingConfig, build_prompt, sample_solutions
from search.tree import node_id
from storage.rejects import reject_row
from storage.runs import finish_run, start_run
from storage.shards import ShardWriter
from tests.labeling_fixtures import judge  # the sim answer format only; verifier.answers is not needed

RUN_ID = "report-test"


def _program(problem, prompt: str, scfg: SamplingConfig, strategy: str, run_id: str):  # noqa: ANN001, ANN202
    sampled = yield from sample_solutions(problem, prompt, scfg, judge)
    for sol in sampled.solutions:
        sol.true_first_error = arith.first_error(problem.question, sol.text, scfg.delimiter)
    paths = [s.path for s in sampled.solutions]
    cfg = make_config(strategy, {"k": 4})
    result = yield from STRATEGIES[strategy].label(sampled.tree, paths, problem, prompt, cfg, judge)
    out = rows(sampled.tree, result, run_id, sampled.solutions)
    out["problems"] = [{"problem_id": problem.problem_id, "source": problem.source, "question": problem.question,
                        "gold_answer": problem.gold_answer, "meta_json": problem.meta_json()}]
    return out


def _trace(run_id: str, out: dict[str, list[dict]]) -> dict | None:
    """A ``shortest`` trace row over the problem's shortest correct solution (as ``tracemill mine`` writes)."""
    correct = sorted((s for s in out["solutions"] if s["correct"]), key=lambda s: s["n_tokens"])
    if not correct:
        return None
    best = correct[0]
    texts = {n["node_id"]: n["text"] for n in out["nodes"]}
    median = sorted(s["n_tokens"] for s in correct)[len(correct) // 2]
    segments = [texts[i] for i in best["node_ids"]]
    return {"trace_id": "t-" + best["solution_id"], "problem_id": best["problem_id"], "kind": "shortest",
            "text": "".join(segments), "n_tokens": best["n_tokens"], "segments": segments,
            "segment_kinds": ["step"] * len(segments), "node_ids": best["node_ids"], "wrong_positions": [],
            "wrong_char_starts": [], "wrong_char_ends": [], "answer": best["answer"], "mode": "verified",
            "median_correct_tokens": float(median), "length_ratio": best["n_tokens"] / median, "seed": 0}


def make_run(root: Path, n_problems: int = 6, n_solutions: int = 6, run_id: str = RUN_ID) -> str:
    """Write a labeled sim run with traces and rejects under ``root``; returns its run id."""
    engine = SimEngine(SimConfig(arith_error_rate=0.15, logic_error_rate=0.1))
    scfg = SamplingConfig(n_solutions=n_solutions, max_new_tokens=200)
    problems = load_arith(n_problems, 0, {2: 0.3, 3: 0.4, 4: 0.3})
    start_run(root, run_id, {"test": True}, model="sim", engine="sim", code_version="test")
    programs = {}
    for i, p in enumerate(problems):
        prompt = build_prompt(engine.apply_chat_template, p, scfg)
        programs[p.problem_id] = _program(p, prompt, scfg, ("linear", "binary")[i % 2], run_id)
    outs = run_programs(programs, engine.generate)
    with ShardWriter(root, run_id) as writer:
        for i, out in enumerate(outs.values()):
            trace = _trace(run_id, out)
            writer.commit(f"shard-{i:06d}", out | {"traces": [trace] if trace else []})
        writer.commit("load-rejects", {"rejects": [
            reject_row("load", "data.jsonl:3", "{}", "missing question"),
            reject_row("load", "data.jsonl:9", "{}", "missing question"),
            reject_row("label", problems[0].problem_id, "", "filtered: probe rollouts all right or all wrong"),
        ]})
    solutions = sum(len(o["solutions"]) for o in outs.values())
    finish_run(root, run_id, {"problems": len(problems), "solutions": solutions, "wall_s": 2.0,
                              "engine_completion_tokens": 5000, "engine_calls": 4, "tokens_per_s": 2500.0})
    return run_id


def add_big_tree(root: Path, run_id: str, n_nodes: int, root_fanout: int = 300, fanout: int = 2,
                 seed: int = 0) -> tuple[str, int]:
    """Commit one synthetic problem whose tree has ``n_nodes`` steps (``root_fanout`` first steps, more than
    the viewer shows at once, then ``fanout`` children per node, breadth first), one solution ending at the
    last node and a trace along it.

    Returns the problem id and the depth of that last node.
    """
    rng = random.Random(seed)
    question = "Big tree: how many steps are there?"
    pid = problem_id("big", question)
    root_id = node_id("", pid)
    nodes = [{"node_id": root_id, "parent_id": "", "problem_id": pid, "depth": 0, "text": "", "n": 0, "n_correct": 0}]
    frontier = [nodes[0]]
    while len(nodes) < n_nodes + 1:
        parent = frontier.pop(0)
        width = root_fanout if parent is nodes[0] else fanout
        for _ in range(min(width, n_nodes + 1 - len(nodes))):
            text = f"Step {len(nodes)}: {rng.randint(1, 99)} + 1 = {rng.randint(1, 99)}.\n\n"
            n_correct = rng.randint(0, 4)
            child = {"node_id": node_id(parent["node_id"], text), "parent_id": parent["node_id"], "problem_id": pid,
                     "depth": parent["depth"] + 1, "text": text, "n": 4, "n_correct": n_correct,
                     "value": n_correct / 4, "origin": "rollout"}
            nodes.append(child)
            frontier.append(child)
    by_id = {n["node_id"]: n for n in nodes}
    path, node = [], nodes[-1]
    while node["depth"] > 0:
        path.append(node["node_id"])
        node = by_id[node["parent_id"]]
    path.reverse()
    nodes[-1].update(terminal=True, answer="7", outcome_correct=True)
    solution = {"solution_id": path[-1], "problem_id": pid, "sample_index": 0, "text": "", "n_steps": len(path),
                "n_tokens": 10 * len(path), "answer": "7", "correct": True, "node_ids": path, "first_error": -1}
    trace = {"trace_id": "t-big", "problem_id": pid, "kind": "shortest", "text": "", "n_tokens": 10 * len(path),
             "segments": [by_id[i]["text"] for i in path], "segment_kinds": ["step"] * len(path), "node_ids": path,
             "length_ratio": 0.8, "median_correct_tokens": 12.5 * len(path)}
    with ShardWriter(root, run_id) as writer:
        writer.commit("big-tree", {"nodes": nodes, "solutions": [solution], "traces": [trace], "problems": [
            {"problem_id": pid, "source": "big", "question": question, "gold_answer": "7"}]})
    return pid, len(path)


# A hand-made run whose dataset numbers are known: two problems, two labeled steps each.
DATASET_STEPS = [  # (problem, depth, text, labels as (strategy, hard, soft, label_source))
    ("p1", 1, "2 + 3 = 5.\n\n", [("linear", True, 1.0, "mc")]),
    ("p1", 2, "5 * 2 = 11.\n\n", [("linear", True, 0.5, "mc")]),  # good by MC, yet 5 * 2 is 10
    ("p2", 1, "4 + 4 = 8.\n\n", [("linear", True, 0.75, "mc"), ("binary", True, None, "inferred")]),
    ("p2", 2, "8 - 1 = 6.\n\n", [("linear", False, 0.0, "mc")]),  # wrong claim, but labeled bad: not counted
]
DATASET_PRM = [  # (example, problem, first_error, labels, soft_labels)
    ("e1", "p1", -1, [True, True], [1.0, 0.5]),
    ("e2", "p2", 1, [True, False], [0.75, 0.0]),
    ("e3", "p2", -1, [True, None], [0.75, None]),  # its second step is masked
]


def make_dataset_run(root: Path, run_id: str = "dataset-test") -> str:
    """Commit ``DATASET_STEPS`` as nodes and step labels and ``DATASET_PRM`` as prm_dataset rows; returns the run id.

    Known numbers: 3 PRM rows, 1 with a negative; 5 PRM step labels, 4 good, 1 masked; 5 step labels (mc 4,
    inferred 1); depth 1: 3 labels all good, depth 2: 2 labels, 1 good; 4 soft values; 3 good steps, of which
    the arithmetic checker flags 1 ("5 * 2 = 11").
    """
    start_run(root, run_id, {"test": True}, engine="sim")
    nodes, labels, parents = [], [], {}
    for pid, depth, text, step_labels in DATASET_STEPS:
        parent = parents.get((pid, depth - 1), node_id("", pid))
        nid = node_id(parent, text)
        parents[(pid, depth)] = nid
        nodes.append({"node_id": nid, "parent_id": parent, "problem_id": pid, "depth": depth, "text": text})
        labels += [{"node_id": nid, "problem_id": pid, "strategy": strategy, "hard": hard, "soft": soft,
                    "label_source": source} for strategy, hard, soft, source in step_labels]
    prm = [{"example_id": e, "problem_id": pid, "first_error": fe, "labels": hard, "soft_labels": soft}
           for e, pid, fe, hard, soft in DATASET_PRM]
    problems = [{"problem_id": pid, "question": f"question {pid}", "gold_answer": "1"} for pid in ("p1", "p2")]
    with ShardWriter(root, run_id) as writer:
        writer.commit("steps", {"problems": problems, "nodes": nodes, "step_labels": labels})
        writer.commit("datasets", {"prm_dataset": prm})
    finish_run(root, run_id, {"problems": len(problems)})
    return run_id
