"""Loading the bundled data (recipes/) and user recipe files: YAML/JSON in, typed values out.
Recipe documents are checked against recipes/schema/recipe.schema.json before they are typed."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from aim_engine.contract import RECIPE_KEY
from aim_engine.domain.errors import InputError
from aim_engine.domain.hardware import HardwareCatalog, parse_hardware
from aim_engine.domain.model_config import MAX_CONFIG_BYTES, model_from_hf_config, parse_config_json
from aim_engine.domain.models import ModelProfile, ModelTable, parse_models
from aim_engine.domain.recipe import Recipe, RecipeOrigin, parse_recipe
from aim_engine.domain.vllm_args import ArgRegistry, parse_registry

MAX_FILE_BYTES = 8 * 1024 * 1024
PACKAGE_DATA = Path(__file__).resolve().parent.parent / "data"


def default_recipes_dir() -> Path:
    return PACKAGE_DATA


@contextmanager
def _reading(path: Path, *, expected: str = "a file") -> Iterator[None]:
    """File errors as one-line InputErrors that name the path."""
    try:
        yield
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such file") from e
    except IsADirectoryError as e:
        raise InputError(f"{path}: is a directory, expected {expected}") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text") from e
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from e


def read_document_text(path: Path) -> str:
    with _reading(path):
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InputError(f"{path}: {size} bytes is larger than the {MAX_FILE_BYTES} byte limit")
        return path.read_text(encoding="utf-8")


def load_config_file(path: Path) -> dict[str, Any]:
    """Read and parse a config.json file (at most MAX_CONFIG_BYTES are read)."""
    with _reading(path, expected="a config.json file"), path.open("rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise InputError(f"{path}: larger than the {MAX_CONFIG_BYTES} byte limit for a config.json")
    return parse_config_json(data, where=str(path))


def read_model_config(model_id: str, path: Path) -> ModelProfile:
    """The profile of a model from its config.json file (aim-recipes --model-config)."""
    return model_from_hf_config(model_id, load_config_file(path))


def parse_yaml_documents(text: str, *, where: str) -> list[Any]:
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise InputError(f"{where}: not valid YAML/JSON ({str(e).splitlines()[0]})") from e


def load_yaml(path: Path) -> Any:
    docs = parse_yaml_documents(read_document_text(path), where=str(path))
    if len(docs) != 1:
        raise InputError(f"{path}: expected one YAML document, found {len(docs)}")
    return docs[0]


def load_json(path: Path) -> Any:
    try:
        return json.loads(read_document_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from e


@dataclass(frozen=True)
class Bundle:
    """Everything the selector knows before it looks at a cluster."""

    root: Path
    hardware: HardwareCatalog
    models: ModelTable
    registry: ArgRegistry
    schema: Mapping[str, Any]
    recipes: tuple[Recipe, ...]

    @cached_property
    def validator(self) -> jsonschema.protocols.Validator:
        cls = jsonschema.validators.validator_for(self.schema)
        return cls(self.schema)

    def model_map(self, extra: ModelProfile | None = None) -> dict[str, ModelProfile]:
        models = dict(self.models.models)
        if extra is not None:
            models[extra.id.lower()] = extra
        return models


def schema_errors(validator: jsonschema.protocols.Validator, doc: Any) -> list[str]:
    out = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join(str(p) for p in err.absolute_path) or "(document)"
        out.append(f"{path}: {err.message}")
    return out


def typed_recipe(validator: jsonschema.protocols.Validator, doc: Any, *, where: str, origin: RecipeOrigin) -> Recipe:
    errors = schema_errors(validator, doc)
    if errors:
        raise InputError(f"{where}: not a valid recipe: " + "; ".join(errors[:5]) + ("; ..." if len(errors) > 5 else ""))
    return parse_recipe(doc, origin=origin, where=where)


def recipe_documents(doc: Any, *, where: str) -> Iterator[tuple[str, Any]]:
    """Recipes inside one parsed document: a recipe, a list of recipes, a ConfigMap with a
    `recipe.yaml` key (the seed's custom-recipe format), or a v1 List of such ConfigMaps."""
    if isinstance(doc, list):
        for i, item in enumerate(doc):
            yield from recipe_documents(item, where=f"{where}[{i}]")
        return
    if not isinstance(doc, Mapping):
        raise InputError(f"{where}: expected a recipe mapping, a list of recipes or a ConfigMap")
    kind = doc.get("kind")
    if kind == "List":
        for i, item in enumerate(doc.get("items") or []):
            yield from recipe_documents(item, where=f"{where} items[{i}]")
        return
    if kind == "ConfigMap":
        name = (doc.get("metadata") or {}).get("name", "?")
        data = doc.get("data") or {}
        if RECIPE_KEY not in data:
            raise InputError(f"{where}: ConfigMap {name} has no 'recipe.yaml' key (keys: {', '.join(sorted(data)) or 'none'})")
        inner = parse_yaml_documents(str(data[RECIPE_KEY]), where=f"{where} ConfigMap {name} recipe.yaml")
        for i, item in enumerate(inner):
            yield from recipe_documents(item, where=f"ConfigMap {name} recipe.yaml" + (f"[{i}]" if len(inner) > 1 else ""))
        return
    if kind is not None:
        raise InputError(f"{where}: kind {kind} is not a ConfigMap or a recipe")
    yield where, doc


def load_recipe_file(bundle: Bundle, path: Path, *, origin: RecipeOrigin = "custom") -> list[Recipe]:
    docs = parse_yaml_documents(read_document_text(path), where=str(path))
    recipes = []
    for i, doc in enumerate(docs):
        for where, raw in recipe_documents(doc, where=str(path) + (f" document {i + 1}" if len(docs) > 1 else "")):
            recipes.append(typed_recipe(bundle.validator, raw, where=where, origin=origin))
    if not recipes:
        raise InputError(f"{path}: contains no recipe")
    return recipes


def catalog_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "catalog").rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file())


def load_bundle(root: Path | None = None) -> Bundle:
    root = (root or default_recipes_dir()).resolve()
    if not (root / "schema" / "recipe.schema.json").is_file():
        hint = (
            " (installed without the data: set AIM_RECIPES_DIR or --catalog to the repository's recipes/ directory)"
            if root == PACKAGE_DATA.resolve()
            else ""
        )
        raise InputError(f"{root}: not an aim-engine recipes directory (no schema/recipe.schema.json){hint}")
    schema = load_json(root / "schema" / "recipe.schema.json")
    hardware = parse_hardware(load_yaml(root / "hardware" / "gpus.yaml"))
    models = parse_models(load_yaml(root / "models" / "models.yaml"))
    registry = parse_registry(load_yaml(root / "vllm" / "engine-args.yaml"))
    partial = Bundle(root=root, hardware=hardware, models=models, registry=registry, schema=schema, recipes=())
    recipes: list[Recipe] = []
    for path in catalog_files(root):
        recipes.extend(load_recipe_file(partial, path, origin="catalog"))
    return Bundle(root=root, hardware=hardware, models=models, registry=registry, schema=schema, recipes=tuple(recipes))
