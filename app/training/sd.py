"""Recipe for the shipped text-to-image model, models/sd-shapes/ (Stable Diffusion 1.x, only small).

    glassbox train sd           # each stage resumes from runs/sd/

Stages: 1. draw captioned scenes (app/shapes.py) once, one or two objects each, with the object
masks; 2. a word-level CLIP-format tokenizer; 3. the VAE (AutoencoderKL, 64 px -> 4 × 16 × 16);
4. encode every image once; 5. text encoder + UNet together, with a grounding loss; 6. save the
pipeline folder (EMA weights). The bar is measured by benchmarks/sd_bar.py, which writes the card.

What matters (MODEL-NOTES): CLIP's text encoder is causal, so without help the UNet reads the whole
prompt from the end token and the per-word maps stay flat. A grounding loss (as in TokenCompose)
pulls each content word's cross-attention into its own object's mask, and two-object scenes make
the words tell objects apart. The architecture stays plain SD 1.x; only the training changes.
(shape, colour, position) triples are held out of training so the bar is measured on unseen
combinations.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from app.capture.diffusion import from_uint8
from app.shapes import COLOURS, POSITIONS, SHAPES, SIZES, Shape, random_scene, render
from app.training.schedule import warmup_cosine

log = logging.getLogger(__name__)
FILLER = {"a", "at", "the", "in", "and"}  # words not tied to one object's pixels


@dataclass
class Recipe:
    image_size: int = 64
    n_train: int = 40_000
    two_objects: float = 0.4  # share of scenes with two objects
    drop_size: float = 0.25  # share of object phrases without the size word
    drop_position: float = 0.25  # ... without "at the top left"
    max_length: int = 20  # tokens, start and end included: the longest two-object caption is 19
    seed: int = 11
    heldout_share: float = 0.1  # of (shape, colour, position) triples, never drawn in training
    # VAE
    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_steps: int = 1500
    vae_batch: int = 32
    vae_crop: int = 32  # convolutional: train on crops, 4× cheaper than whole 64 px images
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    # text encoder
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    text_ffn: int = 256
    # UNet
    unet_channels: tuple[int, ...] = (32, 64)
    unet_heads: int = 2
    steps: int = 4000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    ema: float = 0.998
    caption_dropout: float = 0.1
    min_snr: float = 5.0
    ground_weight: float = 0.1
    # Then a detail stage: the same training, most timesteps drawn below detail_t_max, where the
    # outline of a shape is decided (90 % of draws there instead of 60 %: the layout is learnt by then).
    detail_steps: int = 4000
    detail_t_max: int = 600
    detail_share: float = 0.75  # of each batch; the rest uniform over all timesteps, to keep the layout
    detail_lr: float = 1e-3


def heldout_triple(shape: str, colour: str, position: str, r: Recipe) -> bool:
    """Deterministic ~heldout_share of all (shape, colour, position) triples."""
    return zlib.crc32(f"{shape}|{colour}|{position}".encode()) % 1000 < r.heldout_share * 1000


def heldout_triples(r: Recipe) -> list[tuple[str, str, str]]:
    return [(s, c, p) for s in SHAPES for c in COLOURS for p in POSITIONS.values() if heldout_triple(s, c, p, r)]


def phrase(o: Shape, *, size: bool = True, position: bool = True) -> list[str]:
    words = ["a"] + ([o.size] if size else []) + [o.colour, o.shape]
    if position:
        words += (["in", "the", "centre"] if o.position == "centre" else ["at", "the", *o.position.split()])
    return words


def caption_words(objects: list[Shape], rng: random.Random, r: Recipe) -> tuple[list[str], list[int]]:
    """The caption as words, and for each word the object it names (-1: a filler word)."""
    words, owner = [], []
    for i, o in enumerate(objects):
        if i:
            words.append("and")
            owner.append(-1)
        w = phrase(o, size=rng.random() >= r.drop_size, position=rng.random() >= r.drop_position)
        words += w
        owner += [-1 if x in FILLER else i for x in w]
    return words, owner


def draw_set(n: int, seed: int, r: Recipe):
    """Images [n, H, W, 3] uint8, captions, per-token owner [n, max_length] int8 (-1: none) and object
    masks at latent resolution [n, 2, H/4, W/4] float16 (the share of each latent pixel covered)."""
    rng = random.Random(seed)
    lat = r.image_size // 4
    imgs = np.empty((n, r.image_size, r.image_size, 3), np.uint8)
    owners = np.full((n, r.max_length), -1, np.int8)
    masks = np.zeros((n, 2, lat, lat), np.float16)
    captions = []
    bar = tqdm(total=n, desc=f"drawing {n} captioned scenes", unit="img", leave=False)
    while len(captions) < n:
        scene = random_scene(rng, n_objects=2 if rng.random() < r.two_objects else 1)
        if any(heldout_triple(o.shape, o.colour, o.position, r) for o in scene.objects):
            continue
        i = len(captions)
        img, m = render(scene, r.image_size)
        words, owner = caption_words(scene.objects, rng, r)
        imgs[i] = np.asarray(img)
        owners[i, 1 : 1 + len(owner)] = owner  # token 0 is the start token
        masks[i, : len(m)] = m.reshape(len(m), lat, 4, lat, 4).mean(axis=(2, 4))
        captions.append(" ".join(words))
        bar.update()
    bar.close()
    return imgs, captions, owners, masks


def build_tokenizer(r: Recipe, out: Path):
    """A CLIP-format BPE whose vocabulary holds every caption word whole, so one word is one token
    and a word's cross-attention map is one column. Trained with CLIP's normaliser and
    pre-tokeniser (MODEL-NOTES, pitfall 4); any other text still tokenises, in pieces."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    words = ["a", "at", "the", "in", "and", *SIZES, *COLOURS, *SHAPES, "centre", "top", "bottom", "left", "right"]
    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<|startoftext|>", "<|endoftext|>"], end_of_word_suffix="</w>",
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator([" ".join(words)] * 50, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = model["vocab"]
    for ch in pre_tokenizers.ByteLevel.alphabet():  # every byte also ends a word, so nothing becomes unknown
        vocab.setdefault(ch + "</w>", len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    clip = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=r.max_length)
    for w in words:
        ids = clip(w, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, f"{w!r} is {len(ids)} tokens"
    clip.save_pretrained(out)
    return CLIPTokenizer.from_pretrained(out)


def build_vae(r: Recipe):
    from diffusers import AutoencoderKL

    n = len(r.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=r.vae_channels, sample_size=r.image_size,
    )


def build_text_encoder(r: Recipe, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=r.text_hidden, intermediate_size=r.text_ffn,
        num_hidden_layers=r.text_layers, num_attention_heads=r.text_heads, max_position_embeddings=r.max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))


def build_unet(r: Recipe):
    from diffusers import UNet2DConditionModel

    n = len(r.unet_channels)
    return UNet2DConditionModel(
        sample_size=r.image_size // 4, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=r.unet_channels, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D",) * n, up_block_types=("CrossAttnUpBlock2D",) * n,
        cross_attention_dim=r.text_hidden, attention_head_dim=r.unet_heads,  # diffusers' name for the head count
    )


def noise_scheduler():
    """DDPM's linear betas (1e-4…0.02), not SD's scaled-linear ones: those end at ᾱ_T ≈ 0.0047, so
    the noisiest training latents still show where the object's blob is and the model learns to put
    the object where that leak is instead of where the prompt says; from pure noise at inference it
    then ignored "top left" (position 32 % of held-out prompts; 98 % after the same 4000 steps with
    ᾱ_T ≈ 4e-5: Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed")."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


def train_vae(imgs: np.ndarray, r: Recipe, run_dir: Path):
    vae = build_vae(r)
    ckpt = run_dir / "vae.pt"
    state = {"step": 0, "curve": []}
    opt = torch.optim.Adam(vae.parameters(), lr=r.vae_lr)
    if ckpt.exists():
        ck = torch.load(ckpt, weights_only=False)
        vae.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
    if state["step"] < r.vae_steps:
        vae.train()
        bar = tqdm(range(state["step"], r.vae_steps), initial=state["step"], total=r.vae_steps, desc="vae", unit="step")
        for step in bar:
            gen = torch.Generator().manual_seed(r.seed * 7919 + step)
            x = from_uint8(imgs[torch.randint(0, len(imgs), (r.vae_batch,), generator=gen).numpy()])
            y0, x0 = (int(v) for v in torch.randint(0, r.image_size - r.vae_crop + 1, (2,), generator=gen) // 4 * 4)
            x = x[:, :, y0 : y0 + r.vae_crop, x0 : x0 + r.vae_crop]
            for g in opt.param_groups:
                g["lr"] = warmup_cosine(step, lr=r.vae_lr, warmup=50, total=r.vae_steps, floor=0.05)
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample(generator=gen)).sample
            mse = F.mse_loss(rec, x)
            loss = mse + r.kl_weight * post.kl().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            bar.set_postfix(mse=f"{mse.item():.4f}")
            if (step + 1) % 20 == 0:
                state["curve"].append((step + 1, mse.item()))
            if (step + 1) % 250 == 0 or step + 1 == r.vae_steps:
                state["step"] = step + 1
                torch.save({"model": vae.state_dict(), "opt": opt.state_dict(), "state": state}, ckpt)
    vae.eval()
    return vae, state


@torch.no_grad()
def encode_all(vae, imgs: np.ndarray, run_dir: Path) -> torch.Tensor:
    """Posterior means of every image, computed once (the UNet stage never runs the encoder)."""
    path = run_dir / "latents.pt"
    if path.exists():
        return torch.load(path)
    out = torch.cat([vae.encode(from_uint8(imgs[s : s + 256])).latent_dist.mean
                     for s in tqdm(range(0, len(imgs), 256), desc="encoding", unit="batch", leave=False)])
    torch.save(out, path)
    return out


def grounding_loss(sink: dict[str, list[torch.Tensor]], owners: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """TokenCompose's token loss: for every word tied to an object, (1 - share of its cross-attention
    (mean of heads) that falls inside the object's mask)², averaged over words and layers.
    owners: [B, T] object index or -1; masks: [B, 2, h, w] soft masks at the latent resolution."""
    b, t = owners.shape
    tied = owners >= 0
    if not tied.any():
        return torch.zeros(())
    token_masks = torch.gather(masks, 1, owners.clamp(min=0).long()[:, :, None, None].expand(-1, -1, *masks.shape[2:]))
    losses = []
    for maps in sink.values():
        for probs in maps:  # [B, heads, pixels, T]
            a = probs.mean(1).transpose(1, 2)  # [B, T, pixels]
            side = int(a.shape[-1] ** 0.5)
            m = F.adaptive_avg_pool2d(token_masks.float(), side).flatten(2)  # [B, T, pixels]
            inside = (a * m).sum(-1) / a.sum(-1).clamp(min=1e-8)
            losses.append(((1 - inside) ** 2)[tied].mean())
    return torch.stack(losses).mean()


def train(out: Path | None = None, steps: int | None = None) -> Path:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from app.capture.diffusion import recording
    from app.settings import get_settings

    s = get_settings()
    r = Recipe()
    if steps:  # both stages, in the recipe's proportion (a short trial run stays short)
        r.detail_steps = round(steps * r.detail_steps / r.steps)
        r.steps = steps
    out = out or s.models_dir / "sd-shapes"
    run_dir = s.runs_dir / "sd"
    run_dir.mkdir(parents=True, exist_ok=True)
    if s.torch_threads:
        torch.set_num_threads(s.torch_threads)
    torch.manual_seed(r.seed)
    t_start = time.time()

    # 1–2. Data and tokenizer (seeded: a resumed run draws the same scenes).
    imgs, captions, owners, masks = draw_set(r.n_train, r.seed, r)
    tok_dir = run_dir / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():  # a resumed run must keep the ids its text encoder learned
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    else:
        tokenizer = build_tokenizer(r, tok_dir)
    ids = torch.tensor(tokenizer(captions, padding="max_length", max_length=r.max_length, truncation=True)["input_ids"])
    empty = torch.tensor(tokenizer([""], padding="max_length", max_length=r.max_length)["input_ids"])
    lengths = (ids != tokenizer.pad_token_id).sum(1) + 1  # words + start + end
    assert all(int(n) == len(c.split()) + 2 for n, c in zip(lengths[:200], captions[:200])), "a word split into pieces"
    owners_t, masks_t = torch.from_numpy(owners), torch.from_numpy(masks)

    # 3–4. VAE, then every latent once; the scaling factor makes latents unit-variance, as SD's 0.18215 does.
    vae, vae_state = train_vae(imgs, r, run_dir)
    latents = encode_all(vae, imgs, run_dir)
    scaling = float(1 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    latents = latents * scaling
    log.info("vae mse %.4f, latent scaling %.3f", vae_state["curve"][-1][1] if vae_state["curve"] else float("nan"), scaling)

    # 5. Text encoder + UNet, resumable.
    text_encoder, unet = build_text_encoder(r, tokenizer), build_unet(r)
    params = list(text_encoder.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=r.lr, betas=(0.9, 0.99), weight_decay=0.01)
    ema_te, ema_unet = copy.deepcopy(text_encoder).requires_grad_(False), copy.deepcopy(unet).requires_grad_(False)
    sched = noise_scheduler()
    snr = sched.alphas_cumprod / (1 - sched.alphas_cumprod)
    stats = {"curve": [], "elapsed_s": 0.0, "vae_curve": vae_state["curve"]}
    step = 0
    ckpt = run_dir / "ckpt.pt"
    if ckpt.exists():
        ck = torch.load(ckpt, weights_only=False)
        for m, key in ((text_encoder, "te"), (unet, "unet"), (ema_te, "ema_te"), (ema_unet, "ema_unet")):
            m.load_state_dict(ck[key])
        opt.load_state_dict(ck["opt"])
        step, stats = ck["step"], ck["stats"]
    text_encoder.train()
    unet.train()
    began = time.time() - stats["elapsed_s"]
    total = r.steps + r.detail_steps
    bar = tqdm(range(step, total), initial=step, total=total, desc="unet+text", unit="step")
    for step in bar:
        detail = step >= r.steps
        gen = torch.Generator().manual_seed(r.seed * 100_003 + step)
        idx = torch.randint(0, len(latents), (r.batch_size,), generator=gen)
        x0, tok, own, msk = latents[idx], ids[idx].clone(), owners_t[idx].clone(), masks_t[idx]
        drop = torch.rand(r.batch_size, generator=gen) < r.caption_dropout  # the unconditional branch of guidance
        tok[drop], own[drop] = empty, -1
        t = torch.randint(0, sched.config.num_train_timesteps, (r.batch_size,), generator=gen)
        if detail:
            low = torch.rand(r.batch_size, generator=gen) < r.detail_share
            t = torch.where(low, torch.randint(0, r.detail_t_max, (r.batch_size,), generator=gen), t)
        noise = torch.randn(x0.shape, generator=gen)
        xt = sched.add_noise(x0, noise, t)
        for g in opt.param_groups:
            g["lr"] = (warmup_cosine(step - r.steps, lr=r.detail_lr, warmup=r.warmup, total=r.detail_steps, floor=0.1)
                       if detail else warmup_cosine(step, lr=r.lr, warmup=r.warmup, total=r.steps, floor=0.1))
        context = text_encoder(tok)[0]
        with recording(unet, detach=False) as sink:
            pred = unet(xt, t, encoder_hidden_states=context).sample
        weight = torch.clamp(snr[t], max=r.min_snr) / snr[t]  # min-SNR-γ for ε-prediction
        mse = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        diff = (weight * mse).mean()
        ground = grounding_loss(sink, own, msk)
        loss = diff + r.ground_weight * ground
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(r.ema, (1 + step) / (10 + step))
            for ema, live in ((ema_te, text_encoder), (ema_unet, unet)):
                for pe, pl in zip(ema.parameters(), live.parameters()):
                    pe.lerp_(pl, 1 - decay)
        bar.set_postfix(mse=f"{mse.mean().item():.4f}", ground=f"{ground.item():.3f}")
        done = step + 1
        if done % 20 == 0:
            stats["curve"].append((done, mse.mean().item(), ground.item()))
        if done % 200 == 0 or done in (r.steps, total):
            stats["elapsed_s"] = time.time() - began
            log.info("step %d mse %.4f ground %.3f (%.0f min)", done, mse.mean().item(), ground.item(), stats["elapsed_s"] / 60)
            torch.save({"te": text_encoder.state_dict(), "unet": unet.state_dict(), "ema_te": ema_te.state_dict(),
                        "ema_unet": ema_unet.state_dict(), "opt": opt.state_dict(), "step": done, "stats": stats}, ckpt)

    # 6. The pipeline folder, EMA weights, a DDIM scheduler (MODEL-NOTES pitfall 5 for its flags).
    stats["elapsed_s"] = time.time() - began
    scheduler = DDIMScheduler.from_config(sched.config, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=ema_te, tokenizer=tokenizer, unet=ema_unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    (run_dir / "training.json").write_text(json.dumps({"recipe": asdict(r), "stats": stats,
                                                    "total_s": time.time() - t_start}, indent=1), encoding="utf-8")
    log.info("saved %s after %.0f min", out, (time.time() - t_start) / 60)
    return out
