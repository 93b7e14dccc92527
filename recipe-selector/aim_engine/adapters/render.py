"""Rendering recipes, inventories and selections as table, JSON, YAML, Helm values and the
human explanation. Pure: returns strings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import yaml

from aim_engine.cluster.inventory import Inventory
from aim_engine.domain.quantity import GIB
from aim_engine.domain.recipe import Recipe
from aim_engine.domain.vllm_args import to_cli
from aim_engine.rules.evidence import conditions_text, figure_source
from aim_engine.rules.lint import LintIssue
from aim_engine.selection.result import Selection


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=_default, sort_keys=False, allow_nan=False) + "\n"


def to_yaml(data: Any) -> str:
    return yaml.safe_dump(json.loads(json.dumps(data, default=_default)), sort_keys=False, width=120)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells) + "\n"


def vllm_command(recipe: Recipe) -> list[str]:
    return ["vllm", "serve", recipe.huggingface_id, *to_cli(recipe.args)]


def recipes_table(recipes: Sequence[Recipe]) -> str:
    rows = []
    for r in recipes:
        perf = r.performance
        rows.append(
            [
                r.recipe_id,
                r.huggingface_id,
                r.hardware,
                r.gpu_count if r.nodes == 1 else f"{r.gpu_count} ({r.nodes} nodes)",
                r.precision,
                r.type,
                r.priority,
                _fmt(perf.tokens_per_second) if perf else "-",
                figure_source(r, "expected_tokens_per_second") if perf else "-",
                _fmt(perf.latency_ms) if perf else "-",
                figure_source(r, "expected_latency_ms") if perf else "-",
                conditions_text(perf.conditions) if perf else "-",
            ]
        )
    headers = ["RECIPE", "MODEL", "HARDWARE", "GPUS", "PRECISION", "TYPE", "PRIORITY", "TOK/S", "FROM", "ITL MS", "FROM", "AT"]
    return table(headers, rows)


def _fmt(value: Decimal) -> str:
    return str(int(value)) if value == value.to_integral_value() else str(value)


def inventory_dict(inv: Inventory) -> dict[str, Any]:
    return {
        "products": {
            name: {
                "vendor": cap.product.vendor,
                "resource": cap.product.resource,
                "nodes": cap.nodes,
                "allocatable": cap.allocatable,
                "free": cap.free,
                "max_free_on_one_node": cap.max_free,
            }
            for name, cap in sorted(inv.products.items())
        },
        "nodes": [
            {
                "name": n.name,
                "product": n.product.name if n.product else None,
                "vendor": n.vendor,
                "resource": n.resource,
                "allocatable": n.allocatable,
                "used": n.used,
                "free": n.free,
                "usable": n.usable,
                "reason": n.reason or None,
                "detected_by": n.source,
                "partition": None
                if n.product is None or n.product.partition is None
                else {"mode": n.product.partition.profile, "source": n.partition_source},
                "notes": list(n.notes),
            }
            for n in inv.nodes
        ],
    }


def inventory_table(inv: Inventory) -> str:
    rows = [
        [
            n.name,
            n.product.name if n.product else "-",
            n.resource or "-",
            n.allocatable,
            n.used,
            n.free,
            "yes" if n.usable else f"no: {n.reason}",
            n.source,
            "-" if n.product is None or n.product.partition is None else f"{n.product.partition.profile} ({n.partition_source})",
        ]
        for n in inv.nodes
        if n.resource or n.notes
    ]
    out = table(["NODE", "GPU", "RESOURCE", "ALLOCATABLE", "USED", "FREE", "USABLE", "DETECTED BY", "PARTITION (SAID BY)"], rows)
    notes = [f"  {n.name}: {note}" for n in inv.nodes for note in n.notes]
    if notes:
        out += "\nnotes:\n" + "\n".join(notes) + "\n"
    if inv.products:
        out += "\n" + table(
            ["PRODUCT", "NODES", "ALLOCATABLE", "FREE", "MOST FREE ON ONE NODE"],
            [[k, c.nodes, c.allocatable, c.free, c.max_free] for k, c in sorted(inv.products.items())],
        )
    return out


def selection_dict(sel: Selection) -> dict[str, Any]:
    model = sel.model
    return {
        "result": sel.result,
        "level": sel.level,
        "recipe": sel.recipe.to_seed() if sel.recipe else None,
        "message": sel.message,
        "model": None
        if model is None
        else {
            "id": model.id,
            "source": model.source,
            "architecture": model.architecture,
            "parameters": float(model.parameters),
            "active_parameters": float(model.active),
            "layers": model.layers,
            "attention_heads": model.attention_heads,
            "kv_heads": model.kv_heads,
            "max_context": model.max_context,
            "native_precision": model.native_precision,
        },
        "overrides": sel.request.overrides,
        "vllm_command": vllm_command(sel.recipe) if sel.recipe else None,
        "placement": list(sel.placement),
        "packing": None
        if sel.packing is None
        else {
            "nodes": list(sel.packing.nodes),
            "resource": sel.packing.resource,
            "preferred": sel.packing.preferred,
            "reason": sel.packing.reason or None,
        },
        "hardware": sel.hardware,
        "candidates": [c.as_dict() for c in sel.candidates],
        "slo": {k: float(v) for k, v in sel.request.slo.targets()},
        "pareto": [
            {
                "recipe_id": p.recipe_id,
                "tokens_per_second_per_gpu": float(p.tokens_per_second_per_gpu),
                "latency_ms": float(p.latency_ms),
                "source": p.source,
                "chosen": sel.recipe is not None and p.recipe_id == sel.recipe.recipe_id,
            }
            for p in sel.pareto
        ],
    }


def helm_values(sel: Selection) -> str:
    """Helm values that pin the selection (for GitOps: commit them, install with auto_select=false)."""
    if sel.recipe is None:
        raise ValueError("no recipe selected")
    r = sel.recipe
    values = {
        "aim_engine": {
            "auto_select": False,
            "model_id": r.huggingface_id,
            "recipe_id": r.recipe_id,
            "gpu_count": r.gpu_count,
            "precision": r.precision,
            "backend": r.backend,
            "hardware": {"gpu_type": r.hardware},
            "pinned_recipe": r.to_seed(),
        }
    }
    header = f"# Generated by aim-recipes select ({sel.level}: {r.recipe_id}).\n# helm install <release> chart/ -f <this file>\n"
    return header + to_yaml(values)


def explanation(sel: Selection, inv: Inventory) -> str:
    lines: list[str] = []
    m = sel.model
    if m is not None:
        moe = f", MoE {m.experts} experts / {m.experts_per_token} active" if m.is_moe else ""
        lines.append(
            f"Model: {m.id} ({m.architecture}, {float(m.parameters) / 1e9:.1f}B parameters{moe}, {m.layers} layers, "
            f"{m.attention_heads} attention / {m.kv_heads} KV heads, context {m.max_context}, "
            f"native {m.native_precision}) [{m.source}]"
        )
    else:
        lines.append(f"Model: {sel.request.model_id} (not analysed: not in the bundled table and no --model-config)")
    if inv.products:
        lines.append(
            "GPUs: "
            + "; ".join(
                f"{k}: {c.nodes} node(s), {c.allocatable} allocatable, {c.free} free (most on one node {c.max_free})"
                for k, c in sorted(inv.products.items())
            )
        )
    else:
        lines.append("GPUs: none usable")
    skipped = [n for n in inv.nodes if not n.usable and n.reason != "no GPUs"]
    if skipped:
        lines.append(
            "Not counted: "
            + ", ".join(f"{n.name} ({n.reason})" for n in skipped[:10])
            + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        )
    ov = sel.request.overrides
    lines.append("Overrides: " + (", ".join(f"{k}={v}" for k, v in ov.items()) if ov else "none"))
    lines.append("")
    if sel.recipe is not None:
        sel_c = sel.candidates[0]
        lines.append(f"Selected ({sel.level}): {sel.recipe.recipe_id}")
        for reason in sel_c.reasons:
            lines.append(f"  {reason.code}: {reason.message}" + (f" (to change: {reason.fix})" if reason.fix else ""))
        if sel_c.plan is not None:
            p = sel_c.plan
            lines.append(
                f"  memory per GPU: budget {_g(p.budget)} = weights {_g(p.weights)} + activations {_g(p.activations)}"
                f" + runtime {_g(p.overhead)} + KV cache {_g(max(p.kv_budget, Decimal(0)))}"
                f" ({p.concurrent_sequences} sequences of {p.max_model_len} tokens)"
            )
        lines.append("  vLLM: " + " ".join(vllm_command(sel.recipe)))
        if sel.placement:
            lines.append("  fits on: " + ", ".join(sel.placement))
    else:
        lines.append(f"No recipe selected ({sel.result}): {sel.message}")
    if len(sel.pareto) > 1 or sel.request.slo:
        lines.append("")
        lines.append("Pareto set (placeable now; none beaten on both output tok/s per GPU and mean ITL):")
        for point in sel.pareto:
            mark = "*" if sel.recipe is not None and point.recipe_id == sel.recipe.recipe_id else " "
            lines.append(
                f"  {mark} {point.recipe_id}: {point.tokens_per_second_per_gpu:.0f} tok/s per GPU, "
                f"{point.latency_ms} ms per token ({point.source})"
            )
    others = [c for c in sel.candidates if c.verdict != "selected"]
    if others:
        lines.append("")
        lines.append("Other candidates:")
        for c in others:
            lines.append(f"  [{c.verdict}] {c.recipe.recipe_id}")
            label = "to choose it" if c.verdict == "eligible" else "to fit"
            for reason in c.reasons:
                lines.append(
                    f"      {reason.code}: {reason.message}" + (f"\n        {label}: {reason.fix}" if reason.fix else "")
                )
    return "\n".join(lines) + "\n"


def _g(value: Decimal) -> str:
    return f"{value / GIB:.1f} GiB"


def lint_table(issues: Sequence[LintIssue]) -> str:
    return table(
        ["SEVERITY", "RECIPE", "CODE", "MESSAGE", "FIX"], [[i.severity, i.recipe_id, i.code, i.message, i.fix] for i in issues]
    )
