"""aim-webhook reconcile: which Pods it replaces, and that it waits for the webhook first."""

from __future__ import annotations

from aim_webhook.reconcile import Current, available, outdated_pods, run, stale_pods


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


# ---- Pods serving a recipe other than the selection's now ----

FP_NEW, FP_OLD = "1111111111111111", "0000000000000000"


def served(name, *, fp=FP_OLD, recipe="r-old", ready=True, owned=True):
    meta = {"name": name, "labels": {"aim-engine.io/recipe-id": recipe}}
    if fp is not None:
        meta["annotations"] = {"aim-engine.io/recipe-fingerprint": fp}
    if owned:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": "rs", "uid": "1", "apiVersion": "apps/v1"}]
    return {"metadata": meta, "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_pods_given_another_recipe_are_outdated_judged_by_fingerprint_else_by_id():
    pods = [
        served("same", fp=FP_NEW, recipe="r"),
        served("other-fingerprint", recipe="r"),  # same id, other arguments: outdated
        served("legacy-same-id", fp=None, recipe="r"),  # no fingerprint (an older webhook): its id is current
        served("legacy-other-id", fp=None, recipe="r-old"),
        served("bare", owned=False),
        served("not-yet", fp=None, recipe="selected"),  # stale_pods() replaces it
    ]
    out = outdated_pods(pods, fingerprint=FP_NEW, recipe_id="r")
    assert out.owned == ("legacy-other-id", "other-fingerprint") and out.bare == ("bare",)


def test_outdated_pods_are_replaced_one_at_a_time_each_after_a_ready_replacement():
    clock = Clock()
    pods = {"a": served("a"), "b": served("b")}
    deleted = []

    def delete(name):
        deleted.append(name)
        pods.pop(name)
        # The controller recreates it through the webhook: the current recipe, ready after 6 s.
        pods[f"{name}-new"] = served(f"{name}-new", fp=FP_NEW, recipe="r", ready=False)
        ready_at[f"{name}-new"] = clock.now + 6

    ready_at = {}

    def listing():
        for n, at in ready_at.items():
            if n in pods and clock.now >= at:
                pods[n]["status"]["conditions"][0]["status"] = "True"
        return list(pods.values())

    out = run(
        namespace="ns",
        deployment=None,
        read_deployment=None,
        list_pods=lambda: [],
        delete_pod=delete,
        timeout_seconds=60,
        clock=clock,
        sleep=clock.sleep,
        current=Current(recipe_id="r", fingerprint=FP_NEW, list_pods=listing),
    )
    assert out.ok and deleted == ["a", "b"] and clock.now == 6.0  # b went only once a-new was ready
    assert "2 pod(s) with an outdated recipe replaced by r: a, b" in out.message


def test_a_replacement_that_never_gets_ready_stops_the_replacing():
    clock = Clock()
    pods = {"a": served("a"), "b": served("b")}
    deleted = []

    def delete(name):
        deleted.append(name)
        pods.pop(name)
        pods[f"{name}-new"] = served(f"{name}-new", fp=FP_NEW, recipe="r", ready=False)  # never ready

    out = run(
        namespace="ns",
        deployment=None,
        read_deployment=None,
        list_pods=lambda: [],
        delete_pod=delete,
        timeout_seconds=30,
        clock=clock,
        sleep=clock.sleep,
        current=Current(recipe_id="r", fingerprint=FP_NEW, list_pods=lambda: list(pods.values())),
    )
    assert not out.ok and deleted == ["a"] and "b keep the previous recipe" in out.message


# ---- The engine Deployment's outdated Pods: a rollout (its strategy), not deletions ----


def engine_pod(name, *, fp=FP_OLD, template_hash="h1", ready=True):
    p = served(name, fp=fp, recipe="r" if fp == FP_NEW else "r-old", ready=ready)
    p["metadata"]["labels"]["pod-template-hash"] = template_hash
    p["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": f"engine-{template_hash}", "uid": "2"}]
    return p


