"""Recipe for the shipped text model, models/gpt2-tinystories/.

    glassbox train gpt2            # tokenizer, then the model; resumes from runs/gpt2/ckpt.pt
    glassbox train gpt2 --card     # only re-measure and rewrite the model card

Steps: 1. train a 4,096-token byte-level BPE on the training stories; 2. train a small
GPT2LMHeadModel on 256-token windows, a quarter of which carry a repeated random span (so an
induction head has something to learn: a pattern that ordinary stories rarely reward); 3. measure
held-out loss per token and per UTF-8 byte, previous-token and induction scores per head, and
write the folder with its model card.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from app.training.schedule import warmup_cosine

log = logging.getLogger(__name__)

EOT = "<|endoftext|>"
CARD_NOTICE = (
    "Contains data from TinyStories (Eldan & Li, 2023), "
    "https://huggingface.co/datasets/roneneldan/TinyStories, licensed under CDLA-Sharing-1.0."
)


@dataclass
class Recipe:
    vocab_size: int = 4096
    n_ctx: int = 256
    n_embd: int = 192  # 256 ran at half the tokens/s on 2 cores (cache-bound); 192 trains in an hour
    n_layer: int = 4
    n_head: int = 4
    batch_size: int = 32
    steps: int = 1600
    lr: float = 1.5e-3
    min_lr_frac: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    repeat_frac: float = 0.25  # rows carrying a repeated random span
    repeat_len: tuple[int, int] = (8, 40)
    seed: int = 1234
    eval_every: int = 200
    ckpt_every: int = 50


def read_stories(path: Path) -> list[str]:
    return [s.strip() for s in path.read_text(encoding="utf-8").split(EOT) if s.strip()]


def train_tokenizer(stories: list[str], vocab_size: int):
    """Byte-level BPE like GPT-2's, but 4,096 tokens: GPT-2's 50,257-token embedding alone would
    be ten times this model. Returned as a GPT2TokenizerFast (see MODEL-NOTES pitfall 3)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(stories, trainer)
    return GPT2TokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT)


