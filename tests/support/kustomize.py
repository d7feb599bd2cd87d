"""A small kustomize for the tests: what `kustomize build` yields for exactly the features deploy/kubernetes uses.

There is no kubectl or kustomize here; anything the interpreter does not know fails the calling test rather than
being ignored. Shared by the manifest checks (tests/unit/test_deploy_manifests.py) and the API-schema validation
(tests/unit/test_kubernetes_api_schemas.py).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
ALL_YAML = sorted(K8S.rglob("*.yaml"))
KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def load_kustomization(kdir: Path) -> dict[str, Any]:
    return load_docs(kdir / "kustomization.yaml")[0]


def object_key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def index_objects(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    index: dict[tuple[str, str], dict[str, Any]] = {}
    for doc in docs:
        assert object_key(doc) not in index, f"{object_key(doc)} defined twice"
        index[object_key(doc)] = doc
    return index


def manifest_files() -> list[Path]:
    """Every file holding whole Kubernetes objects (not kustomizations, not partial patches)."""
    return [
        p for p in ALL_YAML if p.name != "kustomization.yaml" and "patches" not in p.relative_to(K8S).parts
    ]


# -------------------------------------------------------------------- a small kustomize, for the features used

KNOWN_KUSTOMIZATION_FIELDS = frozenset(
    {
        "apiVersion",
        "kind",
        "namespace",
        "labels",
        "resources",
        "images",
        "replicas",
        "patches",
        "replacements",
    }
)


def _raw_resources(kdir: Path) -> list[dict[str, Any]]:
    """The objects a kustomization's `resources` name, each nested kustomization built first."""
    docs: list[dict[str, Any]] = []
    for entry in load_kustomization(kdir).get("resources", []):
        path = (kdir / entry).resolve()
        docs.extend(build(path) if path.is_dir() else copy.deepcopy(load_docs(path)))
    return docs


def _strategic_merge(target: Any, patch: Any) -> Any:
    """Maps merge key by key; lists of named maps (containers, ports, volumes) merge by name; other lists replace."""
    if isinstance(target, dict) and isinstance(patch, dict):
        merged = dict(target)
        for key, value in patch.items():
            merged[key] = _strategic_merge(target[key], value) if key in target else copy.deepcopy(value)
        return merged
    if (
        isinstance(target, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in [*target, *patch])
    ):
        by_name = {item["name"]: item for item in target}
        for item in patch:
            assert item["name"] in by_name, f"patch adds a new list entry {item['name']!r} (typo?)"
            by_name[item["name"]] = _strategic_merge(by_name[item["name"]], item)
        return list(by_name.values())
    return copy.deepcopy(patch)


def pod_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] in ("Deployment", "Job"):
        return list(doc["spec"]["template"]["spec"]["containers"])
    return []


def _get_path(doc: dict[str, Any], field_path: str) -> tuple[Any, str]:
    """(parent object, last key) for a kustomize fieldPath with `[name=x]` list selectors."""
    parts = re.findall(r"\[[^\]]*\]|[^.]+", field_path)
    node: Any = doc
    for part in parts[:-1]:
        if part.startswith("["):
            field, value = part[1:-1].split("=")
            matches = [item for item in node if item.get(field) == value]
            assert len(matches) == 1, f"{field_path}: {part} selects {len(matches)} entries"
            node = matches[0]
        else:
            assert part in node, f"{field_path}: no {part!r}"
            node = node[part]
    return node, parts[-1]


def build(kdir: Path) -> list[dict[str, Any]]:
    """What `kustomize build kdir` yields, for the fields our kustomizations use (others are refused)."""
    kustomization = load_kustomization(kdir)
    unknown = set(kustomization) - KNOWN_KUSTOMIZATION_FIELDS
    assert not unknown, f"{kdir}: this test does not interpret {sorted(unknown)}; extend build()"
    docs = _raw_resources(kdir)
    index = index_objects(docs)

    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}, f"{kdir}: only file patches without an explicit target are interpreted"
        for patch_doc in load_docs(kdir / patch["path"]):
            key = object_key(patch_doc)
            assert key in index, (
                f"{kdir / patch['path']} patches {key}, which the kustomization does not have"
            )
            merged = _strategic_merge(index[key], patch_doc)
            index[key].clear()
            index[key].update(merged)

    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = kustomization["namespace"]
            if doc["kind"] == "RoleBinding":
                for subject in doc["subjects"]:
                    if subject["kind"] == "ServiceAccount":
                        subject["namespace"] = kustomization["namespace"]

    for label_set in kustomization.get("labels", []):
        assert label_set.get("includeSelectors") is False, (
            "labels must not rewrite selectors (training policy)"
        )
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(label_set["pairs"])

    for replica in kustomization.get("replicas", []):
        assert ("Deployment", replica["name"]) in index, f"{kdir}: replicas for unknown {replica['name']}"
        index["Deployment", replica["name"]]["spec"]["replicas"] = replica["count"]

    for image in kustomization.get("images", []):
        matched = False
        for doc in docs:
            for container in pod_containers(doc):
                if container["image"].split(":")[0] == image["name"]:
                    name = image.get("newName", image["name"])
                    tag = image.get("newTag", container["image"].partition(":")[2])
                    container["image"] = f"{name}:{tag}"
                    matched = True
        assert matched, f"{kdir}: images entry {image['name']!r} matches no container"

    for replacement in kustomization.get("replacements", []):
        source = replacement["source"]
        assert (source["kind"], source["name"]) in index, f"{kdir}: replacement source {source} missing"
        parent, last = _get_path(index[source["kind"], source["name"]], source["fieldPath"])
        value = parent[last]
        for target in replacement["targets"]:
            select = target["select"]
            assert (select["kind"], select["name"]) in index, f"{kdir}: replacement target {select} missing"
            for field_path in target["fieldPaths"]:
                parent, last = _get_path(index[select["kind"], select["name"]], field_path)
                assert last in parent, f"{kdir}: replacement target {field_path} does not exist"
                parent[last] = value
    return docs
