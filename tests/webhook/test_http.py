"""Hostile input at the HTTP layer."""

from __future__ import annotations

import json

import pytest
from helpers import review


def test_wrong_content_type_is_415(client):
    r = client.post("/validate", data=json.dumps(review("deployment-good.json")), content_type="text/plain")
    assert r.status_code == 415


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty body"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "nested deeper"),
        (b"[" * 150 + b"]" * 150, "nested deeper"),
        (b'{"apiVersion": "v1", "kind": "Pod"}', "not an admission.k8s.io/v1 AdmissionReview"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": ""}}', "no uid"),
        (b"null", "not a JSON object"),
        (b'"string"', "not a JSON object"),
    ],
)
def test_bad_bodies_are_400(client, data, fragment):
    for path in ("/validate", "/mutate"):
        r = client.post(path, data=data, content_type="application/json")
        assert r.status_code == 400 and fragment in r.get_json()["error"], (path, r.data[:200])


def test_oversized_body_is_413(client):
    big = b'{"x": "' + b"a" * (8 * 1024 * 1024) + b'"}'
    r = client.post("/validate", data=big, content_type="application/json")
    assert r.status_code == 413


def test_get_on_review_endpoints_is_405(client):
    assert client.get("/validate").status_code == 405
    assert client.get("/mutate").status_code == 405


def test_health_ready_metrics(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    client.post("/validate", json=review("deployment-gpu-count-mismatch.json"))
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'aim_webhook_requests_total{endpoint="validate",kind="Deployment",operation="CREATE",outcome="denied",'
        'reason="GPU_COUNT_MISMATCH"}' in text
    )
    assert "aim_webhook_request_duration_seconds_bucket" in text


def test_metrics_carry_the_catalog_baselines(client):
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'aim_recipe_expected_tokens_per_second{hardware="MI300X",model="meta-llama/Llama-3.1-70B-Instruct",'
        'precision="fp8",recipe_id="llama-3.1-70b-instruct-mi300x-8gpu-fp8",source="published"} 13200.0'
    ) in text
    assert 'aim_recipe_gpu_count{recipe_id="llama-3.1-70b-instruct-mi300x-8gpu-fp8"} 8.0' in text
    assert "aim_recipe_expected_latency_seconds{" in text
