"""core/_server/routes/health.py: GET /health says what the gateway has, never a secret."""

from __future__ import annotations

KEY = "sk-health-test-0123456789abcdef"


def test_health_lists_providers_without_secrets(gateway, provider, upstream, monkeypatch):
    monkeypatch.setenv("MB_HEALTH_KEY", KEY)
    gw = gateway({"providers": [
        provider("a", api_key="${MB_HEALTH_KEY}"),
        provider("b", api_key="${MB_HEALTH_UNSET}"),
    ]})
    answer = gw.get("/health")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok"
    assert body["strategy"] == "priority"
    a, b = body["providers"]
    assert (a["id"], a["enabled"], b["id"], b["enabled"]) == ("a/a", True, "b/b", False)
    assert "MB_HEALTH_UNSET" in b["disabled_reason"]
    assert KEY not in answer.text
    assert "api_key" not in a and "api_key" not in b
