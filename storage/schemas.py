"""Explicit Arrow schemas of every table; every row carries ``run_id``.

Writers cast to these schemas, so a wrong type fails at write time rather than in a reader months later.
"""

from __future__ import annotations

import pyarrow as pa

RUNS = pa.schema([
    ("run_id", pa.string()),
    ("config_json", pa.string()),
    ("config_hash", pa.string()),
    ("code_version", pa.string()),
    ("model", pa.string()),
    ("engine", pa.string()),
    ("started_at", pa.timestamp("us", tz="UTC")),
    ("finished_at", pa.timestamp("us", tz="UTC")),
    ("status", pa.string()),  # running | finished | failed
    ("stats_json", pa.string()),  # summary counters (problems, rollouts, tokens, wall time)
])

PROBLEMS = pa.schema([
    ("run_id", pa.string()),
    ("problem_id", pa.string()),
    ("source", pa.string()),
    ("question", pa.string()),
    ("gold_answer", pa.string()),
    ("meta_json", pa.string()),
])

SOLUTIONS = pa.schema([
    ("run_id", pa.string()),
    ("solution_id", pa.string()),  # the leaf node id of the solution's path
    ("problem_id", pa.string()),
    ("sample_index", pa.int32()),
    ("text", pa.string()),
    ("n_steps", pa.int32()),
    ("n_tokens", pa.int32()),
    ("finish_reason", pa.string()),
    ("answer", pa.string()),
    ("correct", pa.bool_()),
    ("node_ids", pa.list_(pa.string())),  # the path, first step first
    ("first_error", pa.int32()),  # 0-based index of the first step labeled bad; -1 if none; null if unknown
    ("true_first_error", pa.int32()),  # ground truth where known (sim engine, ProcessBench); else null
])

NODES = pa.schema([
    ("run_id", pa.string()),
    ("node_id", pa.string()),
    ("parent_id", pa.string()),
    ("problem_id", pa.string()),
    ("depth", pa.int32()),
    ("text", pa.string()),
    ("n_tokens", pa.int32()),
    ("terminal", pa.bool_()),
    ("answer", pa.string()),
    ("outcome_correct", pa.bool_()),
    ("origin", pa.string()),  # sample | rollout | given
    ("n", pa.int32()),  # rollouts taken from this node
    ("n_correct", pa.int32()),
    ("value", pa.float64()),  # MC value n_correct / n; null if no rollouts
    # the step's code call (runs with tools.python; null otherwise, and in runs written before these columns)
    ("code", pa.string()),  # the ```python block's code
    ("tool_output", pa.string()),  # what its output block shows (stdout; the error line for a failed call)
    ("tool_verdict", pa.string()),  # the sandbox verdict: ok | error | timeout | cpu_limit | memory_limit | ...
])

ROLLOUTS = pa.schema([
    ("run_id", pa.string()),
    ("request_key", pa.string()),
    ("node_id", pa.string()),
    ("problem_id", pa.string()),
    ("rollout_index", pa.int32()),
    ("text", pa.string()),
    ("n_tokens", pa.int32()),
    ("finish_reason", pa.string()),
    ("answer", pa.string()),
    ("correct", pa.bool_()),
])

STEP_LABELS = pa.schema([
    ("run_id", pa.string()),
    ("node_id", pa.string()),
    ("problem_id", pa.string()),
    ("strategy", pa.string()),  # linear | binary | adaptive | mcts | given
    ("n", pa.int32()),
    ("n_correct", pa.int32()),
    ("value", pa.float64()),
    ("hard", pa.bool_()),  # Math-Shepherd HE: value > 0
    ("soft", pa.float64()),  # Math-Shepherd SE: the value itself
    ("label_source", pa.string()),  # mc | mc-threshold | mc-drop | outcome | inferred | override | arith | tool | consensus:...
])

REJECTS = pa.schema([
    ("run_id", pa.string()),
    ("stage", pa.string()),  # load | generate | label | mine ...
    ("source", pa.string()),  # file name and line, or problem id
    ("row", pa.string()),  # the raw row as text (truncated), so nothing is lost silently
    ("reason", pa.string()),
])

TABLES: dict[str, pa.Schema] = {
    "runs": RUNS,
    "problems": PROBLEMS,
    "solutions": SOLUTIONS,
    "nodes": NODES,
    "rollouts": ROLLOUTS,
    "step_labels": STEP_LABELS,
    "rejects": REJECTS,
}

TRACES = pa.schema([
    ("run_id", pa.string()),
    ("trace_id", pa.string()),  # hash of kind + node ids used, so re-mining the same tree gives the same id
    ("problem_id", pa.string()),
    ("kind", pa.string()),  # shortest | backtrack | journey
    ("text", pa.string()),  # "".join(segments)
    ("n_tokens", pa.int32()),  # tokens of the steps used (reflections not counted); 0 where unknown
    ("segments", pa.list_(pa.string())),  # steps and reflections in trace order
    ("segment_kinds", pa.list_(pa.string())),  # step | wrong | reflection, one per segment
    ("node_ids", pa.list_(pa.string())),  # node per segment; "" for reflections
    ("wrong_positions", pa.list_(pa.int32())),  # segment indices of the wrong steps
    ("wrong_char_starts", pa.list_(pa.int32())),  # character span of each wrong step in ``text``
    ("wrong_char_ends", pa.list_(pa.int32())),
    ("answer", pa.string()),
    ("mode", pa.string()),  # verified | answer-only (which solutions were eligible)
    ("median_correct_tokens", pa.float64()),  # shortest: median tokens of the problem's correct solutions
    ("length_ratio", pa.float64()),  # shortest: n_tokens / median_correct_tokens
    ("seed", pa.int64()),
])

