"""Continuous delivery: new labels or user feedback start fine-tuning again once there is enough of it.

Submitted as a recurring run (`aicd submit continuous`, with the spec's sections as its arguments); each
run imports the labels and the predictor's payload log, and only when ``labeling.retrain_min_new_rows``
new rows arrived, or the spec's base model is no longer the one the last training started from (a
new base model version: a new URI), does it train, evaluate, gate and promote (the finetune tasks,
inside a dsl.If) on the labeled version with the feedback rows added. The spec's dpo methods learn
from preference pairs (labeled pairs; a correction beats the served answer; a thumbs-up answer beats
a thumbs-down one to the same prompt): they are trained once ``labeling.retrain_min_new_pairs`` new
pairs arrived, with or without enough new rows (check_new_data says which methods, and why not dpo),
starting from the serving champion's adapter when it is one on the same base (else from the base).

New rows are counted from the versions the last training used. A recurring run gets the same
parameters every time, so the pipeline keeps those versions itself under ``state_uri`` (replaced
after each training, whether or not the gate passed: the same data would give the same candidate);
``previous_labels``/``previous_feedback`` (a path or pvc:// URI) override them for one run.
"""

from aicd.pipelines.params import SpecParams, documented
from aicd.pipelines.platform import Platform

# Where the predictor pods write payloads.jsonl, one sub-folder per pod (manifests/base/pvc.yaml,
# servingruntime.yaml), mounted for the labeling steps by the profile.
FEEDBACK_LOG = "pvc://aicd-payload-logs"
# The versions the last training used: on the same claim (the labeling steps have it mounted; the
# predictor pods only see their own sub-folders).
STATE = "pvc://aicd-payload-logs/.aicd-continuous"


DESCRIPTION = ("Import new labels and feedback; when enough arrived, or the base model changed, fine-tune again, "
               "gate against the serving champion and promote.")
EXTRA_ARGS = """feedback_log: The predictor's payload log folder (a path or pvc:// URI).
previous_labels: A labeled version's URI to count new rows from (default: the last trained one).
previous_feedback: A feedback version's URI to count new rows from (default: the last trained one).
state_uri: Where the last trained versions are kept ('' keeps no state, so every row counts)."""


def build(platform: Platform):
    from kfp import dsl

    from aicd.components.labeling.steps import collect_feedback, import_labels
    from aicd.pipelines.finetune import train_candidate
    from aicd.pipelines.steps import (
        check_new_data,
        count_new_pairs,
        merge_training_data,
        previous_versions,
        record_trained_versions,
    )
    from aicd.pipelines.subgraphs.data import prepare_data
    from aicd.pipelines.subgraphs.delivery import deliver_model, find_serving_champion

    def continuous_pipeline(name: str, task: dict, data: dict, candidates: list, metrics: dict, training: dict,
                            delivery: dict, labeling: dict, feedback_log: str = FEEDBACK_LOG,
                            previous_labels: str = "", previous_feedback: str = "", state_uri: str = STATE):
        s = SpecParams(name, task, data, candidates, metrics, training, delivery, labeling)
        ingest_task = prepare_data(s, platform)
        previous_task = platform.apply(previous_versions(state_uri=state_uri, previous_labels=previous_labels,
                                                         previous_feedback=previous_feedback), "labeling",
                                       cache=False)
        labels_task = platform.apply(import_labels(**s.of(import_labels), dataset=ingest_task.outputs["dataset"],
                                                   previous_uri=previous_task.outputs["labels"]), "labeling",
                                     cache=False)
        feedback_task = platform.apply(collect_feedback(**s.of(collect_feedback), log_uri=feedback_log,
                                                        parent_uri=previous_task.outputs["feedback"]), "labeling",
                                       cache=False)
        labeled, feedback = labels_task.outputs["labeled"], feedback_task.outputs["feedback"]
        pairs_task = platform.apply(count_new_pairs(**s.of(count_new_pairs), labeled=labeled, feedback=feedback,
                                                    previous_labels=previous_task.outputs["labels"],
                                                    previous_feedback=previous_task.outputs["feedback"]), "labeling",
                                    cache=False)
        check_task = platform.apply(check_new_data(**s.of(check_new_data), labeled_rows=labels_task.outputs["Output"],
                                                   feedback_rows=feedback_task.outputs["Output"],
                                                   new_pairs=pairs_task.output,
                                                   trained_base=previous_task.outputs["base_model"]), "data")
        with dsl.If(check_task.outputs["Output"] == True, name="enough-new-data"):  # noqa: E712
            data_task = platform.apply(merge_training_data(**s.of(merge_training_data), labeled=labeled,
                                                           feedback=feedback), "data")
            dataset = data_task.outputs["dataset"]
            champion = find_serving_champion(s, platform)  # dpo starts from it; the gate compares with it
            candidate = train_candidate(s, dataset, platform, methods=check_task.outputs["methods"],
                                        champion=champion)
            gate_task = deliver_model(s, dataset, candidate, platform, champion)
            platform.apply(record_trained_versions(**s.of(record_trained_versions), state_uri=state_uri,
                                                   labeled=labeled, feedback=feedback,
                                                   model_digest=gate_task.outputs["digest"]), "labeling",
                           cache=False)

    return dsl.pipeline(name="aicd-continuous", description=DESCRIPTION)(
        documented(continuous_pipeline, DESCRIPTION, EXTRA_ARGS))