def encode_corpus(tokenizer, stories: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for enc in tokenizer(stories)["input_ids"]:
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def make_batch(data: torch.Tensor, r: Recipe, gen: torch.Generator, n_vocab_plain: int):
    """Random windows; a `repeat_frac` share get a random span written twice, the first copy's
    labels masked (it is unpredictable), so only copying is rewarded there."""
    starts = torch.randint(0, len(data) - r.n_ctx - 1, (r.batch_size,), generator=gen)
    x = torch.stack([data[s : s + r.n_ctx] for s in starts.tolist()])
    labels = x.clone()
    rep = torch.rand(r.batch_size, generator=gen) < r.repeat_frac
    for row in torch.nonzero(rep).flatten().tolist():
        n = int(torch.randint(r.repeat_len[0], r.repeat_len[1] + 1, (1,), generator=gen))
        at = int(torch.randint(0, r.n_ctx - 2 * n, (1,), generator=gen))
        span = torch.randint(1, n_vocab_plain, (n,), generator=gen)
        x[row, at : at + n] = span
        x[row, at + n : at + 2 * n] = span
        labels[row] = x[row]
        labels[row, at + 1 : at + n + 1] = -100  # HF shifts labels left: mask predictions inside copy 1
    return x, labels


def build_model(r: Recipe, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=r.vocab_size,
        n_positions=r.n_ctx,
        n_embd=r.n_embd,
        n_layer=r.n_layer,
        n_head=r.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        # MODEL-NOTES pitfall 2: GPT2Config defaults to GPT-2's id 50256.
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    # Fused attention to train (about 15 % faster here); capture switches to eager, which returns weights.
    model = GPT2LMHeadModel(config)
    model.set_attn_implementation("sdpa")
    return model


def lr_at(step: int, r: Recipe) -> float:
    return warmup_cosine(step, lr=r.lr, warmup=r.warmup, total=r.steps, floor=r.min_lr_frac)


@torch.no_grad()
def heldout_loss(model, tokenizer, stories: list[str], n_ctx: int) -> dict:
    """Total nats over total UTF-8 bytes of the held-out stories: comparable across tokenizers.
    Each story is scored on its own from its first token, windows of n_ctx with no overlap."""
    model.eval()
    nats, tokens, nbytes = 0.0, 0, 0
    for story in stories:
        ids = [tokenizer.eos_token_id] + tokenizer(story)["input_ids"]
        nbytes += len(story.encode("utf-8"))
        for s in range(0, len(ids) - 1, n_ctx):
            chunk = torch.tensor([ids[s : s + n_ctx + 1]])
            if chunk.shape[1] < 2:
                continue
            logits = model(chunk[:, :-1]).logits
            loss = torch.nn.functional.cross_entropy(
                logits[0].float(), chunk[0, 1:], reduction="sum"
            )
            nats += loss.item()
            tokens += chunk.shape[1] - 1
    model.train()
    return {"nats_per_token": nats / tokens, "nats_per_byte": nats / nbytes, "tokens": tokens, "bytes": nbytes}


@torch.no_grad()
def head_scores(model, tokenizer, stories: list[str], seed: int = 0) -> dict:
    """Previous-token score: mean attention from token i to i-1 over held-out text.
    Induction score: on a random sequence written twice (length 2L), mean attention from each
    token of the second copy to the token just after its earlier occurrence (Olsson et al. 2022)."""
    model.eval()
    n_layer, n_head = model.config.n_layer, model.config.n_head
    prev = torch.zeros(n_layer, n_head)
    n = 0
    for story in stories[:50]:
        ids = torch.tensor([tokenizer(story)["input_ids"][: model.config.n_positions]])
        att = model(ids, output_attentions=True).attentions
        T = ids.shape[1]
        if T < 2:
            continue
        for layer, a in enumerate(att):
            prev[layer] += a[0].diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1)
        n += T - 1
    prev /= n
    g = torch.Generator().manual_seed(seed)
    L = 50
    ind = torch.zeros(n_layer, n_head)
    copy_nll = 0.0
    for _ in range(10):
        span = torch.randint(1, tokenizer.vocab_size - 1, (L,), generator=g)
        ids = torch.cat([torch.tensor([tokenizer.eos_token_id]), span, span])[None]
        out = model(ids, output_attentions=True)
        att = out.attentions
        # loss on the second copy (after its first token): near log(vocab) unless the model copies
        copy_nll += torch.nn.functional.cross_entropy(out.logits[0, L + 1 : -1], ids[0, L + 2 :]).item() / 10
        q = torch.arange(L + 1, 2 * L + 1)  # second copy, positions in ids
        k = q - L + 1  # the token after the earlier occurrence
        for layer, a in enumerate(att):
            ind[layer] += a[0][:, q, k].mean(-1)
    ind /= 10
    model.train()
    return {"previous_token": prev.tolist(), "induction": ind.tolist(), "copy_nll": copy_nll}


@torch.no_grad()
def samples(model, tokenizer, prompts: list[str], n_new: int = 60) -> list[str]:
    model.eval()
    out = []
    for p in prompts:
        ids = tokenizer(p, return_tensors="pt")["input_ids"]
        gen = model.generate(ids, max_new_tokens=n_new, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        out.append(tokenizer.decode(gen[0], skip_special_tokens=True))
    model.train()
    return out


def loss_curve_svg(points: list[tuple[int, float]], evals: list[tuple[int, float]]) -> str:
    """A dependency-free SVG of the training loss (grey) and held-out nats/token (blue)."""
    w, h, pad = 640, 320, 40
    xs = [p[0] for p in points] or [0]
    ys = [p[1] for p in points + evals] or [0]
    x0, x1, y0, y1 = 0, max(xs) or 1, min(ys), max(ys)

    def xy(s, v):
        return pad + (w - 2 * pad) * (s - x0) / (x1 - x0), h - pad - (h - 2 * pad) * (v - y0) / ((y1 - y0) or 1)

    def line(pts, colour):
        d = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(s, v) for s, v in pts))
        return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{d}"/>'

    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">'
        f'<rect width="{w}" height="{h}" fill="white"/>{line(points, "#999")}{line(evals, "#1f5fbf")}'
        f'<text x="{pad}" y="20">loss (nats/token): training (grey), held-out (blue)</text>'
        f'<text x="{pad}" y="{h - 10}">step 0</text><text x="{w - pad - 60}" y="{h - 10}">step {x1}</text>'
        f'<text x="2" y="{pad}">{y1:.2f}</text><text x="2" y="{h - pad}">{y0:.2f}</text></svg>'
    )


