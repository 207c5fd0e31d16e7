"""The server's promises under faults: request ids in errors and the log, a bounded body, a model
that raises answers 500 and the server goes on, the event loop stays free while a diffusion run
computes, a full diffusion queue refuses the extra runs while the admitted ones finish, and a
missing or corrupt model folder stops `glassbox serve` with one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading

import httpx
import pytest
from fastapi.testclient import TestClient

from app.capture import text as text_capture
from app.main import create_app
from app.settings import ROOT, Settings
from tests.conftest import SHIPPED_GPT2, thread_server

TRACE = "/api/text/trace"


def error_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text[:300]
    body = r.json()
    assert set(body) == {"error", "detail", "request_id"}, body
    assert body["request_id"] == r.headers["x-request-id"]
    return body


@pytest.fixture(scope="module")
def app_client(tiny_gpt2_dir):
    with TestClient(create_app(Settings(gpt2=str(tiny_gpt2_dir), sd="", vit="", max_body_bytes=4096))) as c:
        yield c


def test_every_response_has_a_request_id_and_errors_are_logged_with_it(app_client, caplog):
    ok = app_client.get("/healthz")
    bad = app_client.post(TRACE, json={"text": ""})
    ids = {ok.headers["x-request-id"], bad.headers["x-request-id"]}
    assert len(ids) == 2  # one id per request
    body = error_of(bad, 422)
    logged = [r.getMessage() for r in caplog.records if r.name == "glassbox.requests"]
    assert any(body["request_id"] in m and "422" in m and TRACE in m for m in logged), logged


def test_a_tame_client_request_id_is_kept_a_hostile_one_replaced(app_client):
    assert app_client.get("/healthz", headers={"X-Request-ID": "proxy-42.a"}).headers["x-request-id"] == "proxy-42.a"
    hostile = app_client.get("/healthz", headers={"X-Request-ID": "x\" onload=alert(1) " + "a" * 100})
    assert hostile.headers["x-request-id"] != "" and "onload" not in hostile.headers["x-request-id"]


def test_security_headers_on_errors_too(app_client):
    r = app_client.post(TRACE, json={"text": ""})
    assert "script-src 'self'" in r.headers["content-security-policy"] and "unsafe-inline" not in r.headers[
        "content-security-policy"].split("script-src")[1].split(";")[0]
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"


def test_a_body_over_the_bound_is_refused_declared_or_streamed(app_client):
    big = json.dumps({"text": "a" * 5000})
    body = error_of(app_client.post(TRACE, content=big, headers={"content-type": "application/json"}), 413)
    assert "4,096 bytes" in body["detail"]

    def chunks():  # no Content-Length: the bound is counted while reading
        for _ in range(10):
            yield b"a" * 1000

    r = app_client.post(TRACE, content=chunks(), headers={"content-type": "application/json"})
    error_of(r, 413)
    assert app_client.post(TRACE, json={"text": "a cat"}).status_code == 200  # and the server goes on


def test_a_model_that_raises_answers_500_and_the_server_goes_on(app_client, monkeypatch, caplog):
    def broken(tm, text):
        raise FloatingPointError("the logits are NaN")

    monkeypatch.setattr(text_capture, "capture", broken)
    body = error_of(app_client.post(TRACE, json={"text": "never computed"}), 500)
    assert body["error"] == "internal server error" and "NaN" in body["detail"]
    assert any(body["request_id"] in r.getMessage() and r.exc_info for r in caplog.records)  # traceback logged
    monkeypatch.undo()
    assert app_client.post(TRACE, json={"text": "computed now"}).status_code == 200


# --- a diffusion run in flight: the loop stays free; a full queue refuses the extra ----------------

RUN = "/api/diffusion/run"


def pending(base: str) -> int:
    return httpx.get(base + "/healthz", timeout=10).json()["diffusion_runs"]["pending"]


def test_pages_health_and_static_answer_while_runs_compute_and_the_queue_bounds_them(tiny_gpt2_dir, tiny_sd_dir,
                                                                                      monkeypatch):
    from diffusers import UNet2DConditionModel

    # The UNet waits at a gate: the runs stay in flight, however fast the machine, until the test opens it.
    gate = threading.Event()
    unet_forward = UNet2DConditionModel.forward

    def gated(self, *args, **kwargs):
        gate.wait(120)
        return unet_forward(self, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", gated)
    settings = Settings(gpt2=str(tiny_gpt2_dir), sd=str(tiny_sd_dir), vit="", max_concurrent_diffusion=1,
                        max_queued_diffusion=2, retry_after_s=7)
    with thread_server(settings) as base:
        results: dict[int, list[str]] = {}
        opened = threading.Barrier(4)

        def run(seed: int):
            body = {"prompt": "a red star", "seed": seed, "steps": 5, "scheduler": "ddim"}
            with httpx.stream("POST", base + RUN, json=body, timeout=300) as r:
                assert r.status_code == 200
                lines = r.iter_lines()
                next(lines)  # the head has arrived: admitted
                opened.wait(60)
                results[seed] = [ln for ln in lines if ln.startswith("event:")]

        threads = [threading.Thread(target=run, args=(s,)) for s in (1, 2, 3)]
        for t in threads:
            t.start()
        opened.wait(60)  # one running, two queued
        assert pending(base) == 3
        # The event loop is not blocked by the computing run: these answer now, mid-run.
        assert httpx.get(base + "/", timeout=10).status_code == 200
        assert httpx.get(base + "/static/vendor/plotly.min.js", timeout=10).status_code == 200
        extra = httpx.post(base + RUN, json={"prompt": "a red star", "seed": 4, "steps": 2}, timeout=30)
        assert error_of(extra, 503)["error"] == "busy" and extra.headers["retry-after"] == "7"
        assert pending(base) == 3  # still running when the page and /healthz answered
        gate.set()
        for t in threads:
            t.join(300)
        for seed in (1, 2, 3):  # every admitted run finished, step by step
            events = results[seed]
            assert events[-1] == "event: done" and events.count("event: step") == 5, events[-3:]


# --- start-up ---------------------------------------------------------------------------------------


def serve(folder) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "serve", "--gpt2", str(folder), "--vit", "", "--sd", "",
                           "--port", "9"], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_broken_model_folder_stops_serve_with_one_line(tmp_path, damage):
    folder = tmp_path / "gpt2-broken"
    shutil.copytree(SHIPPED_GPT2, folder)
    if damage == "missing":
        (folder / "model.safetensors").unlink()
    else:
        (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    done = serve(folder)
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    last = lines[-1]
    assert last.startswith("glassbox: error:") and str(folder) in last
    if damage == "missing":
        assert "missing model.safetensors" in last
