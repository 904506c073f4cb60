"""deploy/ validated offline: YAML shape, pinned images, cluster, probes, Indexed Job."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from knnclass.jobs.shard import parse_shard

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for p in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in _docs(p) if d.get("kind") == kind]


def _images(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [v for k, v in obj.items() if k == "image" and isinstance(v, str)] + [
            i for v in obj.values() for i in _images(v)
        ]
    if isinstance(obj, list):
        return [i for v in obj for i in _images(v)]
    return []


def test_compose_cluster() -> None:
    c = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    svc = c["services"]
    qdrants = {k: v for k, v in svc.items() if k.startswith("qdrant-")}
    assert len(qdrants) == 3
    for name, q in qdrants.items():
        assert re.fullmatch(r"qdrant/qdrant:v\d+\.\d+\.\d+", q["image"])
        env = q["environment"]
        assert env["QDRANT__CLUSTER__ENABLED"] == "true"
        assert env["QDRANT__SERVICE__ENABLE_SNAPSHOT_URL_RECOVERY"] == "false"
        assert "QDRANT__SERVICE__API_KEY" in env
        cmd = " ".join(q["command"])
        assert f"--uri http://{name}:6335" in cmd
        assert (name == "qdrant-0") == ("--bootstrap" not in cmd)
    replicas = [v for k, v in svc.items() if k.startswith("knnclass-")]
    assert len(replicas) == 2
    for r in replicas:
        assert r["environment"]["KNNCLASS_QDRANT_REPLICATION"] == "2"
        assert r["environment"]["KNNCLASS_QDRANT_URL"].startswith("http://qdrant-")
    conf = (DEPLOY / "compose" / "nginx.conf").read_text()
    assert "server knnclass-1:8000" in conf and "server knnclass-2:8000" in conf
    assert svc["proxy"]["image"].split(":")[1] not in ("", "latest")


def test_k8s_manifests() -> None:
    (sts,) = _by_kind("StatefulSet")
    assert sts["spec"]["replicas"] == 3
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["QDRANT__CLUSTER__ENABLED"]["value"] == "true"
    assert env["QDRANT__SERVICE__ENABLE_SNAPSHOT_URL_RECOVERY"]["value"] == "false"
    assert "secretKeyRef" in env["QDRANT__SERVICE__API_KEY"]["valueFrom"]
    (dep,) = _by_kind("Deployment")
    ctr = dep["spec"]["template"]["spec"]["containers"][0]
    assert ctr["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert dep["spec"]["replicas"] >= 2
    (hpa,) = _by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    (cm,) = _by_kind("ConfigMap")
    assert cm["data"]["KNNCLASS_QDRANT_REPLICATION"] == "2"


def test_indexed_job_shards_match_completions() -> None:
    (job,) = _by_kind("Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    args = spec["template"]["spec"]["containers"][0]["args"]
    shard = args[args.index("--shard") + 1]
    assert shard.startswith("$(JOB_COMPLETION_INDEX)/")
    n = int(shard.split("/")[1])
    assert n == spec["completions"] == spec["parallelism"]
    for i in range(n):  # every index the Job hands out is a valid shard
        assert parse_shard(shard.replace("$(JOB_COMPLETION_INDEX)", str(i))).count == n
    assert "--checkpoint-dir" in args


@pytest.mark.parametrize(
    "path", [*sorted((DEPLOY / "k8s").glob("*.yaml")), DEPLOY / "compose" / "docker-compose.yml"], ids=lambda p: p.name
)
def test_every_image_is_pinned(path: Path) -> None:
    for doc in _docs(path):
        for image in _images(doc):
            assert ":" in image and not image.endswith(":latest"), image


def test_k8s_objects_have_required_fields() -> None:
    for p in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for d in _docs(p):
            assert {"apiVersion", "kind"} <= set(d), p
            if d["kind"] != "Kustomization":
                assert d.get("metadata", {}).get("name"), p
            if d["kind"] in ("Deployment", "StatefulSet"):
                sel = d["spec"]["selector"]["matchLabels"]
                labels = d["spec"]["template"]["metadata"]["labels"]
                assert sel.items() <= labels.items(), p


def test_runtime_image_has_no_torch() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    runtime = text.split("\nFROM ")[-1]
    assert "[train]" not in runtime and "torch" not in runtime.split("\n", 1)[1].lower()
    assert "COPY --from=export /encoder /encoder" in runtime


def test_kustomize_renders_offline() -> None:
    import shutil
    import subprocess

    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")
    r = subprocess.run(["kubectl", "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(r.stdout) if d]
    assert sorted(kinds) == sorted(
        ["Service", "Service", "StatefulSet", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"]
    )


def test_qdrant_image_and_client_versions_agree() -> None:
    """One Qdrant version everywhere, and the image's pinned client within one minor of it."""
    text = "\n".join(
        p.read_text() for p in [*sorted((DEPLOY / "k8s").glob("*.yaml")), DEPLOY / "compose" / "docker-compose.yml"]
    )
    servers = set(re.findall(r"qdrant/qdrant:v(\d+)\.(\d+)\.\d+", text))
    assert len(servers) == 1, servers
    (major, minor), client = (
        servers.pop(),
        re.search(r"qdrant-client~=(\d+)\.(\d+)\.\d+", (DEPLOY / "Dockerfile").read_text()),
    )
    assert client is not None, "the serving image pins qdrant-client"
    assert client.group(1) == major and abs(int(client.group(2)) - int(minor)) <= 1
