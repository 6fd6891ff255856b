import math

import pyarrow as pa
import pytest

from search.labeling import STRATEGIES, make_config, rows
from search.labeling.sequential import beta_interval_width
from search.program import run_program
from search.rollouts import RolloutConfig, rollout_batch
from search.sampling import SamplingConfig, sample_solutions
from storage.schemas import TABLES
from tests.labeling_fixtures import FakeEngine, judge, problem, solution_text


def sampled(texts, p_success=1.0):
    eng = FakeEngine(texts, p_success)
    out = run_program(sample_solutions(problem(), "P", SamplingConfig(n_solutions=len(texts)), judge),
                      eng.generate)
    eng.requests.clear()
    return eng, out


def label(name, out, eng, **options):
    cfg = make_config(name, options)
    paths = [s.path for s in out.solutions]
    return run_program(STRATEGIES[name].label(out.tree, paths, problem(), "P", cfg, judge), eng.generate)


def n_rollouts(out):
    return sum(n.n for n in out.tree.nodes.values())


def test_rollout_batch_continues_indices_merges_duplicates_and_refuses_terminals():
    eng, out = sampled([solution_text(2)])
    node = out.solutions[0].path[0]
    cfg = RolloutConfig(seed=3)
    run_program(rollout_batch([(node, 2), (node, 1)], problem(), "P", cfg, judge), eng.generate)
    assert len(eng.requests) == 1 and eng.requests[0].n == 3 and eng.requests[0].prefix == node.prefix
    run_program(rollout_batch([(node, 2)], problem(), "P", cfg, judge), eng.generate)
    assert [r.index for r in node.rollouts] == [0, 1, 2, 3, 4]
    assert len({r.request_key for r in node.rollouts}) == 5
    assert eng.requests[1].request_key == node.rollouts[3].request_key
    with pytest.raises(ValueError, match="terminal"):
        run_program(rollout_batch([(out.solutions[0].path[-1], 1)], problem(), "P", cfg, judge), eng.generate)


def test_linear_rolls_out_each_shared_node_once_and_labels_by_value():
    eng, out = sampled([solution_text(3), solution_text(3, bad_at=1)])
    res = label("linear", out, eng, k=2)
    inner = {n.node_id for s in out.solutions for n in s.path if not n.terminal}
    assert n_rollouts(out) == 2 * len(inner) == res.n_rollouts  # step 0 is shared: rolled out once
    assert res.first_errors == [-1, 1]
    for lab in res.labels.values():
        assert lab.hard == (lab.value > 0) and lab.soft == lab.value
    leaf = out.solutions[1].path[-1]
    assert res.labels[leaf.node_id].label_source == "outcome" and leaf.n == 0


@pytest.mark.parametrize("bad_at", [0, 1, 4, 7, 10])
def test_binary_finds_the_planted_error_in_log_steps(bad_at):
    eng, out = sampled([solution_text(11, bad_at=bad_at)])
    res = label("binary", out, eng, k=4)
    assert res.first_errors == [bad_at]
    assert res.n_rollouts <= 4 * math.ceil(math.log2(12))
    path = out.solutions[0].path
    assert all(res.labels[n.node_id].hard for n in path[:bad_at])
    assert not res.labels[path[bad_at].node_id].hard
    assert all(n.node_id not in res.labels for n in path[bad_at + 1:-1])  # later inner steps unlabeled
    assert {res.labels[n.node_id].label_source for n in path[:bad_at] if n.n == 0} <= {"inferred"}


def test_binary_reuses_rollouts_and_skips_correct_solutions_unless_asked():
    eng, out = sampled([solution_text(6), solution_text(6, bad_at=3)])
    first = label("binary", out, eng, k=4)
    assert first.first_errors == [-1, 3]
    again = label("binary", out, eng, k=4)
    assert again.n_rollouts == 0 and again.first_errors == first.first_errors
    eng, out = sampled([solution_text(6)])
    assert label("binary", out, eng, k=4).n_rollouts == 0
    searched = label("binary", out, eng, k=4, trust_answer=False)
    assert searched.n_rollouts > 0 and searched.first_errors == [-1]


def test_adaptive_stops_each_good_step_at_its_first_success():
    eng, out = sampled([solution_text(8, bad_at=5)], p_success=0.4)
    res = label("adaptive", out, eng, search="linear", max_per_step=16)
    for node in out.solutions[0].path[:5]:
        assert node.rollouts[-1].correct and not any(r.correct for r in node.rollouts[:-1])
    for node in out.solutions[0].path[5:-1]:
        assert node.n == 16 and not res.labels[node.node_id].hard
    assert res.first_errors == [5]


