"""Evaluation scoring: batched against per-example scoring, identical scores.

The subject is ``score_causal_lm`` (per-example mean NLL of reference responses). The
treatment is what evaluation runs: rows of 8 sequences packed as prefix trees (the tokens
they share from the start fed once), the LM head applied only at scored positions. The
baseline is what a user would write: one example at a time through the model's full logits
(``batch_size=1, scored_logits_only=False``).
The model is a random mid-size Llama with a 32,000-token vocabulary (a real LM head's
width). Tokens/s counts every token fed to the model. Correctness: every example's
NLL agrees within 1e-5 (relative) and the scored token counts are equal.

The peer: lm-evaluation-harness's ``HFLM`` answering the same examples as log-likelihood
requests (context = prompt tokens, continuation = response tokens, tokenized as aicd does,
batch size 8), in the same rotated run; each example's NLL must equal aicd's within
PEER_TOLERANCE (absolute, nats per token) and the scored token counts must match.

Also measured, without a goal: batched greedy generation against one-at-a-time, whose
outputs must be identical.
"""

import logging
import tempfile
from pathlib import Path

from benchmarks.harness import Figure, Goal, SubjectMissing, alternate, rate_figure

log = logging.getLogger(__name__)

NAME = "evaluation"
EXAMPLES = 32
GEN_PROMPTS = 8
NEW_TOKENS = 12
VOCAB = 32_000
TOLERANCE = 1e-5
PEER_TOLERANCE = 1e-4


SPEC = "examples/support-bot/spec.yaml"


def declared() -> list[Figure]:
    return [Figure(NAME, "scoring tokens/s, batched vs per-example (support-bot test split, SmolLM2-135M)",
                   "tok/s", Goal(">=", 2.0, text=">= 2x")),
            Figure(NAME, "scoring tokens/s, aicd vs lm-eval HFLM loglikelihood (support-bot test split, SmolLM2-135M)",
                   "tok/s", Goal(">=", 1.5, text=">= 1.5x")),
            Figure(NAME, "scoring tokens/s, batched vs per-example (synthetic, no shared prefix)", "tok/s"),
            Figure(NAME, "greedy generation tokens/s, batched vs one-at-a-time (identical outputs)", "tok/s")]


def _subject():
    try:
        from aicd.components.evaluation.inference import generate_greedy, score_causal_lm
    except ImportError as err:
        raise SubjectMissing("components/evaluation", str(err)) from err
    return score_causal_lm, generate_greedy


def same_scores(baseline, treatment):
    (nll_a, counts_a), (nll_b, counts_b) = baseline, treatment
    assert counts_a == counts_b, "scored token counts differ"
    worst = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(nll_a, nll_b))
    assert worst <= TOLERANCE, f"NLL differs by up to {worst:.2e} (relative), tolerance {TOLERANCE:g}"


def same_nll_as_peer(baseline, treatment):
    (nll_a, counts_a), (nll_b, counts_b) = baseline, treatment
    assert counts_a == counts_b, f"scored token counts differ: lm-eval {sum(counts_a)}, aicd {sum(counts_b)}"
    worst = max(abs(a - b) for a, b in zip(nll_a, nll_b, strict=True))
    assert worst <= PEER_TOLERANCE, f"NLL differs from lm-eval's by up to {worst:.2e}, tolerance {PEER_TOLERANCE:g}"


def same_texts(baseline, treatment):
    differ = [i for i, (a, b) in enumerate(zip(baseline.texts, treatment.texts)) if a != b]
    assert not differ, f"{len(differ)} of {len(baseline.texts)} generations differ (first: #{differ[0]})"


def flop_ratio(model, tokenizer, prompts, responses, max_length: int, batch_size: int = 8) -> str:
    """The speedup from removed FLOPs alone: the treatment feeds each row's shared tokens once (its
    prefix tree, rows of ``batch_size``) and applies the head only to the scored tokens. Attention,
    softmax and the per-call overhead that batching also saves (one example's matmuls are small) are
    left out, so the measured ratio can exceed it."""
    from aicd.components.evaluation.inference import PACK_TOKENS, build_sequences, pack_rows

    seqs = build_sequences(tokenizer, prompts, responses, max_length)
    head = model.get_output_embeddings().weight.numel()
    body = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n)
    fed, scored = sum(len(ids) for ids, _ in seqs), sum(len(ids) - plen for ids, plen in seqs)
    rows = pack_rows(seqs, batch_size, max(PACK_TOKENS, max(len(ids) for ids, _ in seqs)))
    shared = sum(n for row in rows for _, n in row)
    treatment = (fed - shared) * body + scored * head
    return (f"model-FLOP ratio {fed * (body + head) / treatment:.2f}x "
            f"({scored} of {fed} tokens scored, {shared} shared tokens fed once)")


