"""Open prompts (no gold answer) labeled by self-consistency: the majority answer of the sampled solutions is
the pseudo-gold, and every label says so in ``label_source``."""

from __future__ import annotations

import json

from cluster.problems import loaders
from cluster.problems.arith import generate
from cluster.problems.problem import Problem
from pipelines.config import load_config
from pipelines.run import execute
from pipelines.search_worker import problem_program
from search.labeling import make_config
from search.program import run_program
from search.sampling import SamplingConfig
from storage.catalog import Catalog
from tests.labeling_fixtures import FakeEngine, solution_text
from verifier.answers import gold_error


def load_problems(paths, fmt=None):  # noqa: ANN001, ANN202 - the loader with the verifier's gold check, as a run reads files
    return loaders.load_problems(paths, fmt, gold_check=gold_error)


def test_an_open_prompt_is_judged_against_the_majority_answer_and_its_labels_say_so():
    texts = [solution_text(2), solution_text(2, bad_at=0), solution_text(2), solution_text(2, bad_at=1),
             solution_text(2)]  # three say "42", two say "0"
    problem = Problem.make("What is six times seven?", "", "open")
    scfg = SamplingConfig(n_solutions=5)
    lcfg = make_config("linear", {"k": 2, "rollout": {"max_new_tokens": 32}})
    out = run_program(problem_program(problem, "q", scfg, "linear", lcfg, "r", False), FakeEngine(texts).generate)
    stored = out["problems"][0]
    assert stored["gold_answer"] == "42" and json.loads(stored["meta_json"])["gold_source"] == "self-consistency"
    assert [s["correct"] for s in out["solutions"]] == [True, False, True, False, True]
    labels = {r["node_id"]: r for r in out["step_labels"]}
    assert labels and all(r["label_source"].endswith(":self-consistency") for r in labels.values())
    nodes = {n["node_id"]: n for n in out["nodes"]}

    def prefix(nid: str) -> str:
        return prefix(nodes[nid]["parent_id"]) + nodes[nid]["text"] if nid in nodes else ""

    for nid, r in labels.items():  # rollouts from a prefix without a BAD step reach "42": the pseudo-gold
        assert r["hard"] == ("BAD" not in prefix(nid)), prefix(nid)


def test_a_problem_with_a_gold_answer_keeps_it_and_plain_label_sources():
    texts = [solution_text(1, bad_at=0)] * 3 + [solution_text(1)]  # the majority is wrong: gold decides
    problem = Problem.make("What is six times seven?", "42", "test")
    lcfg = make_config("linear", {"k": 2})
    out = run_program(problem_program(problem, "q", SamplingConfig(n_solutions=4), "linear", lcfg, "r", False),
                      FakeEngine(texts).generate)
    assert out["problems"][0]["gold_answer"] == "42"
    assert [s["correct"] for s in out["solutions"]] == [False, False, False, True]
    assert not any(":" in r["label_source"] for r in out["step_labels"])


def test_open_prompt_file_runs_end_to_end_and_validates(tmp_path):
    specs = generate(6, 3, {2: 0.5, 3: 0.5})
    path = tmp_path / "open.jsonl"
    path.write_text("".join(json.dumps({"question": s.question}) + "\n" for s in specs) + json.dumps(
        {"question": "a row with an answer", "answer": "1"}) + "\n", encoding="utf-8")
    problems, rejects = load_problems(path)
    assert len(problems) == 6 and all(p.gold_answer == "" for p in problems) and len(rejects) == 1
    cfg = load_config(None, {"storage.root": str(tmp_path / "data"), "problems.source": str(path), "problems.n": 0,
                             "engine": {"backend": "sim", "num_cpus": 2}, "sampling.n_solutions": 5,
                             "sampling.few_shot": 0,
                             "labeling.options": {"k": 2}, "ray.num_cpus": 2})
    summary = execute(cfg, run_id="open", progress=False, report=False)
    assert summary.validation is not None and summary.validation.ok, summary.validation.failed
    with Catalog(tmp_path / "data") as cat:
        gold = {r["question"]: r["gold_answer"] for r in cat.sql("SELECT question, gold_answer FROM problems",
                                                                   run_id="open").to_pylist()}
        sources = cat.sql("SELECT label_source, count(*) AS n FROM step_labels GROUP BY 1", run_id="open").to_pylist()
    assert sum(gold[s.question] == str(s.answer) for s in specs) >= 5  # the sim is right most of the time
    assert sources and all(r["label_source"].endswith(":self-consistency") for r in sources)
