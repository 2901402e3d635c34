"""deploy/compose.yaml and what it mounts: valid Compose, and in step with the gateway (its
settings, port, routes and metrics) and with each other (nginx, Prometheus, Grafana)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import jsonschema
import pytest
import yaml
from deployfiles import (
    DEPLOY,
    PROVIDERS,
    check_command,
    compose,
    gateway_services,
    image_env,
    serves,
    setting_names,
    variables_in,
)
from prometheus_client.parser import text_string_to_metric_families

from modelbroker._config.loading import parse_config
from modelbroker._config.providers import ReliabilityConfig
from modelbroker._config.settings import Settings
from modelbroker.testing import free_port

#: The Compose specification's schema, as published (tests/deploy/README.md names its commit).
SCHEMA = json.loads((Path(__file__).parent / "compose-spec.json").read_text(encoding="utf-8"))
NGINX = DEPLOY / "nginx.conf"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "modelbroker.json"
#: What a sample's name may add to its family's, by the family's type.
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "summary": ("_sum", "_count", "_created")}


def environment(service: dict) -> dict:
    return {**image_env(), **{k: v for k, v in service["environment"].items() if v is not None}}


def mounts(service: dict) -> dict[str, str]:
    """Container path -> host path (or volume name) of a service's short-syntax volumes."""
    return {volume.split(":")[1]: volume.split(":")[0] for volume in service.get("volumes", [])}


# --- the file itself ---------------------------------------------------------------------------


def test_compose_yaml_is_valid_compose():
    jsonschema.validate(compose(), SCHEMA, cls=jsonschema.Draft7Validator)


def test_the_schema_refuses_a_misspelt_key():
    """The check above can fail: a key the specification does not know is an error."""
    broken = copy.deepcopy(compose())
    broken["services"]["gateway-1"]["enviroment"] = {}
    with pytest.raises(jsonschema.ValidationError, match="enviroment"):
        jsonschema.validate(broken, SCHEMA, cls=jsonschema.Draft7Validator)


def test_two_gateway_replicas_share_redis_and_postgresql():
    services = gateway_services()
    assert len(services) == 2
    for name, service in services.items():
        env = environment(service)
        assert env["MODELBROKER_REDIS_URL"].startswith("redis://redis:"), name
        assert env["MODELBROKER_DATABASE_URL"].startswith("postgresql://modelbroker:"), name
        assert "@postgres:5432/modelbroker" in env["MODELBROKER_DATABASE_URL"]
        assert {"redis", "postgres"} <= set(service["depends_on"])
    assert {"redis", "postgres", "nginx", "prometheus", "grafana"} <= set(compose()["services"])


def test_the_gateways_set_only_real_settings():
    for service in gateway_services().values():
        named = {name for name in service["environment"] if name.startswith("MODELBROKER_")}
        assert named <= setting_names(), named - setting_names()


@pytest.mark.parametrize("name", ["gateway-1", "gateway-2"])
def test_the_gateways_command_exists(name):
    check_command(gateway_services()[name]["command"])


def test_providers_yaml_is_mounted_where_the_gateway_reads_it_and_its_keys_are_passed():
    text = PROVIDERS.read_text(encoding="utf-8")
    for service in gateway_services().values():
        env = environment(service)
        assert mounts(service)[env["MODELBROKER_CONFIG"]] == "./providers.yaml"
        assert variables_in(text) <= set(service["environment"])
    config = parse_config(text, environ={name: "a-key" for name in variables_in(text)})
    assert all(p.enabled for p in config.providers) and len(config.providers) == 2


def test_each_replica_keeps_its_files_in_a_volume_of_its_own():
    data_dirs = []
    for service in gateway_services().values():
        data = str(PurePosixPath(environment(service)["MODELBROKER_LOG_FILE"]).parent)
        data_dirs.append(mounts(service)[data])
        assert data_dirs[-1] in compose()["volumes"]
    assert len(set(data_dirs)) == len(data_dirs)


# --- nginx ---------------------------------------------------------------------------------------


def nginx_directive(name: str) -> str:
    (value,) = re.findall(rf"^\s*{name}\s+([^;]+);", NGINX.read_text(encoding="utf-8"), re.M)
    return value


