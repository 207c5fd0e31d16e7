"""The shipped text-to-image model is what its recipe trains, and still draws what held-out prompts
ask for with seeds the benchmark never used (a small sample, so looser bars than the card's)."""

import importlib.util

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from app.settings import ROOT
from app.training.sd import noise_scheduler

SD = ROOT / "models" / "sd-shapes"


def sd_bar():
    spec = importlib.util.spec_from_file_location("sd_bar", ROOT / "benchmarks" / "sd_bar.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shipped_schedule_is_the_recipe_schedule():
    pipe = StableDiffusionPipeline.from_pretrained(SD, safety_checker=None)
    trained = noise_scheduler()
    assert pipe.scheduler.config.num_train_timesteps == trained.config.num_train_timesteps
    torch.testing.assert_close(pipe.scheduler.alphas_cumprod, trained.alphas_cumprod)
    # the schedule's point: the noisiest step leaves almost nothing of the picture
    assert float(trained.alphas_cumprod[-1]) < 1e-4


def test_shipped_sd_draws_held_out_prompts_and_its_words_attend_to_the_object():
    bar = sd_bar()
    res, samples = bar.measure(str(SD), n_prompts=16, seeds=(4242,))
    assert res["images"] == 16 and len(samples) == 0  # no sample of the card's seed drawn: a seed of its own
    assert res["shape"] >= 0.75, res
    assert res["colour"] >= 0.9, res
    assert res["position"] >= 0.75, res
    assert res["ratio"]["shape_word"] >= 2 and res["ratio"]["colour_word"] >= 2, res["ratio"]
    # padding after the end token carries nothing the picture uses
    assert res["ratio"]["padding"] < res["ratio"]["shape_word"] / 2, res["ratio"]
    assert np.isfinite(list(res["ratio"].values())).all()
