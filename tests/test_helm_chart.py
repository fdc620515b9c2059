"""The Helm chart (deploy/helm/inflow) renders with ``helm template`` and every object is valid.

Built-in kinds are validated against the Kubernetes OpenAPI schemas of ``KUBE_VERSION`` by
``kubernetes-validate`` (strict: unknown fields are errors). KEDA's kinds (ScaledObject,
TriggerAuthentication) have no schema there and KEDA's CRDs are not available offline, so their structure is
checked explicitly against ``KEDA_SCHEMAS`` below (the fields of KEDA 2's CRDs that the chart uses: required
keys, types, string-only trigger metadata) and their meaning against the code: the consumer groups and topics
they watch are the ones the worker and the sink use. Every command the pods run is a real ``inflow``
command, every environment name a real setting, and the rendered settings parse with the settings classes.
Helm must be installed (.ci/run installs it); the test fails without it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from inflow.config.settings import KafkaSettings, PathSettings, S3Settings
from inflow.config.topics import load_catalogue
from inflow.processors.settings import WorkerSettings
from inflow.processors.worker import INGEST_TOPICS, app_id
from inflow.producers.bulk_api.settings import GatewaySettings
from inflow.producers.s3_import.settings import PollerSettings
from inflow.sinks.streams.settings import SinkSettings
from tests.deploy_support import ROOT, command_exists, helm_binary, unknown_env

CHART = ROOT / "deploy" / "helm" / "inflow"
KUBE_VERSION = "1.31.0"
REQUIRED = {"kafka.bootstrapServers": "kafka-0.kafka:9092,kafka-1.kafka:9092", "secrets.secretKey": "k" * 44}
COMPONENT = "app.kubernetes.io/component"
COMPONENTS = ("gateway", "poller", "worker", "sink", "console")

# The parts of KEDA 2's ScaledObject and TriggerAuthentication CRDs (keda.sh/v1alpha1) the chart uses.
_TRIGGER = {
    "type": "object",
    "required": ["type", "metadata"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string"},
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "authenticationRef": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "kind": {"enum": ["TriggerAuthentication"]}},
        },
    },
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "labels": {"type": "object"}},
}
KEDA_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "ScaledObject"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": {"type": "string"},
                        },
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "triggers": {"type": "array", "minItems": 1, "items": _TRIGGER},
                },
            },
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "TriggerAuthentication"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["parameter", "name", "key"],
                            "additionalProperties": False,
                            "properties": {
                                "parameter": {"type": "string"},
                                "name": {"type": "string"},
                                "key": {"type": "string"},
                            },
                        },
                    }
                },
            },
        },
    },
}
# Kafka scaler metadata the chart may set (KEDA's kafka trigger): anything else is a typo.
KAFKA_TRIGGER_KEYS = {
    "bootstrapServers",
    "consumerGroup",
    "topic",
    "lagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "sasl",
    "tls",
}

VALUE_SETS: dict[str, dict[str, str]] = {
    "defaults": {},
    "everything on": {
        "components.console.enabled": "true",
        "components.gateway.autoscaling.enabled": "true",
        "keda.sink.streams": "{crm,warehouse}",
        "keda.auth.sasl": "scram_sha512",
        "keda.auth.tls": "enable",
        "kafka.securityProtocol": "SASL_SSL",
        "kafka.saslMechanism": "SCRAM-SHA-512",
        "kafka.saslUsername": "inflow",
        "kafka.caSecret": "kafka-ca",
        "kafka.schemaRegistryUrl": "http://registry:8081",
        "secrets.kafkaSaslPassword": "pw",
        "secrets.consoleToken": "admin-token",
        "secrets.extra.ACME_DATA_API_KEY": "acme-key",
        "config.settings.INFLOW_GATEWAY_RATE_WINDOW_S": "30",
        "components.gateway.service.type": "LoadBalancer",
        "imagePullSecrets[0].name": "registry",
        "image.tag": "1.2.3",
    },
    "minimal": {
        "keda.enabled": "false",
        "topics.createOnStart": "false",
        "metrics.annotations": "false",
        "components.poller.enabled": "false",
        "secrets.existingSecret": "inflow-prod",
        "config.logFormat": "text",
    },
}


def set_args(values: dict[str, str]) -> list[str]:
    """``--set`` arguments; a comma in a required value is escaped (in others it separates list items)."""
    args = []
    for key, value in values.items():
        args += ["--set", f"{key}={value.replace(',', chr(92) + ',') if key in REQUIRED else value}"]
    return args


def render(values: dict[str, str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    args = [helm_binary(), "template", "inflow", str(CHART), "--kube-version", KUBE_VERSION]
    args += set_args(values)
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=120)


def objects(values: dict[str, str]) -> list[dict[str, Any]]:
    docs = yaml.safe_load_all(render(REQUIRED | values).stdout)
    return [d for d in docs if d]


@pytest.fixture(scope="module", params=list(VALUE_SETS), ids=list(VALUE_SETS))
def rendered(request: pytest.FixtureRequest) -> tuple[dict[str, str], list[dict[str, Any]]]:
    values = VALUE_SETS[request.param]
    return values, objects(values)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Deployments by component."""
    return {d["metadata"]["labels"][COMPONENT]: d for d in by_kind(docs, "Deployment").values()}


