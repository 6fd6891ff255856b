"""Label consistency on random trees: for every strategy x rule x trust_answer x override combination,
labels agree with their own rollouts (the ``tracemill validate`` invariants) and with each first error."""

from itertools import product

from hypothesis import given, settings
from hypothesis import strategies as st

from search.labeling import STRATEGIES, make_config
from search.program import run_program
from search.sampling import SamplingConfig, sample_solutions
from tests.labeling_fixtures import FakeEngine, assert_label_invariants, judge, problem, solution_text

BASES = [("linear", {"k": 2}), ("binary", {"k": 3}), ("adaptive", {"max_per_step": 4}),
         ("adaptive", {"search": "linear", "batch": 2, "max_per_step": 4, "max_per_problem": 20}),
         ("mcts", {"k": 3, "rollout_budget": 40, "filter_questions": False})]
RULES = [{"rule": "hard"}, {"rule": "threshold", "threshold": 0.4}, {"rule": "drop", "drop": 0.5}]
CONFIGS = [(name, {**base, **rule, "trust_answer": trust, "override_failed": override})
           for (name, base), rule, trust, override in product(BASES, RULES, (True, False), (False, True))]

solution_specs = st.lists(st.tuples(st.integers(1, 8), st.one_of(st.none(), st.integers(0, 7))),
                          min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
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
    assert_label_invariants(res, out.tree, paths)
    if not options["override_failed"]:
        assert all(lab.label_source != "override" for lab in res.labels.values())
