"""The Helm chart: lints strictly, renders, validates against Kubernetes schemas, and the programs
accept the configuration it renders.

The chart is rendered by the real Helm library (PyPI helm-python-sdk), offline. Built-in kinds are
checked with kubernetes-validate's strict schemas for the oldest Kubernetes the chart supports and
the newest the validator knows. The Prometheus Operator's kinds (ServiceMonitor, PrometheusRule)
are not in those schemas: they are checked with the small schemas below, written from the
operator's CRDs for the fields this chart uses, with unknown fields refused, and Kubernetes' own
ObjectMeta and LabelSelector definitions for metadata and selectors.
"""

import base64
import copy
import json
import re
import shutil
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path, PurePosixPath
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml

from agent.config import ENV_OVERRIDES as AGENT_ENV
from agent.config import AgentConfig
from collector.analytics.equipment import Plant, SiteEntry, load_plant
from collector.config import ENV_OVERRIDES as COLLECTOR_ENV
from collector.config import CollectorConfig
from shared.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "plantwire"
RELEASE = "plantwire"
NAMESPACE = "plant"
KUBE_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
"""The chart's kubeVersion floor, and the newest schemas kubernetes-validate ships."""

Manifest = dict[str, Any]
SCRATCH = PurePosixPath("/", "tmp")
"""Where Python and its libraries write temporary files: writable despite a read-only root."""

# Values of Secrets made outside the chart (values-production.yaml names them), as an operator
# would fill them in, so the programs can load the configuration as they would in the pod.
EXTERNAL_SECRET_VALUES = {
    "PLANTWIRE_DATABASE_URL": "postgresql://plantwire:s3cret@db.plant.example.com:5432/plantwire",
    "PLANTWIRE_DATABASE_READ_URL": "postgresql://plantwire:s3cret@db-ro.plant.example.com/plantwire",
    "PLANTWIRE_MQTT_USERNAME": "collector",
    "PLANTWIRE_MQTT_PASSWORD": "s3cret",
    "PLANTWIRE_REDIS_URL": "redis://:s3cret@redis.plant.example.com:6379/0",
}


def _sample_device() -> dict[str, Any]:
    """The Modbus device of the repository's sample agent configuration."""
    sample = yaml.safe_load((ROOT / "config" / "agent.yaml").read_text(encoding="utf-8"))
    return next(device for device in sample["devices"] if device["type"] == "modbus")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


PRODUCTION = yaml.safe_load((CHART / "values-production.yaml").read_text(encoding="utf-8"))
EQUIPMENT_FILE = ROOT / "config" / "equipment.yaml"
# Parsed as `helm -f` parses values (its dates stay strings), as an operator would pass it.
EQUIPMENT = helm_python.values_from_yaml(EQUIPMENT_FILE.read_text(encoding="utf-8"))
AGENT: dict[str, Any] = {
    "agent": {
        "enabled": True,
        "config": {
            "agent": {"id": "line-3", "log_level": "DEBUG"},
            "buffer": {"max_bytes": 500_000_000, "when_full": "drop_oldest"},
            "forward": {"batch_max_readings": 5000, "linger": "100ms"},
            "devices": [_sample_device()],
        },
        "mqtt": {"username": "line-3", "password": "agent-s3cret"},
    },
}
INLINE_SECRETS: dict[str, Any] = {
    "externalDatabase": {
        "url": "postgresql://plantwire:pw@pg:5432/plantwire",
        "readUrl": "postgresql://plantwire:pw@pg-replica:5432/plantwire",
    },
    "externalMqtt": {"username": "collector", "password": "mqtt-pw"},
    "externalRedis": {"url": "redis://:redis-pw@redis:6379/0"},
    "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "production": PRODUCTION,
    "agent-inline-secrets": _merge(INLINE_SECRETS, AGENT),
    "production-agent-emptydir": _merge(
        PRODUCTION,
        _merge(AGENT, {"agent": {"persistence": {"enabled": False}, "mqtt": {"username": ""}}}),
    ),
    "production-equipment": _merge(
        PRODUCTION,
        {
            "collector": {
                "equipment": EQUIPMENT,
                "config": {"equipment": {"status_interval": "30s"}},
            }
        },
    ),
}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm_python.Chart, values: dict[str, Any]) -> list[Manifest]:
    """Every object the chart renders for `values` (NOTES.txt left out)."""
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    manifests: list[Manifest] = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc is not None)
    return manifests


