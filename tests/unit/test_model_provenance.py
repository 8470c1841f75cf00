"""Issue 17: a model folder loads only when something vouches for every file in it, before any weights load.

A pin (``candidates[].digest``, ``--base-digest``), the folder's own card.json, or for ``pkg://`` models
the installed distribution's RECORD. A card-less, unpinned folder is refused with the fix (pin the
digest ``aicd digest PATH`` prints). Real transformers and peft on the tiny models; the pkg:// cases use
a tiny distribution installed by hand (dist-info with a RECORD) in a temporary site folder.
"""

import base64
import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
from helpers.data import causal_rows, make_dataset
from helpers.specs import causal_spec

from aicd.components.cards import CARD, content_digest, read_card, write_card
from aicd.components.errors import IntegrityError
from aicd.components.models import load_causal_lm, load_model_artifact
from aicd.components.uris import resolve_model

WRONG = "sha256:" + "0" * 64


@pytest.fixture
def cardless(tiny_causal_lm, tmp_path) -> Path:
    """The tiny causal LM as a folder someone copied without any card."""
    folder = shutil.copytree(tiny_causal_lm, tmp_path / "cardless")
    (folder / CARD).unlink()
    return folder


@pytest.fixture
def weight_loads(monkeypatch) -> list[str]:
    """Every folder transformers is asked to load weights from (a spy: the real loader still runs)."""
    from transformers import AutoModelForCausalLM

    calls: list[str] = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, path, *args, **kwargs):
        calls.append(str(path))
        return real(cls, path, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    return calls


def test_a_cardless_unpinned_folder_is_refused_before_any_weights_load(cardless, weight_loads):
    with pytest.raises(IntegrityError) as info:
        load_causal_lm(str(cardless))
    assert weight_loads == []
    assert f"{cardless} has no card.json and no pinned digest" in info.value.message
    assert f"`aicd digest {cardless}`" in info.value.hint
    assert "candidates[].digest" in info.value.hint and "--base-digest" in info.value.hint


@pytest.mark.parametrize("scheme", ["", "file://", "pvc://"])
def test_a_cardless_folder_loads_only_with_its_content_pinned(cardless, weight_loads, monkeypatch, scheme):
    monkeypatch.setenv("AICD_PVC_ROOT", str(cardless.parent))
    uri = {"": str(cardless), "file://": f"file://{cardless}", "pvc://": f"pvc://{cardless.name}"}[scheme]
    with pytest.raises(IntegrityError, match=f"content digest sha256:[0-9a-f]{{64}} is not the pinned {WRONG}"):
        load_causal_lm(uri, digest=WRONG)
    assert weight_loads == []
    model, _, folder = load_causal_lm(uri, digest=content_digest(cardless))
    assert folder.resolve() == cardless.resolve() and model.config.num_hidden_layers == 2


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json"])
def test_one_flipped_byte_in_a_carded_base_is_refused_without_a_pin(tiny_causal_lm, tmp_path, weight_loads, name):
    folder = shutil.copytree(tiny_causal_lm, tmp_path / "base")
    load_causal_lm(str(folder))  # verified and remembered: a change after it must still be caught
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 1
    (folder / name).write_bytes(bytes(data))
    weight_loads.clear()
    with pytest.raises(IntegrityError, match=f"does not match its card: {name} changed"):
        resolve_model(str(folder))
    with pytest.raises(IntegrityError):
        load_causal_lm(str(folder))
    assert weight_loads == []


@pytest.mark.parametrize("field, value", [("kind", "converted-gguf"), ("name", "other"), ("source", "/elsewhere")])
def test_an_edited_card_field_of_a_base_is_refused_without_a_pin(tiny_causal_lm, tmp_path, field, value):
    folder = shutil.copytree(tiny_causal_lm, tmp_path / "base")
    card = read_card(folder)
    assert card["kind"] == "base-model"
    card[field] = value
    (folder / CARD).write_text(json.dumps(card))
    with pytest.raises(IntegrityError, match="the card's digest does not match its fields"):
        resolve_model(str(folder))


def test_an_extra_file_in_a_carded_base_is_refused(tiny_causal_lm, tmp_path):
    folder = shutil.copytree(tiny_causal_lm, tmp_path / "base")
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(IntegrityError, match="extra file pytorch_model.bin"):
        resolve_model(str(folder))


def test_aicd_digest_prints_the_pin_and_write_card_records_a_trusted_folder(cardless, tmp_path, capsys):
    from aicd.pipelines.cli import main

    assert main(["digest", str(cardless)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == content_digest(cardless)
    resolve_model(str(cardless), printed)

    assert main(["digest", str(cardless), "--write-card"]) == 0
    written = capsys.readouterr().out.strip()
    assert written == read_card(cardless)["digest"] and read_card(cardless)["kind"] == "base-model"
    resolve_model(str(cardless))  # its own card vouches for it now
    assert main(["digest", str(cardless)]) == 0 and capsys.readouterr().out.strip() == written
    resolve_model(str(cardless), written)

    assert main(["digest", str(cardless), "--write-card"]) == 1
    assert "already has a card.json" in capsys.readouterr().err
    assert main(["digest", str(tmp_path / "missing")]) == 1
    assert f"{tmp_path / 'missing'} does not exist" in capsys.readouterr().err


def _record_line(root: Path, path: Path) -> str:
    raw = hashlib.sha256(path.read_bytes()).digest()
    return f"{path.relative_to(root).as_posix()},sha256={base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}," \
           f"{path.stat().st_size}"


@pytest.fixture
def fake_package(cardless, tmp_path, monkeypatch) -> Path:
    """``tinymodel_pkg`` installed in a temporary site folder as pip leaves a wheel: the package (the tiny
    model under ``model/``) and a dist-info whose RECORD lists every file's sha256."""
    site = tmp_path / "site"
    package = site / "tinymodel_pkg"
    shutil.copytree(cardless, package / "model")
    (package / "__init__.py").write_text("")
    info = site / "tinymodel_pkg-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinymodel-pkg\nVersion: 0.1.0\n")
    lines = [_record_line(site, p) for p in sorted(site.rglob("*")) if p.is_file()]
    (info / "RECORD").write_text("\n".join(lines + [f"{info.name}/RECORD,,"]) + "\n")
    monkeypatch.syspath_prepend(str(site))
    yield package
    sys.modules.pop("tinymodel_pkg", None)


def test_a_pkg_model_is_verified_against_the_distributions_record(fake_package, weight_loads):
    model, _, folder = load_causal_lm("pkg://tinymodel_pkg/model")
    assert folder == fake_package / "model" and model is not None


@pytest.mark.parametrize("change, problem", [
    ("flip", "tinymodel_pkg/model/model.safetensors changed since it was installed"),
    ("extra", "extra file tinymodel_pkg/model/adapter_model.bin"),
    ("missing", "missing file tinymodel_pkg/model/tokenizer.json"),
    ("carded", "extra file tinymodel_pkg/model/card.json"),
])
def test_a_changed_file_in_an_installed_pkg_model_is_refused(fake_package, weight_loads, change, problem):
    model_dir = fake_package / "model"
    load_causal_lm("pkg://tinymodel_pkg/model")  # verified once: the change below must still be caught
    weight_loads.clear()
    if change == "flip":
        data = bytearray((model_dir / "model.safetensors").read_bytes())
        data[len(data) // 2] ^= 1
        (model_dir / "model.safetensors").write_bytes(bytes(data))
    elif change == "extra":
        (model_dir / "adapter_model.bin").write_bytes(b"pickle")
    elif change == "carded":  # a changed file with a card written to match it does not bypass the RECORD
        (model_dir / "config.json").write_text("{}")
        write_card(model_dir, "base-model")
    else:
        (model_dir / "tokenizer.json").unlink()
    with pytest.raises(IntegrityError) as info:
        load_causal_lm("pkg://tinymodel_pkg/model")
    assert weight_loads == []
    assert "does not match what pip installed (tinymodel-pkg==0.1.0)" in info.value.message
    assert problem in info.value.message
    assert "pip install --no-deps --force-reinstall tinymodel-pkg==0.1.0" in info.value.hint


def test_a_pkg_model_without_a_distribution_is_refused_unless_pinned(cardless, tmp_path, monkeypatch):
    site = tmp_path / "bare-site"
    shutil.copytree(cardless, site / "loose_pkg" / "model")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(IntegrityError, match="belongs to no installed distribution with a RECORD"):
        resolve_model("pkg://loose_pkg/model")
    resolve_model("pkg://loose_pkg/model", content_digest(site / "loose_pkg" / "model"))
    sys.modules.pop("loose_pkg", None)


def test_training_refuses_a_wrong_pin_before_it_trains(cardless, tmp_path, weight_loads):
    """Issue 17 point 2: train_adapter loads the candidate with its `digest`: a wrong pin stops it before any
    weights load, any checkpoint or any output; the right pin trains, and the adapter's card records it so
    evaluation and serving verify the base again."""
    from aicd.components.training.adapter import train_adapter

    data = make_dataset(tmp_path / "ds", causal_rows())
    spec = causal_spec(cardless, tmp_path / "ck", max_steps=1)
    spec["candidates"][0]["digest"] = WRONG
    with pytest.raises(IntegrityError, match=f"is not the pinned {WRONG}"):
        train_adapter(spec, data, "lora-r8", tmp_path / "out", progress=False)
    assert weight_loads == [] and not (tmp_path / "out").exists() and not (tmp_path / "ck").exists()

    spec["candidates"][0].pop("digest")
    with pytest.raises(IntegrityError, match="has no card.json and no pinned digest"):
        train_adapter(spec, data, "lora-r8", tmp_path / "out", progress=False)

    spec["candidates"][0]["digest"] = content_digest(cardless)
    result = train_adapter(spec, data, "lora-r8", tmp_path / "out", progress=False)
    assert result.card["base_pin"] == content_digest(cardless)
    load_model_artifact(tmp_path / "out")  # the base is verified against the recorded pin
    (cardless / "generation_config.json").write_text("{}")
    with pytest.raises(IntegrityError, match="is not the pinned"):
        load_model_artifact(tmp_path / "out")


def test_the_promoted_adapter_on_a_pinned_cardless_base_is_served_with_the_rendered_pin(cardless, tmp_path):
    """The delivery path end to end on the real predictor engine: train on the pinned card-less base, render
    the predictor's arguments as promotion does (the spec's pin becomes --base-digest), start the engine
    from them and attach the adapter; the same arguments without the pin are refused before weights load."""
    from aicd.components.delivery import isvc
    from aicd.components.serving.config import parse_config
    from aicd.components.serving.engine import Engine
    from aicd.components.spec import parse_spec
    from aicd.components.training.adapter import train_adapter

    spec = causal_spec(cardless, tmp_path / "ck", max_steps=1)
    spec["candidates"][0]["digest"] = content_digest(cardless)
    card = train_adapter(spec, make_dataset(tmp_path / "ds", causal_rows()), "lora-r8", tmp_path / "out",
                         progress=False).card
    args = isvc.predictor_args(parse_spec(spec), isvc.ModelRef(card["digest"], str(cardless), str(tmp_path / "out"),
                                                               "support"))
    assert args[args.index("--base-digest") + 1] == content_digest(cardless)
    engine = Engine(parse_config(args))
    engine.load_base()
    engine.attach(engine.verify("support", str(tmp_path / "out")))
    at = args.index("--base-digest")
    with pytest.raises(IntegrityError, match="has no card.json and no pinned digest"):
        Engine(parse_config(args[:at] + args[at + 2:])).load_base()
