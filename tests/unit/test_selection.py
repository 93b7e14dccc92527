"""Each selection rule and the fallback chain, on realistic clusters."""

from __future__ import annotations

import pytest

from aim_engine.domain.errors import InputError
from aim_engine.domain.recipe import parse_recipe, with_changes
from aim_engine.selection.request import Request
from aim_engine.selection.sizing import size_for_context
from k8s_objects import amd_node, cluster, gfd_node, mixed_cluster, node, pod
from support import run_select

QWEN = "Qwen/Qwen3-32B"
L70 = "meta-llama/Llama-3.1-70B-Instruct"


def codes(candidate):
    return [r.code for r in candidate.reasons]


def by_id(sel, rid):
    return next(c for c in sel.candidates if c.recipe.recipe_id == rid)


def test_primary_on_an_amd_cluster_picks_lowest_precision_fewest_gpus(bundle):
    sel = run_select(bundle, cluster([amd_node("a", "MI300X")]), model_id=QWEN)
    assert sel.result == "selected" and sel.level == "primary"
    assert sel.recipe.recipe_id == "qwen3-32b-mi300x-1gpu-fp8"
    assert sel.placement == ("a",)
    assert sel.candidates[0].verdict == "selected"
    outranked = by_id(sel, "qwen3-32b-mi300x-4gpu-bf16")
    assert outranked.verdict == "eligible" and "tok/s per GPU" in outranked.reasons[0].message
    assert codes(by_id(sel, "qwen3-32b-h100-1gpu-fp8")) == ["HARDWARE_ABSENT"]


def test_an_8b_model_does_not_take_8_gpus(bundle):
    sel = run_select(bundle, cluster([gfd_node("h", "H100")]), model_id="meta-llama/Llama-3.1-8B-Instruct")
    assert sel.recipe.gpu_count == 1


def test_every_catalog_model_gets_a_primary_recipe_on_a_big_mixed_cluster(bundle):
    """Every model with a GPU recipe in the catalog (CPU-only models need a CPU node)."""
    nodes = [amd_node(f"mi300x-{i}", "MI300X") for i in range(2)] + [gfd_node(f"h200-{i}", "H200") for i in range(2)]
    gpu_recipes = [r for r in bundle.recipes if not bundle.hardware.require(r.hardware).is_cpu]
    for model_id in {r.huggingface_id for r in gpu_recipes}:
        sel = run_select(bundle, cluster(nodes), model_id=model_id)
        assert sel.level == "primary", (model_id, sel.message)


def test_secondary_when_the_best_recipe_has_no_free_capacity(bundle):
    doc = cluster([gfd_node("h100-0", "H100"), gfd_node("a100-0", "A100")], [pod("busy", "h100-0", gpus=7)])
    sel = run_select(bundle, doc, model_id=L70)
    assert sel.level == "secondary"
    assert sel.recipe.hardware == "A100"
    fallback = next(r for r in sel.candidates[0].reasons if r.code == "FALLBACK")
    assert "llama-3.1-70b-instruct-h100-4gpu-bf16" in fallback.message and "free 3 more GPU(s)" in fallback.fix
    assert codes(by_id(sel, "llama-3.1-70b-instruct-h100-4gpu-bf16")) == ["NO_FREE_CAPACITY"]


def test_fragmentation_is_named(bundle):
    doc = cluster([gfd_node(f"h{i}", "H100") for i in range(4)], [pod(f"p{i}", f"h{i}", gpus=6) for i in range(4)])
    sel = run_select(bundle, doc, model_id=L70, gpu_count=4, precision="bf16")
    assert sel.recipe is None
    assert codes(by_id(sel, "llama-3.1-70b-instruct-h100-4gpu-bf16")) == ["FRAGMENTED"]
    assert "8 H100 GPUs are free in total" in by_id(sel, "llama-3.1-70b-instruct-h100-4gpu-bf16").reasons[0].message


