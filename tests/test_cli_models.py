"""`glassbox serve --vit`, `--sd` and `--device` reach Settings, like --gpt2."""

import uvicorn

from app import __main__ as cli
from app import registry
from app.settings import ROOT, get_settings


def test_vit_flag_becomes_the_setting(monkeypatch, tmp_path):
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    monkeypatch.setattr(registry, "load_registry", lambda s: registry.Registry())  # only the flags matter here
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


def test_sd_and_device_flags_become_settings(monkeypatch):
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    monkeypatch.setattr(registry, "load_registry", lambda s: registry.Registry())  # only the flags matter here
    for name in ("GLASSBOX_SD", "GLASSBOX_DEVICE"):
        monkeypatch.setenv(name, "")  # so monkeypatch restores what main() writes into os.environ
        monkeypatch.delenv(name)
    get_settings.cache_clear()
    try:
        assert get_settings().sd == str(ROOT / "models" / "sd-shapes") and get_settings().device == "auto"
        get_settings.cache_clear()
        cli.main(["serve", "--sd", "runwayml/stable-diffusion-v1-5", "--device", "cpu"])
        assert get_settings().sd == "runwayml/stable-diffusion-v1-5"
        assert get_settings().device == "cpu"
    finally:
        get_settings.cache_clear()
