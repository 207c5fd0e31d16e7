"""`glassbox serve --vit` reaches Settings.vit, like --gpt2."""

import uvicorn

from app import __main__ as cli
from app.settings import ROOT, get_settings


def test_vit_flag_becomes_the_setting(monkeypatch, tmp_path):
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    monkeypatch.setenv("GLASSBOX_VIT", "")  # so monkeypatch restores what main() writes into os.environ
    monkeypatch.delenv("GLASSBOX_VIT")
    get_settings.cache_clear()
    try:
        assert get_settings().vit == str(ROOT / "models" / "vit-shapes")  # the shipped model by default
        get_settings.cache_clear()
        cli.main(["serve", "--vit", "google/vit-base-patch16-224"])
        assert get_settings().vit == "google/vit-base-patch16-224"
    finally:
        get_settings.cache_clear()
