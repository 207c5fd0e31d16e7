"""Every setting of glassbox, in one place. Each can be set by an environment variable
GLASSBOX_<NAME> (e.g. GLASSBOX_PORT=9000) or by the matching `glassbox serve` flag."""

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GLASSBOX_")

    host: str = "127.0.0.1"  # only this machine, unless --host says otherwise
    port: int = 8000

    # Models served. A Hub id ("gpt2", "distilgpt2") or a local folder; safetensors only.
    gpt2: str = str(ROOT / "models" / "gpt2-tinystories")
    vit: str = str(ROOT / "models" / "vit-shapes")  # empty: serve no ViT
    sd: str = str(ROOT / "models" / "sd-shapes")  # empty: serve no diffusion model
    device: str = "auto"  # where Stable Diffusion runs: auto (a GPU if there is one), cpu, cuda

    # Where training reads its corpora (TinyStories lives in ../shared/data).
    data_dir: Path = ROOT.parent / "shared" / "data"
    models_dir: Path = ROOT / "models"
    runs_dir: Path = ROOT / "runs"  # training checkpoints, not shipped

    # Bounds. Text longer than the model's context is refused with a 422 that says the limit.
    trace_cache_bytes: int = 256 * 2**20  # LRU of captured traces, by their array bytes
    grid_max_tokens: int = 48  # the all-heads grid pools each matrix down to at most this size
    # Uploaded images (ViT): larger ones get a 413. Read into memory only, never written to disk.
    upload_max_bytes: int = 20 * 2**20
    upload_max_pixels: int = 50_000_000  # by the header, before decoding: a decompression bomb stops here
    # Any other request body (JSON); larger ones get a 413 before they are read. Generous for a
    # 1,024-token text, far below what would hurt.
    max_body_bytes: int = 256 * 2**10
    max_concurrent_runs: int = 2  # model runs at once; beyond the queue -> 503
    max_queued_runs: int = 16
    retry_after_s: int = 2
    max_concurrent_diffusion: int = 1  # denoising runs at once (one shared UNet: one on the CPU)
    max_queued_diffusion: int = 4
    diffusion_cache_bytes: int = 512 * 2**20  # finished runs, by their array bytes
    max_diffusion_steps: int = 100
    torch_threads: int = 0  # 0: let torch decide

    # Presenter rooms (classroom mode, app/rooms.py). Each follower holds one open event stream.
    max_rooms: int = 50  # rooms at once; one more -> 503 with Retry-After (when the stalest expires)
    max_followers_per_room: int = 100  # a large class, with room for reloads; one more -> 503
    room_idle_s: float = 900  # a room ends this long after its presenter's last word (an open presenter page speaks every few s)
    room_ping_s: float = 15  # a keep-alive comment on quiet streams, so proxies and browsers keep them open
    room_state_max_bytes: int = 64 * 2**10  # a view's query string (fits a 20,000-character English text, URL-encoded)

    # Many processes (`--workers N`, or several servers behind a proxy) share the rooms and the
    # finished traces through Redis (app/rooms_redis.py, app/shared.py). Empty: this process's memory.
    redis_url: str = ""  # e.g. redis://127.0.0.1:6379/0
    workers: int = 1  # server processes; more than one needs redis_url, or rooms would split between them


@lru_cache
def get_settings() -> Settings:
    return Settings()