def test_adaptive_binary_finds_the_error_with_fewer_rollouts_than_binary():
    eng, out = sampled([solution_text(11, bad_at=6)])
    res = label("adaptive", out, eng, batch=1, max_per_step=4)
    assert res.first_errors == [6]
    eng2, out2 = sampled([solution_text(11, bad_at=6)])
    assert res.n_rollouts < label("binary", out2, eng2, k=4).n_rollouts


def test_adaptive_respects_the_problem_budget_and_judges_on_what_it_has():
    eng, out = sampled([solution_text(10, bad_at=2), solution_text(10, bad_at=7)], p_success=0.5)
    res = label("adaptive", out, eng, search="linear", max_per_step=8, max_per_problem=12)
    assert res.n_rollouts <= 12 == n_rollouts(out)


def test_adaptive_soft_target_samples_until_the_interval_is_narrow_or_capped():
    eng, out = sampled([solution_text(3)], p_success=0.5)
    label("adaptive", out, eng, search="linear", target="soft", width=0.5, max_per_step=30,
          trust_answer=False)
    for node in out.solutions[0].path[:-1]:
        width = beta_interval_width(node.n_correct, node.n - node.n_correct, 0.9)
        assert node.n == 30 or width < 0.5
        assert node.n < 2 or beta_interval_width(*_counts(node.rollouts[:-1]), 0.9) >= 0.5


def _counts(rollouts):
    ok = sum(r.correct for r in rollouts)
    return ok, len(rollouts) - ok


def test_mcts_respects_its_budget_and_turns_rollouts_into_nodes():
    texts = [solution_text(6, bad_at=3), solution_text(6)]
    eng, out = sampled(texts, p_success=0.5)
    res = label("mcts", out, eng, k=4, rollout_budget=30, search_limit=10)
    assert not res.filtered and res.n_rollouts <= 30
    assert any(n.origin == "rollout" for n in out.tree.nodes.values())
    assert res.first_errors[0] in (3, None) and res.first_errors[1] == -1


def test_mcts_finds_the_error_of_a_wrong_solution_and_filters_trivial_questions():
    eng, out = sampled([solution_text(6, bad_at=3), solution_text(6)])
    res = label("mcts", out, eng, k=4, rollout_budget=200)
    assert res.first_errors == [3, -1] and res.stats["iterations"] >= 1
    eng, out = sampled([solution_text(4)])  # the sampled solution and every root rollout are right
    res = label("mcts", out, eng, k=4)
    assert res.filtered and res.first_errors == [None] and res.labels == {}
    assert out.tree.root.n == 3  # the sampled solution is the 4th root sample; the probe rollouts stay


def test_configs_reject_unknown_keys_and_build_nested_rollout_config():
    with pytest.raises(ValueError, match="unknown"):
        make_config("binary", {"kk": 2})
    with pytest.raises(ValueError, match="unknown"):
        make_config("linear", {"rollout": {"temp": 1.0}})
    with pytest.raises(ValueError):
        make_config("adaptive", {"search": "ternary"})
    with pytest.raises(ValueError, match="unknown labeling strategy"):
        make_config("greedy", {})
    assert make_config("mcts", {"rollout": {"seed": 9}}).rollout.seed == 9


def test_rows_match_the_storage_schemas():
    eng, out = sampled([solution_text(4, bad_at=2), solution_text(4)])
    res = label("binary", out, eng, k=2)
    tables = rows(out.tree, res, "run1", out.solutions)
    for name, table_rows in tables.items():
        schema = TABLES[name]
        assert table_rows and set(table_rows[0]) == set(schema.names)
        pa.Table.from_pylist(table_rows, schema=schema)  # types cast cleanly
    assert [r["first_error"] for r in tables["solutions"]] == [2, -1]
    assert len(tables["rollouts"]) == n_rollouts(out)


@pytest.mark.parametrize("name,options", [("binary", {"k": 2}), ("adaptive", {"max_per_step": 2}),
                                          ("linear", {"k": 1})])
def test_strategies_find_the_error_planted_by_the_sim_engine(name, options):
    from cluster.problems.arith import first_error
    from cluster.problems.loaders import load_arith
    from cluster.sim_engine import SimConfig, SimEngine

    clean = {"arith_error_rate": 0.0, "logic_error_rate": 0.0, "recovery_rate": 0.0}
    (prob,) = load_arith(1, seed=3, mix={8: 1.0})
    planted, labeler = SimEngine(SimConfig(force_error_at=5, **clean)), SimEngine(SimConfig(**clean))
    prompt = labeler.apply_chat_template([{"role": "user", "content": prob.question}])
    out = run_program(sample_solutions(prob, prompt, SamplingConfig(n_solutions=1), judge), planted.generate)
    assert first_error(prob.question, out.solutions[0].text) == 5 and not out.solutions[0].correct
    res = run_program(STRATEGIES[name].label(out.tree, [out.solutions[0].path], prob, prompt,
                                             make_config(name, options), judge), labeler.generate)
    assert res.first_errors == [5]
