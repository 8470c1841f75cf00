"""The evaluation contract: one way to score models everywhere (offline, on the gate, on a live canary).

Entry points (import them from their modules; this package imports nothing heavy so that
``steps.py`` compiles in a bare kfp environment):

- ``evaluate.evaluate_model``: a base candidate, a Model artifact or a live endpoint -> report.json + HTML;
- ``compare.compare_models``: paired bootstrap of two reports -> comparison.json (the gate's input);
- ``leaderboard.benchmark_candidates`` / ``select_candidate``: candidates, TF-IDF baseline, the choice;
- ``search.search_hyperparameters``: grid or random search over ``training.search_space``;
- ``inference.score_causal_lm`` / ``generate_greedy``: batched scoring and generation (benchmarks call these).
"""