def test_nginx_balances_the_gateway_replicas_on_the_port_they_serve():
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", NGINX.read_text(encoding="utf-8"), re.M)
    services = gateway_services()
    assert sorted(host for host, _ in servers) == sorted(services)
    for host, port in servers:
        assert port == environment(services[host])["MODELBROKER_PORT"]
    nginx = compose()["services"]["nginx"]
    assert mounts(nginx)["/etc/nginx/conf.d/default.conf"] == "./nginx.conf"
    assert {name: when["condition"] for name, when in nginx["depends_on"].items()} == dict.fromkeys(
        services, "service_healthy")  # the image's HEALTHCHECK


def test_nginx_takes_the_largest_body_and_waits_longer_than_a_request_may_take():
    size = nginx_directive("client_max_body_size")
    assert size.endswith("m") and int(size[:-1]) * 1024 * 1024 > Settings.model_fields["max_body_bytes"].default
    read = nginx_directive("proxy_read_timeout")
    assert int(read.rstrip("s")) > ReliabilityConfig.model_fields["request_timeout_s"].default
    assert "non_idempotent" not in nginx_directive("proxy_next_upstream")  # a POST is never sent twice


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_accepts_the_configuration(tmp_path):
    """nginx -t, with the replicas' names (resolved only on the compose network) as 127.0.0.1."""
    conf = re.sub(r"(server\s+)gateway-\d+(:\d+)", r"\g<1>127.0.0.1\2", NGINX.read_text(encoding="utf-8"))
    (tmp_path / "default.conf").write_text(conf.replace("listen 80;", f"listen 127.0.0.1:{free_port()};"), encoding="utf-8")
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid; error_log stderr; events {{}}\n"
        f"http {{ access_log off; include {tmp_path}/default.conf; }}\n", encoding="utf-8")
    done = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


# --- Prometheus and Grafana ---------------------------------------------------------------------


def test_prometheus_scrapes_every_replica_at_its_metrics_route():
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    assert serves(job["metrics_path"])
    (targets,) = [group["targets"] for group in job["static_configs"]]
    services = gateway_services()
    assert sorted(targets) == sorted(f"{name}:{environment(s)['MODELBROKER_PORT']}" for name, s in services.items())
    for service in services.values():  # no key for the scrape: /metrics must stay open
        assert environment(service)["MODELBROKER_METRICS_PUBLIC"] == "true"
    assert nginx_directive("return") == "404"  # and it is not passed on from outside
    prometheus = compose()["services"]["prometheus"]
    assert mounts(prometheus)["/etc/prometheus/prometheus.yml"] == "./prometheus.yml"


def test_grafana_is_provisioned_with_the_prometheus_of_compose_and_the_dashboard():
    grafana = compose()["services"]["grafana"]
    mounted = mounts(grafana)
    assert mounted["/etc/grafana/provisioning"] == "./grafana/provisioning"
    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert source["url"] == f"http://prometheus:{compose()['services']['prometheus']['ports'][0].split(':')[1]}"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "modelbroker.yaml").read_text())["providers"]
    assert mounted[provider["options"]["path"]] == "./grafana/dashboards"
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in [p, *p["targets"]]}
    assert uids == {source["uid"]}


def dashboard_metric_names() -> set[str]:
    """The metric names that the dashboard's PromQL reads: every identifier left once strings,
    label matchers, ranges, groupings, functions, keywords and Grafana variables are out."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    names = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
            expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+", "", expr)
            expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
            for match in re.finditer(r"\b([a-zA-Z_:][\w:]*)\b(\s*\()?", expr):
                if not match.group(2) and match.group(1) not in {"and", "or", "unless", "offset", "bool"}:
                    names.add(match.group(1))
    return names


def test_the_dashboard_reads_only_metrics_that_a_gateway_exports(gateway, provider):
    names = dashboard_metric_names()
    assert "modelbroker_attempt_duration_seconds_bucket" in names and len(names) >= 8
    gw = gateway({"providers": [provider("a", model="fail-500", priority=1), provider("b", priority=2)],
                  "reliability": {"retries": 0}}, log=False)
    assert gw.generate({"prompt": "hello"}).status_code == 200
    assert gw.generate(content=b"{not json").status_code == 400
    exported = set()
    for family in text_string_to_metric_families(gw.get("/metrics").text):
        exported |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
        exported |= {sample.name for sample in family.samples}
    assert names <= exported, f"not exported: {sorted(names - exported)}"
