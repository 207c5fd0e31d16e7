"""`glassbox serve` flags reach the one Settings class; `python -m app` alone serves."""

import uvicorn

from app import __main__ as cli
from app import registry
from app.settings import get_settings


def test_serve_flags_become_settings(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: seen.update(k))
    # serve loads the models before binding (a broken folder is one line); here only the flags matter.
    monkeypatch.setattr(registry, "load_registry", lambda s: registry.Registry())
    for name in ("GLASSBOX_HOST", "GLASSBOX_PORT", "GLASSBOX_GPT2"):
        monkeypatch.setenv(name, "")  # so monkeypatch restores what main() writes into os.environ
        monkeypatch.delenv(name)
    get_settings.cache_clear()
    try:
        cli.main(["serve", "--port", "9123", "--gpt2", str(tmp_path)])
        assert seen["port"] == 9123 and seen["host"] == "127.0.0.1"  # loopback unless --host says otherwise
        assert get_settings().gpt2 == str(tmp_path)
        seen.clear()
        monkeypatch.delenv("GLASSBOX_PORT")
        get_settings.cache_clear()
        cli.main([])
        assert seen["port"] == 8000
    finally:
        get_settings.cache_clear()