def support_bot_workload(tmp: Path):
    """(model, tokenizer, prompts, responses, max_length) of the main job's evaluation."""
    from aicd.components.data.format import read_split
    from aicd.components.data.ingest import ingest_dataset
    from aicd.components.evaluation.backends import build_prompt
    from aicd.components.models import load_causal_lm
    from aicd.components.spec import load_spec
    from benchmarks.models import ROOT

    spec = load_spec(ROOT / SPEC)
    ingest_dataset(spec, tmp / "dataset")
    rows = read_split(tmp / "dataset", "test")[:EXAMPLES]
    model, tokenizer, _ = load_causal_lm(spec.candidates[0].uri)
    task = spec.task
    prompts = [build_prompt(tokenizer, r[task.instruction_field], None, task.system_prompt) for r in rows]
    return model, tokenizer, prompts, [r[task.response_field] for r in rows], task.max_length


def scoring_figures(decls: list[Figure], repeats: int, model, tokenizer, prompts, responses, max_length: int,
                    what: str) -> list[Figure]:
    """Per-example vs batched (the first declared figure) and, if a second is declared, lm-eval's
    HFLM vs batched, all sides taking turns in one run."""
    from aicd.components.evaluation.inference import build_sequences
    from benchmarks.harness import pair, rotate

    score, _ = _subject()
    seqs = build_sequences(tokenizer, prompts, responses, max_length)
    sides = {"per-example": (lambda: score(model, tokenizer, prompts, responses, max_length=max_length, batch_size=1,
                                           scored_logits_only=False), None),
             "batched": (lambda: score(model, tokenizer, prompts, responses, max_length=max_length, batch_size=8),
                         None)}
    if len(decls) > 1:
        from benchmarks.peers import lm_eval_model, lm_eval_nll

        lm = lm_eval_model(model, tokenizer, batch_size=8)
        sides["lm-eval"] = (lambda: lm_eval_nll(lm, seqs), None)
    samples = rotate(sides, repeats=repeats)
    tokens = sum(len(ids) for ids, _ in seqs)
    figure = rate_figure(NAME, decls[0].name, "tok/s", pair(samples, "per-example", "batched"), tokens, decls[0].goal,
                         check=same_scores, baseline_label="per-example", treatment_label="batched")
    figure.note = (f"{len(prompts)} examples, {tokens} tokens, {what}; NLL equal within {TOLERANCE:g}; "
                   f"{flop_ratio(model, tokenizer, prompts, responses, max_length)}")
    if len(decls) == 1:
        return [figure]
    peer = rate_figure(NAME, decls[1].name, "tok/s", pair(samples, "lm-eval", "batched"), tokens, decls[1].goal,
                       check=same_nll_as_peer, baseline_label="lm-eval HFLM", treatment_label="aicd")
    peer.note = (f"lm-eval HFLM batch 8, the same {tokens} tokens; NLL equal within {PEER_TOLERANCE:g} "
                 "per example; " + peer.note).strip("; ")
    return [figure, peer]


def run(repeats: int) -> list[Figure]:
    from aicd.components.models import load_causal_lm
    from benchmarks.models import instruction_rows, make_llama

    _, generate = _subject()
    real_decl, peer_decl, synthetic_decl, gen_decl = declared()
    with tempfile.TemporaryDirectory(prefix="aicd-bench-eval-") as tmp:
        workload = support_bot_workload(Path(tmp))
    real = scoring_figures([real_decl, peer_decl], repeats, *workload,
                           what="SmolLM2-135M-Instruct with the spec's system prompt")
    del workload
    with tempfile.TemporaryDirectory(prefix="aicd-bench-eval-") as tmp:
        model, tokenizer, _ = load_causal_lm(str(make_llama(Path(tmp) / "llama", "mid", vocab_size=VOCAB)))
    rows = instruction_rows(EXAMPLES, seed=2, max_words=60)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": r["instruction"]}], tokenize=False,
                                             add_generation_prompt=True) for r in rows]
    synthetic = scoring_figures([synthetic_decl], repeats, model, tokenizer, prompts, [r["response"] for r in rows],
                                256, what=f"random mid Llama with a {VOCAB:,}-token head")
    gen_prompts = prompts[:GEN_PROMPTS]
    trial = alternate(lambda: generate(model, tokenizer, gen_prompts, max_new_tokens=NEW_TOKENS, batch_size=1),
                      lambda: generate(model, tokenizer, gen_prompts, max_new_tokens=NEW_TOKENS, batch_size=8),
                      repeats=repeats)
    generated = trial.treatment_result.tokens
    gen = rate_figure(NAME, gen_decl.name, "tok/s", trial, generated, None, check=same_texts,
                      baseline_label="one-at-a-time", treatment_label="batched")
    gen.note = f"{GEN_PROMPTS} prompts, up to {NEW_TOKENS} new tokens each, {generated} generated"
    if gen.status == "ok" and trial.baseline_result.tokens != generated:
        gen.status, gen.note = ("invalid",
                                f"generated token counts differ: {trial.baseline_result.tokens} != {generated}")
    return [*real, *synthetic, gen]
