"""Delivery: gate -> promote through Git -> canary analysis -> promote or roll back (docs/design.md section 6).

- ``gate.gate_candidate``: bless one artifact digest against the spec's gates.
- ``gitops.promote_adapter`` / ``gitops.promote_base_model``: commit the blessed model to the
  GitOps overlay's InferenceService (first champion, or canary at the first traffic step).
- ``canary.analyse_canary`` (one interval) and ``canary.run_canary`` (the `aicd canary` loop):
  Prometheus decides, each step, promotion or rollback is a commit.
- ``steps``: the thin KFP components of the three.
"""
