"""The search tree: steps, expansion, rollouts, Monte Carlo values and labeling strategies."""
