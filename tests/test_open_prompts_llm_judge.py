"""Open prompts labeled against the LLM judge's pseudo-gold (``labeling.open_gold = "llm-judge"``).

The judge critiques the sampled solutions; the pseudo-gold is the majority answer of those it finds no
error in, every label says ``:llm-judge``, and a problem it accepts no solution of is a ``rejects`` row.
The fast tests drive one problem's program in-process; the run tests go through ``pipelines.run.execute``
on Ray with an engine that solves like the sim and judges like an oracle (``tests.judge_fixtures``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import pipelines.run as run_module
from cluster.problems.arith import first_error, generate
from cluster.problems.problem import Problem
from pipelines.config import ConfigError, load_config
from pipelines.jobs import check_run_id
from pipelines.search_worker import problem_program
from pipelines.validate import validate_run
from search.guided.base import majority_answer
from search.labeling import make_config
from search.labeling.judged_gold import Critic, critic_template
from search.program import run_program
from search.sampling import SamplingConfig
from storage.catalog import Catalog
from storage.runs import start_run
from storage.shards import ShardWriter
from tests.judge_fixtures import CRITIC_MARK, GARBAGE_JUDGE, ORACLE_JUDGE, BadStepJudge
from verifier.judge_llm import JudgeConfig

GOOD_7, GOOD_8 = "step a\n\nThe answer is 7.", "step d\n\nThe answer is 8."
BAD_9, OTHER_BAD_9 = "step b BAD\n\nThe answer is 9.", "step c BAD\n\nThe answer is 9."
N_OPEN = 16  # arith questions given without their answers
SOLUTIONS = 4
# per-step slips of the sim: about half the problems get no fully right solution among 4, and in some the
# majority answer is wrong while one solution is right (the judge's case)
SLIPS = {"arith_error_rate": 0.2, "logic_error_rate": 0.1}


def _open_program(texts: list[str], engine: BadStepJudge) -> Any:
    problem = Problem.make("What is the number?", "", "open")
    scfg = SamplingConfig(n_solutions=len(texts))
    lcfg = make_config("linear", {"k": 2, "rollout": {"max_new_tokens": 32}})
    critic = Critic(JudgeConfig(), critic_template(lambda convs: [engine.apply_chat_template(c) for c in convs]))
    return problem_program(problem, "q", scfg, "linear", lcfg, "r", False, critic)


@pytest.mark.parametrize(("texts", "gold"), [
    ([GOOD_7, BAD_9, OTHER_BAD_9, GOOD_8, BAD_9], "7"),  # self-consistency would say 9
    ([GOOD_8, BAD_9, OTHER_BAD_9, GOOD_7, BAD_9], "8"),  # 7 and 8 tie: the answer sampled first wins
])
def test_the_pseudo_gold_is_the_majority_answer_of_the_solutions_the_judge_accepts(texts, gold):
    engine = BadStepJudge(texts)
    out = run_program(_open_program(texts, engine), engine.generate)
    stored = out["problems"][0]
    meta = json.loads(stored["meta_json"])
    assert stored["gold_answer"] == gold and meta["gold_source"] == "llm-judge"
    assert [s["correct"] for s in out["solutions"]] == [t.endswith(f"is {gold}.") for t in texts]
    # the cost: one critique per distinct solution (the repeated BAD_9 shares one), in one batch
    critic_batches = [[r for r in batch if CRITIC_MARK in r.prompt] for batch in engine.batches]
    assert [len(b) for b in critic_batches if b] == [4]
    assert meta["judge"] == {"requests": 4, "accepted": 2, "found_error": 2, "unparsable": 0}
    assert out["step_labels"] and all(r["label_source"].endswith(":llm-judge") for r in out["step_labels"])
    assert "rejects" not in out


def test_an_open_prompt_the_judge_accepts_no_solution_of_is_stored_unlabeled_with_a_reject():
    engine = BadStepJudge([BAD_9, OTHER_BAD_9])
    out = run_program(_open_program([BAD_9, OTHER_BAD_9], engine), engine.generate)
    assert out["problems"][0]["gold_answer"] == ""
    assert json.loads(out["problems"][0]["meta_json"]) == {
        "judge": {"requests": 2, "accepted": 0, "found_error": 2, "unparsable": 0}}
    assert out["step_labels"] == [] and out["rollouts"] == []  # no answer to judge a rollout against
    assert [s["first_error"] for s in out["solutions"]] == [None, None]
    [reject] = out["rejects"]
    assert reject["stage"] == "label" and reject["reason"] == (
        "llm-judge accepted no solution: 2 with an error found, 0 critiques unparsable, "
        "0 solutions without a final answer")


def test_a_problem_with_a_gold_answer_is_not_judged():
    texts = [BAD_9, GOOD_7]
    engine = BadStepJudge(texts)
    lcfg = make_config("linear", {"k": 2})
    critic = Critic(JudgeConfig(), critic_template(lambda convs: [engine.apply_chat_template(c) for c in convs]))
    out = run_program(problem_program(Problem.make("What is the number?", "9", "test"), "q",
                                      SamplingConfig(n_solutions=2), "linear", lcfg, "r", False, critic),
                      engine.generate)
    assert not any(CRITIC_MARK in r.prompt for r in engine.requests)
    assert out["problems"][0]["gold_answer"] == "9" and "judge" not in out["problems"][0]["meta_json"]
    assert not any(":" in r["label_source"] for r in out["step_labels"])


@pytest.mark.parametrize(("template", "framed"), [
    (lambda text: f"<|user|>\n{text}\n<|assistant|>\n", True),  # the message inserted as it is
    (lambda text: f"<s>{text}</s><s>{text}</s>", False),  # twice
    (lambda text: f"<s>{text.upper()}</s>", False),  # changed
])
def test_the_critic_prompt_is_the_engines_chat_template_with_one_render_call_when_it_can_be(template, framed):
    calls: list[int] = []

    def render(convs: list[list[dict[str, str]]]) -> list[str]:
        calls.append(len(convs))
        return [template(c[0]["content"]) for c in convs]

    fill = critic_template(render)
    messages = [{"role": "user", "content": "Review this.\n\n<paragraph_0>\n1 + 1 = 3.\n</paragraph_0>"}]
    assert fill(messages) == template(messages[0]["content"])
    assert calls == ([2] if framed else [2, 1])


def test_resuming_with_other_judge_settings_is_refused(tmp_path):
    cfg = load_config(None, {"storage.root": str(tmp_path), "labeling.open_gold": "llm-judge"})
    start_run(tmp_path, "r", cfg.model_dump(mode="json"), model="m", engine="sim", code_version="x")
    check_run_id(tmp_path, cfg, "r", resume=True)  # the same config resumes
    other = load_config(None, {"storage.root": str(tmp_path), "labeling.open_gold": "llm-judge",
                               "labeling.judge": {"n": 3, "temperature": 0.5}})
    assert other.config_hash() != cfg.config_hash()
    with pytest.raises(ConfigError, match=r"labeling\.judge\.n, labeling\.judge\.temperature"):
        check_run_id(tmp_path, other, "r", resume=True)


# -- whole runs on Ray ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def judged(tmp_path_factory, ray_cluster) -> tuple[Path, dict[str, int], dict[str, Any]]:
    """One open-prompt file, run with the oracle judge and with the garbage judge; (root, true answers, summaries).

    The test engines are plugin backends (``engine.backend = "tests.judge_fixtures:..."``), which Ray's actors
    import by name like any backend.
    """
    tmp = tmp_path_factory.mktemp("judge")
    specs = generate(N_OPEN, 3, {3: 0.5, 4: 0.5})
    path = tmp / "open.jsonl"
    path.write_text("".join(json.dumps({"question": s.question}) + "\n" for s in specs), encoding="utf-8")
    root, summaries = tmp / "data", {}
    for run_id, backend in (("oracle", ORACLE_JUDGE), ("garbage", GARBAGE_JUDGE)):
        cfg = load_config(None, {
            "storage.root": str(root), "problems.source": str(path), "problems.format": "open",
            "problems.n": 0, "engine": {"backend": backend, "options": SLIPS},
            "sampling.n_solutions": SOLUTIONS, "sampling.max_new_tokens": 400, "sampling.few_shot": 0,
            "labeling.options": {"k": 2}, "labeling.open_gold": "llm-judge"})
        summaries[run_id] = run_module.execute(cfg, run_id=run_id, progress=False, report=False)
    return root, {s.question: s.answer for s in specs}, summaries


def _rows(root: Path, run_id: str, query: str) -> list[dict]:
    with Catalog(root) as cat:
        return cat.sql(query, run_id=run_id).to_pylist()


def test_a_judged_run_takes_the_true_answer_wherever_the_judge_accepted_a_solution(judged):
    root, truth, summaries = judged
    assert summaries["oracle"].validation.ok, summaries["oracle"].validation.failed
    problems = {p["problem_id"]: p for p in _rows(root, "oracle", "SELECT * FROM problems")}
    solutions: dict[str, list[dict]] = {}
    for s in _rows(root, "oracle", "SELECT * FROM solutions ORDER BY problem_id, sample_index"):
        solutions.setdefault(s["problem_id"], []).append(s)
    rejects = {r["source"]: r for r in _rows(root, "oracle", "SELECT * FROM rejects")}
    labeled = {r["problem_id"] for r in _rows(root, "oracle", "SELECT DISTINCT problem_id FROM step_labels")}
    assert len(problems) == N_OPEN
    kinds = {"judged": 0, "majority wrong": 0, "rejected": 0}
    for pid, p in problems.items():
        sols, answer = solutions[pid], str(truth[p["question"]])
        meta = json.loads(p["meta_json"])
        answered = [s for s in sols if s["answer"] is not None and s["finish_reason"] != "length"]
        assert meta["judge"]["requests"] == len({s["solution_id"] for s in answered}) <= SOLUTIONS
        if any(first_error(p["question"], s["text"]) == -1 for s in answered):
            kinds["judged"] += 1
            kinds["majority wrong"] += majority_answer([s["answer"] for s in sols]) != answer
            assert p["gold_answer"] == answer and meta["gold_source"] == "llm-judge"
            assert pid in labeled and pid not in rejects
        else:
            kinds["rejected"] += 1
            assert p["gold_answer"] == "" and "gold_source" not in meta and pid not in labeled
            assert rejects[pid]["stage"] == "label"
            assert rejects[pid]["reason"].startswith("llm-judge accepted no solution")
    assert all(kinds.values()), kinds  # each case happened, and self-consistency would have failed in some
    sources = _rows(root, "oracle", "SELECT DISTINCT label_source FROM step_labels")
    assert sources and all(r["label_source"].endswith(":llm-judge") for r in sources)


def test_a_judge_that_answers_garbage_rejects_every_open_prompt_and_the_run_goes_on(judged):
    root, _, summaries = judged
    summary = summaries["garbage"]
    assert summary.validation.ok and summary.problems == N_OPEN and summary.failed_problems == 0
    assert summary.steps_labeled == 0 and summary.rejects == N_OPEN
    problems = _rows(root, "garbage", "SELECT problem_id, gold_answer, meta_json FROM problems")
    reasons = {r["source"]: r["reason"] for r in _rows(root, "garbage", "SELECT * FROM rejects")}
    for p in problems:
        counts = json.loads(p["meta_json"])["judge"]
        assert p["gold_answer"] == "" and counts["accepted"] == 0 and counts["unparsable"] == counts["requests"] > 0
        assert f"{counts['requests']} critiques unparsable" in reasons[p["problem_id"]]


def test_validate_names_a_label_that_hides_its_pseudo_gold(judged, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(judged[0], root)
    [row] = _rows(root, "oracle", "SELECT * FROM step_labels LIMIT 1")
    plain = row["label_source"].removesuffix(":llm-judge")
    with ShardWriter(root, "oracle") as writer:  # the same node labeled again, without the judge's suffix
        writer.commit("damage", {"step_labels": [{**row, "strategy": "other", "label_source": plain}]})
    assert {c.name for c in validate_run(root, "oracle").failed} == {"gold_sources"}
