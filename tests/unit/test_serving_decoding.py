"""The predictor's decoding loop on a tiny real model: greedy equals transformers, sampling per row, logprobs
equal the evaluation backend's scoring, stops, penalties and the streaming sink."""

import pytest
from helpers.adapters import make_lora_adapter

from aicd.components.evaluation.inference import build_sequences, score_causal_lm
from aicd.components.serving.config import ServeConfig
from aicd.components.serving.decoding import GenItem, Sampling
from aicd.components.serving.engine import Engine

PROMPTS = ["What is AI?", "Tell me a joke about a computer and a doctor.", "How are you?"]


@pytest.fixture(scope="module")
def engine(tiny_causal_lm, tmp_path_factory) -> Engine:
    adapter = make_lora_adapter(tiny_causal_lm, tmp_path_factory.mktemp("decoding") / "a1", seed=1)
    engine = Engine(ServeConfig(base=str(tiny_causal_lm), adapters={"a1": str(adapter)}))
    engine.load_base()
    engine.attach(engine.verify("a1", str(adapter)))
    return engine


def _ids(engine: Engine, text: str) -> list[int]:
    return engine.tokenizer(text)["input_ids"]


def _hot(seed: int | None, **kw) -> Sampling:
    return Sampling(temperature=1.5, seed=seed, **kw)


@pytest.mark.parametrize("adapter", [None, "a1"])
def test_greedy_equals_transformers_generate(engine, adapter):
    import torch

    items = [GenItem(_ids(engine, p), 10) for p in PROMPTS]
    ours = engine.generate(adapter, items)
    with engine._selected(adapter), torch.inference_mode():
        for item, result in zip(items, ours):
            out = engine.model.generate(input_ids=torch.tensor([item.prompt_ids]), do_sample=False, max_new_tokens=10,
                                        pad_token_id=engine.tokenizer.pad_token_id,
                                        eos_token_id=engine.tokenizer.eos_token_id)
            new = [t for t in out[0, len(item.prompt_ids):].tolist() if t != engine.tokenizer.eos_token_id]
            assert result.text == engine.tokenizer.decode(new, skip_special_tokens=True)


def test_a_seed_reproduces_its_sample_and_other_seeds_differ(engine):
    ids = _ids(engine, "What is AI?")
    runs = [engine.generate("a1", [GenItem(ids, 12, sampling=_hot(seed))])[0].text for seed in (7, 7, 8, 9, 10)]
    assert runs[0] == runs[1]
    assert len(set(runs[1:])) > 1, runs


def test_rows_of_one_batch_sample_on_their_own_terms(engine):
    ids = [_ids(engine, p) for p in PROMPTS]
    greedy_alone = engine.generate("a1", [GenItem(ids[0], 8)])[0].text
    batch = [GenItem(ids[0], 8), GenItem(ids[1], 8, sampling=_hot(3)), GenItem(ids[2], 8, sampling=_hot(4))]
    first, second = engine.generate("a1", batch), engine.generate("a1", batch)
    assert first[0].text == greedy_alone  # sampling rows beside it change nothing
    assert [r.text for r in first] == [r.text for r in second]  # same seeds, same batch: same texts


def test_a_tiny_top_p_keeps_only_the_most_likely_token(engine):
    ids = _ids(engine, "Do you like sports?")
    greedy = engine.generate(None, [GenItem(ids, 10)])[0].text
    assert engine.generate(None, [GenItem(ids, 10, sampling=_hot(1, top_p=1e-6))])[0].text == greedy