def write_card(out: Path, r: Recipe, stats: dict) -> None:
    ev = stats["heldout"]
    scores = stats["heads"]
    rows = []
    for layer in range(r.n_layer):
        for head in range(r.n_head):
            rows.append(
                f"| {layer} | {head} | {scores['previous_token'][layer][head]:.3f} | {scores['induction'][layer][head]:.3f} |"
            )
    prev, ind = torch.tensor(scores["previous_token"]), torch.tensor(scores["induction"])
    pl, ph = divmod(int(prev.argmax()), r.n_head)
    il, ih = divmod(int(ind.argmax()), r.n_head)
    verdict = (
        f"Strongest previous-token head: layer {pl}, head {ph} ({prev.max():.2f}). Strongest induction score: "
        f"layer {il}, head {ih} ({ind.max():.3f})."
    )
    if ind.max() < 0.1:
        verdict += (
            " **No induction head formed at this budget**: the scores stay at the uniform level even though a "
            "quarter of the training windows carried a repeated span; copying a repeated span is not learned "
            f"(loss on the second copy: {scores['copy_nll']:.2f} nats/token; log(vocab) = {math.log(r.vocab_size):.2f}). "
            "Expect it from a longer run (a GPU) or a curriculum that starts on repeated sequences."
        )
    curve = "\n".join(f"| {s} | {v:.3f} |" for s, v in stats["evals"])
    sample_text = "\n".join(f"> {s}\n" for s in stats["samples"])
    card = f"""---
license: cdla-sharing-1.0
library_name: transformers
pipeline_tag: text-generation
---
# gpt2-tinystories

A small GPT-2 (`GPT2LMHeadModel`, {stats['params'] / 1e6:.2f}M parameters: {r.n_layer} layers, {r.n_head} heads
of {r.n_embd // r.n_head} dimensions, width {r.n_embd}, context {r.n_ctx}) trained by glassbox from scratch on
TinyStories, so that glassbox has a text model to open up with no download. It is **not** OpenAI's GPT-2:
to look inside the real one, run `glassbox serve --gpt2 gpt2`.

{CARD_NOTICE}

## Data
Training: `../shared/data/tinystories/tinystories_train.txt` (2,824 stories, original capitals) and
`tinystories_train_lowercase_extra.txt` (4,411 lowercase stories) for volume. Held-out:
`tinystories_valid.txt` (1,000 stories, none in training). A quarter of the training windows carry a
random token span written twice (labels of the first copy masked), meant to reward induction heads
(see below for whether they formed).

## Tokenizer
A byte-level BPE of {r.vocab_size} tokens trained by the recipe on the training stories, with `{EOT}` as
its only special token. GPT-2's own 50,257-token vocabulary would make the embedding ten times the rest
of the model; a small vocabulary keeps the model at a size that trains on two CPU cores in about an hour
and keeps token labels on the page short, common words.

## Training
Command: `glassbox train gpt2` (recipe: `app/training/gpt2.py`). Parameters:

```json
{json.dumps(asdict(r), indent=2)}
```

AdamW (betas 0.9/0.95), linear warm-up then cosine decay, batch {r.batch_size} × {r.n_ctx} tokens,
seed {r.seed}. Trained for {stats['train_minutes']:.1f} minutes on {stats['machine']}
({stats['tokens_seen'] / 1e6:.1f}M tokens).

![loss curve](loss_curve.svg)

| step | held-out nats/token |
|---:|---:|
{curve}

## Held-out loss (all of tinystories_valid.txt)
- **{ev['nats_per_token']:.3f} nats/token**
- **{ev['nats_per_byte']:.3f} nats/byte** (total nats ÷ total UTF-8 bytes; {ev['tokens']:,} tokens, {ev['bytes']:,} bytes)

## Heads a class can recognise
Previous-token score: mean attention from each token to the one before it, over 50 held-out stories
(uniform attention would give about {2 / r.n_ctx:.3f} on average). Induction score: on a random 50-token
sequence written twice, mean attention from the second copy to the token after the earlier occurrence
(uniform ≈ 0.01).

| layer | head | previous-token | induction |
|---:|---:|---:|---:|
{chr(10).join(rows)}

{verdict}

## Samples (greedy)
{sample_text}
"""
    (out / "README.md").write_text(card, encoding="utf-8")
    (out / "loss_curve.svg").write_text(loss_curve_svg(stats["train_curve"], stats["evals"]), encoding="utf-8")


