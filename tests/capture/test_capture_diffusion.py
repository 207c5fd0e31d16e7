"""Diffusion capture against independent computations: the scheduler's own step, the VAE's own
decode, the pipeline's own image, softmax rows. Runs on a tiny random SD 1.x pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.capture import diffusion as capture
from app.capture.hooks import hook_count
from app.registry import load_sd

PROMPT = "a red star at the top left"


@pytest.fixture(scope="module")
def dm(tiny_sd_dir):
    return load_sd(str(tiny_sd_dir), "cpu")


@pytest.fixture(scope="module")
def ddim_trace(dm):
    return capture.run(dm, capture.Request(PROMPT, seed=3, steps=6, guidance=4.0, scheduler="ddim"))


def test_one_record_per_step_asked(dm, ddim_trace):
    assert len(ddim_trace.steps) == 6
    assert [s.index for s in ddim_trace.steps] == list(range(6))
    ts = [s.timestep for s in ddim_trace.steps]
    assert ts == sorted(ts, reverse=True)  # noise to image
    short = capture.run(dm, capture.Request(PROMPT, steps=2, scheduler="euler"))
    assert len(short.steps) == 2


def test_last_latent_decodes_to_the_pipelines_image(dm, ddim_trace):
    vae = dm.pipe.vae
    with torch.no_grad():
        own = vae.decode(torch.from_numpy(ddim_trace.steps[-1].latent)[None] / vae.config.scaling_factor).sample
    decoded = capture.to_uint8(own)[0].astype(int)
    assert np.abs(decoded - ddim_trace.image.astype(int)).max() <= 1


def test_capture_on_or_off_gives_the_same_image(dm, ddim_trace):
    from diffusers import DDIMScheduler

    pipe = type(dm.pipe)(**{**dm.pipe.components, "scheduler": capture.make_scheduler(dm.pipe, "ddim")})
    assert isinstance(pipe.scheduler, DDIMScheduler)
    out = pipe(PROMPT, num_inference_steps=6, guidance_scale=4.0, generator=torch.Generator().manual_seed(3), output_type="np")
    plain = (out.images[0] * 255).round().astype(int)
    assert np.abs(plain - ddim_trace.image.astype(int)).max() <= 1


def test_x0_and_next_latent_match_the_schedulers_own_step(dm, ddim_trace):
    sched = capture.make_scheduler(dm.pipe, "ddim")
    sched.set_timesteps(6)
    for s, t in zip(ddim_trace.steps, sched.timesteps):
        out = sched.step(torch.from_numpy(s.noise)[None], t, torch.from_numpy(s.model_input)[None])
        np.testing.assert_allclose(s.x0, out.pred_original_sample[0].numpy(), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(s.latent, out.prev_sample[0].numpy(), atol=1e-4, rtol=1e-4)


def test_guided_noise_is_the_guidance_mix(ddim_trace):
    for s in ddim_trace.steps:
        np.testing.assert_allclose(s.noise, s.noise_uncond + 4.0 * (s.noise_cond - s.noise_uncond), atol=1e-4)
    assert not np.allclose(ddim_trace.steps[0].noise_cond, ddim_trace.steps[0].noise_uncond)


def test_cross_attention_rows_sum_to_one_over_tokens(dm, ddim_trace):
    layers = capture.attention_layers(dm.pipe.unet)
    for s in ddim_trace.steps:
        assert set(s.layers) == set(layers)
        for m in s.layers.values():
            assert m.shape[-1] == len(ddim_trace.tokens)
            np.testing.assert_allclose(m.astype(np.float32).sum(-1), 1.0, atol=2e-3)
        np.testing.assert_allclose(s.words.sum(0), 1.0, atol=1e-4)
        assert s.words.shape == (len(ddim_trace.tokens), ddim_trace.latent_size, ddim_trace.latent_size)


def test_word_maps_are_the_mean_of_the_upsampled_layer_maps(ddim_trace):
    """DAAM's aggregation, recomputed with numpy from the raw per-layer maps."""
    s = ddim_trace.steps[2]
    side = ddim_trace.latent_size
    acc = []
    for m in s.layers.values():
        heads, pixels, T = m.shape
        g = int(round(pixels**0.5))
        grid = m.astype(np.float32).mean(0).T.reshape(T, g, g)
        if g != side:
            up = torch.nn.functional.interpolate(torch.from_numpy(grid)[None], size=(side, side), mode="bilinear", align_corners=False)[0].numpy()
        else:
            up = grid
        acc.append(up)
    np.testing.assert_allclose(np.mean(acc, axis=0), s.words, atol=2e-3)


