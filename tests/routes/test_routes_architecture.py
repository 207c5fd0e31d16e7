"""GET /api/{text,vision,diffusion}/architecture through TestClient: the map of the model the server
runs (the tiny GPT-2 and SD of tests/conftest.py, the shipped ViT), its numbers against /api/models,
404s that name what there is, and the pages that draw it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings


def test_text_map_is_the_served_models(sd_client):
    models = sd_client.get("/api/models").json()
    m = models["text"][0]
    r = sd_client.get("/api/text/architecture")
    assert r.status_code == 200
    g = r.json()
    assert g["family"] == "text" and g["model"] == m["name"] and g["params"] == m["params"]
    assert len([n for n in g["nodes"] if n["kind"] == "block"]) == m["n_layers"]
    attn = [n for n in g["nodes"] if n["kind"] == "attention"]
    assert [n["facts"]["heads"] for n in attn] == [m["n_heads"]] * m["n_layers"]
    assert [n["link"] for n in attn] == [f"/text/attention?model={m['name']}&layer={l}" for l in range(m["n_layers"])]
    assert sd_client.get(f"/api/text/architecture?model={m['name']}").json() == g


def test_vision_and_diffusion_maps(sd_client):
    models = sd_client.get("/api/models").json()
    v = sd_client.get("/api/vision/architecture").json()
    assert len([n for n in v["nodes"] if n["kind"] == "block"]) == models["vision"][0]["n_layers"]
    assert v["params"] == models["vision"][0]["params"]
    d = sd_client.get("/api/diffusion/architecture").json()
    sd = models["diffusion"][0]
    cross = [n for n in d["nodes"] if n["kind"] == "cross_attention"]
    assert sorted(n["name"] for n in cross) == sorted(f"unet.{c}" for c in sd["cross_attention_layers"])
    assert sorted(h for n in cross for h in n["hooks"]) == sorted(sd["cross_attention_layers"])
    assert d["params"] == sd["params"]
    assert {e["kind"] for e in d["edges"]} == {"flow", "skip", "context", "loop"}


@pytest.mark.parametrize("family", ["text", "vision", "diffusion"])
def test_unknown_model_is_a_404_naming_the_served_ones(sd_client, family):
    r = sd_client.get(f"/api/{family}/architecture?model=nope")
    assert r.status_code == 404
    assert "Unknown model 'nope'" in r.json()["detail"]


def test_no_diffusion_model_served_says_so(tiny_gpt2_dir):
    with TestClient(create_app(Settings(gpt2=str(tiny_gpt2_dir), sd=""))) as c:
        r = c.get("/api/diffusion/architecture")
        assert r.status_code == 404 and "runs no Stable Diffusion model" in r.json()["detail"]


@pytest.mark.parametrize("family", ["text", "vision", "diffusion"])
def test_pages_draw_their_family(sd_client, family):
    r = sd_client.get(f"/{family}/architecture")
    assert r.status_code == 200
    script = f"/static/js/{'' if family == 'text' else family + '_'}architecture.js"
    assert f'src="{script}"' in r.text and "/static/css/architecture.css" in r.text
    js = sd_client.get(script)
    assert js.status_code == 200 and f'initArchitecture("{family}"' in js.text
