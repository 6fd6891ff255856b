"""The run report: metrics against hand-computed values, and the page built from stored runs."""

from __future__ import annotations

import html
import json
import operator
import re
from fractions import Fraction

import pytest

from cluster.problems.arith import parse_step
from pipelines.report import (
    DATASET_PANELS,
    SECTIONS,
    ReportConfig,
    cost_by_strategy,
    dataset_stats,
    load_run,
    tree_data,
    vote_curves,
    write_report,
)
from storage.catalog import Catalog
from storage.runs import finish_run, start_run
from storage.shards import ShardWriter
from tests.report_fixtures import add_big_tree, make_dataset_run, make_run

N_PANELS = len(SECTIONS) + len(DATASET_PANELS)

EXACT = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
_DATA = re.compile(r'<script type="application/json" id="tree-data-(\d+)">(.*?)</script>', re.S)


def _sol(pid: str, answer: str | None, correct: bool) -> dict:
    return {"problem_id": pid, "answer": answer, "correct": correct}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    root = tmp_path_factory.mktemp("data")
    return root, make_run(root)


def test_vote_curves_match_hand_computed_values():
    # p1: one right answer among three (the wrong answer B holds the majority); p2: one right solution
    sols = [_sol("p1", "A", True), _sol("p1", "B", False), _sol("p1", "B", False), _sol("p2", "7", True)]
    curves = vote_curves(sols)
    assert curves["n"] == [1.0, 2.0, 3.0]
    assert curves["mean"] == pytest.approx([(1 / 3 + 1) / 2, 1 / 3, 1 / 3])
    assert curves["oracle"] == pytest.approx([(1 / 3 + 1) / 2, 2 / 3, 1.0])
    # pairs {A,B} tie twice and A was sampled first (right), {B,B} votes wrong: 2/3; all three: B wins
    assert curves["majority"] == pytest.approx([(1 / 3 + 1) / 2, 2 / 3, 0.0])


def test_vote_curves_ignore_missing_answers_and_sample_large_subset_counts():
    sols = [_sol("p", None, False)] * 3 + [_sol("p", "5", True)] + [_sol("p", "6", False)] * 12
    curves = vote_curves(sols, draws=50, seed=1)
    assert curves["n"] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert curves["majority"][-1] == 0.0  # "6" outvotes "5"; the three unanswered do not vote for anything
    assert curves["oracle"][-1] == 1.0
    assert vote_curves([]) == {"n": [], "mean": [], "majority": [], "oracle": []}


def test_cost_by_strategy_divides_rollouts_by_solutions(run):
    root, run_id = run
    with Catalog(root, save=False) as cat:
        data = load_run(cat, run_id)
        expected = {}
        for row in cat.sql("SELECT l.strategy, count(DISTINCT r.request_key) / (SELECT count(*) FROM solutions s "
                           "WHERE s.problem_id IN (SELECT problem_id FROM step_labels WHERE strategy = l.strategy)) "
                           "AS per FROM rollouts r JOIN (SELECT DISTINCT problem_id, strategy FROM step_labels) l "
                           "USING (problem_id) GROUP BY 1", run_id=run_id).to_pylist():
            expected[row["strategy"]] = row["per"]
    cost = cost_by_strategy(data)
    assert set(cost) == {"linear", "binary"}
    for name, per in expected.items():
        assert cost[name]["rollouts"] == pytest.approx(per)
    assert cost["binary"]["rollouts"] < cost["linear"]["rollouts"]  # binary search spends fewer rollouts


def test_report_has_every_plot_and_one_tree_per_problem(run, tmp_path):
    root, run_id = run
    out = write_report(root, run_id, tmp_path / "r.html")
    page = out.read_text()
    assert "<script src=" not in page and "<link rel=\"stylesheet\"" not in page  # nothing fetched
    assert N_PANELS == 9 and page.count('src="data:image/png;base64,') == N_PANELS
    trees = [json.loads(raw) for _, raw in _DATA.findall(page)]
    with Catalog(root, save=False) as cat:
        counts = {r["problem_id"]: r["n"] for r in cat.sql(
            "SELECT problem_id, count(*) AS n FROM nodes WHERE depth > 0 GROUP BY 1", run_id=run_id).to_pylist()}
    assert {t["id"]: len(t["nodes"]) - 1 for t in trees} == counts
    for tree in trees:
        parents = [node[0] for node in tree["nodes"]]
        assert parents[0] == -1 and all(0 <= p < i for i, p in enumerate(parents) if i)  # parents come first
        for sol in tree["solutions"]:
            path = sol["path"]
            assert all(parents[b] == a for a, b in zip(path, path[1:], strict=False)) and parents[path[0]] == 0
    assert sum(len(t["traces"]) for t in trees) == 6


def test_default_path_is_inside_the_run_folder_and_unknown_run_fails(run):
    root, run_id = run
    assert write_report(root, run_id) == root / "runs" / run_id / "report.html"
    with pytest.raises(FileNotFoundError):
        write_report(root, "no-such-run")


