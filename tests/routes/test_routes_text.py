"""The GPT-2 API through FastAPI's TestClient (lifespan runs) and through the real server."""

import httpx
import numpy as np
import pytest

from app.wire import decode

TEXT = "The animal didn't cross the street because it was too tired"


def test_trace_and_views_agree(client):
    tr = client.post("/api/text/trace", json={"text": TEXT}).json()
    assert [t["text"] for t in tr["tokens"]][:2] == ["The", " animal"]
    assert tr["model"] == "gpt2-tinystories" and tr["n_ctx"] == 256
    T = len(tr["tokens"])
    a = client.post("/api/text/attention", json={"text": TEXT, "layer": 1, "head": 2}).json()
    att = decode(a["attention"])
    assert att.shape == (T, T)
    assert np.allclose(att.sum(-1), 1, atol=2e-3)  # float16 on the wire
    assert np.all(np.triu(att, 1) == 0)
    h = client.post("/api/text/head", json={"text": TEXT, "layer": 1, "head": 2}).json()
    assert np.abs(decode(h["attention"]) - att).max() < 1e-3
    masked = decode(h["masked"])
    assert np.isneginf(masked[0, 1]) and np.isfinite(masked[1, 0])
    q, k = decode(h["q"]), decode(h["k"])
    assert np.abs(q @ k.T - decode(h["scores"])).max() < 0.05 * (1 + np.abs(decode(h["scores"])).max())


def test_attention_costs_two_bytes_per_value(client):
    a = client.post("/api/text/attention", json={"text": TEXT, "layer": 0, "head": 0}).json()["attention"]
    n = int(np.prod(a["shape"]))
    assert a["dtype"] == "float16" and len(a["data"]) == 4 * ((2 * n + 2) // 3)


def test_grid_pools_long_text(client):
    short = client.post("/api/text/grid", json={"text": TEXT}).json()
    assert short["pooled"] is False and decode(short["attention"]).shape[:2] == (4, 4)
    long = client.post("/api/text/grid", json={"text": "the cat sat. " * 60}).json()
    g = decode(long["attention"])
    assert long["pooled"] and g.shape == (4, 4, 48, 48)
    assert np.allclose(g.sum(-1), 1, atol=5e-3)


def test_next_temperature_and_generate(client):
    cold = client.post("/api/text/next", json={"text": TEXT, "temperature": 0.3, "k": 5}).json()["tokens"]
    hot = client.post("/api/text/next", json={"text": TEXT, "temperature": 3, "k": 5}).json()["tokens"]
    assert cold[0]["id"] == hot[0]["id"] and cold[0]["prob"] > hot[0]["prob"]
    g1 = client.post("/api/text/generate", json={"text": TEXT, "temperature": 1, "seed": 7}).json()
    g2 = client.post("/api/text/generate", json={"text": TEXT, "temperature": 1, "seed": 7}).json()
    assert g1 == g2 and g1["text"] == TEXT + g1["token"]["text"]
    greedy = client.post("/api/text/generate", json={"text": TEXT, "temperature": 0.01, "seed": 1}).json()
    assert greedy["token"]["id"] == cold[0]["id"]


def test_lens_shape(client):
    lens = client.post("/api/text/lens", json={"text": TEXT, "k": 2}).json()
    assert lens["layers"] == ["embed", "0", "1", "2", "3"]
    assert len(lens["top"][0]) == len(lens["tokens"]) and len(lens["top"][0][0]) == 2


def test_same_text_runs_once(client):
    runner = client.app.state.runner
    before = runner.computed
    for layer in range(4):
        client.post("/api/text/attention", json={"text": "a cache test", "layer": layer, "head": 0})
    assert runner.computed == before + 1


@pytest.mark.parametrize(
    "path,body,status,needle",
    [
        ("/api/text/trace", {"text": ""}, 422, "empty"),
        ("/api/text/trace", {"text": "word " * 400}, 422, "at most 256"),
        ("/api/text/trace", {"text": "x" * 20_001}, 422, "at most 20000"),
        ("/api/text/trace", {"text": "hi", "model": "gpt-5"}, 404, "Unknown model"),
        ("/api/text/attention", {"text": "hi", "layer": 4, "head": 0}, 422, "layers 0–3"),
        ("/api/text/attention", {"text": "hi", "layer": 0, "head": 9}, 422, "heads 0–3"),
        ("/api/text/attention", {"text": "hi", "layer": -1, "head": 0}, 422, "layer"),
        ("/api/text/next", {"text": "hi", "temperature": 0}, 422, "temperature"),
        ("/api/text/next", {"text": "hi", "temperature": -1}, 422, "temperature"),
        ("/api/text/next", {"text": "hi", "temperature": "warm"}, 422, "temperature"),
        ("/api/text/next", {"text": "hi", "k": 500}, 422, "k"),
    ],
)
def test_bad_input_says_what_to_change(client, path, body, status, needle):
    r = client.post(path, json=body)
    assert r.status_code == status
    err = r.json()
    assert set(err) == {"error", "detail", "request_id"} and needle in err["detail"]
    assert err["request_id"] == r.headers["x-request-id"]  # the same id as in the server log


def test_nan_temperature_is_refused(client):
    r = client.post("/api/text/next", content=b'{"text": "hi", "temperature": NaN}', headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_any_gpt2_checkpoint_loads_through_the_hub_path(tiny_client):
    models = tiny_client.get("/api/models").json()["text"]
    assert models[0]["n_layers"] == 2 and models[0]["n_heads"] == 3
    a = tiny_client.post("/api/text/attention", json={"text": "the cat sat", "layer": 1, "head": 2}).json()
    assert decode(a["attention"]).shape[0] == len(a["tokens"])


def test_security_headers_and_offline_plotly(client):
    r = client.get("/static/vendor/plotly.min.js")
    assert r.status_code == 200 and len(r.content) > 1_000_000
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/docs").status_code == 200


def test_real_server(live_server):
    r = httpx.post(live_server + "/api/text/trace", json={"text": TEXT}, timeout=30)
    assert r.status_code == 200 and len(r.json()["tokens"]) == 12
    r = httpx.post(live_server + "/api/text/trace", json={"text": ""}, timeout=30)
    assert r.status_code == 422
    assert httpx.get(live_server + "/api/models", timeout=10).json()["text"][0]["name"] == "gpt2-tinystories"


def test_busy_runner_answers_503_with_retry_after(client, monkeypatch):
    from app.runs import Busy

    async def full(*_a, **_k):
        raise Busy("queue full")

    monkeypatch.setattr(client.app.state.runner, "get", full)
    r = client.post("/api/text/trace", json={"text": "a text nobody traced"})
    assert r.status_code == 503 and int(r.headers["retry-after"]) > 0 and r.json()["error"] == "busy"
