"""``tracemill search`` end to end on the sim engine: picks and trees stored once, the report's accuracy
against N, a bad recipe refused before anything is written, and the prompt styles' prompts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.problems.problem import Problem
from pipelines.cli import app
from pipelines.config import ConfigError
from pipelines.report import search_curves, style_comparison, write_report
from pipelines.search_job import build_scorer, execute_search, load_search_config, plan
from search.sampling import CHAIN_OF_DRAFT, CHAIN_OF_DRAFT_WORDS, SamplingConfig, prompt_messages
from storage.catalog import Catalog
from verifier.answers import judge

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "search_sim.toml"
STRATEGIES = ("majority", "best_of_n", "weighted_best_of_n", "beam", "dvts")
BUDGETS = [1, 2, 4]


def _overrides(root: Path, **more) -> dict:
    return {"storage.root": str(root), "problems.n": 6, "storage.shard_size": 4, "search.budgets": BUDGETS,
            "ray.num_cpus": 2, **more}


def _sql(root: Path, query: str, run_id: str = "s1") -> list[dict]:
    with Catalog(root) as cat:
        return cat.sql(query, run_id=run_id).to_pylist()


@pytest.fixture(scope="module")
def search_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("search") / "data"
    summary = execute_search(load_search_config(RECIPE, _overrides(root)), run_id="s1")
    return root, summary


def test_each_problem_once_and_one_pick_per_problem_style_strategy_and_n(search_run):
    root, summary = search_run
    problems = _sql(root, "SELECT problem_id, count(*) AS c FROM problems GROUP BY 1")
    assert len(problems) == 6 and {r["c"] for r in problems} == {1}
    cells = _sql(root, "SELECT problem_id, style, strategy, budget, count(*) AS c, count(DISTINCT pick_id) AS ids "
                       "FROM search_picks GROUP BY ALL")
    assert len(cells) == 6 * 2 * len(STRATEGIES) * len(BUDGETS) == summary.picks
    assert {(r["c"], r["ids"]) for r in cells} == {(1, 1)}
    assert {r["strategy"] for r in cells} == set(STRATEGIES) and {r["budget"] for r in cells} == set(BUDGETS)
    assert _sql(root, "SELECT count(*) AS c FROM search_nodes GROUP BY pick_id, node_id HAVING count(*) > 1") == []


def test_the_chosen_answer_is_a_stored_candidate_judged_against_the_gold(search_run):
    root, _ = search_run
    picks = _sql(root, "SELECT p.pick_id, p.answer, p.correct, p.chosen_text, p.chosen_node_id, q.gold_answer "
                       "FROM search_picks p JOIN problems q USING (run_id, problem_id)")
    nodes = {(r["pick_id"], r["node_id"]): r for r in _sql(root, "SELECT * FROM search_nodes")}
    assert sum(p["correct"] for p in picks) > 0 and sum(not p["correct"] for p in picks) > 0
    for p in picks:
        leaf = nodes[(p["pick_id"], p["chosen_node_id"])]
        assert leaf["terminal"] and leaf["chosen"] and leaf["answer"] == p["answer"]
        path, nid = [], p["chosen_node_id"]
        while (p["pick_id"], nid) in nodes:  # the chosen path runs from the leaf up to the question
            path.append(nodes[(p["pick_id"], nid)])
            nid = path[-1]["parent_id"]
        assert [n["depth"] for n in path] == list(range(len(path), 0, -1))
        assert all(n["chosen"] for n in path) and "".join(n["text"] for n in reversed(path)) == p["chosen_text"]
        assert p["correct"] == judge(p["chosen_text"], p["gold_answer"]).correct


def test_beam_trees_keep_pruned_steps_with_their_scores(search_run):
    root, _ = search_run
    rows = _sql(root, "SELECT p.strategy, count(*) FILTER (WHERE NOT n.chosen AND NOT n.terminal) AS pruned, "
                      "count(*) FILTER (WHERE n.score IS NULL) AS unscored FROM search_nodes n "
                      "JOIN search_picks p USING (run_id, pick_id) WHERE p.budget = 4 GROUP BY 1")
    by = {r["strategy"]: r for r in rows}
    assert by["beam"]["pruned"] > 0 and by["dvts"]["pruned"] > 0
    assert by["beam"]["unscored"] == by["best_of_n"]["unscored"] == 0
    assert by["majority"]["unscored"] > 0  # no verifier: majority vote's steps carry no score


def test_report_plots_accuracy_against_n_from_the_stored_picks(search_run):
    root, _ = search_run
    picks = _sql(root, "SELECT p.*, q.gold_answer FROM search_picks p JOIN problems q USING (run_id, problem_id)")
    curves = search_curves(picks)
    ns, acc = curves[("step-by-step", "majority")]
    by_sql = _sql(root, "SELECT budget, avg(correct::INT) AS a FROM search_picks WHERE strategy = 'majority' "
                        "AND style = 'step-by-step' GROUP BY 1 ORDER BY 1")
    assert ns == BUDGETS and acc == pytest.approx([r["a"] for r in by_sql])
    styles = style_comparison(picks)
    assert set(styles) == {"step-by-step", "chain-of-draft"} and all(s["picks"] == 90 for s in styles.values())
    html = write_report(root, "s1").read_text(encoding="utf-8")
    search_section = html[html.index('id="plot-search"'):html.index('id="plot-search-styles"')]
    assert "data:image/png;base64," in search_section and "over 6 problems; scorer: tool" in search_section


def test_resume_of_a_finished_search_writes_nothing(search_run):
    root, _ = search_run
    before = _sql(root, "SELECT count(*) AS c FROM search_picks")
    summary = execute_search(load_search_config(RECIPE, _overrides(root)), run_id="s1", resume=True, report=False)
    assert summary.skipped_shards == 2 and summary.picks == 0
    assert _sql(root, "SELECT count(*) AS c FROM search_picks") == before


def test_mc_scorer_recipe_scores_steps_by_rollouts(tmp_path):
    root = tmp_path / "data"
    cfg = load_search_config(RECIPE, _overrides(root, **{
        "problems.n": 2, "search.budgets": [2], "search.styles": ["step-by-step"],
        "search.scorer": {"name": "mc", "options": {"k": 2}},
        "search.strategies": {"best_of_n": {"aggregation": "min"}, "dvts": {"beam_width": 2}}}))
    summary = execute_search(cfg, run_id="mc", report=False)
    assert summary.picks == 4 and summary.failed_picks == 0
    scores = _sql(root, "SELECT DISTINCT score FROM search_nodes WHERE score IS NOT NULL", "mc")
    assert {r["score"] for r in scores} <= {0.0, 0.5, 1.0} and len(scores) >= 2  # shares of k = 2 rollouts
    assert _sql(root, "SELECT DISTINCT scorer FROM search_picks", "mc") == [{"scorer": "mc"}]
    # the pool generated the rollouts too: more tokens than the picks' own samples
    own = _sql(root, "SELECT sum(completion_tokens) AS t FROM search_picks", "mc")[0]["t"]
    assert summary.completion_tokens > own


@pytest.mark.parametrize(("setting", "message"), [
    ("search.strategies.dvts.keep_frac=0.5", "search.strategies.dvts: DvtsConfig: unknown key(s) ['keep_frac']"),
    ("search.strategies.majority.aggregation='min'", "unknown key(s) ['aggregation']"),
    ("search.strategies.greedy={}", "search.strategies.greedy: unknown strategy"),
    ("search.strategies.beam.n=8", "N comes from search.budgets"),
    ("sampling.n_solutions=8", "sampling.n_solutions: not read by search"),
    ("sampling.style='chain-of-draft'", "sampling.style: not read when search.styles"),
    ("search.budgets=[2,0]", "search.budgets"),
    ("search.styles=['terse']", "search.styles.0"),
    ("search.scorer={name='prm',options={path='no_such_dir'}}", "not a folder written by train-prm"),
    ("search.scorer.options={kk=3}", "search.scorer.options"),
    ("labeling.strategy='linear'", "labeling: unknown key"),
    ("name='../escape'", "name"),
])
def test_a_bad_recipe_exits_2_with_one_line_and_writes_nothing(tmp_path, setting, message):
    root = tmp_path / "data"
    result = CliRunner().invoke(app, ["search", "-c", str(RECIPE), "--set", f"storage.root={root}",
                                      "--set", setting])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) <= 2  # one line, maybe wrapped
    assert not root.exists()


def test_strategy_tables_become_their_own_configs_with_sampling_defaults():
    cfg = load_search_config(RECIPE, {"sampling.temperature": 0.5, "search.budgets": [2, 8]})
    cells = plan(cfg)
    assert len(cells) == 2 * len(STRATEGIES) * 2
    beam = next(c.cfg for c in cells if c.strategy == "beam" and c.cfg.n == 8)
    assert (beam.beam_width, beam.temperature, beam.step_max_new_tokens) == (2, 0.5, 64)
    majority = next(c.cfg for c in cells if c.strategy == "majority")
    assert majority.max_new_tokens == cfg.sampling.max_new_tokens and not hasattr(majority, "aggregation")
    with pytest.raises(ConfigError, match="no strategy of this recipe reads a scorer"):
        build_scorer(load_search_config(RECIPE, {"search.strategies": {"majority": {}}}))


def test_chain_of_draft_asks_for_short_drafts_and_shows_drafted_examples():
    problem = Problem.make("Ann has 3 apples. She buys 5 more. How many apples does Ann have now?", "8", "arith")
    example = ("Bo has 2 pens. He buys 4 more. How many pens does Bo have now?",
               "Bo buys 4 more pens, so he has 2 + 4 = 6.\n\nThe answer is 6.")
    plain = prompt_messages(problem, SamplingConfig(few_shot={"arith": (example,)}))
    draft = prompt_messages(problem, SamplingConfig(few_shot={"arith": (example,)}, style="chain-of-draft"))
    assert plain[-1]["content"] == problem.question and CHAIN_OF_DRAFT not in str(plain)
    assert draft[-1]["content"] == f"{problem.question}\n\n{CHAIN_OF_DRAFT}" and f"{CHAIN_OF_DRAFT_WORDS} words" in CHAIN_OF_DRAFT
    assert draft[1]["content"] == "2 + 4 = 6.\n\nThe answer is 6."  # each example step cut to the budget
    assert all(len(step.split()) <= CHAIN_OF_DRAFT_WORDS for step in draft[1]["content"].split("\n\n"))
    with pytest.raises(ValueError, match="style"):
        SamplingConfig(style="terse")


@pytest.mark.slow
def test_smollm2_search_recipe_runs_both_styles_on_two_problems(tmp_path):
    root = tmp_path / "data"
    recipe = RECIPE.with_name("search_smollm2.toml")
    cfg = load_search_config(recipe, {
        "storage.root": str(root), "problems.n": 2, "search.budgets": [2], "sampling.max_new_tokens": 48,
        "search.strategies.beam": {"beam_width": 2, "aggregation": "min", "step_max_new_tokens": 32, "max_steps": 3},
        "ray.num_cpus": 2})
    summary = execute_search(cfg, run_id="smol")
    picks = _sql(root, "SELECT style, strategy, budget, chosen_tokens, completion_tokens FROM search_picks", "smol")
    assert len(picks) == summary.picks == 2 * 2 * 3 and summary.failed_picks == 0
    assert all(p["completion_tokens"] > 0 for p in picks)
    styles = style_comparison(_sql(root, "SELECT p.*, q.gold_answer FROM search_picks p "
                                         "JOIN problems q USING (run_id, problem_id)", "smol"))
    assert set(styles) == {"step-by-step", "chain-of-draft"}
    assert "Guided search: prompt styles" in Path(summary.report).read_text(encoding="utf-8")