@pytest.mark.parametrize("adapter", [None, "a1"])
def test_echo_logprobs_equal_the_evaluation_backends_scoring(engine, adapter):
    """Prompt-token log-probabilities (echo) against score_causal_lm on the same model, adapter and text."""
    prompts, answers = ["What is AI?", "How are you?"], [" Artificial intelligence.", " I am fine."]
    sequences = build_sequences(engine.tokenizer, prompts, answers, max_length=256)
    with engine._selected(adapter):
        nll, counts = score_causal_lm(engine.model, engine.tokenizer, prompts, answers)
    items = [GenItem(tokens, 0, sampling=Sampling(logprobs=2, echo=True)) for tokens, _ in sequences]
    results = engine.generate(adapter, items)
    for (tokens, plen), result, mean, count in zip(sequences, results, nll, counts):
        assert result.text == "" and result.completion_tokens == 0 and result.tokens == ()
        assert [e.token for e in result.prompt] == tokens and result.prompt[0].logprob is None
        scored = [e.logprob for e in result.prompt[plen:]]
        assert len(scored) == count
        assert -sum(scored) / count == pytest.approx(mean, abs=1e-4)
        assert all(len(e.top) == 2 and e.top[0][1] >= e.top[1][1] for e in result.prompt[1:])


def test_generated_logprobs_equal_rescoring_the_answer(engine):
    ids = _ids(engine, "What is AI?")
    (result,) = engine.generate("a1", [GenItem(ids, 6, sampling=Sampling(logprobs=1))])
    generated = [e.token for e in result.tokens]
    assert len(generated) == result.completion_tokens > 0
    (echo,) = engine.generate("a1", [GenItem(ids + generated, 0, sampling=Sampling(logprobs=1, echo=True))])
    for ours, again in zip(result.tokens, echo.prompt[len(ids):]):
        assert ours.token == again.token and ours.logprob == pytest.approx(again.logprob, abs=1e-4)
        assert ours.top[0][0] == ours.token  # greedy picks the top token


def test_a_stop_sequence_cuts_the_text_and_ends_the_row(engine):
    ids = _ids(engine, "Tell me a joke.")
    full = engine.generate(None, [GenItem(ids, 12)])[0]
    assert len(full.text) > 4, full
    stop = full.text[2:4]
    cut = engine.generate(None, [GenItem(ids, 12, stop=("zzz-never", stop))])[0]
    assert cut.text == full.text[:full.text.find(stop)] and cut.finish_reason == "stop"
    assert cut.completion_tokens < full.completion_tokens


def test_penalties_steer_away_from_repeated_tokens(engine):
    ids = _ids(engine, "What is your name?")
    plain = engine.generate(None, [GenItem(ids, 16, sampling=Sampling(logprobs=0))])[0]
    tokens = [e.token for e in plain.tokens]
    assert len(set(tokens)) < len(tokens), "precondition: the tiny model repeats itself"
    penalised = engine.generate(None, [GenItem(ids, 16, sampling=Sampling(logprobs=0, frequency_penalty=2.0,
                                                                          presence_penalty=2.0))])[0]
    again = [e.token for e in penalised.tokens]
    assert penalised.text != plain.text and len(set(again)) / len(again) > len(set(tokens)) / len(tokens)


def test_the_streaming_sink_gets_the_text_piece_by_piece_without_the_stop(engine):
    ids = _ids(engine, "Tell me a joke.")
    full = engine.generate(None, [GenItem(ids, 12)])[0].text
    stop = full[3:6]
    pieces, finals = [], []
    item = GenItem(ids, 12, stop=(stop,), sink=lambda text, result: (pieces.append(text), finals.append(result)))
    (result,) = engine.generate(None, [item])
    assert "".join(pieces) == result.text == full[:full.find(stop)]
    assert [f for f in finals if f is not None] == [result] and finals[-1] == result
    assert len([p for p in pieces if p]) > 1


def test_a_batch_mixing_adapters_answers_as_batches_of_one_adapter(engine):
    items = [GenItem(_ids(engine, p), 8, sampling=Sampling(logprobs=0)) for p in PROMPTS]
    adapters = [None, "a1", None]
    mixed = engine.generate_mixed(adapters, items)
    alone = [engine.generate(a, [item])[0] for a, item in zip(adapters, items)]
    assert [r.text for r in mixed] == [r.text for r in alone]
    assert mixed[0].text != engine.generate("a1", [items[0]])[0].text  # the rows really use different weights
    for m, a in zip(mixed, alone):
        assert [e.logprob for e in m.tokens] == pytest.approx([e.logprob for e in a.tokens], abs=1e-4)


