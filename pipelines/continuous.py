"""Continuous delivery: new labels or user feedback start fine-tuning again once there is enough of it.

Submitted as a recurring run (`aicd submit continuous`); each run imports the labels and
the predictor's payload log, and only when ``labeling.retrain_min_new_rows`` new rows
arrived does it train, evaluate, gate and promote (the finetune tasks, inside a dsl.If).
"""

from aicd.pipelines.platform import Platform

# Where the predictor pods write payloads.jsonl (manifests/base/pvc.yaml), mounted by the profile.
FEEDBACK_LOG = "pvc://aicd-payload-logs"


def build(platform: Platform):
    from kfp import dsl

    from aicd.components.labeling.steps import collect_feedback, import_labels
    from aicd.pipelines.finetune import train_candidate
    from aicd.pipelines.steps import check_new_data
    from aicd.pipelines.subgraphs.data import prepare_data
    from aicd.pipelines.subgraphs.delivery import deliver_model

    @dsl.pipeline(name="aicd-continuous", description="Import new labels and feedback; when enough arrived, "
                                                       "fine-tune again, gate against the base and promote.")
    def continuous_pipeline(spec: dict, feedback_log: str = FEEDBACK_LOG, previous_labels: str = "",
                            previous_feedback: str = ""):
        """``previous_labels``/``previous_feedback``: URIs of the last versions; new rows are counted from them."""
        ingest_task = prepare_data(spec, platform)
        labels_task = platform.apply(import_labels(spec=spec, dataset=ingest_task.outputs["dataset"],
                                                   previous_uri=previous_labels), "labeling", cache=False)
        feedback_task = platform.apply(collect_feedback(spec=spec, log_uri=feedback_log,
                                                        parent_uri=previous_feedback), "labeling", cache=False)
        check_task = platform.apply(check_new_data(spec=spec, labeled_rows=labels_task.outputs["Output"],
                                                   feedback_rows=feedback_task.outputs["Output"]), "data")
        with dsl.If(check_task.outputs["Output"] == True, name="enough-new-data"):  # noqa: E712
            labeled = labels_task.outputs["labeled"]
            deliver_model(spec, labeled, train_candidate(spec, labeled, platform), platform)

    return continuous_pipeline