def test_tertiary_derives_a_minimal_configuration_with_fewer_gpus(bundle):
    doc = cluster([amd_node("a", "MI300X")], [pod("x", "a", gpus=4, resource="amd.com/gpu")])
    sel = run_select(bundle, doc, model_id="meta-llama/Llama-3.1-405B-Instruct")
    assert sel.level == "tertiary"
    r = sel.recipe
    assert r.gpu_count == 4 and r.args["tensor_parallel_size"] == 4 and r.origin == "derived"
    assert r.performance is None and r.type == "unoptimized"
    assert r.limits["amd.com/gpu"] == 4 and r.env["HIP_FORCE_DEV_KERNARG"] == "1"
    assert "DERIVED" in codes(sel.candidates[0])


def test_tertiary_shortens_context_only_down_to_min_context(bundle):
    doc = cluster([gfd_node("l", "L40S", gpus=1)])
    sel = run_select(bundle, doc, model_id="meta-llama/Llama-3.1-70B-Instruct")
    # 70B at fp8 needs ~72 GB: one 48 GB L40S cannot hold it at any context.
    assert sel.recipe is None
    assert "L40S" in sel.message


def _tight_l40s(bundle):
    base = next(r for r in bundle.recipes if r.recipe_id == "llama-3.1-8b-instruct-l40s-1gpu-bf16")
    return with_changes(base, args={**base.args, "gpu_memory_utilization": 0.6, "max_model_len": 131072})


def test_tertiary_shortens_the_context_of_a_recipe_whose_kv_cache_does_not_fit(bundle):
    sel = run_select(
        bundle,
        cluster([gfd_node("l", "L40S", gpus=1)]),
        model_id="meta-llama/Llama-3.1-8B-Instruct",
        recipes=[_tight_l40s(bundle)],
    )
    assert sel.level == "tertiary"
    assert 4096 <= sel.recipe.max_model_len < 131072
    assert sel.recipe.recipe_id.endswith(f"-tp1-ctx{sel.recipe.max_model_len}")


def test_explicit_max_model_len_is_never_reduced(bundle):
    sel = run_select(
        bundle,
        cluster([gfd_node("l", "L40S", gpus=1)]),
        model_id="meta-llama/Llama-3.1-8B-Instruct",
        recipes=[_tight_l40s(bundle)],
        max_model_len=131072,
        allow_default=False,
    )
    assert sel.recipe is None
    assert "max_model_len=131072" in sel.message


def test_explicit_max_model_len_is_applied_to_the_selected_recipe(bundle):
    sel = run_select(bundle, cluster([gfd_node("h", "H100", gpus=1)]), model_id="openai/gpt-oss-120b", max_model_len=65536)
    assert sel.recipe.recipe_id == "gpt-oss-120b-h100-1gpu-mxfp4"
    assert sel.recipe.max_model_len == 65536
    assert sel.recipe.to_seed()["config"]["args"]["max_model_len"] == 65536


def test_default_synthesises_a_generic_recipe_for_hardware_without_recipes(bundle):
    sel = run_select(bundle, cluster([gfd_node("a", "A100-40GB")]), model_id="Qwen/Qwen3-8B")
    assert sel.level == "default"
    r = sel.recipe
    assert r.origin == "synthesized" and r.type == "general" and r.hardware == "A100-40GB"
    assert r.gpu_count == 1 and r.precision == "bf16" and r.performance is None
    assert r.requests["nvidia.com/gpu"] == 1


def test_default_for_amd_carries_rocm_env(bundle):
    sel = run_select(
        bundle,
        cluster([node("m", resource="amd.com/gpu", gpus=8, labels={"amd.com/gpu.product-name": "AMD_Instinct_MI250X_MI250"})]),
        model_id="Qwen/Qwen3-32B",
    )
    assert sel.level == "default" and sel.recipe.hardware == "MI250X"
    assert sel.recipe.env["HIP_FORCE_DEV_KERNARG"] == "1"
    assert sel.recipe.gpu_count == 2  # 65.6 GB of bf16 weights on 64 GiB dies


