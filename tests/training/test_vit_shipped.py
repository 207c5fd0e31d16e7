"""The shipped ViT reaches its bar on scenes it never saw (a seed of their own), loaded as a user would."""

import numpy as np
import torch
from transformers import AutoImageProcessor, ViTForImageClassification

from app.settings import ROOT
from app.shapes import SHAPES
from app.training.vit import Recipe, draw_set

VIT = ROOT / "models" / "vit-shapes"


def test_shipped_vit_accuracy_and_cls_attention_on_fresh_scenes():
    model = ViTForImageClassification.from_pretrained(VIT, attn_implementation="eager").eval()
    proc = AutoImageProcessor.from_pretrained(VIT)
    assert [model.config.id2label[i] for i in range(len(SHAPES))] == list(SHAPES)
    r = Recipe()
    imgs, labels, masks = draw_set(400, 31337, r, ramp=False)
    with torch.no_grad():
        out = model(**proc(list(imgs), return_tensors="pt"), output_attentions=True)
    acc = (out.logits.argmax(-1).numpy() == labels).mean()
    assert acc >= 0.97
    g = r.image_size // r.patch_size
    cls = out.attentions[-1][:, :, 0, 1:].mean(1).numpy()
    touched = masks.reshape(-1, g, r.patch_size, g, r.patch_size).any(axis=(2, 4)).reshape(len(imgs), -1)
    assert (cls * touched).sum(1).mean() >= 0.6
