"""deploy/kubernetes/: valid for a pinned Kubernetes version (kubernetes-validate, strict),
and in step with the image and the gateway: the config's path, the port, the probes' routes,
the provider keys, the user and the time a shutdown takes."""

from __future__ import annotations

import copy
from pathlib import PurePosixPath

import kubernetes_validate
import pytest
from deployfiles import (
    KUBERNETES,
    KUBERNETES_VERSION,
    PROVIDERS,
    check_command,
    image_env,
    load_yaml_documents,
    manifests,
    only,
    serves,
    setting_names,
    variables_in,
)

from modelbroker.plugins.ledger.writer import SHUTDOWN_WRITE_S


def pod() -> dict:
    return manifests()["Deployment/modelbroker"]["spec"]["template"]


def container() -> dict:
    (found,) = pod()["spec"]["containers"]
    return found


def env() -> dict[str, str]:
    """The container's environment: the image's, then the Deployment's values."""
    return {**image_env(), **{e["name"]: e["value"] for e in container()["env"] if "value" in e}}


def port_number(port: int | str) -> int:
    """A probe's or Service's port, a name resolved to the container's port of that name."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container()["ports"] if p["name"] == port]
    return number


@pytest.mark.parametrize("path", sorted(KUBERNETES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_manifest_is_valid_for_the_pinned_kubernetes(path):
    for document in load_yaml_documents(path):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_strict_validation_refuses_a_misspelt_field():
    broken = copy.deepcopy(manifests()["Deployment/modelbroker"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_expected_objects_are_there():
    assert set(manifests()) == {"ConfigMap/modelbroker-providers", "Secret/modelbroker-secrets",
                                "Deployment/modelbroker", "Service/modelbroker",
                                "HorizontalPodAutoscaler/modelbroker"}


def test_the_container_sets_only_real_settings():
    secret = manifests()["Secret/modelbroker-secrets"]["stringData"]
    named = {e["name"] for e in container()["env"]} | set(secret)
    named = {name for name in named if name.startswith("MODELBROKER_")}
    assert named <= setting_names(), named - setting_names()


def test_the_command_exists():
    check_command(container()["args"])


def test_the_configmap_is_providers_yaml_mounted_where_the_gateway_reads_it():
    configmap = manifests()["ConfigMap/modelbroker-providers"]
    assert configmap["data"]["providers.yaml"] == PROVIDERS.read_text(encoding="utf-8")
    config_path = PurePosixPath(env()["MODELBROKER_CONFIG"])
    (mount,) = [m for m in container()["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    (volume,) = [v for v in pod()["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert volume["configMap"]["items"] == [{"key": "providers.yaml", "path": config_path.name}]


def test_the_secret_gives_every_key_that_providers_yaml_names():
    assert container()["envFrom"] == [{"secretRef": {"name": "modelbroker-secrets"}}]
    secret = manifests()["Secret/modelbroker-secrets"]["stringData"]
    assert variables_in(PROVIDERS.read_text(encoding="utf-8")) <= set(secret)
    assert {"MODELBROKER_DATABASE_URL", "MODELBROKER_REDIS_URL"} <= set(secret)  # the shared state


def test_the_ports_agree_from_the_service_to_the_probes():
    served = int(env()["MODELBROKER_PORT"])
    assert [p["containerPort"] for p in container()["ports"]] == [served]
    (service_port,) = manifests()["Service/modelbroker"]["spec"]["ports"]
    assert port_number(service_port["targetPort"]) == served
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert port_number(container()[probe]["httpGet"]["port"]) == served, probe
    annotations = pod()["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == served and serves(annotations["prometheus.io/path"])


def test_the_probes_ask_the_gateways_own_probe_routes():
    assert container()["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container()["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert container()["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert serves(container()[probe]["httpGet"]["path"]), probe


def test_the_selectors_find_the_pods():
    labels = pod()["metadata"]["labels"]
    deployment = manifests()["Deployment/modelbroker"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert manifests()["Service/modelbroker"]["spec"]["selector"].items() <= labels.items()
    target = manifests()["HorizontalPodAutoscaler/modelbroker"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_a_pod_is_given_the_time_its_shutdown_takes():
    """preStop, then requests in flight (MODELBROKER_GRACEFUL_SHUTDOWN_S), then the ledger's
    last write (or spill), before Kubernetes kills the container."""
    pre_stop = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    needed = pre_stop + float(env()["MODELBROKER_GRACEFUL_SHUTDOWN_S"]) + SHUTDOWN_WRITE_S
    assert pod()["spec"]["terminationGracePeriodSeconds"] > needed


def test_it_runs_as_the_images_user_with_a_read_only_root_and_a_volume_for_every_file_written():
    user, _, group = only("USER").text.partition(":")
    context = pod()["spec"]["securityContext"]
    assert (context["runAsNonRoot"], context["runAsUser"], context["runAsGroup"]) == (True, int(user), int(group))
    assert container()["securityContext"]["readOnlyRootFilesystem"] is True
    mounted = {m["mountPath"] for m in container()["volumeMounts"] if not m.get("readOnly")}
    written = {str(PurePosixPath(env()["MODELBROKER_LOG_FILE"]).parent), env()["PROMETHEUS_MULTIPROC_DIR"], "/tmp"}
    assert written <= mounted
