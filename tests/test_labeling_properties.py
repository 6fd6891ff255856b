"""Label consistency on random trees: whatever the strategy, labels agree with counts and paths."""

from hypothesis import given, settings
from hypothesis import strategies as st

from search.labeling import STRATEGIES, make_config
from search.program import run_program
from search.sampling import SamplingConfig, sample_solutions
from tests.labeling_fixtures import FakeEngine, judge, problem, solution_text

CONFIGS = [("linear", {"k": 2}), ("linear", {"k": 2, "trust_answer": True}), ("binary", {"k": 3}), ("adaptive", {"max_per_step": 4}),
           ("adaptive", {"search": "linear", "batch": 2, "max_per_step": 4, "max_per_problem": 20}),
           ("mcts", {"k": 3, "rollout_budget": 40, "filter_questions": False})]

solution_specs = st.lists(st.tuples(st.integers(1, 8), st.one_of(st.none(), st.integers(0, 7))),
                          min_size=1, max_size=4)


@settings(max_examples=25, deadline=None)
@given(specs=solution_specs, p_success=st.sampled_from([0.3, 0.7, 1.0]), which=st.integers(0, len(CONFIGS) - 1))
def test_labels_are_consistent(specs, p_success, which):
    texts = [solution_text(n, bad if bad is not None and bad < n else None) for n, bad in specs]
    eng = FakeEngine(texts, p_success)
    out = run_program(sample_solutions(problem(), "P", SamplingConfig(n_solutions=len(texts)), judge),
                      eng.generate)
    name, options = CONFIGS[which]
    paths = [s.path for s in out.solutions]
    res = run_program(STRATEGIES[name].label(out.tree, paths, problem(), "P", make_config(name, options),
                                             judge), eng.generate)
    for node in out.tree.nodes.values():
        assert node.n == len(node.rollouts) and 0 <= node.n_correct <= node.n
    assert res.n_rollouts == sum(n.n for n in out.tree.nodes.values())  # fresh tree: all rollouts are ours
    for lab in res.labels.values():
        node = out.tree.nodes[lab.node_id]
        assert lab.n == node.n and lab.n_correct == node.n_correct <= lab.n
        assert lab.label_source in {"mc", "outcome", "inferred"}
        if lab.label_source == "mc":
            assert lab.hard == (lab.n_correct > 0)
    for path, err in zip(paths, res.first_errors, strict=True):
        hards = [res.labels[n.node_id].hard if n.node_id in res.labels else None for n in path]
        bad = [i for i, h in enumerate(hards) if h is False]
        if bad and options.get("infer", name != "linear"):  # Math-Shepherd's plain linear may be non-monotone
            assert not any(h is True for h in hards[bad[0] + 1:])  # no good step after a bad one
        if err is not None and err >= 0:
            assert hards[err] is False and all(h is True for h in hards[:err])
        if err == -1:
            assert all(h is True for h in hards)