def find(manifests: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    """The manifests of one kind (and name, if given)."""
    return [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]


def one(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    """The single manifest of that kind and name."""
    (found,) = find(manifests, kind, name)
    return found


def secret_values(manifests: list[Manifest]) -> dict[tuple[str, str], str]:
    """Every key of every Secret the chart renders, decoded: (secret, key) -> value."""
    return {
        (secret["metadata"]["name"], key): base64.b64decode(value).decode()
        for secret in find(manifests, "Secret")
        for key, value in secret.get("data", {}).items()
    }


def container_environ(manifests: list[Manifest], container: Manifest) -> dict[str, str]:
    """The container's environment as the pod would see it, Secrets resolved."""
    secrets = secret_values(manifests)
    environ = {}
    for variable in container.get("env", []):
        if "value" in variable:
            environ[variable["name"]] = variable["value"]
            continue
        ref = variable["valueFrom"]["secretKeyRef"]
        if (ref["name"], ref["key"]) in secrets:
            environ[variable["name"]] = secrets[ref["name"], ref["key"]]
        else:
            assert not any(name == ref["name"] for name, _ in secrets), (
                f"{variable['name']}: key {ref['key']} missing from the chart's Secret"
                f" {ref['name']}"
            )
            environ[variable["name"]] = EXTERNAL_SECRET_VALUES[variable["name"]]
    return environ


def workloads(manifests: list[Manifest]) -> list[Manifest]:
    """Deployments and Jobs."""
    return [m for m in manifests if m["kind"] in ("Deployment", "Job")]


def pod_spec(workload: Manifest) -> Manifest:
    spec: Manifest = workload["spec"]["template"]["spec"]
    return spec


def mounted_file(manifests: list[Manifest], deployment: Manifest, path: str) -> str:
    """The content of the ConfigMap key a container of `deployment` sees at `path`."""
    (container,) = pod_spec(deployment)["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == path]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"]]
    text: str = one(manifests, "ConfigMap", volume["configMap"]["name"])["data"][mount["subPath"]]
    return text


def loaded_config(
    manifests: list[Manifest], program: str, tmp_path: Path
) -> CollectorConfig | AgentConfig:
    """Load the ConfigMap's file with the program's own loader and the pod's environment.

    A file the configuration names inside the pod (the equipment model) is read from the
    ConfigMap mounted there, copied beside the configuration.
    """
    name = f"{RELEASE}-{program}"
    deployment = one(manifests, "Deployment", name)
    text = one(manifests, "ConfigMap", name)["data"][f"{program}.yaml"]
    document = yaml.safe_load(text)
    pod_path = document.get("equipment", {}).get("file")
    if program == "collector" and pod_path is not None:
        copied = tmp_path / "equipment.yaml"
        copied.write_text(mounted_file(manifests, deployment, pod_path), encoding="utf-8")
        document["equipment"]["file"] = str(copied)
        text = yaml.safe_dump(document)
    path = tmp_path / f"{program}.yaml"
    path.write_text(text, encoding="utf-8")
    (container,) = pod_spec(deployment)["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert container["args"] == ["run", "--config", f"{mount['mountPath']}/{program}.yaml"]
    environ = container_environ(manifests, container)
    if program == "collector":
        return load_config(path, CollectorConfig, COLLECTOR_ENV, environ)
    return load_config(path, AgentConfig, AGENT_ENV, environ)


# --- Lint -------------------------------------------------------------------------------------


def _declared_dependencies() -> list[dict[str, Any]]:
    metadata = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    dependencies: list[dict[str, Any]] = metadata["dependencies"]
    return dependencies


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_lint_strict_finds_nothing_but_the_undownloadable_dependencies(
    values: dict[str, Any],
) -> None:
    missing = [
        dep["name"] for dep in helm_python.dependency_list(CHART) if dep["status"] == "missing"
    ]
    report = helm_python.lint(
        CHART, values, strict=True, namespace=NAMESPACE, kube_version="v1.30.0"
    )
    findings = [m["error"] for m in report["messages"] if m["severity"] >= 2]
    expected = [f"chart directory is missing these dependencies: {','.join(missing)}"]
    assert findings == (expected if missing else [])
    assert report["errors"] == findings


def test_lint_strict_is_clean_once_dependencies_are_set_aside(tmp_path: Path) -> None:
    copy_dir = tmp_path / "plantwire"
    shutil.copytree(CHART, copy_dir)
    metadata = yaml.safe_load((copy_dir / "Chart.yaml").read_text(encoding="utf-8"))
    del metadata["dependencies"]
    (copy_dir / "Chart.yaml").write_text(yaml.safe_dump(metadata), encoding="utf-8")
    report = helm_python.lint(copy_dir, PRODUCTION, strict=True, kube_version="v1.30.0")
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    assert report["errors"] == []


def test_dependencies_are_optional_and_off_by_default(chart: helm_python.Chart) -> None:
    defaults = chart.values
    for dependency in _declared_dependencies():
        assert dependency["condition"] == f"{dependency['name']}.enabled"
        assert defaults[dependency["name"]]["enabled"] is False
    assert chart.dependencies == []  # rendered here without them


# --- Kubernetes schemas -------------------------------------------------------------------------

# Prometheus's duration syntax, as the operator's CRDs write it.
_DURATION = (
    "^(0|" + "".join(f"(([0-9]+){unit})?" for unit in ("y", "w", "d", "h", "m", "s", "ms")) + ")$"
)
_K8S_DEFS = (
    "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1"
)
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}


def _crd(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"type": "string"},
            "metadata": {"$ref": f"{_K8S_DEFS}.ObjectMeta"},
            "spec": spec,
        },
    }