def test_no_default_disables_the_generic_level(bundle):
    sel = run_select(bundle, cluster([gfd_node("a", "A100-40GB")]), model_id="Qwen/Qwen3-8B", allow_default=False)
    assert sel.result == "not_found" and "default (generic) level is disabled" in sel.message


def test_unknown_model_without_config_is_not_found_with_the_fix(bundle):
    sel = run_select(bundle, cluster([gfd_node("h", "H100")]), model_id="org/unknown-model")
    assert sel.result == "not_found"
    assert "--model-config" in sel.message and "no recipe for org/unknown-model" in sel.message


def test_override_gpu_count_and_precision_are_honoured(bundle):
    sel = run_select(bundle, cluster([amd_node("a", "MI300X")]), model_id=QWEN, gpu_count=4, precision="bf16")
    assert sel.recipe.recipe_id == "qwen3-32b-mi300x-4gpu-bf16"
    assert codes(by_id(sel, "qwen3-32b-mi300x-1gpu-fp8")) == ["OVERRIDE_GPU_COUNT", "OVERRIDE_PRECISION"]


def test_override_fp8_on_a100_is_refused_not_changed(bundle):
    sel = run_select(bundle, cluster([gfd_node("a", "A100")]), model_id=QWEN, precision="fp8")
    assert sel.recipe is None and sel.result == "not_found"
    assert "A100 cannot run fp8" in sel.message


def test_override_gpu_count_that_cannot_hold_the_model_is_refused(bundle):
    sel = run_select(bundle, cluster([gfd_node("h", "H100")]), model_id="meta-llama/Llama-3.1-405B-Instruct", gpu_count=2)
    assert sel.recipe is None
    assert "gpu_count=2" in sel.message


def test_override_gpu_count_without_a_catalog_recipe_is_honoured_by_derivation(bundle):
    sel = run_select(bundle, cluster([amd_node("a", "MI300X")]), model_id=QWEN, gpu_count=2)
    assert sel.recipe.gpu_count == 2 and sel.level == "tertiary"


def test_invalid_override_values_are_input_errors(bundle):
    for kw in ({"precision": "fp4"}, {"backend": "tgi"}, {"gpu_type": "TPU"}, {"gpu_count": 0}, {"model_id": "not a model"}):
        with pytest.raises(InputError):
            run_select(bundle, cluster([gfd_node("h", "H100")]), **{"model_id": QWEN, **kw})


def test_multi_node_recipe_needs_two_nodes_each_with_room(bundle):
    two = cluster([gfd_node("h0", "H100"), gfd_node("h1", "H100")])
    sel = run_select(bundle, two, model_id="deepseek-ai/DeepSeek-R1")
    assert sel.recipe.recipe_id == "deepseek-r1-h100-16gpu-fp8" and sel.recipe.nodes == 2
    one = cluster([gfd_node("h0", "H100"), gfd_node("h1", "H100")], [pod("p", "h1", gpus=1)])
    sel = run_select(bundle, one, model_id="deepseek-ai/DeepSeek-R1")
    assert sel.recipe is None
    assert codes(by_id(sel, "deepseek-r1-h100-16gpu-fp8")) == ["NO_FREE_CAPACITY"]


