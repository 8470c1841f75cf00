"""Delivery: gate -> promote through Git -> rollout (canary analysis) -> promote or roll back
(docs/design.md section 6).

- ``gate.gate_candidate``: bless one artifact digest against the spec's gates.
- ``gitops.promote_adapter`` / ``gitops.promote_base_model``: commit the blessed model to the
  GitOps overlay's InferenceService (first champion, or canary at the first traffic step).
- ``readiness.wait_live``: wait until a commit is live and Ready (Argo CD or the InferenceService).
- ``analysis``: one interval's figures from Prometheus and the verdict, canary relative to stable.
- ``canary.analyse_canary`` (one interval), ``canary.run_canary`` / ``canary.roll_out`` (the rollout
  loop, also `aicd canary`): every interval, step, promotion or rollback is a commit whose trailers
  hold the loop's state.
- ``environments``: the dev -> staging -> production chain; ``evidence``: the rollout as Markdown.
- ``steps``: the thin KFP components.
"""
