"""How the engine Deployment replaces its pods at a recipe change: decided from the free devices
with the release's own pods counted as holding theirs (selection.upgrade)."""

from __future__ import annotations

from aim_engine.selection.upgrade import UpgradeKind, plan_upgrade
from k8s_objects import cluster, gfd_node, pod
from support import inventory_of, run_select

Q8 = "Qwen/Qwen3-8B"
RELEASE = {"app.kubernetes.io/instance": "rel"}


def plan_for(bundle, doc, *, replicas):
    sel = run_select(bundle, doc, model_id=Q8, gpu_count=1, precision="fp8", inv_kw={"reclaim_selector": RELEASE})
    assert sel.recipe is not None, sel.message
    occupied = inventory_of(bundle, doc)  # the release's pods hold their GPUs
    return sel.recipe, plan_upgrade(
        recipe=sel.recipe, product=bundle.hardware.get(sel.recipe.hardware), occupied=occupied, replicas=replicas
    )


def test_room_for_one_more_pod_is_a_surge(bundle):
    doc = cluster([gfd_node("h0", "H100")], [pod("rel-0", "h0", gpus=1, labels=RELEASE)])
    recipe, plan = plan_for(bundle, doc, replicas=1)
    assert plan.kind is UpgradeKind.SURGE and (plan.max_surge, plan.max_unavailable) == (1, 0)
    assert plan.deployment_strategy() == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert plan.line().startswith("UPGRADE: surge: one more pod of " + recipe.recipe_id)


def test_no_room_and_one_replica_is_recreate_with_the_gap_said(bundle):
    # The release's pod holds 1 GPU, other workloads the other 7: the selection reclaims the
    # release's GPU, but a second pod beside it has none.
    doc = cluster(
        [gfd_node("h0", "H100")],
        [pod("rel-0", "h0", gpus=1, labels=RELEASE), pod("other", "h0", gpus=7)],
    )
    _, plan = plan_for(bundle, doc, replicas=1)
    assert plan.kind is UpgradeKind.RECREATE
    assert plan.deployment_strategy() == {"type": "Recreate", "rollingUpdate": None}
    assert "does not serve until the new pod is Ready" in plan.reason and "NO_FREE_CAPACITY" not in plan.reason
    assert "needs 1 free nvidia.com/gpu" in plan.reason


def test_no_room_and_several_replicas_is_one_at_a_time(bundle):
    doc = cluster(
        [gfd_node("h0", "H100")],
        [pod("rel-0", "h0", gpus=1, labels=RELEASE), pod("rel-1", "h0", gpus=1, labels=RELEASE), pod("other", "h0", gpus=6)],
    )
    _, plan = plan_for(bundle, doc, replicas=2)
    assert plan.kind is UpgradeKind.ROLLING and (plan.max_surge, plan.max_unavailable) == (0, 1)
    assert "1 keep serving" in plan.reason
    assert plan.as_dict()["strategy"] == "rolling" and plan.as_dict()["replicas"] == 2


def test_select_says_the_upgrade_plan_on_a_snapshot(capsys, tmp_path):
    """`--upgrade-deployment` (the hook's flag) on a snapshot: the UPGRADE line, judged with the
    release's pods holding their GPUs while the selection reclaims them."""
    import json

    from aim_engine.cli.main import main

    doc = cluster([gfd_node("h0", "H100")], [pod("rel-0", "h0", gpus=1, labels=RELEASE), pod("other", "h0", gpus=7)])
    snap = tmp_path / "cluster.json"
    snap.write_text(json.dumps(doc))
    argv = ["select", "--model", Q8, "--cluster", str(snap), "--reclaim-label", "app.kubernetes.io/instance=rel"]
    assert main([*argv, "--upgrade-deployment", "rel", "--replicas", "1"]) == 0
    out = capsys.readouterr().out
    assert "UPGRADE: recreate: one replica and no room" in out, out
    assert main([*argv, "--upgrade-deployment", "rel", "--replicas", "3"]) == 0
    assert "UPGRADE: rolling:" in capsys.readouterr().out


def test_a_model_cache_smaller_than_the_checkpoint_is_refused_with_both_numbers(capsys, tmp_path):

    from aim_engine.cli.main import main

    doc = cluster([gfd_node("h0", "H100")])
    snap = tmp_path / "cluster.json"
    snap.write_text(__import__("json").dumps(doc))
    argv = ["select", "--model", Q8, "--cluster", str(snap)]
    assert main([*argv, "--cache-size", "5Gi"]) == 1
    out = capsys.readouterr().out
    assert "model_cache.size (5Gi) holds 5.0 GiB, but Qwen/Qwen3-8B's checkpoint (bf16) is 15.3 GiB" in out, out
    assert "set model_cache.size to at least 16Gi" in out
    assert main([*argv, "--cache-size", "16Gi"]) == 0
    assert "qwen3-8b" in capsys.readouterr().out


def test_cache_shortfall_rounds_the_size_to_set_up(bundle):
    from decimal import Decimal

    from aim_engine.domain.quantity import GIB
    from aim_engine.rules.memory import cache_shortfall, weight_bytes

    model = bundle.model_map()[Q8.lower()]
    need = weight_bytes(model, model.native_precision)
    assert cache_shortfall(model, cache_bytes=need, where="x") is None
    text = cache_shortfall(model, cache_bytes=need - 1, where="x")
    assert text is not None and f"at least {-(-int(need) // int(GIB))}Gi" in text
    assert cache_shortfall(model, cache_bytes=Decimal(0), where="x") is not None