def test_the_workload_shape_limits_recipes_to_that_many_nodes(bundle):
    """nodes=2 (a LeaderWorkerSet group of 2): only 2-node recipes; nodes=1 (a Deployment): none of
    them; neither the derived nor the synthesised levels produce a single-node recipe for a group."""
    two = cluster([gfd_node("h0", "H100"), gfd_node("h1", "H100"), amd_node("m0", "MI300X")])
    sel = run_select(bundle, two, model_id="deepseek-ai/DeepSeek-R1", nodes=2)
    assert sel.recipe.recipe_id == "deepseek-r1-h100-16gpu-fp8"
    assert codes(by_id(sel, "deepseek-r1-mi300x-8gpu-fp8")) == ["WORKLOAD_SHAPE"]
    sel = run_select(bundle, two, model_id="deepseek-ai/DeepSeek-R1", nodes=1)
    assert sel.recipe.nodes == 1 and sel.recipe.recipe_id == "deepseek-r1-mi300x-8gpu-fp8"
    assert codes(by_id(sel, "deepseek-r1-h100-16gpu-fp8")) == ["WORKLOAD_SHAPE"]
    sel = run_select(bundle, two, model_id="Qwen/Qwen3-32B", nodes=2)
    assert sel.recipe is None and sel.level is None
    assert all("WORKLOAD_SHAPE" in codes(c) for c in sel.candidates)
    with pytest.raises(InputError):
        run_select(bundle, two, model_id=QWEN, nodes=0)


def test_single_node_recipe_bigger_than_any_node(bundle):
    doc = cluster([gfd_node("h", "H100", gpus=4)])
    sel = run_select(bundle, doc, model_id="meta-llama/Llama-3.1-405B-Instruct")
    assert codes(by_id(sel, "llama-3.1-405b-instruct-h100-8gpu-fp8")) == ["NODE_TOO_SMALL"]


def test_cordoned_and_notready_hardware_is_named(bundle):
    sel = run_select(bundle, mixed_cluster(), model_id="meta-llama/Llama-3.1-8B-Instruct")
    assert codes(by_id(sel, "llama-3.1-8b-instruct-l40s-1gpu-bf16")) == ["HARDWARE_UNAVAILABLE"]
    assert "l40s-node-0 (NotReady)" in by_id(sel, "llama-3.1-8b-instruct-l40s-1gpu-bf16").reasons[0].message


def test_reclaim_label_lets_an_upgrade_reuse_its_own_gpus(bundle):
    doc = cluster(
        [amd_node("a", "MI300X", gpus=1)],
        [pod("aim-engine-0", "a", gpus=1, resource="amd.com/gpu", labels={"app.kubernetes.io/instance": "aim-engine"})],
    )
    assert run_select(bundle, doc, model_id=QWEN).recipe is None
    sel = run_select(bundle, doc, model_id=QWEN, inv_kw={"reclaim_selector": {"app.kubernetes.io/instance": "aim-engine"}})
    assert sel.recipe.recipe_id == "qwen3-32b-mi300x-1gpu-fp8"


def _custom(bundle, **changes):
    base = parse_recipe(
        {
            "recipe_id": "custom-qwen-32b-4gpu-bf16",
            "huggingface_id": QWEN,
            "hardware": "MI300X",
            "gpu_count": 4,
            "precision": "bf16",
            "backend": "vllm",
            "config": {"args": {"tensor_parallel_size": 4, "max_model_len": 32768}},
        },
        origin="custom",
    )
    return with_changes(base, **changes) if changes else base


def test_pinned_custom_recipe_wins_when_it_fits(bundle):
    sel = run_select(bundle, cluster([amd_node("a", "MI300X")]), model_id=QWEN, custom_recipe=_custom(bundle))
    assert sel.recipe.recipe_id == "custom-qwen-32b-4gpu-bf16" and sel.level == "primary"
    assert len(sel.candidates) == 1


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"hardware": "H100"}, "HARDWARE_ABSENT"),
        ({"args": {"tensor_parallel_size": 3}}, "PARALLELISM_MISMATCH"),
        ({"gpu_count": 3, "args": {"tensor_parallel_size": 3}}, "TP_INDIVISIBLE"),
        ({"precision": "mxfp4", "hardware": "MI250X"}, "HARDWARE_ABSENT"),
        ({"args": {"tensor_parallel_size": 4, "max_model_len": 131072}}, "CONTEXT_EXCEEDS_MODEL"),
        ({"args": {"tensor_parallel_size": 4, "max_num_seq": 8}}, "INVALID_ARG"),
        ({"huggingface_id": "meta-llama/Llama-3.1-8B-Instruct"}, "MODEL_MISMATCH"),
    ],
)
def test_pinned_custom_recipe_is_refused_with_the_reason(bundle, changes, code):
    sel = run_select(bundle, cluster([amd_node("a", "MI300X")]), model_id=QWEN, custom_recipe=_custom(bundle, **changes))
    assert sel.recipe is None and sel.result == "not_found"
    assert code in codes(sel.candidates[0]), codes(sel.candidates[0])