def train(out: Path | None = None, steps: int | None = None, card_only: bool = False, repeat_frac: float | None = None) -> Path:
    from transformers import GPT2LMHeadModel, GPT2TokenizerFast

    from app.settings import get_settings

    s = get_settings()
    r = Recipe()
    if steps:
        r.steps = steps
    if repeat_frac is not None:
        r.repeat_frac = repeat_frac
    out = out or s.models_dir / "gpt2-tinystories"
    run_dir = s.runs_dir / "gpt2"
    run_dir.mkdir(parents=True, exist_ok=True)
    data_dir = s.data_dir / "tinystories"
    train_stories = read_stories(data_dir / "tinystories_train.txt") + read_stories(
        data_dir / "tinystories_train_lowercase_extra.txt"
    )
    valid_stories = read_stories(data_dir / "tinystories_valid.txt")
    if s.torch_threads:
        torch.set_num_threads(s.torch_threads)

    # 1. Tokenizer (deterministic: the BPE trainer sees the stories in file order).
    tok_dir = run_dir / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        tokenizer = GPT2TokenizerFast.from_pretrained(tok_dir)
    else:
        tokenizer = train_tokenizer(train_stories, r.vocab_size)
        tokenizer.model_max_length = r.n_ctx
        tokenizer.save_pretrained(tok_dir)

    ckpt_path = run_dir / "ckpt.pt"
    stats_path = run_dir / "stats.json"
    if card_only:
        model = GPT2LMHeadModel.from_pretrained(out, attn_implementation="eager")
        stats = json.loads(stats_path.read_text())
    else:
        # 2. Model, resumable.
        random.seed(r.seed)
        torch.manual_seed(r.seed)
        data = encode_corpus(tokenizer, train_stories)
        log.info("training tokens: %d", len(data))
        model = build_model(r, tokenizer)
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": r.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=r.lr,
            betas=(0.9, 0.95),
        )
        stats = {"train_curve": [], "evals": [], "elapsed_s": 0.0}
        step = 0
        if ckpt_path.exists():
            ck = torch.load(ckpt_path, weights_only=False)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            step, stats = ck["step"], ck["stats"]
            log.info("resumed at step %d", step)
        model.train()
        valid_probe = valid_stories[:100]
        t0 = time.time() - stats["elapsed_s"]
        bar = tqdm(range(step, r.steps), initial=step, total=r.steps, desc="gpt2", unit="step")
        for step in bar:
            # Seeded per step, so a resumed run draws the same batches it would have drawn.
            gen = torch.Generator().manual_seed(r.seed * 100_003 + step)
            x, labels = make_batch(data, r, gen, tokenizer.vocab_size - 1)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, r)
            loss = model(x, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step % 10 == 0:
                stats["train_curve"].append((step, loss.item()))
            done = step + 1
            if done % r.eval_every == 0 or done == r.steps:
                ev = heldout_loss(model, tokenizer, valid_probe, r.n_ctx)
                stats["evals"].append((done, ev["nats_per_token"]))
                log.info("step %d held-out(100 stories) %.3f nats/token %.3f nats/byte", done, ev["nats_per_token"], ev["nats_per_byte"])
            if done % r.ckpt_every == 0 or done == r.steps:
                stats["elapsed_s"] = time.time() - t0
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": done, "stats": stats}, ckpt_path)
        stats["elapsed_s"] = time.time() - t0
        stats["train_minutes"] = stats["elapsed_s"] / 60
        stats["tokens_seen"] = r.steps * r.batch_size * r.n_ctx
        stats["params"] = sum(p.numel() for p in model.parameters())  # tied wte/lm_head counted once
        import platform

        stats["machine"] = f"{torch.get_num_threads()} CPU threads ({platform.processor() or platform.machine()})"
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        stats_path.write_text(json.dumps(stats))

    # 3. Measure and write the card (eager attention: the head scores need the weights).
    model.set_attn_implementation("eager")
    log.info("measuring held-out loss on all %d valid stories", len(valid_stories))
    stats["heldout"] = heldout_loss(model, tokenizer, valid_stories, r.n_ctx)
    stats["heads"] = head_scores(model, tokenizer, valid_stories)
    stats["samples"] = samples(model, tokenizer, ["Once upon a time", "The little dog", "Lily and Ben went to"])
    stats_path.write_text(json.dumps(stats))
    write_card(out, r, stats)
    log.info("held-out %.3f nats/byte; card written to %s", stats["heldout"]["nats_per_byte"], out)
    return out
