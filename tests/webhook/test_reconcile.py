"""aim-webhook reconcile: which Pods it replaces, and that it waits for the webhook first."""

from __future__ import annotations

from aim_webhook.reconcile import available, run, stale_pods


def pod(name, *, owned=True, deleting=False):
    meta = {"name": name, "labels": {"aim-engine.io/recipe-id": "selected"}}
    if owned:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": "rs", "uid": "1", "apiVersion": "apps/v1"}]
    if deleting:
        meta["deletionTimestamp"] = "2026-11-28T12:00:00Z"
    return {"metadata": meta}


def test_only_controller_owned_pods_are_replaced():
    stale = stale_pods([pod("b"), pod("a"), pod("bare", owned=False), pod("going", deleting=True)])
    assert stale.owned == ("a", "b")
    assert stale.bare == ("bare",)


def test_available_needs_one_available_replica():
    assert not available(None)
    assert not available({"status": {}})
    assert not available({"status": {"availableReplicas": 0}})
    assert available({"status": {"availableReplicas": 1}})


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_it_waits_for_the_webhook_then_deletes():
    clock = Clock()
    states = iter([None, {"status": {}}, {"status": {"availableReplicas": 1}}])
    deleted = []
    out = run(
        namespace="ns",
        deployment="aim-engine-validator",
        read_deployment=lambda: next(states),
        list_pods=lambda: [pod("p1"), pod("bare", owned=False)],
        delete_pod=deleted.append,
        timeout_seconds=60,
        clock=clock,
        sleep=clock.sleep,
    )
    assert out.ok and deleted == ["p1"] and out.deleted == ("p1",)
    assert clock.now == 4.0  # two polls of 2 s
    assert "1 bare pod(s) left" in out.message


def test_a_webhook_that_never_serves_is_an_error_and_nothing_is_deleted():
    clock = Clock()
    deleted = []
    out = run(
        namespace="ns",
        deployment="aim-engine-validator",
        read_deployment=lambda: {"status": {"availableReplicas": 0}},
        list_pods=lambda: [pod("p1")],
        delete_pod=deleted.append,
        timeout_seconds=10,
        clock=clock,
        sleep=clock.sleep,
    )
    assert not out.ok and deleted == []
    assert "kubectl -n ns describe deployment aim-engine-validator" in out.message
