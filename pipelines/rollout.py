"""The rollout: drive a promoted canary to promotion or rollback, in the cluster.

Takes the promotion (its commit and the candidate's identity) and the spec's delivery section:
waits until the GitOps sync has applied the commit and the canary is Ready, analyses Prometheus
each interval, steps traffic through Git (``delivery.canary.steps``), and promotes or rolls back,
writing the decision and its evidence as a Markdown artifact. ``finetune`` and ``continuous``
add the same task after a successful promotion; `aicd canary` runs the same code from a shell.
"""

from aicd.pipelines.params import SpecParams, documented
from aicd.pipelines.platform import Platform

DESCRIPTION = ("Wait until the promotion's commit is live and Ready, analyse the canary against the stable model in "
               "Prometheus each interval, step its traffic through Git and promote or roll it back; the decision "
               "and its evidence as Markdown.")
EXTRA_ARGS = """
model_id: The canary to roll out ('' for the one declared in Git).
commit: The promotion's commit (recorded with the decision).
max_intervals: Stop an undecided rollout after this many intervals (0: no limit).
"""


def build(platform: Platform):
    from kfp import dsl

    from aicd.pipelines.subgraphs.delivery import roll_out

    def rollout_pipeline(name: str, task: dict, data: dict, candidates: list, metrics: dict, training: dict,
                         delivery: dict, labeling: dict, model_id: str = "", commit: str = "",
                         max_intervals: int = 0):
        s = SpecParams(name, task, data, candidates, metrics, training, delivery, labeling)
        roll_out(s.delivery, platform, model_id=model_id, commit=commit, max_intervals=max_intervals)

    return dsl.pipeline(name="aicd-rollout", description=DESCRIPTION)(
        documented(rollout_pipeline, DESCRIPTION, EXTRA_ARGS))