def test_the_service_mixes_adapters_in_one_batch_when_asked(tiny_causal_lm, engine):
    """--mix-adapters: concurrent requests for the base and an adapter run as one batch."""
    import asyncio

    from aicd.components.serving.service import Service

    service = Service(ServeConfig(base=str(tiny_causal_lm), adapters={"a1": str(engine.adapters["a1"].path)},
                                  mix_adapters=True, max_batch_wait_ms=200), engine=engine)
    service.ready = True
    items = [GenItem(_ids(engine, p), 6) for p in PROMPTS[:2]]

    async def both():
        try:
            return await asyncio.gather(service.generate("base", items[:1]), service.generate("a1", items[1:]))
        finally:
            await service.close()

    (base,), (tuned,) = asyncio.run(both())
    assert service.generation.batch_sizes == [2]
    assert [base.text, tuned.text] == [engine.generate(None, items[:1])[0].text,
                                       engine.generate("a1", items[1:])[0].text]


def test_an_eos_token_is_counted_and_has_its_logprob_entry(engine):
    """lm-eval reads token_logprobs[ctxlen:-1] of echo + max_tokens 1: exactly one generated entry, even at EOS."""
    ids = _ids(engine, "What is AI?")
    (greedy,) = engine.generate(None, [GenItem(ids, 1, sampling=Sampling(logprobs=1))])
    eos = greedy.tokens[0].token
    core = engine.model.get_base_model() if hasattr(engine.model, "get_base_model") else engine.model
    saved = core.generation_config.eos_token_id
    core.generation_config.eos_token_id = eos
    try:
        (result,) = engine.generate(None, [GenItem(ids, 1, sampling=Sampling(logprobs=1, echo=True))])
    finally:
        core.generation_config.eos_token_id = saved
    assert result.finish_reason == "stop" and result.text == "" and result.completion_tokens == 1
    assert [e.token for e in result.tokens] == [eos]
    assert result.tokens[0].logprob == pytest.approx(greedy.tokens[0].logprob, abs=1e-5)
    assert len(result.prompt) == len(ids)


class _ByteFallback:
    """A stand-in sentencepiece byte-fallback tokenizer: each byte of an unfinished character reads U+FFFD."""

    pieces = {1: b"a", 2: b"b", 3: b"\xe2", 4: b"\x82", 5: b"\xac", 6: b"c"}

    def decode(self, ids, skip_special_tokens=True):
        raw = b"".join(self.pieces[i] for i in ids)
        return raw.decode("utf-8", errors="surrogateescape").translate(
            {c: "\ufffd" for c in range(0xDC80, 0xDD00)})


def test_streaming_holds_back_every_replacement_char_of_a_split_character():
    import torch

    from aicd.components.serving.decoding import Row

    pieces, finals = [], []
    item = GenItem([1], 6, sink=lambda text, result: (pieces.append(text), finals.append(result)))
    row, logp = Row(item, _ByteFallback(), eos={0}), torch.zeros(8)
    for token in (1, 2, 3, 4):
        row.push(token, logp)
    assert "".join(pieces) == "ab", pieces  # "ab\ufffd\ufffd" so far: nothing of the split "€" yet
    for token in (5, 6):
        row.push(token, logp)
    row.done = True
    row._emit()
    assert "".join(pieces) == row.result().text == "ab€c" and "\ufffd" not in "".join(pieces)


