"""Shared fixtures: the shipped model's app, a tiny random GPT-2 saved like a Hub checkpoint, and
the real server started on a free port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import ROOT, Settings

SHIPPED_GPT2 = ROOT / "models" / "gpt2-tinystories"
SHIPPED_SD = ROOT / "models" / "sd-shapes"


def build_tiny_sd(out: Path) -> Path:
    """A random Stable Diffusion 1.x pipeline, as small as it gets (32 px, 16 × 16 latents, PNDM as
    SD 1.x ships), saved as safetensors: loaded through the same code as a Hub id."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from app.training.sd import Recipe, build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer(Recipe(max_length=12), out / "tok-build")
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32), norm_num_groups=8, latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )
    te = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=12, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    ))
    sched = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out / "pipe", safe_serialization=True)
    return out / "pipe"


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def sd_dir(tiny_sd_dir) -> Path:
    """The shipped pipeline once it exists, else the tiny random one (the tests check mechanics, not looks)."""
    return SHIPPED_SD if (SHIPPED_SD / "model_index.json").exists() else tiny_sd_dir


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    """A 2-layer random GPT-2 with its own tokenizer, saved as safetensors: the same folder layout
    a Hub id downloads to, so it goes through exactly the loading code `gpt2` would."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from app.training.gpt2 import train_tokenizer

    out = tmp_path_factory.mktemp("tiny-gpt2")
    tok = train_tokenizer(["the cat sat on the mat", "a dog ran to the park and the cat ran too"] * 20, 300)
    tok.save_pretrained(out)
    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=32, n_embd=24, n_layer=2, n_head=3,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
    )
    GPT2LMHeadModel(cfg).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def client():
    with TestClient(create_app(Settings(gpt2=str(SHIPPED_GPT2), sd=""))) as c:
        yield c


@pytest.fixture(scope="session")
def tiny_client(tiny_gpt2_dir):
    with TestClient(create_app(Settings(gpt2=str(tiny_gpt2_dir), sd=""))) as c:
        yield c


@pytest.fixture(scope="session")
def sd_client(tiny_gpt2_dir, tiny_sd_dir):
    with TestClient(create_app(Settings(gpt2=str(tiny_gpt2_dir), sd=str(tiny_sd_dir)))) as c:
        yield c


def build_tiny_vit(out: Path) -> Path:
    """A 2-layer random ViT at another size than the shipped one (24 px, 6 px patches, 3 heads) with
    its image processor, saved as safetensors: the folder a Hub id downloads to."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from app.training.vit import Recipe, image_processor

    torch.manual_seed(0)
    cfg = ViTConfig(
        image_size=24, patch_size=6, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=48,
        num_labels=3, id2label={0: "zero", 1: "<b>one</b>", 2: "two"}, label2id={"zero": 0, "<b>one</b>": 1, "two": 2},
    )
    ViTForImageClassification(cfg).save_pretrained(out, safe_serialization=True)
    image_processor(Recipe(image_size=24)).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory) -> Path:
    return build_tiny_vit(tmp_path_factory.mktemp("tiny-vit"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, seconds: float, proc: subprocess.Popen | None = None) -> bool:
    """Poll /healthz until it answers 200 (True), the time is up or proc has exited (False)."""
    deadline = time.time() + seconds
    while time.time() < deadline and (proc is None or proc.poll() is None):
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            time.sleep(0.2)
    return False


@contextmanager
def thread_server(settings: Settings):
    """The app served by uvicorn in a thread of this process: real HTTP (a stream can be left
    mid-way), with whatever settings the test needs."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    if not wait_healthy(base, 120):
        server.should_exit = True
        raise RuntimeError("in-process server did not start")
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="session")
def live_server(sd_dir):
    """The real server in its own process, as `glassbox serve` runs it."""
    port = free_port()
    env = {**os.environ, "GLASSBOX_PORT": str(port), "GLASSBOX_GPT2": str(SHIPPED_GPT2), "GLASSBOX_SD": str(sd_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    if not wait_healthy(base, 90, proc):
        proc.kill()
        raise RuntimeError(f"server did not start within 90 s (exit code {proc.poll()})")
    yield base
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextmanager
def redis_server():
    """A real redis-server on a free loopback port, keeping nothing on disk; stopped at the end.
    Yields its URL without a database number."""
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("CI"):  # CI must run the many-process tests, never skip them
            pytest.fail("redis-server is not installed: ./run.sh test installs Debian's redis-server")
        pytest.skip("redis-server is not installed (./run.sh test installs it)")
    import redis

    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while True:
            try:
                redis.Redis(port=port, socket_connect_timeout=1).ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        yield url


@contextmanager
def server_process(env: dict, args: tuple = (), timeout: float = 180):
    """`python -m app serve *args` in its own process (and process group, for --workers) with
    `env` over this one's; yields its base URL once /healthz answers, stops the group at the end."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", *args], cwd=ROOT, start_new_session=True,
                            env={**os.environ, **env, "GLASSBOX_PORT": str(port)})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.time() > deadline:
                    raise RuntimeError(f"server did not start within {timeout:.0f} s") from None
                time.sleep(0.3)
        yield base
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)  # the server and any workers it started
            except ProcessLookupError:
                break
            try:
                proc.wait(20)
                break
            except subprocess.TimeoutExpired:
                continue