def containers(deployment: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def test_helm_is_installed_and_the_chart_lints() -> None:
    args = [helm_binary(), "lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION]
    args += set_args(REQUIRED)
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_object_validates(rendered: tuple[dict[str, str], list[dict[str, Any]]]) -> None:
    _, docs = rendered
    kinds = set()
    for doc in docs:
        kinds.add(doc["kind"])
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, KEDA_SCHEMAS[doc["kind"]])
        else:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    assert {"ConfigMap", "Deployment", "Service"} <= kinds


def test_a_broken_object_is_refused_by_the_validators() -> None:
    """The validators really validate: an unknown field and a wrong type are errors."""
    docs = objects({})
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 10
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, KEDA_SCHEMAS["ScaledObject"])


def test_one_deployment_per_enabled_component_running_a_real_command(
    rendered: tuple[dict[str, str], list[dict[str, Any]]],
) -> None:
    values, docs = rendered
    found = deployments(docs)
    enabled = {
        c for c in COMPONENTS if values.get(f"components.{c}.enabled", str(c != "console").lower()) == "true"
    }
    assert set(found) == enabled
    for component, deployment in found.items():
        main = deployment["spec"]["template"]["spec"]["containers"][0]
        assert main["command"] == ["inflow", component]
        for container in containers(deployment):
            assert command_exists(container["command"]), container["command"]
        init = deployment["spec"]["template"]["spec"].get("initContainers", [])
        if values.get("topics.createOnStart") == "false":
            assert init == []
        else:
            assert [c["command"] for c in init] == [["inflow", "topics", "create"]]


def test_probes_and_ports(rendered: tuple[dict[str, str], list[dict[str, Any]]]) -> None:
    values, docs = rendered
    services = by_kind(docs, "Service")
    expected_ports = {"gateway": 8080, "poller": 9101, "worker": 9102, "sink": 9103, "console": 8090}
    for component, deployment in deployments(docs).items():
        main = deployment["spec"]["template"]["spec"]["containers"][0]
        port = expected_ports[component]
        assert [p["containerPort"] for p in main["ports"]] == [port]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = main[probe]["httpGet"]
            assert get["port"] == port
            assert get["path"] == ("/login" if component == "console" else "/health")
        assert main["resources"]["requests"]["cpu"] and main["resources"]["limits"]["memory"]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        if values.get("metrics.annotations") == "false":
            assert "prometheus.io/scrape" not in annotations
        else:
            assert annotations["prometheus.io/port"] == str(port)
        # A Service selects exactly this component's pods and points at the named port.
        service = next(s for s in services.values() if s["metadata"]["labels"][COMPONENT] == component)
        selector = service["spec"]["selector"]
        assert selector == deployment["spec"]["selector"]["matchLabels"]
        assert service["spec"]["ports"][0]["targetPort"] == main["ports"][0]["name"]


