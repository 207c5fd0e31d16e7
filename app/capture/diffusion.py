"""Capture for Stable Diffusion 1.x pipelines (any `StableDiffusionPipeline`).

Attention is recorded the way diffusers means it to be changed: by attention processors
(`unet.set_attn_processor`), not by monkey-patching. `RecordingProcessor` computes the softmax
explicitly where it must record it (cross-attention: tokens are few, so the [pixels, tokens] maps
are cheap) and uses fused SDPA everywhere else, because recording self-attention costs far more
(MODEL-NOTES: 6× per step at 64 px). The training recipe uses the same processor for its grounding
loss, so what is trained is exactly what the page shows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from app.capture.hooks import hooked


class RecordingProcessor:
    """Records attention probabilities into `sink[name]` as [batch, heads, queries, keys].

    cross: record cross-attention (queries = latent pixels, keys = prompt tokens);
    self_attn: also record self-attention (on request only: [pixels, pixels] per head);
    detach: False keeps the graph (training's grounding loss), True for capture.
    """

    def __init__(self, name: str, sink: dict[str, list[torch.Tensor]], *, cross: bool = True,
                 self_attn: bool = False, detach: bool = True):
        self.name, self.sink, self.cross, self.self_attn, self.detach = name, sink, cross, self_attn, detach
        self.fused = AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        is_cross = encoder_hidden_states is not None
        if not (self.cross if is_cross else self.self_attn):
            return self.fused(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, _, _ = hidden_states.shape
        context = encoder_hidden_states if is_cross else hidden_states
        attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if is_cross and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key, value = attn.to_k(context), attn.to_v(context)
        query, key, value = (attn.head_to_batch_dim(t) for t in (query, key, value))
        probs = attn.get_attention_scores(query, key, attention_mask)  # [batch*heads, queries, keys]
        rec = probs.view(batch, attn.heads, probs.shape[1], probs.shape[2])
        self.sink.setdefault(self.name, []).append(rec.detach() if self.detach else rec)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def attention_layers(unet, cross: bool = True) -> list[str]:
    """Names of the UNet's cross-attention (attn2) or self-attention (attn1) layers, in forward order."""
    kind = "attn2" if cross else "attn1"
    return [n.removesuffix(".processor") for n in unet.attn_processors if n.endswith(f"{kind}.processor")]


@contextmanager
def recording(unet, *, self_attn_layer: str | None = None, detach: bool = True) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Install recording processors on every attention layer (cross-attention recorded everywhere,
    self-attention only for `self_attn_layer`); restore the previous processors on exit, whether
    the run finished or raised (the same promise as hooks.hooked)."""
    previous = unet.attn_processors
    sink: dict[str, list[torch.Tensor]] = {}
    unet.set_attn_processor({
        name: RecordingProcessor(name.removesuffix(".processor"), sink, detach=detach,
                                 self_attn=name.removesuffix(".processor") == self_attn_layer)
        for name in previous
    })
    try:
        yield sink
    finally:
        unet.set_attn_processor(previous)


# ---------------------------------------------------------------------------------------------
# A whole run: every denoising step, recorded while the pipeline itself runs.

SCHEDULERS = {
    "default": None,  # the pipeline's own scheduler, as it was saved
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "dpm_multistep": "DPMSolverMultistepScheduler",
    "ddpm": "DDPMScheduler",
}


class Cancelled(Exception):
    """The page that asked for the run went away: stop at the next step."""


@dataclass(frozen=True)
class Request:
    prompt: str
    negative: str = ""
    seed: int = 0
    steps: int = 20
    guidance: float = 5.0
    scheduler: str = "default"


@dataclass
class Step:
    index: int
    timestep: float
    latent: np.ndarray  # [4, h, w] the latent after this step (x_{t-1}); the last one is the final image's
    model_input: np.ndarray  # [4, h, w] what the UNet saw (x_t, scaled by the scheduler)
    noise_cond: np.ndarray  # [4, h, w] ε predicted with the prompt
    noise_uncond: np.ndarray  # [4, h, w] ... with the negative (empty) prompt; = noise_cond without guidance
    noise: np.ndarray  # [4, h, w] the guided mix the scheduler used
    x0: np.ndarray  # [4, h, w] predicted clean latent, (x_t − √(1−ᾱ)·ε) / √ᾱ
    preview: np.ndarray  # [h, w, 3] uint8 fast preview of `latent` ([H, W, 3] VAE decode with previews="vae")
    preview_x0: np.ndarray  # ... of `x0`
    words: np.ndarray  # [T, h, w] cross-attention per prompt token: mean of layers and heads, at the latent size
    layers: dict[str, np.ndarray] = field(default_factory=dict)  # raw per layer [heads, h_l·w_l, T] float16
    self_attn: np.ndarray | None = None  # [heads, h·w, h·w] of the layer asked for, on request only

    @property
    def nbytes(self) -> int:
        arrays = [self.latent, self.model_input, self.noise_cond, self.noise_uncond, self.noise, self.x0,
                  self.preview, self.preview_x0, self.words, *self.layers.values()]
        return sum(a.nbytes for a in arrays) + (self.self_attn.nbytes if self.self_attn is not None else 0)


@dataclass
class Trace:
    model: str
    request: Request
    tokens: list[str]  # the prompt's tokens as the text encoder sees them: start, words, end, padding
    n_tokens: int  # start + words + end; the rest is padding
    truncated: bool  # the prompt was longer than the tokenizer's limit
    image_size: int
    latent_size: int
    scaling_factor: float
    steps: list[Step] = field(default_factory=list)
    image: np.ndarray | None = None  # [H, W, 3] uint8, the pipeline's own output

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.steps) + (self.image.nbytes if self.image is not None else 0)


def make_scheduler(pipe, name: str):
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    if SCHEDULERS[name] is None:
        return type(pipe.scheduler).from_config(pipe.scheduler.config)
    extra = {}
    if name == "ddim" and "clip_sample" not in pipe.scheduler.config:
        # DDIM's defaults clip x̂₀ to [-1, 1], which is right for pixels and wrong for latents (pitfall 5)
        extra = {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}
    if name == "pndm" and "skip_prk_steps" not in pipe.scheduler.config:
        # PLMS as SD 1.x ships PNDM: the Runge-Kutta warm-up fails below 4 steps and triples the first ones
        extra = {"skip_prk_steps": True}
    return getattr(diffusers, SCHEDULERS[name]).from_config(pipe.scheduler.config, **extra)


def tokens_of(tokenizer, prompt: str) -> tuple[list[str], int, bool]:
    """The tokens the text encoder sees (as readable words), how many are not padding, and whether
    the prompt was cut to the tokenizer's limit."""
    limit = tokenizer.model_max_length
    full = tokenizer(prompt, truncation=False)["input_ids"]
    ids = tokenizer(prompt, padding="max_length", max_length=limit, truncation=True)["input_ids"]
    words = [tokenizer.convert_tokens_to_string([t]).replace("</w>", "").strip() for t in tokenizer.convert_ids_to_tokens(ids)]
    n = min(len(full), limit)
    return words, n, len(full) > limit


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """VAE output in [-1, 1], [n, 3, H, W] -> uint8 [n, H, W, 3], as the pipeline's postprocess does."""
    return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).mul(255).round().to(torch.uint8).cpu().numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 [n, H, W, 3] -> [n, 3, H, W] in [-1, 1], what the VAE encodes (to_uint8's inverse)."""
    # torch.tensor copies: the array may be read-only (decoded from a cached PNG), from_numpy would warn
    return torch.tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def alpha_bar(scheduler, t) -> float:
    """ᾱ_t of the training schedule at (possibly fractional) timestep t, for x̂₀."""
    ac = scheduler.alphas_cumprod
    t = float(t)
    lo, hi = int(math.floor(t)), min(int(math.ceil(t)), len(ac) - 1)
    w = t - lo
    return float(ac[lo] * (1 - w) + ac[hi] * w)


def preview_map(dm) -> np.ndarray:
    """A linear map from a latent pixel (4 channels and a 1) to RGB in [-1, 1], [5, 3]: the cheap live
    preview of every step (as the latent-to-RGB previews of A1111 and ComfyUI), fitted once per model
    by least squares on a few drawn scenes encoded by its own VAE. The exact VAE decode of a step is
    made on demand (decode()), so streaming a step costs about what the pipeline's own step does."""
    if getattr(dm, "preview_map", None) is not None:
        return dm.preview_map
    import random

    from app.shapes import random_scene, render

    vae, side = dm.pipe.vae, dm.image_size
    n = 8 if side <= 128 else 2  # an SD 1.5 encode at 512 px is slow on a CPU; two scenes fit 15 numbers
    imgs = np.stack([np.asarray(render(random_scene(random.Random(k), n_objects=1 + k % 2), side)[0]) for k in range(n)])
    x = from_uint8(imgs)
    with torch.no_grad():
        z = vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mean.float().cpu()
    target = F.adaptive_avg_pool2d(x, z.shape[-2:])  # the picture at the latent's resolution
    a = torch.cat([z.permute(0, 2, 3, 1).reshape(-1, 4), torch.ones(z.numel() // 4, 1)], 1)
    b = target.permute(0, 2, 3, 1).reshape(-1, 3)
    dm.preview_map = torch.linalg.lstsq(a.double(), b.double()).solution.float().numpy()
    return dm.preview_map


def fast_preview(latents: torch.Tensor, m: np.ndarray, scaling_factor: float) -> np.ndarray:
    """Scaled latents [n, 4, h, w] -> uint8 [n, h, w, 3] through preview_map()'s linear map."""
    z = latents.float().cpu() / scaling_factor
    rgb = torch.einsum("nchw,cd->ndhw", z, torch.from_numpy(m[:4])) + torch.from_numpy(m[4]).view(1, 3, 1, 1)
    return to_uint8(rgb)


@torch.no_grad()
def decode(dm, latent: np.ndarray, scaling_factor: float) -> np.ndarray:
    """The exact picture of a recorded latent [4, h, w] (x_t or x̂₀): the VAE decode, uint8 [H, W, 3]."""
    vae = dm.pipe.vae
    z = torch.from_numpy(np.ascontiguousarray(latent))[None].to(vae.device, vae.dtype) / scaling_factor
    return to_uint8(vae.decode(z).sample.float())[0]


def word_maps(layer_maps: list[torch.Tensor], side: int) -> torch.Tensor:
    """DAAM's aggregation: each layer's [batch, heads, pixels, T] -> mean of heads -> upsampled to
    side × side -> mean of layers. Returns [batch, T, side, side]; each pixel still sums to 1 over T."""
    acc = None
    for m in layer_maps:
        b, _, p, t = m.shape
        s = int(math.isqrt(p))
        grid = m.float().mean(1).transpose(1, 2).reshape(b, t, s, s)
        up = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False) if s != side else grid
        acc = up if acc is None else acc + up
    return acc / len(layer_maps)


@torch.no_grad()
def run(dm, req: Request, *, on_step=None, cancelled=lambda: False, self_attn_layer: str | None = None,
        previews: str = "fast", keep_layers: bool = True) -> Trace:
    """Run the pipeline as it is, recording every step. on_step(trace, step) is called as each step
    is done (for streaming); cancelled() is polled once per step and stops the run with Cancelled.
    previews: "fast" (preview_map's linear map, at the latent's size), "vae" (two VAE decodes a step,
    as costly as a step at these sizes) or "none"."""
    if previews not in ("fast", "vae", "none"):
        raise ValueError(f"previews must be fast, vae or none, not {previews!r}")
    pipe = dm.pipe
    scheduler = make_scheduler(pipe, req.scheduler)
    extra = {"requires_safety_checker": False} if "requires_safety_checker" in pipe.config else {}  # no warning per run
    run_pipe = type(pipe)(**{**pipe.components, "scheduler": scheduler}, **extra)  # shares the modules, not the scheduler state
    run_pipe.set_progress_bar_config(disable=True)
    unet, vae = pipe.unet, pipe.vae
    tokens, n_tokens, truncated = tokens_of(pipe.tokenizer, req.prompt)
    latent_size = unet.config.sample_size
    trace = Trace(model=dm.name, request=req, tokens=tokens, n_tokens=n_tokens, truncated=truncated,
                  image_size=latent_size * pipe.vae_scale_factor, latent_size=latent_size,
                  scaling_factor=float(vae.config.scaling_factor))
    cross_layers = attention_layers(unet)
    if self_attn_layer is not None and self_attn_layer not in attention_layers(unet, cross=False):
        raise ValueError(f"no self-attention layer {self_attn_layer!r}")
    pmap = preview_map(dm) if previews == "fast" else None
    guided = req.guidance > 1.0  # the pipeline skips the unconditional branch at guidance <= 1
    pending: dict[str, torch.Tensor] = {}

    def unet_out(module, args, kwargs, output):
        pending["input"], pending["t"] = args[0] if args else kwargs["sample"], args[1] if len(args) > 1 else kwargs["timestep"]
        pending["noise"] = output[0] if isinstance(output, tuple) else output.sample

    def step_end(p, i, t, kw):
        if cancelled():
            raise Cancelled()
        x_in, eps = pending["input"].float(), pending["noise"].float()
        if guided:
            (in_u, in_c), (eps_u, eps_c) = x_in.chunk(2), eps.chunk(2)
            eps_g = eps_u + req.guidance * (eps_c - eps_u)
        else:
            in_c, eps_u, eps_c = x_in, eps, eps
            eps_g = eps
        ab = alpha_bar(scheduler, t)
        x0 = (in_c - math.sqrt(1 - ab) * eps_g) / math.sqrt(ab)
        latent = kw["latents"].float()
        maps = {name: sink[name][-1][-1:].float() for name in cross_layers if sink.get(name)}
        words = word_maps(list(maps.values()), latent_size)[0] if maps else torch.zeros(len(tokens), latent_size, latent_size)
        if previews == "fast":
            dec = fast_preview(torch.cat([latent, x0]), pmap, trace.scaling_factor)
        elif previews == "vae":
            dec = to_uint8(vae.decode(torch.cat([latent, x0]) / vae.config.scaling_factor).sample)
        else:
            dec = np.zeros((2, latent_size, latent_size, 3), np.uint8)
        sa = None
        if self_attn_layer is not None:
            sa = sink[self_attn_layer][-1][-1].half().numpy() if sink.get(self_attn_layer) else None
        step = Step(
            index=i, timestep=float(t), latent=latent[0].numpy(), model_input=in_c[-1].numpy(),
            noise_cond=eps_c[-1].numpy(), noise_uncond=eps_u[-1].numpy(), noise=eps_g[-1].numpy(), x0=x0[-1].numpy(),
            preview=dec[0], preview_x0=dec[1], words=words.numpy(),
            layers={n: m[0].half().numpy() for n, m in maps.items()} if keep_layers else {}, self_attn=sa,
        )
        for v in sink.values():
            v.clear()
        trace.steps.append(step)
        if on_step is not None:
            on_step(trace, step)
        return {}

    generator = torch.Generator("cpu").manual_seed(req.seed)
    with hooked([(unet, "forward_kwargs", unet_out)]), recording(unet, self_attn_layer=self_attn_layer) as sink:
        out = run_pipe(
            req.prompt, negative_prompt=req.negative or None, num_inference_steps=req.steps,
            guidance_scale=req.guidance, generator=generator, output_type="np",
            callback_on_step_end=step_end,
        )
    trace.image = (np.asarray(out.images[0]) * 255).round().astype(np.uint8)
    return trace
