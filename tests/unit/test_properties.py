"""Properties of selection over generated clusters and requests (hypothesis)."""

from __future__ import annotations

from typing import get_args

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_engine.adapters.catalog import load_bundle
from aim_engine.cluster.inventory import build_inventory, split_list
from aim_engine.rules.compat import FindingCode, static_findings
from aim_engine.rules.ranking import Ranks
from aim_engine.selection.request import Request
from aim_engine.selection.result import VERDICTS, Level, Result, Verdict
from aim_engine.selection.selector import select
from k8s_objects import AMD, GFD, amd_node, cluster, gfd_node, pod

BUNDLE = load_bundle()
MODELS = sorted({r.huggingface_id for r in BUNDLE.recipes})
PRODUCTS = sorted(GFD) + sorted(AMD)


@st.composite
def clusters(draw):
    n = draw(st.integers(min_value=1, max_value=8))
    nodes, pods = [], []
    for i in range(n):
        product = draw(st.sampled_from(PRODUCTS))
        gpus = draw(st.sampled_from([1, 2, 4, 8]))
        kw = {"cordoned": draw(st.booleans()) and draw(st.booleans()), "ready": draw(st.integers(0, 9)) > 0}
        name = f"n{i}"
        amd = product in AMD
        nodes.append((amd_node if amd else gfd_node)(name, product, gpus=gpus, **kw))
        used = draw(st.integers(min_value=0, max_value=gpus))
        if used:
            pods.append(pod(f"p{i}", name, gpus=used, resource="amd.com/gpu" if amd else "nvidia.com/gpu"))
    return cluster(nodes, pods)


requests = st.fixed_dictionaries(
    {"model_id": st.sampled_from(MODELS)},
    optional={
        "gpu_count": st.sampled_from([1, 2, 3, 4, 8, 16]),
        "precision": st.sampled_from(["bf16", "fp16", "fp8", "mxfp4"]),
        "gpu_type": st.sampled_from(["MI300X", "H100", "A100", "H200"]),
        "max_model_len": st.sampled_from([2048, 8192, 32768, 131072]),
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=clusters(), req=requests)
def test_selection_never_exceeds_free_gpus_and_honours_or_refuses_overrides(doc, req):
    nodes, pods = split_list(doc)
    inv = build_inventory(BUNDLE.hardware, nodes, pods)
    request = Request(**req)
    sel = select(
        request=request,
        recipes=BUNDLE.recipes,
        models=BUNDLE.model_map(),
        catalog=BUNDLE.hardware,
        registry=BUNDLE.registry,
        inventory=inv,
    )
    again = select(
        request=request,
        recipes=BUNDLE.recipes,
        models=BUNDLE.model_map(),
        catalog=BUNDLE.hardware,
        registry=BUNDLE.registry,
        inventory=inv,
    )
    assert sel == again  # deterministic
    if sel.recipe is None:
        assert sel.result in ("not_found", "ambiguous") and sel.message
        return
    r = sel.recipe
    # Never more GPUs than some node of that product has free (on enough nodes for multi-node recipes).
    free = sorted((n.free for n in inv.nodes if n.usable and n.product and n.product.name == r.hardware), reverse=True)
    assert len(free) >= r.nodes and free[r.nodes - 1] >= r.gpus_per_node
    assert sel.placement and all(name in {n.name for n in inv.nodes} for name in sel.placement)
    # Overrides are honoured (or the selection refused, above).
    assert req.get("gpu_count") in (None, r.gpu_count)
    assert req.get("precision") in (None, r.precision)
    assert req.get("gpu_type") in (None, r.hardware)
    assert req.get("max_model_len") in (None, r.max_model_len)
    # The recipe passes the same rules the webhook enforces.
    findings, plan = static_findings(
        r, model=BUNDLE.models.get(r.huggingface_id), catalog=BUNDLE.hardware, registry=BUNDLE.registry
    )
    assert findings == [], findings
    assert plan is not None and plan.fits


# The reasons that explain how each level chose (after SELECTED).
LEVEL_REASONS = {"secondary": "FALLBACK", "tertiary": "DERIVED"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=clusters(), req=requests)
def test_every_selection_has_one_shape(doc, req):
    """The values written to ConfigMaps and JSON are the declared ones; the selected candidate comes
    first with SELECTED and the level's own reason; every other candidate says why not."""
    nodes, pods = split_list(doc)
    sel = select(
        request=Request(**req),
        recipes=BUNDLE.recipes,
        models=BUNDLE.model_map(),
        catalog=BUNDLE.hardware,
        registry=BUNDLE.registry,
        inventory=build_inventory(BUNDLE.hardware, nodes, pods),
    )
    assert sel.result in get_args(Result) and sel.level in (None, *get_args(Level))
    assert (sel.result == "selected") == sel.ok == (sel.level is not None)
    ids = [c.recipe.recipe_id for c in sel.candidates]
    assert len(ids) == len(set(ids))
    for c in sel.candidates:
        assert c.verdict in get_args(Verdict) and c.level in (None, *get_args(Level))
        assert c.reasons and all(r.code in get_args(FindingCode) for r in c.reasons)
    verdicts = [c.verdict for c in sel.candidates]
    assert verdicts == sorted(verdicts, key=("selected", "eligible", "rejected").index)
    # within a verdict, best rank first, then the recipe id (the order _order() sorts to)
    ranks = Ranks(BUNDLE.hardware)
    assert list(sel.candidates) == sorted(
        sel.candidates, key=lambda c: (VERDICTS.index(c.verdict), ranks(c.recipe), c.recipe.recipe_id)
    )
    if not sel.ok:
        assert "selected" not in verdicts
        return
    chosen = sel.candidates[0]
    assert verdicts.count("selected") == 1 and chosen.recipe == sel.recipe and chosen.level == sel.level
    assert chosen.reasons[0].code == "SELECTED" and chosen.reasons[0].message == sel.message
    assert sel.message.startswith(f"{sel.level}: ")
    if sel.level in LEVEL_REASONS:
        assert LEVEL_REASONS[sel.level] in [r.code for r in chosen.reasons]
    origins = {"primary": {"catalog"}, "secondary": {"catalog"}, "tertiary": {"derived"}, "default": {"catalog", "synthesized"}}
    assert sel.recipe.origin in origins[sel.level]