CRD_SCHEMAS = {
    "ServiceMonitor": _crd(
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {"$ref": f"{_K8S_DEFS}.LabelSelector"},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string", "minLength": 1},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                        },
                    },
                },
            },
        }
    ),
    "PrometheusRule": _crd(
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "limit": {"type": "integer"},
                            "query_offset": {"type": "string", "pattern": _DURATION},
                            "labels": _LABELS,
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["expr"],
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string", "minLength": 1},
                                        "record": {"type": "string", "minLength": 1},
                                        "expr": {"type": ["string", "integer"]},
                                        "for": {"type": "string", "pattern": _DURATION},
                                        "keep_firing_for": {"type": "string", "pattern": _DURATION},
                                        "labels": _LABELS,
                                        "annotations": _LABELS,
                                    },
                                },
                            },
                        },
                    },
                }
            },
        }
    ),
}


def _kubernetes_definitions() -> referencing.Registry[Any]:
    version = f"v{KUBE_VERSIONS[0]}.0-local-strict"
    definitions = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/{version}/_definitions.json", KUBE_VERSIONS[0]
    )
    return referencing.Resource.from_contents(definitions) @ referencing.Registry()


def validate_custom_resource(manifest: Manifest) -> None:
    """Check a Prometheus Operator object against the schema of the fields this chart uses."""
    validator = jsonschema.Draft202012Validator(
        CRD_SCHEMAS[manifest["kind"]], registry=_kubernetes_definitions()
    )
    validator.validate(manifest)
    if manifest["kind"] == "PrometheusRule":
        names = [group["name"] for group in manifest["spec"]["groups"]]
        assert len(names) == len(set(names)), "rule group names are the list's map key"


def validate_manifest(manifest: Manifest) -> None:
    """Validate one rendered object: strict Kubernetes schemas, or the CRD schemas above."""
    if manifest["kind"] in CRD_SCHEMAS:
        validate_custom_resource(manifest)
        return
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_manifest_validates(chart: helm_python.Chart, values: dict[str, Any]) -> None:
    manifests = render(chart, values)
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "Service", "ConfigMap", "Job", "Ingress", "PodDisruptionBudget"} <= kinds
    for manifest in manifests:
        assert manifest["metadata"]["name"].startswith(RELEASE)
        validate_manifest(manifest)


