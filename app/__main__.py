"""The `glassbox` command: `glassbox serve` runs the app, `glassbox train gpt2` trains a shipped model."""

import argparse
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="glassbox", description="Open up small neural networks while they run.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the web app")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--gpt2", metavar="NAME_OR_PATH", help="any GPT-2 checkpoint: a Hub id (gpt2, distilgpt2) or a folder")
    serve.add_argument("--vit", metavar="NAME_OR_PATH", help="any ViTForImageClassification checkpoint: a Hub id (google/vit-base-patch16-224) or a folder")
    serve.add_argument("--sd", metavar="NAME_OR_PATH", help="any Stable Diffusion 1.x pipeline: a Hub id or a diffusers folder ('' for none)")
    serve.add_argument("--device", help="where Stable Diffusion runs: auto (default: a GPU when there is one), cpu, cuda, ...")
    serve.add_argument("--workers", type=int, help="server processes (default 1); more than 1 needs --redis-url")
    serve.add_argument("--redis-url", metavar="URL", help="share rooms and traces between processes through Redis (redis://host:6379/0)")

    train = sub.add_parser("train", help="train a shipped model into models/")
    train.add_argument("family", choices=["gpt2", "vit", "sd"])
    train.add_argument("--steps", type=int, help="override the recipe's number of steps (sd: of its main stage; the detail stage keeps its proportion)")
    train.add_argument("--card", action="store_true", help="only re-measure the trained model and rewrite its card")
    train.add_argument("--out", type=Path, help="output folder (default models/<name>)")
    train.add_argument("--repeat-frac", type=float, help="share of windows carrying a repeated random span")

    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv or ["serve"])  # bare `python -m app` serves
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.command == "serve":
        # Flags become GLASSBOX_* settings, so the one Settings class stays the only source.
        for name in ("host", "port", "gpt2", "vit", "sd", "device", "workers", "redis_url"):
            value = getattr(args, name)
            if value is not None:
                os.environ[f"GLASSBOX_{name.upper()}"] = str(value)
        import uvicorn

        from app.main import create_app
        from app.registry import ModelLoadError, load_registry
        from app.settings import get_settings

        s = get_settings()
        if s.workers > 1 and not s.redis_url:
            # Refused rather than warned: a room made on one process would not exist on the others.
            sys.exit(f"glassbox: error: --workers {s.workers} needs --redis-url (GLASSBOX_REDIS_URL): "
                     "without Redis each process keeps its own rooms and traces")
        try:  # before the server starts: a missing or corrupt folder is one line, not a traceback
            registry = load_registry(s)
        except ModelLoadError as e:
            sys.exit(f"glassbox: error: {e}")
        if s.redis_url:
            import redis

            try:
                redis.Redis.from_url(s.redis_url, socket_connect_timeout=5).ping()
            except (redis.RedisError, ValueError) as e:  # the URL itself is not printed: it may hold a password
                sys.exit(f"glassbox: error: cannot reach Redis at GLASSBOX_REDIS_URL: {e}")
        if s.workers > 1:
            # uvicorn starts each worker from an import string; each loads the models in its lifespan.
            # The copy above only proved that they load: dropped before the workers start.
            del registry
            uvicorn.run("app.main:create_app", factory=True, workers=s.workers, host=s.host, port=s.port, log_level="info")
        else:
            uvicorn.run(create_app(s, registry), host=s.host, port=s.port, log_level="info")
    elif args.command == "train":
        if args.family == "gpt2":
            from app.training import gpt2

            gpt2.train(out=args.out, steps=args.steps, card_only=args.card, repeat_frac=args.repeat_frac)
        elif args.family == "vit":
            from app.training import vit

            vit.train(out=args.out, steps=args.steps)
        else:
            from app.training import sd

            sd.train(out=args.out, steps=args.steps)


if __name__ == "__main__":
    main()
