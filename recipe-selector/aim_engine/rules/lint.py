"""Semantic lint of recipes beyond the JSON Schema: the compat rules for each recipe, plus what
only shows across a catalog (duplicate ids, two recipes ranked equal) and the bundled catalog's
own bar (every figure with conditions and provenance, estimates reproducible, ROCm environment)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aim_engine.domain.hardware import AMD_DEFAULT_ENV, AMD_MULTI_GPU_ENV, HardwareCatalog
from aim_engine.domain.models import ModelProfile
from aim_engine.domain.recipe import Recipe
from aim_engine.domain.vllm_args import ArgRegistry
from aim_engine.rules.compat import Finding, static_findings
from aim_engine.rules.perf import METHOD, estimate_recipe
from aim_engine.rules.ranking import rank_key


@dataclass(frozen=True, slots=True)
class LintIssue:
    severity: str  # error | warning
    recipe_id: str
    code: str
    message: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        out = {"severity": self.severity, "recipe_id": self.recipe_id, "code": self.code, "message": self.message}
        if self.fix:
            out["fix"] = self.fix
        return out


def _issue(recipe: Recipe, f: Finding, severity: str = "error") -> LintIssue:
    return LintIssue(severity, recipe.recipe_id, f.code, f.message, f.fix)


def lint_recipes(
    recipes: Sequence[Recipe],
    *,
    models: Mapping[str, ModelProfile],
    catalog: HardwareCatalog,
    registry: ArgRegistry,
    strict: bool,
) -> list[LintIssue]:
    """`strict` applies the bundled catalog's bar; user recipes get the compatibility rules."""
    issues: list[LintIssue] = []
    seen: dict[str, Recipe] = {}
    for recipe in recipes:
        if recipe.recipe_id in seen:
            issues.append(
                LintIssue(
                    "error",
                    recipe.recipe_id,
                    "DUPLICATE_ID",
                    f"recipe_id {recipe.recipe_id} is used twice",
                    "give each recipe a unique recipe_id",
                )
            )
        seen[recipe.recipe_id] = recipe
        model = models.get(recipe.model_key)
        if model is None:
            issues.append(
                LintIssue(
                    "error" if strict else "warning",
                    recipe.recipe_id,
                    "MODEL_UNKNOWN",
                    f"{recipe.huggingface_id} is not in the bundled model table: heads and memory were not checked",
                    "add the model to recipes/models/models.yaml, or pass --model-config with its config.json",
                )
            )
        findings, plan = static_findings(recipe, model=model, catalog=catalog, registry=registry)
        issues += [_issue(recipe, f) for f in findings]
        if plan is not None and plan.fits and plan.concurrent_sequences < 2:
            issues.append(
                LintIssue(
                    "warning",
                    recipe.recipe_id,
                    "KV_CACHE_TIGHT",
                    f"only {plan.concurrent_sequences} full-length sequence(s) fit in the KV cache",
                    f"lower max_model_len (fits up to {plan.max_model_len_fit}) or add GPUs",
                )
            )
        product = catalog.get(recipe.hardware)
        if product is not None:
            res = product.device_resource(recipe.limits, recipe.requests)
            for name in ("cpu", "memory"):
                req, lim = recipe.requests.get(name), recipe.limits.get(name)
                if req is not None and lim is not None and req > lim:
                    issues.append(
                        LintIssue(
                            "error",
                            recipe.recipe_id,
                            "REQUEST_OVER_LIMIT",
                            f"resources.requests.{name} {req} exceeds resources.limits.{name} {lim}",
                            f"lower the request or raise the limit for {name}",
                        )
                    )
            if strict and res not in recipe.limits:
                issues.append(
                    LintIssue(
                        "error",
                        recipe.recipe_id,
                        "GPU_LIMIT_MISSING",
                        f"resources.limits has no {res}",
                        f"set resources.limits[{res}] to {recipe.gpus_per_node}",
                    )
                )
        if strict:
            issues += _catalog_bar(recipe, model, catalog)
    issues += _ambiguity(recipes, catalog)
    return issues


def _catalog_bar(recipe: Recipe, model: ModelProfile | None, catalog: HardwareCatalog) -> list[LintIssue]:
    out: list[LintIssue] = []
    rid = recipe.recipe_id
    perf = recipe.performance
    if perf is None:
        return [
            LintIssue(
                "error",
                rid,
                "PERFORMANCE_MISSING",
                "bundled recipes state expected performance",
                "add performance.expected_tokens_per_second and expected_latency_ms",
            )
        ]
    if not perf.conditions:
        out.append(
            LintIssue(
                "error",
                rid,
                "CONDITIONS_MISSING",
                "performance figures need their conditions",
                "add performance.conditions (input_tokens, output_tokens, concurrency, engine_version)",
            )
        )
    for figure in ("expected_tokens_per_second", "expected_latency_ms"):
        prov = perf.provenance.get(figure)
        if not prov:
            out.append(
                LintIssue(
                    "error",
                    rid,
                    "PROVENANCE_MISSING",
                    f"{figure} has no provenance",
                    f"add performance.provenance.{figure} (published with its source, or estimated with the method)",
                )
            )
    product = catalog.get(recipe.hardware)
    if model is not None and product is not None and perf.conditions:
        est = estimate_recipe(recipe, model, product)
        checks = (
            ("expected_tokens_per_second", float(perf.tokens_per_second), float(est.tokens_per_second)),
            ("expected_latency_ms", float(perf.latency_ms), est.latency_ms),
        )
        for figure, stated, computed in checks:
            prov = perf.provenance.get(figure) or {}
            if (
                prov.get("kind") == "estimated"
                and prov.get("method") == METHOD
                and abs(stated - computed) > 1e-6 * max(1.0, computed)
            ):
                out.append(
                    LintIssue(
                        "error",
                        rid,
                        "ESTIMATE_DRIFT",
                        f"{figure} {stated} is marked {METHOD} but the estimator gives {computed}",
                        f"set {figure} to {computed} (aim-recipes estimate {rid})",
                    )
                )
    if product is not None and product.vendor == "amd":
        needed = dict(AMD_DEFAULT_ENV)
        if recipe.gpu_count > 1:
            needed.update(AMD_MULTI_GPU_ENV)
        missing = sorted(k for k in needed if k not in recipe.env)
        if missing:
            out.append(
                LintIssue(
                    "error",
                    rid,
                    "ROCM_ENV_MISSING",
                    f"AMD recipe lacks the ROCm environment vLLM documents: {', '.join(missing)}",
                    "add them under config.env (see recipes/catalog README)",
                )
            )
    return out


def _ambiguity(recipes: Sequence[Recipe], catalog: HardwareCatalog) -> list[LintIssue]:
    groups: dict[tuple[str, tuple[object, ...]], list[str]] = {}
    for r in recipes:
        groups.setdefault((r.model_key, rank_key(r, catalog)), []).append(r.recipe_id)
    out = []
    for (model, _), ids in sorted(groups.items(), key=lambda kv: kv[0][0]):
        if len(ids) > 1:
            out.append(
                LintIssue(
                    "error",
                    ids[0],
                    "AMBIGUOUS_RANK",
                    f"{', '.join(sorted(ids))} ({model}) rank equal: same type, priority, tokens/s per GPU, GPU count and "
                    "precision, so selection between them would be a coin toss",
                    "raise the priority of the preferred one",
                )
            )
    return out