def test_precision_unsupported_on_the_pinned_hardware(bundle):
    doc = cluster([gfd_node("a", "A100")])
    pinned = _custom(bundle, hardware="A100", precision="fp8")
    sel = run_select(bundle, doc, model_id=QWEN, custom_recipe=pinned)
    assert "PRECISION_UNSUPPORTED" in codes(sel.candidates[0])
    assert "fp8 on MI300X" in sel.candidates[0].reasons[[*codes(sel.candidates[0])].index("PRECISION_UNSUPPORTED")].fix


def test_equal_rank_is_ambiguous_not_a_coin_toss(bundle):
    a = next(r for r in bundle.recipes if r.recipe_id == "qwen3-32b-mi300x-1gpu-fp8")
    twin = with_changes(a, recipe_id="qwen3-32b-mi300x-1gpu-fp8-twin")
    sel = run_select(bundle, cluster([amd_node("a", "MI300X")]), model_id=QWEN, recipes=[*bundle.recipes, twin])
    assert sel.result == "ambiguous" and sel.recipe is None
    assert "qwen3-32b-mi300x-1gpu-fp8-twin" in sel.message and "priority" in sel.message
    # Neither is chosen, and neither is said to be outranked by the other.
    for rid, other in ((a.recipe_id, twin.recipe_id), (twin.recipe_id, a.recipe_id)):
        tied = by_id(sel, rid)
        assert tied.verdict == "rejected" and codes(tied) == ["AMBIGUOUS"]
        assert tied.reasons[0].message == f"ranks equal to {other}"
    ranked = with_changes(twin, priority=5)
    sel = run_select(bundle, cluster([amd_node("a", "MI300X")]), model_id=QWEN, recipes=[*bundle.recipes, ranked])
    assert sel.recipe.recipe_id == "qwen3-32b-mi300x-1gpu-fp8-twin"


def test_selection_is_deterministic_whatever_the_catalog_order(bundle):
    doc = mixed_cluster()
    first = run_select(bundle, doc, model_id=L70)
    again = run_select(bundle, doc, model_id=L70, recipes=list(reversed(bundle.recipes)))
    assert first.recipe == again.recipe
    assert [c.recipe.recipe_id for c in first.candidates] == [c.recipe.recipe_id for c in again.candidates]


def test_the_closest_recipe_named_when_none_fits_does_not_depend_on_the_catalog_order(bundle):
    """Two recipes equally close (same findings count, same rank): the recipe id decides, not
    which of them the catalog lists first."""
    best = next(r for r in bundle.recipes if r.recipe_id == "qwen3-32b-a100-2gpu-bf16")
    twin = with_changes(best, recipe_id="qwen3-32b-a100-2gpu-bf16-a-twin")
    messages = {
        run_select(bundle, cluster([gfd_node("a", "A100")]), model_id=QWEN, precision="fp8", recipes=recipes).message
        for recipes in ([*bundle.recipes, twin], [twin, *bundle.recipes])
    }
    assert len(messages) == 1
    # a recipe for the cluster's own A100 (drop the precision override), not one for an absent product
    assert "closest: qwen3-32b-a100-2gpu-bf16: runs bf16; precision=fp8 was requested" in messages.pop()


def test_request_overrides_are_reported(bundle):
    req = Request(model_id=QWEN, gpu_count=4, precision="bf16")
    assert req.overrides == {"gpu_count": 4, "precision": "bf16"}