def test_validators_refuse_a_misspelt_field(chart: helm_python.Chart) -> None:
    manifests = render(chart, VALUE_SETS["agent-inline-secrets"])
    deployment = copy.deepcopy(one(manifests, "Deployment", f"{RELEASE}-collector"))
    pod_spec(deployment)["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(deployment)
    monitor = copy.deepcopy(find(manifests, "ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(monitor)
    monitor["spec"]["endpoints"][0] = {"port": "ops", "interval": "30 seconds"}
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(monitor)


# --- The programs accept what the chart renders ----------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_collector_accepts_its_config(
    chart: helm_python.Chart, values: dict[str, Any], tmp_path: Path
) -> None:
    manifests = render(chart, values)
    config = loaded_config(manifests, "collector", tmp_path)
    assert isinstance(config, CollectorConfig)
    (container,) = pod_spec(one(manifests, "Deployment", f"{RELEASE}-collector"))["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    # A pod must listen on its own address, not on loopback.
    assert ip_address(config.http.host).is_unspecified
    assert (config.http.port, config.http.ops_port) == (ports["http"], ports["ops"])
    # The hook Job migrates; replicas starting together must not race to do it again.
    assert config.database.migrate_on_start is False
    assert config.ingest.shared_group == "plantwire-collectors"
    merged = chart.merge_values(values)
    assert config.mqtt.url == merged["externalMqtt"]["url"]
    assert (config.mqtt.ca_file is not None) == bool(
        merged["externalMqtt"]["tls"]["existingSecret"]
    )
    if merged["externalRedis"]["url"] or merged["externalRedis"]["existingSecret"]:
        assert config.rate_limits.redis_url is not None
    assert (config.equipment.plant is not None) == bool(merged["collector"]["equipment"])


def test_equipment_model_is_mounted_where_the_config_names_it(
    chart: helm_python.Chart, tmp_path: Path
) -> None:
    pod_path = "/etc/plantwire/equipment.yaml"
    name = f"{RELEASE}-collector"
    manifests = render(chart, {"collector": {"equipment": EQUIPMENT}})
    written = yaml.safe_load(one(manifests, "ConfigMap", name)["data"]["collector.yaml"])
    assert written["equipment"] == {"file": pod_path}
    deployment = one(manifests, "Deployment", name)
    equipment_file = tmp_path / "mounted.yaml"
    equipment_file.write_text(mounted_file(manifests, deployment, pod_path), encoding="utf-8")
    # The same model as the sample file, after Helm's values and toYaml (quoted times, dates).
    assert load_plant(equipment_file) == load_plant(EQUIPMENT_FILE)
    config = loaded_config(manifests, "collector", tmp_path)
    assert isinstance(config, CollectorConfig)
    assert config.equipment.plant == load_plant(EQUIPMENT_FILE)

    # Only the model changes: its own checksum rolls the pods.
    renamed = render(chart, {"collector": {"equipment": {**EQUIPMENT, "enterprise": "Acme"}}})
    before = deployment["spec"]["template"]["metadata"]["annotations"]
    after = one(renamed, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
    assert after["checksum/config"] == before["checksum/config"]
    assert after["checksum/equipment"] != before["checksum/equipment"]


def test_no_equipment_file_without_a_model(chart: helm_python.Chart, tmp_path: Path) -> None:
    name = f"{RELEASE}-collector"
    interval_only = {"collector": {"config": {"equipment": {"status_interval": "5s"}}}}
    for values, written in (({}, None), (interval_only, {"status_interval": "5s"})):
        manifests = render(chart, values)
        document = yaml.safe_load(one(manifests, "ConfigMap", name)["data"]["collector.yaml"])
        assert document.get("equipment") == written
        assert find(manifests, "ConfigMap", f"{RELEASE}-equipment") == []
        deployment = one(manifests, "Deployment", name)
        (container,) = pod_spec(deployment)["containers"]
        assert [m["name"] for m in container["volumeMounts"]] == ["config", "tmp"]
        assert [v["name"] for v in pod_spec(deployment)["volumes"]] == ["config", "tmp"]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert "checksum/equipment" not in annotations
        config = loaded_config(manifests, "collector", tmp_path)
        assert isinstance(config, CollectorConfig)
        assert config.equipment.file is None
        assert config.equipment.plant is None


def test_equipment_schema_follows_the_model(chart: helm_python.Chart) -> None:
    schema = chart.schema
    assert schema is not None
    equipment = schema["properties"]["collector"]["properties"]["equipment"]
    assert equipment["additionalProperties"] is False
    assert set(equipment["properties"]) == set(Plant.model_fields)
    site = equipment["properties"]["sites"]["items"]
    assert site["additionalProperties"] is False
    assert set(site["properties"]) == set(SiteEntry.model_fields)
    required = {key for key, field in SiteEntry.model_fields.items() if field.is_required()}
    assert set(site["required"]) == required


@pytest.mark.parametrize(
    "name", [n for n, v in VALUE_SETS.items() if v.get("agent", {}).get("enabled")]
)
def test_agent_accepts_its_config(chart: helm_python.Chart, name: str, tmp_path: Path) -> None:
    values = VALUE_SETS[name]
    manifests = render(chart, values)
    config = loaded_config(manifests, "agent", tmp_path)
    assert isinstance(config, AgentConfig)
    assert config.agent.id == values["agent"]["config"]["agent"]["id"]
    assert [d.name for d in config.devices] == [_sample_device()["name"]]
    deployment = one(manifests, "Deployment", f"{RELEASE}-agent")
    (container,) = pod_spec(deployment)["containers"]
    buffer_mount = next(m for m in container["volumeMounts"] if m["name"] == "buffer")
    assert config.buffer.path.parent == Path(buffer_mount["mountPath"])
    assert container["ports"][0]["containerPort"] == config.agent.http_port
    assert ip_address(config.agent.http_host).is_unspecified  # probes reach the pod's address
    assert config.mqtt.username == (values["agent"]["mqtt"]["username"] or None) or (
        config.mqtt.username == EXTERNAL_SECRET_VALUES["PLANTWIRE_MQTT_USERNAME"]
    )


def test_agent_buffer_on_a_claim_or_an_empty_dir(chart: helm_python.Chart) -> None:
    for name, kept in (("agent-inline-secrets", True), ("production-agent-emptydir", False)):
        manifests = render(chart, VALUE_SETS[name])
        deployment = one(manifests, "Deployment", f"{RELEASE}-agent")
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "buffer")
        claims = find(manifests, "PersistentVolumeClaim")
        if kept:
            (claim,) = claims
            assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
            assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        else:
            assert claims == []
            assert volume == {"name": "buffer", "emptyDir": {}}


def test_no_agent_by_default(chart: helm_python.Chart) -> None:
    manifests = render(chart, {})
    assert [m for m in manifests if m["metadata"]["name"].startswith(f"{RELEASE}-agent")] == []


def _config_keys(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(section, key) for section, body in document.items() for key in body}


def test_config_schema_lists_every_key_the_chart_leaves_to_values(
    chart: helm_python.Chart, tmp_path: Path
) -> None:
    """values.schema.json's config sections are the model's keys less those the chart sets."""
    schema = chart.schema
    assert schema is not None
    everything = _merge(
        INLINE_SECRETS,
        {
            "externalMqtt": {"tls": {"existingSecret": "mqtt-tls", "clientCertificate": True}},
            "collector": {"equipment": EQUIPMENT},
        },
    )
    # Null removes a default in Helm, leaving only what the chart itself writes.
    only_chart = {
        "collector": {"config": dict.fromkeys(("collector", "database", "ingest", "rate_limits"))}
    }
    agent_only_chart = copy.deepcopy(AGENT)
    for section in ("buffer", "forward"):
        del agent_only_chart["agent"]["config"][section]
    manifests = render(chart, _merge(_merge(everything, only_chart), agent_only_chart))
    cases = (
        ("collector", CollectorConfig, COLLECTOR_ENV, schema["properties"]["collector"]),
        ("agent", AgentConfig, AGENT_ENV, schema["properties"]["agent"]),
    )
    for program, model, overrides, section_schema in cases:
        name = f"{RELEASE}-{program}"
        written = yaml.safe_load(one(manifests, "ConfigMap", name)["data"][f"{program}.yaml"])
        written_keys = _config_keys({k: v for k, v in written.items() if isinstance(v, dict)})
        (container,) = pod_spec(one(manifests, "Deployment", name))["containers"]
        from_env = {
            overrides[e["name"]] for e in container.get("env", []) if e["name"] in overrides
        }
        chart_keys = written_keys | {(path[0], path[1]) for path in from_env}
        if program == "agent":
            given = agent_only_chart["agent"]["config"]
            chart_keys -= _config_keys({k: v for k, v in given.items() if isinstance(v, dict)})
            # The chart mounts no client certificate for agents, so it leaves no way to set one.
            chart_keys |= {("mqtt", "cert_file"), ("mqtt", "key_file")}
        model_keys = {
            (section, key)
            for section, field in model.model_fields.items()
            if field.annotation is not None and hasattr(field.annotation, "model_fields")
            for key in field.annotation.model_fields
        }
        config_schema = section_schema["properties"]["config"]["properties"]
        schema_keys = {
            (section, key)
            for section, body in config_schema.items()
            if "properties" in body and section != "devices"
            for key in body["properties"]
        }
        assert schema_keys == model_keys - chart_keys, program
        assert set(config_schema) == set(model.model_fields), program


# --- values.schema.json refuses bad values ----------------------------------------------------

BAD_VALUES = {
    "wrong type": {"collector": {"replicaCount": "three"}},
    "unknown top-level key": {"replicas": 3},
    "unknown key in a section": {"collector": {"ingress": {"hostname": "a.example.com"}}},
    "unknown config key": {"collector": {"config": {"ingest": {"sharedgroup": "x"}}}},
    "unknown config section": {"collector": {"config": {"ingestion": {}}}},
    "config key the chart sets": {"collector": {"config": {"http": {"port": 80}}}},
    "duration without unit": {"collector": {"config": {"ingest": {"group_max_delay": 5}}}},
    "enum": {"collector": {"podAntiAffinity": "sometimes"}},
    "limits removed": {"collector": {"resources": {"limits": None}}},
    "HPA bound": {"collector": {"autoscaling": {"targetCPUUtilizationPercentage": 150}}},
    "agent without devices": {"agent": {"enabled": True}},
    "agent device of unknown protocol": {
        "agent": {"config": {"devices": [{"name": "x", "type": "profinet"}]}}
    },
    "broker URL scheme": {"externalMqtt": {"url": "tcp://broker:1883"}},
    "redis URL scheme": {"externalRedis": {"url": "http://redis:6379"}},
    "pull policy": {"collector": {"image": {"pullPolicy": "Sometimes"}}},
    "equipment file the chart sets": {
        "collector": {"config": {"equipment": {"file": "/etc/plantwire/equipment.yaml"}}}
    },
    "equipment as a path": {"collector": {"equipment": "config/equipment.yaml"}},
    "equipment unknown key": {"collector": {"equipment": {**EQUIPMENT, "enterprises": []}}},
    "equipment sites not a list": {"collector": {"equipment": {"sites": EQUIPMENT["sites"][0]}}},
    "equipment site key misspelt": {
        "collector": {
            "equipment": {
                "sites": [
                    {
                        ("timezone" if key == "time_zone" else key): value
                        for key, value in EQUIPMENT["sites"][0].items()
                    }
                ]
            }
        }
    },
}


@pytest.mark.parametrize("values", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_schema_refuses_bad_values(chart: helm_python.Chart, values: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema(values)  # coalesced with the chart's defaults, as at install
    with pytest.raises(helm_python.HelmValuesError):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_schema_accepts_the_shipped_values(
    chart: helm_python.Chart, values: dict[str, Any]
) -> None:
    chart.validate_schema(values)


# --- Hooks ------------------------------------------------------------------------------------


def _hook(manifest: Manifest) -> dict[str, str]:
    annotations: dict[str, str] = manifest["metadata"].get("annotations", {})
    return {k: v for k, v in annotations.items() if k.startswith("helm.sh/hook")}


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_migration_job_is_a_pre_install_and_pre_upgrade_hook(
    chart: helm_python.Chart, values: dict[str, Any]
) -> None:
    manifests = render(chart, values)
    job = one(manifests, "Job", f"{RELEASE}-migrate")
    assert _hook(job) == {
        "helm.sh/hook": "pre-install,pre-upgrade",
        "helm.sh/hook-weight": "0",
        "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
    }
    (container,) = pod_spec(job)["containers"]
    assert container["args"] == ["migrate"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    # At pre-install nothing of the release exists yet but hooks of lower weight.
    assert "serviceAccountName" not in pod_spec(job)
    (variable,) = container["env"]
    assert variable["name"] == "PLANTWIRE_DATABASE_URL"
    ref = variable["valueFrom"]["secretKeyRef"]
    existing = chart.merge_values(values)["externalDatabase"]["existingSecret"]
    hooks_before = [m for m in manifests if _hook(m) and m is not job]
    if existing:
        assert ref["name"] == existing
        assert hooks_before == []
    else:
        (secret,) = hooks_before
        assert secret["kind"] == "Secret"
        assert ref["name"] == secret["metadata"]["name"]
        assert _hook(secret)["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert int(_hook(secret)["helm.sh/hook-weight"]) < 0
        assert ref["key"] in secret["data"]
        url = base64.b64decode(secret["data"][ref["key"]]).decode()
        assert url == chart.merge_values(values)["externalDatabase"]["url"]
    # Everything else is an ordinary release resource.
    assert all(not _hook(m) for m in manifests if m["kind"] not in ("Job", "Secret"))


def test_no_migration_hook_when_collectors_migrate_themselves(
    chart: helm_python.Chart, tmp_path: Path
) -> None:
    manifests = render(chart, {"migrations": {"enabled": False}})
    assert [m for m in manifests if _hook(m)] == []
    config = loaded_config(manifests, "collector", tmp_path)
    assert isinstance(config, CollectorConfig)
    assert config.database.migrate_on_start is True


# --- Pods -------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_container_is_restricted_with_resources_and_probes(
    chart: helm_python.Chart, values: dict[str, Any]
) -> None:
    manifests = render(chart, values)
    for workload in workloads(manifests):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{workload['kind']} {workload['metadata']['name']} {container['name']}"
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, where
            assert context["runAsUser"] == 1001, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) >= {"cpu", "memory"}, where
            tmp = [m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == SCRATCH]
            assert len(tmp) == 1, where
            assert tmp[0]["name"] in tmp_volumes, where
            if workload["kind"] == "Deployment":  # a Job's one run has nothing to probe
                assert "livenessProbe" in container, where
                assert "readinessProbe" in container, where


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_collector_probes_health_and_readiness_on_the_ops_port(
    chart: helm_python.Chart, values: dict[str, Any]
) -> None:
    manifests = render(chart, values)
    (container,) = pod_spec(one(manifests, "Deployment", f"{RELEASE}-collector"))["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    assert "ops" in {port["name"] for port in container["ports"]}


# --- Collector objects ------------------------------------------------------------------------


def _pod_labels(deployment: Manifest) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_collector_scales_three_to_ten_and_spreads(chart: helm_python.Chart) -> None:
    manifests = render(chart, {})
    name = f"{RELEASE}-collector"
    deployment = one(manifests, "Deployment", name)
    labels = _pod_labels(deployment)
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert _selects(selector, labels)
    # The autoscaler owns the replica count; a fixed one would undo its scaling at each upgrade.
    assert "replicas" not in deployment["spec"]
    hpa = one(manifests, "HorizontalPodAutoscaler", name)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
    }
    assert sorted(m["resource"]["name"] for m in hpa["spec"]["metrics"]) == ["cpu", "memory"]
    spec = pod_spec(deployment)
    term = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert _selects(term["podAffinityTerm"]["labelSelector"]["matchLabels"], labels)
    (spread,) = spec["topologySpreadConstraints"]
    assert _selects(spread["labelSelector"]["matchLabels"], labels)
    pdb = one(manifests, "PodDisruptionBudget", name)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert _selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert one(manifests, "ServiceAccount", RELEASE)["automountServiceAccountToken"] is False

    fixed = render(
        chart, {"collector": {"autoscaling": {"enabled": False}, "podAntiAffinity": "hard"}}
    )
    deployment = one(fixed, "Deployment", name)
    assert deployment["spec"]["replicas"] == 3
    assert find(fixed, "HorizontalPodAutoscaler") == []
    hard = pod_spec(deployment)["affinity"]["podAntiAffinity"]
    assert list(hard) == ["requiredDuringSchedulingIgnoredDuringExecution"]


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_service_and_ingress_with_tls(chart: helm_python.Chart, values: dict[str, Any]) -> None:
    manifests = render(chart, values)
    merged = chart.merge_values(values)["collector"]
    name = f"{RELEASE}-collector"
    labels = _pod_labels(one(manifests, "Deployment", name))
    service = one(manifests, "Service", name)
    assert _selects(service["spec"]["selector"], labels)
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {
        "http": "http",
        "ops": "ops",
    }
    ingress = one(manifests, "Ingress", name)
    annotations = ingress["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"] == merged["ingress"]["clusterIssuer"]
    (tls,) = ingress["spec"]["tls"]
    (rule,) = ingress["spec"]["rules"]
    assert tls["hosts"] == [rule["host"]] == [merged["ingress"]["host"]]
    assert tls["secretName"]
    (path,) = rule["http"]["paths"]
    # Only the API: health and metrics stay on the ops port, inside the cluster.
    assert path["backend"]["service"] == {"name": name, "port": {"name": "http"}}


def test_existing_secrets_replace_the_charts_own(chart: helm_python.Chart) -> None:
    manifests = render(chart, PRODUCTION)
    assert find(manifests, "Secret") == []
    (container,) = pod_spec(one(manifests, "Deployment", f"{RELEASE}-collector"))["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert (
        refs["PLANTWIRE_DATABASE_URL"]["name"] == PRODUCTION["externalDatabase"]["existingSecret"]
    )
    assert refs["PLANTWIRE_MQTT_PASSWORD"]["name"] == PRODUCTION["externalMqtt"]["existingSecret"]
    assert refs["PLANTWIRE_REDIS_URL"]["name"] == PRODUCTION["externalRedis"]["existingSecret"]
    inline = render(chart, VALUE_SETS["agent-inline-secrets"])
    (secret,) = find(inline, "Secret", RELEASE)
    assert set(secret["data"]) == {
        "database-url",
        "database-read-url",
        "mqtt-username",
        "mqtt-password",
        "redis-url",
        "agent-mqtt-username",
        "agent-mqtt-password",
    }


# --- Monitoring objects follow the files the chart ships -------------------------------------

SAMPLE_RULES = """\
groups:
  - name: plantwire-sample
    rules:
      - alert: SampleAgentOffline
        expr: plantwire_agents_online == 0
        for: 5m
        labels: {severity: critical}
        annotations:
          summary: "{{ $labels.instance }} sees no agent"
          runbook_url: https://example.com/runbooks/agent-offline
"""


def _check_monitoring(chart_dir: Path) -> None:
    """Dashboards ConfigMap and PrometheusRule hold exactly the chart's files, or are absent."""
    with helm_python.Chart.load(chart_dir) as loaded:
        manifests = render(loaded, _merge(PRODUCTION, AGENT))
        off = render(loaded, {"metrics": {"dashboards": {"enabled": False}}})
    dashboards = sorted((chart_dir / "files" / "dashboards").glob("*.json"))
    configmaps = find(manifests, "ConfigMap", f"{RELEASE}-dashboards")
    if dashboards:
        (configmap,) = configmaps
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert configmap["data"] == {p.name: p.read_text(encoding="utf-8") for p in dashboards}
        for text in configmap["data"].values():
            json.loads(text)
    else:
        assert configmaps == []
    assert find(off, "ConfigMap", f"{RELEASE}-dashboards") == []
    rules_file = chart_dir / "files" / "prometheus" / "alerts.yml"
    rules = find(manifests, "PrometheusRule")
    if rules_file.exists():
        (rule,) = rules
        assert rule["spec"] == yaml.safe_load(rules_file.read_text(encoding="utf-8"))
        validate_manifest(rule)
    else:
        assert rules == []
    monitors = {m["metadata"]["name"]: m for m in find(manifests, "ServiceMonitor")}
    assert set(monitors) == {f"{RELEASE}-collector", f"{RELEASE}-agent"}
    assert monitors[f"{RELEASE}-collector"]["spec"]["endpoints"][0]["port"] == "ops"
    assert monitors[f"{RELEASE}-agent"]["spec"]["endpoints"][0]["port"] == "metrics"
    for monitor in monitors.values():
        target = one(manifests, "Service", monitor["metadata"]["name"])
        assert _selects(monitor["spec"]["selector"]["matchLabels"], target["metadata"]["labels"])
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert find(off, "ServiceMonitor") == find(off, "PrometheusRule") == []


def test_monitoring_objects_follow_the_shipped_files() -> None:
    _check_monitoring(CHART)


def test_monitoring_objects_follow_sample_files(tmp_path: Path) -> None:
    copy_dir = tmp_path / "plantwire"
    shutil.copytree(CHART, copy_dir, ignore=shutil.ignore_patterns("files"))
    _check_monitoring(copy_dir)  # none yet
    (copy_dir / "files" / "dashboards").mkdir(parents=True)
    (copy_dir / "files" / "prometheus").mkdir()
    for name in ("operations.json", "agents.json"):
        board = {"title": name, "panels": [{"type": "timeseries", "title": "ünits & <lag>"}]}
        (copy_dir / "files" / "dashboards" / name).write_text(json.dumps(board, indent=2) + "\n")
    (copy_dir / "files" / "dashboards" / "notes.md").write_text("not a dashboard\n")
    (copy_dir / "files" / "prometheus" / "alerts.yml").write_text(SAMPLE_RULES)
    _check_monitoring(copy_dir)


# --- The chart's README documents every value -------------------------------------------------


def documented_values(text: str) -> list[tuple[str, str]]:
    """(dotted path, description) of each key a `# --` comment of values.yaml describes."""
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    documented = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped.removeprefix("# --").strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped.removeprefix("#").strip())
            continue
        key = re.match(r"^( *)([A-Za-z_][A-Za-z0-9_-]*):", line)
        if key is None:
            continue
        indent = len(key[1])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key[2]))
        if pending is not None:
            documented.append((".".join(name for _, name in stack), " ".join(pending)))
            pending = None
    return documented


def _leaves(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{path}.")
        else:
            yield path


def test_every_value_is_described_in_values_and_readme() -> None:
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    documented = documented_values(text)
    paths = {path for path, _ in documented}
    for leaf in _leaves(yaml.safe_load(text)):
        parts = leaf.split(".")
        ancestors = {".".join(parts[:n]) for n in range(1, len(parts) + 1)}
        assert ancestors & paths, f"{leaf} has no `# --` description in values.yaml"
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    rows = {
        row.group(1): row.group(2)
        for row in re.finditer(r"^\| `([^`]+)` \| .*? \| (.*) \|$", readme, re.MULTILINE)
    }
    assert rows == dict(documented)
