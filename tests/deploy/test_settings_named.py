"""Every ``MODELBROKER_*`` variable that deploy/ or docs/deployment.md names is one the gateway
reads: a misspelt setting would be ignored without a word."""

from __future__ import annotations

import re

import pytest
from deployfiles import DEPLOY, DEPLOYMENT_MD, ROOT, setting_names

FILES = sorted(p for p in DEPLOY.rglob("*") if p.is_file()) + [DEPLOYMENT_MD]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_variable_named_is_a_setting(path):
    named = set(re.findall(r"\bMODELBROKER_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")))
    assert named <= setting_names(), f"{path.name} names {sorted(named - setting_names())}, not settings"


def test_the_files_name_the_settings_they_depend_on():
    named = set()
    for path in FILES:
        named |= set(re.findall(r"\bMODELBROKER_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")))
    assert {"MODELBROKER_CONFIG", "MODELBROKER_PORT", "MODELBROKER_REDIS_URL", "MODELBROKER_DATABASE_URL",
            "MODELBROKER_METRICS_PUBLIC", "MODELBROKER_LOG_FILE"} <= named