# Sizing a derived or synthesised configuration: more GPUs before a much shorter context -----------


def _fits(table):
    return lambda n: table.get(n, 0)


def _size(table, **kw):
    args = {
        "sizes": [1, 2, 4, 8],
        "free": 8,
        "context": 131072,
        "whose": "the model's",
        "where": "one H100 node",
        **kw,
    }
    return size_for_context(_fits(table), **args)


def test_sizing_takes_more_gpus_for_the_whole_context():
    s = _size({2: 6912, 4: 131072, 8: 131072})
    assert (s.gpus, s.max_model_len, s.tier) == (4, 131072, 0)
    assert s.trade == "4 GPUs rather than 2: 2 would fit only 6,912 tokens of the model's 131,072 context"
    assert "gpu_count" in s.fix


def test_sizing_says_nothing_when_the_fewest_gpus_hold_the_whole_context():
    s = _size({1: 131072, 2: 131072})
    assert (s.gpus, s.max_model_len, s.trade) == (1, 131072, "")


def test_sizing_limited_by_capacity_keeps_at_least_the_floor():
    """The whole context needs 4 GPUs, only 3 are free: the fewest that hold 32,768 tokens, with
    all the context they hold."""
    s = _size({1: 0, 2: 40000, 4: 131072}, free=3)
    assert (s.gpus, s.max_model_len, s.tier) == (2, 40000, 1)
    assert (
        s.trade
        == "context 40,000 of the model's 131,072 tokens: 131,072 would need 4 GPUs, more than the 3 free on one H100 node"
    )
    assert s.fix == "free GPUs on one H100 node for the whole context"


def test_sizing_below_the_floor_takes_the_count_that_holds_the_most():
    s = _size({1: 5000, 2: 9000, 4: 131072}, free=3)
    assert (s.gpus, s.max_model_len, s.tier) == (2, 9000, 2)
    assert (
        s.trade
        == "context cut to 9,000 of the model's 131,072 tokens: 32,768 would need 4 GPUs, more than the 3 free on one H100 node"
    )


def test_sizing_when_no_node_holds_the_whole_context():
    s = _size({2: 20000, 4: 30000, 8: 50000})
    assert (s.gpus, s.max_model_len, s.tier) == (8, 50000, 1)
    assert "no tensor-parallel size on one H100 node holds 131,072" in s.trade
    assert s.fix.startswith("use a GPU with more memory")


def test_sizing_never_goes_below_min_context_and_the_floor_follows_it():
    assert _size({2: 3000, 4: 4000}, free=4) is None
    s = _size({2: 40000, 4: 70000}, min_context=65536)
    assert (s.gpus, s.max_model_len) == (4, 70000)  # 40,000 is below the 65,536 asked for


def test_sizing_never_changes_an_explicit_max_model_len():
    s = _size({2: 6912, 4: 131072}, requested_len=8192)
    assert (s.gpus, s.max_model_len, s.trade) == (4, 8192, "")
    assert _size({2: 6912, 4: 131072}, requested_len=4096).gpus == 2
    assert _size({2: 6912, 4: 7000}, requested_len=8192) is None


def test_sizing_never_changes_an_explicit_gpu_count():
    s = _size({2: 6912, 4: 131072}, sizes=[2], free=2, pinned=True)
    assert (s.gpus, s.max_model_len) == (2, 6912)
    assert s.trade.endswith("the requested 2 GPUs hold no more") and "gpu_count" in s.fix


def _without(bundle, model_id):
    return [r for r in bundle.recipes if r.model_key != model_id.lower()]