PRM_DATASET = pa.schema([
    ("run_id", pa.string()),
    ("example_id", pa.string()),
    ("problem_id", pa.string()),
    ("source_id", pa.string()),  # the solution id the steps came from
    ("prompt", pa.string()),  # the question text (trainers apply their own template)
    ("completions", pa.list_(pa.string())),  # one entry per step, delimiter stripped
    ("labels", pa.list_(pa.bool_())),  # hard labels; null = a masked step (context, not supervision)
    ("soft_labels", pa.list_(pa.float64())),  # MC values; null = masked, or no rollouts of its own
    ("first_error", pa.int32()),  # index of the first bad step (its label is the last non-null), -1 if none
    ("truncated", pa.bool_()),  # steps after the first error were dropped
    ("masked", pa.int32()),  # steps after the first error kept with null labels
])

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

SFT_DATASET = pa.schema([
    ("run_id", pa.string()),
    ("example_id", pa.string()),
    ("problem_id", pa.string()),
    ("trace_id", pa.string()),
    ("kind", pa.string()),  # the trace kind it came from
    ("prompt", pa.string()),
    ("completion", pa.string()),
    ("messages", pa.list_(MESSAGE)),  # [{"role": "system"}?, {"role": "user"}, {"role": "assistant"}]
    ("prompt_messages", pa.list_(MESSAGE)),  # conversational prompt-completion: [system?, user]
    ("completion_messages", pa.list_(MESSAGE)),  # [assistant]
    ("wrong_char_starts", pa.list_(pa.int32())),  # character span of each wrong step in ``completion``
    ("wrong_char_ends", pa.list_(pa.int32())),
])

FILTERED = pa.schema([
    ("run_id", pa.string()),
    ("table_name", pa.string()),  # the table the row was dropped from
    ("row_id", pa.string()),
    ("problem_id", pa.string()),
    ("filter", pa.string()),  # exact_dup | near_dup | contamination | per_problem_cap | undetermined ...
    ("reason", pa.string()),  # human-readable detail (duplicate of which row, which eval set, ...)
    ("kept_id", pa.string()),  # the row it duplicates, where there is one
    ("row_json", pa.string()),  # the dropped row, so nothing is lost silently
])

TABLES.update({
    "traces": TRACES,
    "prm_dataset": PRM_DATASET,
    "sft_dataset": SFT_DATASET,
    "filtered": FILTERED,
})

# ``tracemill search``: one pick per (problem, prompt style, strategy, budget N), and the tree it searched
SEARCH_PICKS = pa.schema([
    ("run_id", pa.string()),
    ("pick_id", pa.string()),  # hash of problem, style, strategy, scorer and N: the same cell is the same id
    ("problem_id", pa.string()),
    ("style", pa.string()),  # prompt preset: step-by-step | chain-of-draft
    ("strategy", pa.string()),  # majority | best_of_n | weighted_best_of_n | beam | dvts
    ("scorer", pa.string()),  # mc | tool | prm | arith_truth; "" for majority vote (no verifier)
    ("budget", pa.int32()),  # N: solutions, or candidate steps per round
    ("answer", pa.string()),  # the chosen answer; null if no candidate had one
    ("correct", pa.bool_()),
    ("chosen_index", pa.int32()),  # index of the chosen candidate among the finished ones; null if none
    ("chosen_node_id", pa.string()),  # the chosen candidate's last node in search_nodes
    ("chosen_text", pa.string()),
    ("chosen_tokens", pa.int32()),  # tokens of the chosen solution
    ("chosen_score", pa.float64()),  # its aggregated score; null for majority vote
    ("n_candidates", pa.int32()),  # finished candidates the choice was made from
    ("completion_tokens", pa.int64()),  # every token generated for this pick (scorer rollouts not included)
    ("config_json", pa.string()),  # the strategy's own config
])

SEARCH_NODES = pa.schema([
    ("run_id", pa.string()),
    ("pick_id", pa.string()),
    ("problem_id", pa.string()),
    ("node_id", pa.string()),  # hash of parent + step (search.tree.node_id); unique within a pick
    ("parent_id", pa.string()),
    ("depth", pa.int32()),  # 1 = first step
    ("text", pa.string()),
    ("score", pa.float64()),  # the scorer's score of this step; null where it was not scored (majority vote)
    ("terminal", pa.bool_()),  # a finished candidate ends here
    ("answer", pa.string()),  # terminal nodes: the candidate's answer
    ("correct", pa.bool_()),  # terminal nodes: judged against the gold answer
    ("chosen", pa.bool_()),  # on the chosen candidate's path
])

TABLES.update({"search_picks": SEARCH_PICKS, "search_nodes": SEARCH_NODES})
