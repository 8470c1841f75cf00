"""Tiny random models for fast tests: a config plus a BPE tokenizer trained on local text.

Real transformers classes with random weights: a step of training or generation takes
milliseconds, and the loading code under test is the same as for SmolLM2 or MiniLM.
"""

from pathlib import Path

from aicd.components.provenance import write_base_card

CORPUS = [
    "What is AI? Artificial intelligence is the study of machines that think.",
    "Do you like sports? I enjoy watching football and tennis.",
    "How are you? I am fine, thank you for asking.",
    "This drug worked wonders and I have no side effects.",
    "Terrible medicine, awful side effects and no relief at all.",
    "The pill was okay, nothing special, some mild headaches.",
    "Tell me a joke. Why did the computer go to the doctor? It had a virus.",
    "What is your name? My name is the support assistant.",
] * 20

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_tokenizer(vocab_size: int = 256):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_causal_lm(path: Path, seed: int = 0) -> Path:
    """A 2-layer Llama with random weights and a trained BPE tokenizer, saved as safetensors, with the base
    card a provider writes (``aicd digest --write-card``): models load only when something vouches for them."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return recard_base(path, "tiny-llama")


def make_encoder(path: Path, seed: int = 0) -> Path:
    """A 2-layer BERT encoder (no head) with random weights, as MiniLM is shipped, with a base card."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = train_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id)
    BertModel(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return recard_base(path, "tiny-bert")


def recard_base(path: Path, name: str | None = None) -> Path:
    """Record a (new or changed) base folder's files in its card, as its provider would after shipping it
    (a card that no longer matches the folder is refused, as it should be)."""
    from aicd.components.cards import CARD

    (Path(path) / CARD).unlink(missing_ok=True)
    write_base_card(path, name=name or Path(path).name)
    return Path(path)


def tiny_finetune_spec(spec: dict, model: Path, root: Path, manifests: Path) -> dict:
    """The support-bot spec (a dict, changed in place) on a tiny model: 2 training steps, 8 evaluation
    examples, permissive gates, checkpoints and a new bare GitOps repository under ``root``."""
    from aicd.pipelines.gitops import ensure_gitops_repo

    spec["candidates"] = [{"name": "tiny-llama", "uri": str(model)}]
    spec["data"]["max_rows"] = 60
    spec["training"].update(max_steps=2, batch_size=4, checkpoint={"every_steps": 1, "root": str(root / "ckpt")},
                            methods=[{"name": "lora-r4", "method": "lora", "r": 4, "alpha": 8,
                                      "target_modules": ["q_proj", "v_proj"]}])
    spec["metrics"].update(max_examples=8, bootstrap_samples=50, max_new_tokens=4, behavioural=[],
                           probe_prompts=[], gates={"thresholds": {}, "non_inferiority": {"token_f1": 1.0}})
    ensure_gitops_repo(root / "gitops.git", "main", manifests)
    spec["delivery"]["gitops"]["repo"] = str(root / "gitops.git")
    return spec