def test_default_for_llama_70b_on_h100_takes_4_gpus_not_a_7k_context(bundle):
    """No catalog recipe: the synthesised recipe holds the model's whole 131,072 tokens on 4 H100
    rather than about 7,000 on 2, and says so."""
    for used in (0, 2):  # 8 or 6 free on the node
        doc = cluster([gfd_node("h", "H100")], [pod("x", "h", gpus=used)] if used else [])
        sel = run_select(bundle, doc, model_id=L70, precision="bf16", gpu_type="H100", recipes=_without(bundle, L70))
        assert sel.level == "default"
        r = sel.recipe
        assert (r.gpu_count, r.args["tensor_parallel_size"], r.max_model_len) == (4, 4, 131072)
        (sizing,) = [f for f in sel.candidates[0].reasons if f.code == "SIZING"]
        assert sizing.message.startswith("4 GPUs rather than 2: 2 would fit only")
        assert "of the model's 131,072 context" in sizing.message


def test_default_limited_by_capacity_says_what_the_context_needs(bundle):
    doc = cluster([gfd_node("h", "H100")], [pod("x", "h", gpus=5)])  # 3 free: 4 do not fit
    sel = run_select(bundle, doc, model_id=L70, precision="bf16", recipes=_without(bundle, L70))
    r = sel.recipe
    assert sel.level == "default" and r.gpu_count == 2 and 4096 <= r.max_model_len < 32768
    (sizing,) = [f for f in sel.candidates[0].reasons if f.code == "SIZING"]
    assert f"context cut to {r.max_model_len:,} of the model's 131,072 tokens" in sizing.message
    assert "32,768 would need 4 GPUs, more than the 3 free on one H100 node" in sizing.message


def test_tertiary_takes_more_gpus_for_the_recipes_context(bundle):
    """A catalog recipe too small for its own context is derived at the GPU count that holds it."""
    base = next(r for r in bundle.recipes if r.recipe_id == "llama-3.1-70b-instruct-h100-4gpu-bf16")
    two = {"nvidia.com/gpu": 2}
    small = with_changes(
        base,
        recipe_id="llama-70b-h100-2gpu-test",
        gpu_count=2,
        args={**base.args, "tensor_parallel_size": 2},
        requests={**base.requests, **two},
        limits={**base.limits, **two},
    )
    sel = run_select(bundle, cluster([gfd_node("h", "H100")]), model_id=L70, recipes=[small])
    assert sel.level == "tertiary"
    assert (sel.recipe.gpu_count, sel.recipe.max_model_len) == (4, base.max_model_len)
    (sizing,) = [f for f in sel.candidates[0].reasons if f.code == "SIZING"]
    assert sizing.message.startswith("4 GPUs rather than 2") and f"the recipe's {base.max_model_len:,} context" in sizing.message


def test_tertiary_limited_by_capacity_cuts_the_context_and_says_so(bundle):
    doc = cluster([gfd_node("h", "H100")], [pod("x", "h", gpus=5)])
    sel = run_select(bundle, doc, model_id=L70, precision="bf16", gpu_type="H100")
    assert sel.level == "tertiary" and sel.recipe.gpu_count == 2
    (sizing,) = [f for f in sel.candidates[0].reasons if f.code == "SIZING"]
    assert "of the recipe's 65,536 tokens" in sizing.message and "would need 4 GPUs" in sizing.message


@pytest.mark.parametrize(
    ("override", "gpus", "length"),
    [
        ({"gpu_count": 2}, 2, None),  # the context is what 2 GPUs hold
        ({"max_model_len": 8192}, 4, 8192),  # 2 GPUs hold only ~7,000 tokens
        ({"max_model_len": 4096}, 2, 4096),
        ({"gpu_count": 8, "max_model_len": 16384}, 8, 16384),
    ],
)
def test_explicit_overrides_win_over_the_sizing(bundle, override, gpus, length):
    sel = run_select(
        bundle, cluster([gfd_node("h", "H100")]), model_id=L70, precision="bf16", recipes=_without(bundle, L70), **override
    )
    assert sel.recipe.gpu_count == gpus
    assert sel.recipe.max_model_len == (length or sel.recipe.max_model_len)
    if length is None:
        assert sel.recipe.max_model_len < 131072