def test_processors_and_hooks_are_restored_even_when_cancelled(dm):
    before = {k: type(v) for k, v in dm.pipe.unet.attn_processors.items()}
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(capture.Cancelled):
        capture.run(dm, capture.Request(PROMPT, steps=10), cancelled=cancelled)
    assert {k: type(v) for k, v in dm.pipe.unet.attn_processors.items()} == before
    assert hook_count(dm.pipe.unet) == 0


def test_self_attention_only_on_request(dm, ddim_trace):
    assert all(s.self_attn is None for s in ddim_trace.steps)
    layer = capture.attention_layers(dm.pipe.unet, cross=False)[0]
    t = capture.run(dm, capture.Request(PROMPT, steps=2), self_attn_layer=layer)
    sa = t.steps[0].self_attn
    assert sa.shape[-1] == sa.shape[-2] == ddim_trace.latent_size**2
    np.testing.assert_allclose(sa.astype(np.float32).sum(-1), 1.0, atol=2e-3)
    with pytest.raises(ValueError):
        capture.run(dm, capture.Request(PROMPT, steps=1), self_attn_layer="no.such.layer")


def test_long_prompt_is_truncated_and_says_so(dm):
    tokens, n, truncated = capture.tokens_of(dm.pipe.tokenizer, "a red star " * 20)
    assert truncated and n == len(tokens) == dm.pipe.tokenizer.model_max_length
    tokens, n, truncated = capture.tokens_of(dm.pipe.tokenizer, PROMPT)
    assert not truncated and tokens[:n] == ["<|startoftext|>", "a", "red", "star", "at", "the", "top", "left", "<|endoftext|>"]


def test_no_guidance_runs_one_branch(dm):
    t = capture.run(dm, capture.Request(PROMPT, steps=2, guidance=1.0))
    np.testing.assert_array_equal(t.steps[0].noise_cond, t.steps[0].noise_uncond)


def test_unknown_scheduler(dm):
    with pytest.raises(ValueError, match="unknown scheduler"):
        capture.make_scheduler(dm.pipe, "bogus")


def test_previews_fast_by_the_fitted_map_and_exact_by_the_vae(dm):
    """Fast previews are the fitted linear map applied to each latent pixel (recomputed here in numpy);
    "vae" previews are the VAE decode of the step's latent, which decode() also gives on demand."""
    req = capture.Request("a red star", seed=5, steps=2, scheduler="ddim")
    fast = capture.run(dm, req)
    m = capture.preview_map(dm)
    assert m.shape == (5, 3)
    for s in fast.steps:
        z = s.latent.astype(np.float64) / fast.scaling_factor  # [4, h, w]
        rgb = np.einsum("chw,cd->hwd", z, m[:4]) + m[4]
        want = np.clip(rgb / 2 + 0.5, 0, 1) * 255
        assert s.preview.shape == (fast.latent_size, fast.latent_size, 3)
        assert np.abs(s.preview.astype(float) - want).max() <= 1.01
    exact = capture.run(dm, req, previews="vae")
    for s in exact.steps:
        assert s.preview.shape == (exact.image_size, exact.image_size, 3)
        assert np.abs(s.preview.astype(int) - capture.decode(dm, s.latent, exact.scaling_factor).astype(int)).max() <= 1
        assert np.abs(s.preview_x0.astype(int) - capture.decode(dm, s.x0, exact.scaling_factor).astype(int)).max() <= 1
    np.testing.assert_array_equal(exact.image, fast.image)  # previews never change the run
    with pytest.raises(ValueError, match="previews"):
        capture.run(dm, req, previews="pretty")