class FakeDeployment:
    """A Deployment that finishes a rollout `takes` seconds after its template changes: the new
    ReplicaSet's pods get the current recipe (the webhook), the old ones go."""

    def __init__(self, clock, pods, *, takes=8, replicas=1):
        self.clock, self.pods, self.takes, self.replicas = clock, pods, takes, replicas
        self.generation, self.observed, self.done_at, self.rolls = 1, 1, None, []

    def read(self):
        if self.done_at is not None and self.clock.now >= self.done_at:
            for name in [n for n in self.pods if n.startswith("engine-")]:
                del self.pods[name]
            for i in range(self.replicas):
                self.pods[f"engine-h2-{i}"] = engine_pod(f"engine-h2-{i}", fp=FP_NEW, template_hash="h2")
            self.observed, self.done_at = self.generation, None
        updated = self.replicas if self.done_at is None else 0
        status = {
            "observedGeneration": self.observed,
            "updatedReplicas": updated,
            "replicas": self.replicas + (1 if self.done_at is not None else 0),
            "availableReplicas": self.replicas,
        }
        return {"metadata": {"generation": self.generation}, "spec": {"replicas": self.replicas}, "status": status}

    def roll(self, fingerprint):
        self.rolls.append(fingerprint)
        self.generation += 1
        self.done_at = self.clock.now + self.takes


def run_engine(clock, pods, dep, *, timeout, delete):
    """run() with the current recipe and the engine Deployment `dep` (no webhook to wait for)."""
    from aim_webhook.reconcile import Engine

    return run(
        namespace="ns",
        deployment=None,
        read_deployment=None,
        list_pods=lambda: [],
        delete_pod=delete,
        timeout_seconds=timeout,
        clock=clock,
        sleep=clock.sleep,
        current=Current(
            recipe_id="r",
            fingerprint=FP_NEW,
            list_pods=lambda: list(pods.values()),
            engine=Engine(name="engine", read=dep.read, roll=dep.roll),
        ),
    )


def test_the_engine_deployment_is_rolled_not_its_pods_deleted():
    clock = Clock()
    pods = {"engine-h1-a": engine_pod("engine-h1-a"), "other": served("other")}
    dep = FakeDeployment(clock, pods)
    deleted = []

    def delete(name):
        deleted.append(name)
        pods.pop(name)

    out = run_engine(clock, pods, dep, timeout=60, delete=delete)
    assert out.ok, out.message
    assert dep.rolls == [FP_NEW] and clock.now >= 8  # waited for the rollout to complete
    assert deleted == ["other"]  # a pod of another controller: deleted as before
    assert "through a rollout of deployment engine: engine-h1-a" in out.message


def test_a_rollout_helm_started_is_waited_for_and_nothing_more_rolls():
    clock = Clock()
    pods = {"engine-h1-a": engine_pod("engine-h1-a")}
    dep = FakeDeployment(clock, pods, takes=10)
    dep.roll("helm")  # Helm changed the pod template: its new pods get the new recipe
    out = run_engine(clock, pods, dep, timeout=60, delete=lambda name: None)
    assert out.ok and dep.rolls == ["helm"] and clock.now >= 10


def test_a_rollout_that_never_completes_is_an_error_naming_the_deployment():
    clock = Clock()
    pods = {"engine-h1-a": engine_pod("engine-h1-a")}
    dep = FakeDeployment(clock, pods, takes=10_000)
    out = run_engine(clock, pods, dep, timeout=30, delete=lambda name: None)
    assert not out.ok and "rollout status deployment/engine" in out.message and "to recipe r" in out.message


def test_owned_by_deployment_and_rolled_out():
    from aim_webhook.reconcile import owned_by_deployment, rolled_out

    assert owned_by_deployment(engine_pod("x", template_hash="abc"), "engine")
    assert not owned_by_deployment(engine_pod("x", template_hash="abc"), "engine-other")
    assert not owned_by_deployment(served("y"), "engine")  # owned by ReplicaSet "rs", no template hash
    done = {
        "metadata": {"generation": 3},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 3, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2},
    }
    assert rolled_out(done) and rolled_out(None)
    assert not rolled_out({**done, "status": {**done["status"], "observedGeneration": 2}})
    assert not rolled_out({**done, "status": {**done["status"], "replicas": 3}})  # an old pod still there
    assert not rolled_out({**done, "status": {**done["status"], "availableReplicas": 1}})
