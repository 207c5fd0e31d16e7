"""GPT-2 capture cost, side by side in one run (timing noise here is about ±30 %: read the ratios).

    python benchmarks/gpt2_capture.py [--repeats 7]

For the shipped model and a GPT-2-small-sized model (12 layers, 12 heads, 768 wide, random weights)
at 32, 128 and 512 tokens (the shipped model's context is 256, so it stops there) it prints:
- capture / plain: glassbox's capture (the recording attention, two hooks per block, arrays out) over a
  plain eager forward pass of the same model on the same ids, medians of interleaved repeats;
- first heatmap: time from the HTTP request to the first heatmap's data (POST /api/text/attention,
  uncached: tokenize, capture, encode), through the app in-process;
- bytes on the wire per attention value, and the whole response's bytes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from app.capture.text import capture  # noqa: E402
from app.main import create_app  # noqa: E402
from app.registry import load_gpt2  # noqa: E402
from app.settings import ROOT, Settings  # noqa: E402


def gpt2_small_random(tokenizer_dir: Path, out: Path) -> Path:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = GPT2Config(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=len(tok),
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def text_of(tm, n_tokens: int) -> str:
    """A text of exactly n_tokens tokens (cut from a repeated story)."""
    story = "Once upon a time, there was a little girl named Lily. She loved to play in the park with her dog. "
    ids = tm.tokenizer(story * 80)["input_ids"][:n_tokens]
    return tm.tokenizer.decode(ids)


def median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def bench(folder: Path, lengths: list[int], repeats: int) -> list[dict]:
    tm = load_gpt2(str(folder))
    app = create_app(Settings(gpt2=str(folder)))
    rows = []
    with TestClient(app) as client:
        for n in lengths:
            if n > tm.config.n_positions:
                continue
            text = text_of(tm, n)
            ids = torch.tensor([tm.tokenizer(text)["input_ids"]])
            T = ids.shape[1]

            def plain():
                with torch.no_grad():
                    tm.model(ids, use_cache=False)

            def captured():
                capture(tm, text)

            plain(), captured()  # warm-up
            # Interleave so drift (the other core, thermal) hits both alike.
            p, c = [], []
            for _ in range(repeats):
                p.append(median_time(plain, 1))
                c.append(median_time(captured, 1))
            p_med, c_med = statistics.median(p), statistics.median(c)

            firsts = []
            for i in range(max(3, repeats // 2)):
                client.app.state.runner.cache = type(client.app.state.runner.cache)(1)  # uncached each time
                t = time.perf_counter()
                r = client.post("/api/text/attention", json={"text": text, "layer": 0, "head": 0})
                firsts.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
            body = r.content
            values = T * T
            att_b64 = len(json.loads(body)["attention"]["data"])
            rows.append({
                "model": tm.name if folder.name != "gpt2-small-random" else "gpt2-small (random)",
                "tokens": T,
                "plain_ms": p_med * 1e3,
                "capture_ms": c_med * 1e3,
                "ratio": c_med / p_med,
                "first_heatmap_ms": statistics.median(firsts) * 1e3,
                "bytes_per_value_raw": 2.0,
                "bytes_per_value_b64": att_b64 / values,
                "response_bytes": len(body),
            })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.manual_seed(0)
    shipped = ROOT / "models" / "gpt2-tinystories"
    rows = bench(shipped, [32, 128, 512], args.repeats)
    with tempfile.TemporaryDirectory() as d:
        small = gpt2_small_random(shipped, Path(d) / "gpt2-small-random")
        rows += bench(small, [32, 128, 512], args.repeats)
    print(f"# {time.strftime('%Y-%m-%d')} · {platform.machine()} · {torch.get_num_threads()} torch threads · torch {torch.__version__}")
    print("| model | tokens | plain forward ms | capture ms | capture / plain | request → first heatmap ms | bytes/value (float16, base64) | response bytes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['tokens']} | {r['plain_ms']:.1f} | {r['capture_ms']:.1f} | {r['ratio']:.2f} | "
              f"{r['first_heatmap_ms']:.1f} | {r['bytes_per_value_raw']:.0f} ({r['bytes_per_value_b64']:.2f}) | {r['response_bytes']:,} |")


if __name__ == "__main__":
    main()
