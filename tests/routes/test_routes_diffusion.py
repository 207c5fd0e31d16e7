"""The Stable Diffusion API: the stream through the real server (order, counts, the image against
diffusers' own pipeline), the cache and cancel as /healthz and the cache show them, every kind of
bad input, 503 + Retry-After from a server with no queue, and /layers, /paths, /forward against
independent numpy and diffusers computations."""

from __future__ import annotations

import base64
import io
import json
import math
import time
from collections.abc import Iterable, Iterator

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from app.settings import Settings
from tests.conftest import thread_server

RUN = "/api/diffusion/run"
PROMPT = "a red star at the top left"


# ---------------------------------------------------------------------------------------------
# Reading the wire, independently of app.wire and the route code


def f16(arr: dict) -> np.ndarray:
    """An array from the wire: base64 of little-endian float16 in C order."""
    assert arr["dtype"] == "float16"
    return np.frombuffer(base64.b64decode(arr["data"]), dtype="<f2").astype(np.float32).reshape(arr["shape"])


def png(url: str) -> np.ndarray:
    head, b64 = url.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")).astype(int)


def sse(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Server-Sent Events -> (event, raw data text), as a browser's parser reads them."""
    event, data = None, []
    for line in lines:
        if line == "":
            if event is not None or data:
                yield event or "message", "\n".join(data)
            event, data = None, []
        elif line.startswith("event:"):
            event = line[6:].removeprefix(" ")
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if event is not None or data:
        yield event or "message", "\n".join(data)


def stream(base: str, body: dict, timeout: float = 300) -> list[tuple[str, str]]:
    """A whole run through real HTTP, read as it streams."""
    with httpx.stream("POST", base + RUN, json=body, timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return list(sse(r.iter_lines()))


def events_of(text: str) -> list[tuple[str, dict]]:
    return [(e, json.loads(d)) for e, d in sse(text.splitlines())]


def health(base: str) -> dict:
    return httpx.get(base + "/healthz", timeout=30).json()["diffusion_runs"]


def wait_idle(base: str, deadline_s: float = 180) -> dict:
    end = time.time() + deadline_s
    while time.time() < end:
        h = health(base)
        if h["pending"] == 0:
            return h
        time.sleep(0.2)
    raise AssertionError(f"runs still pending after {deadline_s} s: {health(base)}")


def assert_error(r, status: int, *words: str):
    assert r.status_code == status, r.text[:500]
    body = r.json()
    assert set(body) == {"error", "detail", "request_id"} and body["request_id"] == r.headers["x-request-id"], body
    for w in words:
        assert w in body["detail"], body["detail"]


def sd_pipeline(folder):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False,
                                                   use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def live_pipe(sd_dir):
    """The same pipeline the live server serves, loaded here with diffusers alone."""
    return sd_pipeline(sd_dir)


@pytest.fixture(scope="module")
def tiny_pipe(tiny_sd_dir):
    return sd_pipeline(tiny_sd_dir)


# ---------------------------------------------------------------------------------------------
# The stream, through the real server


BODY = {"prompt": PROMPT, "seed": 11, "steps": 4, "guidance": 4.0}


@pytest.fixture(scope="module")
def streamed(live_server):
    """One run streamed (uncached: a seed no other test asks for), with /healthz before and after."""
    wait_idle(live_server)
    before = health(live_server)
    events = stream(live_server, BODY)
    return before, events, health(live_server)


def test_stream_is_head_steps_done_in_order(streamed, live_server, live_pipe):
    """head, then one `step` per UNet call at the model's own scheduler's timesteps, then done. The
    shipped model's scheduler (DDIM) calls the UNet once per step: 4 steps asked, 4 step events,
    timesteps strictly decreasing. (Without the shipped model the live server serves the tiny one,
    whose PNDM adds a call: see test_pndm_streams_one_step_per_unet_call.)"""
    from diffusers import PNDMScheduler

    _, events, _ = streamed
    sched = type(live_pipe.scheduler).from_config(live_pipe.scheduler.config)
    sched.set_timesteps(BODY["steps"])
    want = [float(t) for t in sched.timesteps]
    one_call_per_step = not isinstance(sched, PNDMScheduler)
    if one_call_per_step:
        assert len(want) == BODY["steps"]
    names = [e for e, _ in events]
    assert names == ["head"] + ["step"] * len(want) + ["done"], names
    head = json.loads(events[0][1])
    model = httpx.get(live_server + "/api/models", timeout=30).json()["diffusion"][0]
    assert head["model"] == model["name"] and head["steps_asked"] == 4 and head["steps"] == len(want)
    assert head["image_size"] == model["image_size"] and head["latent_size"] == model["latent_size"]
    assert head["truncated"] is False and head["notice"] is None
    ids = live_pipe.tokenizer(PROMPT)["input_ids"]
    assert head["n_tokens"] == len(ids)
    assert head["tokens"][: head["n_tokens"]] == ["<|startoftext|>", *PROMPT.split(), "<|endoftext|>"]

    steps = [json.loads(d) for e, d in events if e == "step"]
    assert [s["index"] for s in steps] == list(range(len(want)))
    ts = [s["timestep"] for s in steps]
    assert ts == want  # the model's own scheduler, as saved
    if one_call_per_step:
        assert all(a > b for a, b in zip(ts, ts[1:])), ts
    side = model["latent_size"]
    for s in steps:
        for k in ("latent", "x0", "noise", "noise_cond", "noise_uncond"):
            assert f16(s[k]).shape == (4, side, side), k
        assert png(s["preview"]).shape == (side, side, 3)  # fast previews, at the latent's size
    assert head["preview"] == "fast"


def test_streamed_run_is_the_pipelines_own(streamed, live_pipe, live_server, sd_dir):
    """The last step's latent (float16 on the wire) is the latent diffusers' own pipeline ends with
    for the same seed, and the `done` image is the pipeline's own image; decoding the wire latent
    with the VAE gives that image too."""
    _, events, _ = streamed
    steps = [json.loads(d) for e, d in events if e == "step"]
    done = json.loads(events[-1][1])
    kw = {"num_inference_steps": 4, "guidance_scale": 4.0}
    with torch.no_grad():
        latent = live_pipe(PROMPT, generator=torch.Generator().manual_seed(11), output_type="latent", **kw).images[0].numpy()
        image = live_pipe(PROMPT, generator=torch.Generator().manual_seed(11), output_type="np", **kw).images[0]
        vae = live_pipe.vae
        wire = torch.from_numpy(f16(steps[-1]["latent"]))[None]
        decoded = vae.decode(wire / vae.config.scaling_factor).sample[0]
    np.testing.assert_allclose(f16(steps[-1]["latent"]), latent, rtol=2e-3, atol=2e-3)
    own = (image * 255).round().astype(int)
    assert np.abs(png(done["image"]) - own).max() <= 2
    mine = (decoded / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).mul(255).round().numpy().astype(int)
    assert np.abs(mine - own).max() <= 3
    # the exact decode a page asks for, of the last step's latent, is the final image
    r = httpx.post(live_server + "/api/diffusion/decode", json={**BODY, "step": len(steps) - 1, "which": "latent"}, timeout=60)
    assert r.status_code == 200, r.text
    assert np.abs(png(r.json()["image"]) - own).max() <= 2
    # and the streamed fast preview is that picture in small: the mean of each latent pixel's patch
    f = own.shape[0] // png(steps[-1]["preview"]).shape[0]
    pooled = own.reshape(own.shape[0] // f, f, own.shape[1] // f, f, 3).mean(axis=(1, 3))
    err = np.abs(png(steps[-1]["preview"]) - pooled).mean()
    if sd_dir.name == "sd-shapes":  # a trained VAE's latents map to colours (a random one's need not)
        assert err < 25, err
    # and the first step is not yet the image: the stream shows the way there
    assert np.abs(f16(steps[0]["latent"]) - latent).max() > 0.1


@pytest.mark.parametrize("steps", [1, 3])
def test_every_scheduler_offered_runs_any_number_of_steps(live_server, live_pipe, steps):
    """Each scheduler the server lists finishes a run at the low end of the allowed steps. PNDM is
    PLMS as SD 1.x ships it (no Runge-Kutta warm-up, which needs 4 steps or more and would triple
    the first ones): from 2 steps on, one UNet call more than the steps asked (the second timestep
    twice); the others one call per step."""
    from diffusers import PNDMScheduler

    model = httpx.get(live_server + "/api/models", timeout=30).json()["diffusion"][0]
    own_is_pndm = isinstance(live_pipe.scheduler, PNDMScheduler)
    for name in model["schedulers"]:
        events = stream(live_server, {"prompt": PROMPT, "seed": 40 + steps, "steps": steps, "scheduler": name})
        assert events[-1][0] == "done", (name, events[-1])
        got = [json.loads(d) for e, d in events if e == "step"]
        assert [s["index"] for s in got] == list(range(len(got)))
        ts = [s["timestep"] for s in got]
        assert ts == sorted(ts, reverse=True), (name, ts)
        if name == "pndm" or (name == "default" and own_is_pndm):
            plms = PNDMScheduler.from_config(live_pipe.scheduler.config, skip_prk_steps=True)
            plms.set_timesteps(steps)
            assert len(got) == len(plms.timesteps) == steps + (steps > 1), (name, ts)
        else:
            assert len(got) == steps, (name, ts)
    wait_idle(live_server)


def test_the_same_request_is_replayed_from_the_cache(streamed, live_server):
    """/healthz: `computed` counts runs actually computed, `cached` the runs the cache holds. The
    first request computes and caches one run; the same request again computes nothing, adds no
    entry, and streams the very same step data."""
    before, events, after = streamed
    assert after["computed"] == before["computed"] + 1
    assert after["cached"] == before["cached"] + 1
    now = wait_idle(live_server)  # other tests may have run since
    again = stream(live_server, BODY)
    h = health(live_server)
    assert h["computed"] == now["computed"] and h["cached"] == now["cached"] and h["pending"] == 0
    assert again == events  # head, every step and done, byte for byte


def test_pndm_streams_one_step_per_unet_call(sd_client, tiny_pipe):
    """SD 1.x's own scheduler (PNDM, PLMS without the Runge-Kutta warm-up) calls the UNet once more
    than the steps asked, the second timestep twice (4 steps: 750, 500, 500, 250, 0): the stream
    shows every call, in the scheduler's own order (the tiny pipeline ships PNDM)."""
    from diffusers import PNDMScheduler

    assert isinstance(tiny_pipe.scheduler, PNDMScheduler)
    sched = PNDMScheduler.from_config(tiny_pipe.scheduler.config)
    sched.set_timesteps(3)
    want = [float(t) for t in sched.timesteps]
    assert len(want) == 4 and want[1] == want[2]
    head, steps, _ = run_tiny(sd_client, prompt=PROMPT, seed=8, steps=3)
    assert head["steps"] == len(want) == 4 and head["steps_asked"] == 3  # the page counts "step n of 4"
    assert [s["index"] for s in steps] == list(range(len(want)))
    assert [s["timestep"] for s in steps] == want


def test_closing_the_stream_cancels_the_run(live_server):
    """Read the head and one step of a 100-step run, hang up: the run stops (pending back to 0 long
    before 100 steps could matter), is not counted as computed, and is not cached."""
    wait_idle(live_server)
    before = health(live_server)
    body = {"prompt": "a blue circle in the centre", "seed": 77, "steps": 100, "guidance": 3.0}
    seen = []
    with httpx.stream("POST", live_server + RUN, json=body, timeout=120) as r:
        assert r.status_code == 200
        for event, data in sse(r.iter_lines()):
            seen.append((event, json.loads(data)))
            if event == "step":
                break
    assert [e for e, _ in seen] == ["head", "step"] and seen[1][1]["index"] == 0
    h = wait_idle(live_server)
    assert h["computed"] == before["computed"], "the run went on to the end after its page left"
    assert h["cached"] == before["cached"]
    r = httpx.post(live_server + "/api/diffusion/layers", json={**body, "step": 0}, timeout=30)
    assert_error(r, 404, "not in the cache")


# ---------------------------------------------------------------------------------------------
# Bad input: a 4xx with a JSON reason, and nothing computed


@pytest.mark.parametrize(
    "change,status,needle",
    [
        ({"steps": 0}, 422, "steps"),
        ({"steps": 101}, 422, "steps"),
        ({"steps": 2.5}, 422, "steps"),
        ({"guidance": -1}, 422, "guidance"),
        ({"guidance": 31}, 422, "guidance"),
        ({"guidance": "inf"}, 422, "guidance"),
        ({"guidance": "lots"}, 422, "guidance"),
        ({"seed": -1}, 422, "seed"),
        ({"seed": 2**32}, 422, "seed"),
        ({"scheduler": "karras"}, 422, "Unknown scheduler 'karras'"),
        ({"model": "sd-xxl"}, 404, "Unknown model 'sd-xxl'"),
        ({"prompt": "x" * 1001}, 422, "at most 1000"),
        ({"negative": "x" * 1001}, 422, "negative"),
        ({"prompt": None}, 422, "prompt"),
    ],
)
def test_bad_input_says_what_to_change(sd_client, change, status, needle):
    computed = sd_client.app.state.streams.computed
    r = sd_client.post(RUN, json={"prompt": PROMPT, "steps": 2, **change})
    assert_error(r, status, needle)
    assert sd_client.app.state.streams.computed == computed and sd_client.app.state.streams.pending == 0


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_guidance_is_refused(sd_client, raw):
    """JSON has no NaN; Python's parser takes the bare words, so the model must refuse them."""
    body = f'{{"prompt": "a star", "steps": 2, "guidance": {raw}}}'.encode()
    r = sd_client.post(RUN, content=body, headers={"content-type": "application/json"})
    assert_error(r, 422, "guidance")


def test_scheduler_choice_is_listed_in_the_error(sd_client):
    detail = sd_client.post(RUN, json={"prompt": PROMPT, "scheduler": "nope"}).json()["detail"]
    for name in sd_client.get("/api/models").json()["diffusion"][0]["schedulers"]:
        assert name in detail


def test_long_prompt_is_accepted_truncated_with_a_notice(sd_client, tiny_pipe):
    tok = tiny_pipe.tokenizer
    prompt = "a small red star at the top left and a large blue circle " * 8  # ~460 characters
    assert len(prompt) <= 1000 and len(tok(prompt)["input_ids"]) > tok.model_max_length
    r = sd_client.post(RUN, json={"prompt": prompt, "steps": 1, "seed": 5})
    assert r.status_code == 200, r.text
    ev = events_of(r.text)
    assert [e for e, _ in ev] == ["head", "step", "done"]
    head = ev[0][1]
    limit = tok.model_max_length
    assert head["truncated"] is True and head["max_tokens"] == limit and head["n_tokens"] == limit
    assert head["notice"] and f"{limit} tokens" in head["notice"]
    want = tok.convert_ids_to_tokens(tok(prompt, truncation=True, max_length=limit)["input_ids"])
    assert head["tokens"] == [t.replace("</w>", "") for t in want]
    assert head["tokens"][-1] == "<|endoftext|>"  # cut, and still closed by the end token
    short = events_of(sd_client.post(RUN, json={"prompt": "a star", "steps": 1, "seed": 5}).text)[0][1]
    assert short["truncated"] is False and short["notice"] is None


def test_markup_in_the_prompt_is_carried_as_plain_text(sd_client, tiny_pipe):
    """The server does not escape or strip: JSON carries the characters, the page shows them with
    textContent."""
    prompt = "<script>alert(1)</script>"
    r = sd_client.post(RUN, json={"prompt": prompt, "steps": 1, "seed": 6})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    head = events_of(r.text)[0][1]
    tok = tiny_pipe.tokenizer
    ids = tok(prompt, truncation=True, max_length=tok.model_max_length)["input_ids"]
    words = [tok.convert_tokens_to_string([t]).replace("</w>", "").strip() for t in tok.convert_ids_to_tokens(ids)]
    assert head["tokens"][: head["n_tokens"]] == words[: head["n_tokens"]]
    assert "<" in head["tokens"] and "&lt;" not in r.text


# ---------------------------------------------------------------------------------------------
# 503 + Retry-After: a real server with one slot and no queue


@pytest.fixture(scope="module")
def no_queue_server(tiny_gpt2_dir, tiny_sd_dir):
    """The app with max_concurrent_diffusion=1, max_queued_diffusion=0, over real HTTP (a run can be
    left mid-stream and cancelled)."""
    settings = Settings(gpt2=str(tiny_gpt2_dir), sd=str(tiny_sd_dir), vit="", max_concurrent_diffusion=1,
                        max_queued_diffusion=0, retry_after_s=3)
    with thread_server(settings) as base:
        yield base


def test_full_queue_answers_503_with_retry_after(no_queue_server):
    base = no_queue_server
    first = {"prompt": PROMPT, "seed": 1, "steps": 100}
    second = {"prompt": PROMPT, "seed": 2, "steps": 2, "scheduler": "ddim"}  # DDIM: one UNet call per step
    with httpx.stream("POST", base + RUN, json=first, timeout=120) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        head = next(sse(lines))
        assert head[0] == "head"
        assert health(base)["pending"] == 1  # admitted and running
        busy = httpx.post(base + RUN, json=second, timeout=30)
        assert_error(busy, 503)
        assert busy.json()["error"] == "busy" and busy.headers["retry-after"] == "3"
        assert health(base)["pending"] == 1  # the refused run took no place
    # the first run was abandoned mid-way: once it stops, the slot is free again
    h = wait_idle(base)
    assert h["computed"] == 0
    events = stream(base, second)
    assert [e for e, _ in events] == ["head", "step", "step", "done"]
    assert health(base)["computed"] == 1


# ---------------------------------------------------------------------------------------------
# /layers, /paths, /forward on the tiny pipeline (TestClient: a run is read whole once done)


def run_tiny(client, **body) -> tuple[dict, list[dict], dict]:
    r = client.post(RUN, json=body)
    assert r.status_code == 200, r.text
    ev = events_of(r.text)
    assert ev[-1][0] == "done", ev[-1]
    return ev[0][1], [d for e, d in ev if e == "step"], ev[-1][1]


# DDIM: one UNet call per step, so step k of the request is step k of the trace (see the PNDM test)
LAYERS_RUN = {"prompt": "a green square at the bottom right", "seed": 21, "steps": 3, "guidance": 5.0, "scheduler": "ddim"}


def test_layers_rows_sum_to_one_and_make_the_word_maps(sd_client):
    import torch.nn.functional as F

    head, steps, _ = run_tiny(sd_client, **LAYERS_RUN)
    model = sd_client.get("/api/models").json()["diffusion"][0]
    side = model["latent_size"]
    for k in range(3):
        r = sd_client.post("/api/diffusion/layers", json={**LAYERS_RUN, "step": k})
        assert r.status_code == 200, r.text
        out = r.json()
        assert list(out["layers"]) == model["cross_attention_layers"]
        T = len(out["tokens"])
        assert out["tokens"] == head["tokens"][: head["n_tokens"]] + ["<|endoftext|>"] * (T - head["n_tokens"])
        maps = {n: f16(a) for n, a in out["layers"].items()}
        assert max(m.shape[1] for m in maps.values()) == side * side
        grids = []
        for name, m in maps.items():
            heads, pixels, tokens = m.shape
            assert tokens == T and heads >= 1 and math.isqrt(pixels) ** 2 == pixels, (name, m.shape)
            np.testing.assert_allclose(m.sum(-1), 1.0, atol=3e-3)
            g = math.isqrt(pixels)
            grid = torch.from_numpy(m.mean(0).T.reshape(T, g, g).copy())[None]
            if g != side:
                grid = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False)
            grids.append(grid[0].numpy())
        # the step's word maps (DAAM: heads, then layers, averaged) with the padding's share summed
        mean = np.mean(grids, axis=0)
        n = head["n_tokens"]
        want = np.concatenate([mean[:n], mean[n:].sum(0, keepdims=True)]) if n < T else mean
        words = f16(steps[k]["words"])
        assert words.shape == want.shape
        np.testing.assert_allclose(words, want, atol=3e-3)
        np.testing.assert_allclose(words.sum(0), 1.0, atol=3e-3)


def test_layers_errors(sd_client):
    run_tiny(sd_client, **LAYERS_RUN)
    assert_error(sd_client.post("/api/diffusion/layers", json={**LAYERS_RUN, "step": 3}), 422, "out of range", "0–2")
    assert_error(sd_client.post("/api/diffusion/layers", json={**LAYERS_RUN, "step": -1}), 422, "step")
    never = {**LAYERS_RUN, "seed": 4_000_000_000}
    assert_error(sd_client.post("/api/diffusion/layers", json={**never, "step": 0}), 404, "not in the cache")
    assert_error(sd_client.post("/api/diffusion/layers", json={**LAYERS_RUN, "step": 0, "scheduler": "x"}), 422, "scheduler")


def test_paths_are_the_principal_components_of_the_streamed_latents(sd_client):
    runs = [{"prompt": PROMPT, "seed": s, "steps": 4, "guidance": 4.0, "scheduler": "ddim"} for s in (31, 32)]
    latents = [np.stack([f16(s["latent"]).ravel() for s in run_tiny(sd_client, **r)[1]]) for r in runs]
    assert [len(x) for x in latents] == [4, 4]
    r = sd_client.post("/api/diffusion/paths", json={"runs": runs})
    assert r.status_code == 200, r.text
    out = r.json()
    pts = np.array(out["points"])
    assert pts.shape == (2, 4, 2)
    assert out["labels"] == ["seed 31, guidance 4", "seed 32, guidance 4"]
    # independent PCA of what the stream carried
    x = np.concatenate(latents).astype(np.float64)
    x -= x.mean(0)
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    mine = x @ vt[:2].T
    got = pts.reshape(8, 2)
    scale = np.abs(mine).max()
    # each component up to its sign
    for k in range(2):
        sign = 1.0 if got[:, k] @ mine[:, k] >= 0 else -1.0
        np.testing.assert_allclose(got[:, k], sign * mine[:, k], atol=1e-2 * scale)
    # and, whatever the signs, the distances between points on the map
    d_got = np.linalg.norm(got[:, None] - got[None], axis=-1)
    d_mine = np.linalg.norm(mine[:, None] - mine[None], axis=-1)
    np.testing.assert_allclose(d_got, d_mine, atol=1e-2 * scale)
    share = sv**2 / (sv**2).sum()
    np.testing.assert_allclose(out["explained"], share[:2], atol=1e-3)
    # a run not in the cache
    missing = {"runs": [runs[0], {**runs[1], "seed": 33}]}
    assert_error(sd_client.post("/api/diffusion/paths", json=missing), 404, "not in the cache")
    assert_error(sd_client.post("/api/diffusion/paths", json={"runs": []}), 422, "runs")


def alphas_cumprod(config: dict) -> np.ndarray:
    """ᾱ of SD's 'scaled_linear' schedule, from the scheduler's config alone."""
    assert config["beta_schedule"] == "scaled_linear"
    n = config["num_train_timesteps"]
    betas = np.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, n, dtype=np.float64) ** 2
    return np.cumprod(1 - betas)


def test_forward_process(sd_client, tiny_pipe):
    vae = tiny_pipe.vae
    ab = alphas_cumprod(dict(tiny_pipe.scheduler.config))
    out = {}
    for t in (0, 500, 999):
        r = sd_client.post("/api/diffusion/forward", json={"t": t, "scene": 3, "seed": 9})
        assert r.status_code == 200, r.text
        out[t] = r.json()
        assert out[t]["t"] == t
        assert out[t]["alpha_bar"] == pytest.approx(ab[t], rel=1e-4)
        assert out[t]["alpha_bar"] == pytest.approx(float(tiny_pipe.scheduler.alphas_cumprod[t]), rel=1e-6)
    z = f16(out[0]["latent"])
    # the clean latent is the VAE's encoding of the clean picture the answer shows
    img = png(out[0]["image"])
    with torch.no_grad():
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
        mine = (vae.encode(x).latent_dist.mean * vae.config.scaling_factor)[0].numpy()
    np.testing.assert_allclose(z, mine, atol=2e-3 + 2e-3 * np.abs(mine).max())
    eps = {}
    for t, o in out.items():
        np.testing.assert_array_equal(f16(o["latent"]), z)  # same scene, same clean latent
        zt = f16(o["noisy_latent"])
        eps[t] = (zt - math.sqrt(ab[t]) * z) / math.sqrt(1 - ab[t])  # x_t = √ᾱ·z + √(1−ᾱ)·ε
        assert abs(eps[t].mean()) < 0.2 and 0.85 < eps[t].std() < 1.15, (t, eps[t].mean(), eps[t].std())
    # the seed fixes ε: the same noise at every t
    for t in (500, 999):
        assert np.corrcoef(eps[0].ravel(), eps[t].ravel())[0, 1] > 0.95
    # t = 0: ᾱ ≈ 1, so the noisy latent is the clean one up to the first step's sliver of noise
    assert ab[0] > 0.999
    z0 = f16(out[0]["noisy_latent"])
    assert np.sqrt(np.mean((z0 - z) ** 2)) == pytest.approx(math.sqrt(1 - ab[0]), rel=0.2)
    # t = 999: almost all noise
    assert np.corrcoef(f16(out[999]["noisy_latent"]).ravel(), eps[0].ravel())[0, 1] > 0.99
    for t in (-1, 1000):
        assert_error(sd_client.post("/api/diffusion/forward", json={"t": t}), 422, "t")
