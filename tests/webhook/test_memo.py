"""The webhook's memo of its pure judgments (aim_webhook.memo): identical workloads are judged once,
and a memoised answer is always the answer a fresh judgment gives."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from helpers import all_reviews, review

from aim_engine.domain.recipe import with_changes
from aim_engine.rules.pod import parse_workload
from aim_webhook.app import Reviewer, Settings
from aim_webhook.memo import Memo, fingerprint
from aim_webhook.recipes import RecipeResolver
from aim_webhook.review import parse_review


def new_reviewer(wbundle: Any) -> Reviewer:
    return Reviewer(bundle=wbundle, resolver=RecipeResolver(wbundle, read_configmap=None), settings=Settings())


@pytest.fixture
def reviewer(wbundle: Any) -> Reviewer:
    return new_reviewer(wbundle)


def _renamed(doc: dict[str, Any], name: str) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    meta = out["request"]["object"]["metadata"]
    meta["name"] = name
    meta["uid"] = f"uid-{name}"
    out["request"]["uid"] = f"review-{name}"
    return out


@pytest.mark.parametrize("name", all_reviews())
def test_a_memoised_answer_is_the_fresh_answer(wbundle: Any, name: str) -> None:
    """Every fixture, reviewed twice by one Reviewer (the second from its memo) and once by a new
    one: the same verdict, message, patch and warnings."""
    doc = review(name)
    try:
        req = parse_review(doc)
    except Exception:
        pytest.skip("not an AdmissionReview the reviewer sees (refused before review)")
    warm = new_reviewer(wbundle)
    for handler in ("validate", "mutate_review"):
        first = getattr(warm, handler)(req)
        second = getattr(warm, handler)(req)
        fresh = getattr(new_reviewer(wbundle), handler)(req)
        assert first == second == fresh


def test_the_pods_of_one_controller_are_judged_once(reviewer: Reviewer) -> None:
    base = review("pod-from-replicaset.json")
    answers = [reviewer.validate(parse_review(_renamed(base, f"vllm-{i}"))) for i in range(5)]
    assert reviewer.verdicts.misses == 1 and reviewer.verdicts.hits == 4
    assert all(a[0]["response"]["allowed"] == answers[0][0]["response"]["allowed"] for a in answers)
    # Each answer carries its own review's uid, not the memoised one's.
    assert [a[0]["response"]["uid"] for a in answers] == [f"review-vllm-{i}" for i in range(5)]


def test_a_different_template_is_judged_anew(reviewer: Reviewer) -> None:
    good = review("deployment-good.json")
    reviewer.validate(parse_review(good))
    bad = review("deployment-tp-mismatch.json")
    _, outcome, reason = reviewer.validate(parse_review(bad))
    assert outcome == "denied" and reason == "PARALLELISM_MISMATCH"
    assert reviewer.verdicts.misses == 2


def test_the_fingerprint_ignores_names_and_sees_every_judged_field() -> None:
    obj = review("pod-from-replicaset.json")["request"]["object"]
    w = parse_workload(obj, kind="Pod", namespace="apps")
    renamed = copy.deepcopy(obj)
    renamed["metadata"].update(name="other", uid="u2", resourceVersion="9")
    assert fingerprint(parse_workload(renamed, kind="Pod", namespace="apps")) == fingerprint(w)
    for change in (
        lambda o: o["spec"]["containers"][0].setdefault("args", []).append("--max-model-len=1024"),
        lambda o: o["metadata"].setdefault("annotations", {}).update({"aim-engine.io/slo-tokens-per-second": "9"}),
        lambda o: o["metadata"].setdefault("labels", {}).update({"aim-engine.io/recipe-id": "another"}),
        lambda o: o["spec"].update(nodeSelector={"kubernetes.io/hostname": "n"}),
    ):
        changed = copy.deepcopy(obj)
        change(changed)
        assert fingerprint(parse_workload(changed, kind="Pod", namespace="apps")) != fingerprint(w)


def test_an_entry_is_for_the_recipe_object_it_was_computed_with(wbundle: Any) -> None:
    memo: Memo[str] = Memo()
    recipe = wbundle.recipes[0]
    assert memo.get("k", recipe, lambda: "first") == "first"
    assert memo.get("k", recipe, lambda: "second") == "first"
    # A recipe re-read by the resolver (same id, maybe new content) is another object: computed again.
    reread = with_changes(recipe, args=dict(recipe.args))
    assert memo.get("k", reread, lambda: "third") == "third"


def test_the_memo_is_bounded_and_keeps_no_exception(wbundle: Any) -> None:
    memo: Memo[int] = Memo(size=3)
    recipe = wbundle.recipes[0]
    for i in range(10):
        memo.get(i, recipe, lambda i=i: i)
    assert len(memo._entries) == 3 and list(memo._entries) == [7, 8, 9]

    def boom() -> int:
        raise ValueError("malformed")

    with pytest.raises(ValueError):
        memo.get("x", recipe, boom)
    assert memo.get("x", recipe, lambda: 1) == 1