def test_settings_come_from_the_configmap_and_the_secret(
    rendered: tuple[dict[str, str], list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    values, docs = rendered
    (configmap,) = by_kind(docs, "ConfigMap").values()
    secrets = by_kind(docs, "Secret")
    secret_name = values.get("secrets.existingSecret", "inflow-secrets")
    if "secrets.existingSecret" in values:
        assert secrets == {}
    else:
        assert set(secrets) == {secret_name}
        assert secrets[secret_name]["stringData"]["INFLOW_SECRET_KEY"] == REQUIRED["secrets.secretKey"]
    env = {k: v for k, v in configmap["data"].items() if k != "inflow.yaml"}
    secret_env = secrets[secret_name]["stringData"] if secrets else {}
    for deployment in deployments(docs).values():
        for container in containers(deployment):
            sources = container["envFrom"]
            assert {"configMapRef": {"name": configmap["metadata"]["name"]}} in sources
            assert {"secretRef": {"name": secret_name}} in sources
            env_names = {e["name"] for e in container.get("env", [])}
            assert not unknown_env(env_names), env_names
    extra = {k.removeprefix("secrets.extra.") for k in values if k.startswith("secrets.extra.")}
    assert not unknown_env(set(env) | set(secret_env) - extra)
    # Production topic settings.
    assert env["KAFKA_REPLICATION_FACTOR"] == "3" and env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    # The rendered values parse with the settings classes the components read them with.
    for key in [k for k in os.environ if k.startswith(("KAFKA_", "S3_", "INFLOW_"))]:
        monkeypatch.delenv(key)
    for key, value in (env | secret_env).items():
        monkeypatch.setenv(key, value)
    settings_classes: list[type[BaseSettings]] = [
        KafkaSettings,
        S3Settings,
        PathSettings,
        GatewaySettings,
        PollerSettings,
        WorkerSettings,
        SinkSettings,
    ]
    parsed = {cls.__name__: cls() for cls in settings_classes}
    kafka = parsed["KafkaSettings"]
    assert isinstance(kafka, KafkaSettings)
    assert kafka.bootstrap_servers == REQUIRED["kafka.bootstrapServers"]
    assert (kafka.replication_factor, kafka.min_insync_replicas) == (3, 2)
    gateway = parsed["GatewaySettings"]
    assert isinstance(gateway, GatewaySettings) and gateway.host == "0.0.0.0"
    empty = {"workspaces": [], "imports": [], "streams": []}
    assert yaml.safe_load(configmap["data"]["inflow.yaml"]) == empty


def test_keda_scales_the_worker_and_the_sink_on_their_real_consumer_groups(
    rendered: tuple[dict[str, str], list[dict[str, Any]]],
) -> None:
    values, docs = rendered
    scaled = by_kind(docs, "ScaledObject")
    found = deployments(docs)
    if values.get("keda.enabled") == "false":
        assert scaled == {} and by_kind(docs, "TriggerAuthentication") == {}
        assert all("replicas" in d["spec"] for d in found.values())
        return
    kafka = KafkaSettings(bootstrap_servers="x:9092", topic_prefix="inflow")
    catalogue = {spec.name for spec in load_catalogue(kafka.topic_prefix)}
    streams = values.get("keda.sink.streams", "{}").strip("{}").split(",")
    streams = [s for s in streams if s]
    expected = {
        "worker": {(app_id(kafka), kafka.topic(INGEST_TOPICS[0]))},
        "sink": {(f"{kafka.topic_prefix}.streams.{s}", kafka.topic("events")) for s in streams},
    }
    assert all(kafka.topic(t) in catalogue for t in INGEST_TOPICS)
    targets = {}
    for obj in scaled.values():
        target = obj["spec"]["scaleTargetRef"]
        component = obj["metadata"]["labels"][COMPONENT]
        assert found[component]["metadata"]["name"] == target["name"] and target["kind"] == "Deployment"
        assert "replicas" not in found[component]["spec"], "KEDA owns the replica count"
        groups = set()
        for trigger in obj["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "kafka" and set(meta) <= KAFKA_TRIGGER_KEYS, meta
            assert meta["bootstrapServers"] == REQUIRED["kafka.bootstrapServers"]
            assert int(meta["lagThreshold"]) > 0 and meta["allowIdleConsumers"] == "false"
            if "topic" in meta:
                assert meta["topic"] in catalogue
            groups.add((meta["consumerGroup"], meta.get("topic")))
            if "keda.auth.sasl" in values:
                assert meta["sasl"] == values["keda.auth.sasl"]
                assert trigger["authenticationRef"]["name"] in by_kind(docs, "TriggerAuthentication")
        assert groups == expected[component]
        assert obj["spec"]["maxReplicaCount"] >= obj["spec"]["minReplicaCount"] >= 1
        targets[component] = obj
    assert set(targets) == ({"worker", "sink"} if streams else {"worker"})
    for auth in by_kind(docs, "TriggerAuthentication").values():
        refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
        assert set(refs) == {"username", "password", "ca"}
        (secret,) = by_kind(docs, "Secret").values()
        assert refs["username"]["key"] in secret["stringData"]
        assert refs["password"]["key"] in secret["stringData"]


def test_gateway_autoscaling_replaces_the_fixed_replica_count() -> None:
    docs = objects({"components.gateway.autoscaling.enabled": "true"})
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler").values()
    gateway = deployments(docs)["gateway"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == gateway["metadata"]["name"]
    assert "replicas" not in gateway["spec"]


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("kafka.bootstrapServers", "kafka.bootstrapServers is required"),
        ("secrets.secretKey", "secrets.secretKey is required"),
    ],
)
def test_missing_required_values_fail_with_their_name(missing: str, message: str) -> None:
    values = {k: v for k, v in REQUIRED.items() if k != missing}
    result = render(values, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_an_existing_secret_needs_no_secret_key() -> None:
    result = render({"kafka.bootstrapServers": "k:9092", "secrets.existingSecret": "mine"}, check=False)
    assert result.returncode == 0, result.stderr
    assert "kind: Secret" not in result.stdout


def test_chart_readme_documents_keda() -> None:
    readme = (CHART / "README.md").read_text()
    for needle in ("ScaledObject", "lagThreshold", "keda.sink.streams", "helm install", "KAFKA_REPLICATION"):
        assert needle in readme, needle