def test_a_vanishing_temperature_samples_the_most_likely_token_instead_of_failing():
    """temperature 9e-231 (the fuzz test's find): logits / T overflowed to inf and NaN, a 500."""
    import torch

    from aicd.components.serving.decoding import Row, Sampling

    for temperature in (9.064726284333903e-231, 1e-300, 1e-6):
        row = Row(GenItem([1], 4, sampling=Sampling(temperature=temperature, seed=1)), _ByteFallback(), eos={0})
        assert row.pick(torch.tensor([0.5, 3.0, -2.0, 2.9])) == 1


def test_a_seed_at_the_top_of_the_range_wraps_instead_of_failing_the_batch(engine):
    ids = _ids(engine, "What is AI?")
    items = [GenItem(ids, 4), GenItem(ids, 4, sampling=_hot((1 << 64) - 1 + 1)), GenItem(ids, 4, sampling=_hot(0))]
    greedy, wrapped, zero = engine.generate(None, items)
    assert wrapped.text == zero.text and greedy.completion_tokens > 0


def test_a_cancelled_row_stops_at_the_next_step_and_others_go_on(engine):
    import threading

    ids = _ids(engine, "Tell me a joke.")
    cancel, seen = threading.Event(), []

    def sink(text, result):
        seen.append(text)
        cancel.set()  # the client goes away after its first piece

    items = [GenItem(ids, 12, sink=sink, cancel=cancel), GenItem(ids, 12)]
    gone, other = engine.generate(None, items)
    alone = engine.generate(None, [GenItem(ids, 12)])[0]
    assert gone.completion_tokens < other.completion_tokens == alone.completion_tokens


def test_a_row_that_fails_fails_alone_and_the_batch_decodes_on(engine):
    ids = _ids(engine, "What is AI?")
    broken = Sampling(temperature=1.0, seed=1, presence_penalty=float("nan"))  # NaN probabilities at step 2
    greedy, failed = engine.generate(None, [GenItem(ids, 6), GenItem(ids, 6, sampling=broken)])
    assert isinstance(failed, RuntimeError)
    assert greedy == engine.generate(None, [GenItem(ids, 6)])[0]


def test_the_service_hands_a_failed_row_to_its_own_request_only(tiny_causal_lm, engine):
    import asyncio

    from aicd.components.serving.service import Service

    service = Service(ServeConfig(base=str(tiny_causal_lm), max_batch_wait_ms=200), engine=engine)
    service.ready = True
    ids = _ids(engine, "What is AI?")
    broken = GenItem(ids, 6, sampling=Sampling(temperature=1.0, seed=1, presence_penalty=float("nan")))

    async def both():
        try:
            return await asyncio.gather(service.generate("base", [GenItem(ids, 6)]), service.generate("base", [broken]),
                                        return_exceptions=True)
        finally:
            await service.close()

    good, bad = asyncio.run(both())
    assert service.generation.batch_sizes == [2]
    assert isinstance(bad, RuntimeError) and good == engine.generate(None, [GenItem(ids, 6)])


@pytest.mark.parametrize("family", ["gemma2", "granite", "cohere"])
def test_the_output_head_applies_the_familys_logit_scaling(family):
    """Gemma 2 soft-caps, Granite divides and Cohere multiplies the logits: the head equals the model's forward."""
    import torch
    import transformers

    from aicd.components.serving.decoding import output_head

    config_class, model_class, extra = {
        "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"final_logit_softcapping": 0.5, "head_dim": 8}),
        "granite": ("GraniteConfig", "GraniteForCausalLM", {"logits_scaling": 4.0}),
        "cohere": ("CohereConfig", "CohereForCausalLM", {"logit_scale": 0.25}),
    }[family]
    config = getattr(transformers, config_class)(vocab_size=64, hidden_size=16, intermediate_size=32,
                                                 num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                                 **extra)
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(config).eval()
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
        ours = output_head(model)(model.base_model(input_ids=ids).last_hidden_state)
    assert torch.allclose(ours, expected, atol=1e-5)
    assert not torch.allclose(model.get_output_embeddings()(model.base_model(input_ids=ids).last_hidden_state),
                              expected, atol=1e-3)  # the plain head alone is not what the model computes
