"""The GitOps branch's commit (resolved without a clone) and the champion read at a given commit, which
make the pipelines' champion lookup cacheable (real Git, bare repository)."""

import pytest
from helpers.gitops import BASE, blessing_for, make_adapter, make_spec, run

from aicd.components.delivery.gitops import promote_adapter, write_champion
from aicd.components.delivery.revision import champion_revision, read_champion_at
from aicd.components.errors import DeliveryError


def test_the_revision_is_the_branch_tip_and_moves_with_a_promotion(support_bot_spec, remote, tmp_path):  # noqa: F811
    spec = make_spec(support_bot_spec, remote)
    before = champion_revision(spec.delivery)
    assert before == run("--git-dir", str(remote), "rev-parse", "main").strip()
    adapter, card = make_adapter(tmp_path / "a", 1)
    promoted = promote_adapter(spec, blessing_for(card["digest"], champion=BASE), adapter)
    assert champion_revision(spec.delivery) == promoted.commit != before


def test_the_champion_is_read_at_the_given_commit_not_at_the_tip(support_bot_spec, remote, tmp_path):  # noqa: F811
    """A lookup keyed by an old commit gives what Git declared then, so a cached result is never newer or
    older than its key."""
    spec = make_spec(support_bot_spec, remote)
    before = champion_revision(spec.delivery)
    adapter, card = make_adapter(tmp_path / "a", 2)
    promote_adapter(spec, blessing_for(card["digest"], champion=BASE), adapter)
    assert read_champion_at(spec, before) is None
    assert read_champion_at(spec, champion_revision(spec.delivery)).model_id == card["digest"]
    assert write_champion(spec, tmp_path / "old", before).model_id == ""
    assert write_champion(spec, tmp_path / "new", champion_revision(spec.delivery)).model_id == card["digest"]


@pytest.mark.parametrize(("revision", "message"), [
    ("main", "the GitOps revision must be a full commit id (40 or 64 hex digits), got 'main'"),
    ("--output=/tmp/x", "the GitOps revision must be a full commit id (40 or 64 hex digits), got '--output=/tmp/x'"),
    ("0" * 40, f"the GitOps branch 'main' does not hold commit {'0' * 40}"),
])
def test_a_bad_revision_is_refused_by_name(support_bot_spec, remote, revision, message):  # noqa: F811
    spec = make_spec(support_bot_spec, remote)
    with pytest.raises(DeliveryError) as err:
        read_champion_at(spec, revision)
    assert err.value.message == message


def test_a_missing_branch_is_named(support_bot_spec, remote):  # noqa: F811
    spec = make_spec(support_bot_spec, remote, branch="release")
    with pytest.raises(DeliveryError) as err:
        champion_revision(spec.delivery)
    assert err.value.message == "the GitOps repository has no branch 'release'"
    assert err.value.hint == "create it, or set `delivery.gitops.branch`"