def test_run_with_no_tables_gives_a_page_with_empty_sections(tmp_path):
    start_run(tmp_path, "empty", {"x": 1}, engine="sim")
    finish_run(tmp_path, "empty", {"problems": 0})
    page = write_report(tmp_path, "empty").read_text()
    assert page.count('class="empty">No data.') == N_PANELS
    assert "No problems stored." in page and "No mined traces" in page
    assert "PRM rows 0, with a negative 0 (—)" in page


def test_tables_without_a_runs_row_are_reported_with_a_warning(tmp_path):
    add_big_tree(tmp_path, "orphan", 30)
    page = write_report(tmp_path, "orphan").read_text()
    assert "has no <code>runs</code> row" in page and len(_DATA.findall(page)) == 1


def test_step_text_cannot_close_the_data_script(tmp_path):
    start_run(tmp_path, "evil", {})
    nasty = "x </script><script>alert(1)</script> <!-- y"
    with ShardWriter(tmp_path, "evil") as w:
        w.commit("s", {"problems": [{"problem_id": "p", "question": nasty, "gold_answer": "1"}],
                       "nodes": [{"node_id": "n1", "parent_id": "r", "problem_id": "p", "depth": 1, "text": nasty}]})
    page = write_report(tmp_path, "evil").read_text()
    assert "<script>alert" not in page
    [(_, raw)] = _DATA.findall(page)
    assert json.loads(raw)["nodes"][1][1] == nasty


def test_trees_beyond_the_limit_are_left_out_with_a_note(run):
    root, run_id = run
    with Catalog(root, save=False) as cat:
        data = load_run(cat, run_id)
        trees = tree_data(cat, data, ReportConfig(max_tree_problems=2))
    assert [t["id"] for t in trees] == [p["problem_id"] for p in data.problems[:2]]


def _sim_truth(text: str) -> list[str]:
    """The wrong claim of a sim step, known from the sim's own equation (``a op b = c``) in exact arithmetic
    (a logic slip may write ``10 / 3 = 3``), not from a checker."""
    parsed = parse_step(text)
    if not isinstance(parsed, tuple):
        return []
    a, op, b, c = parsed
    actual = EXACT[op](Fraction(a), Fraction(b))
    return [] if actual == c else [f"{a} {op} {b} = {c} (is {actual})"]


def test_wrong_arithmetic_claims_are_shown_per_node(run):
    """The report runs the real claim checker (``verifier.arith_claims``) on every node; what it shows is
    compared with the truth the sim wrote into the step, so a broken checker or report path fails here."""
    root, run_id = run
    with Catalog(root, save=False) as cat:
        trees = tree_data(cat, load_run(cat, run_id), ReportConfig())
    claims = [(node[1], node[10]) for t in trees for node in t["nodes"][1:]]
    assert sum(bool(_sim_truth(text)) for text, _ in claims) >= 3  # the sim engine wrote some wrong results
    for text, shown in claims:
        assert shown == _sim_truth(text), text


@pytest.fixture(scope="module")
def dataset_run(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    root = tmp_path_factory.mktemp("dataset")
    return root, make_dataset_run(root)


def _cells(page: str, table: str) -> list[list[str]]:
    body = re.search(rf'<table class="small" id="table-{table}">(.*?)</table>', page, re.S)[1]
    return [[html.unescape(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)[1:]]


def test_dataset_section_shows_prm_rows_label_balance_sources_and_checker_flags(dataset_run):
    root, run_id = dataset_run
    page = write_report(root, run_id).read_text()
    facts = re.search(r'<ul class="facts">(.*?)</ul>', page, re.S)[1]
    assert re.findall(r"<li>(.*?)</li>", facts) == [
        "PRM rows 3, with a negative 1 (33%)",
        "PRM step labels 5, good 4 (80%), masked 1",
        "Step labels 5, by source: mc 4 (80%), inferred 1 (20%)",
        "MC-good steps with a wrong arithmetic claim 1 of 3 (33%)",
    ]
    assert _cells(page, "label-depth") == [["1", "3", "100%"], ["2", "2", "50%"]]
    assert _cells(page, "label-source") == [["mc", "4", "80%"], ["inferred", "1", "20%"]]
    assert _cells(page, "flagged") == [["5 * 2 = 11.", "5 * 2 = 11 (is 10)"]]
    for key in DATASET_PANELS:
        assert re.search(rf'id="plot-{key}">.*?src="data:image/png;base64,', page, re.S)
    assert "4 soft labels; mean 0.56." in page  # (1 + 0.5 + 0.75 + 0) / 4, the null soft label left out


def test_checker_counts_only_good_labeled_steps_once_each(dataset_run):
    root, run_id = dataset_run
    with Catalog(root, save=False) as cat:
        stats = dataset_stats(load_run(cat, run_id))
    # "8 - 1 = 6" is wrong too but labeled bad; "4 + 4 = 8" has two good labels and counts once
    assert (stats.good_steps, stats.flagged) == (3, [("5 * 2 = 11.", ["5 * 2 = 11 (is 10)"])])
    assert (stats.prm_rows, stats.prm_negative) == (3, 1)
