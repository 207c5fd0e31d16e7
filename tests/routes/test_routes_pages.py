"""The HTML shells: every explorer page renders with its own script, the nav lists every family, an
unknown page is a 404 that names the pages there are."""

import re

import pytest

from app.routes.pages import DIFFUSION_VIEWS, TEXT_VIEWS, VISION_VIEWS

PAGES = ([f"/text/{v}" for v in TEXT_VIEWS] + [f"/vision/{v}" for v in VISION_VIEWS]
         + [f"/diffusion/{v}" for v in DIFFUSION_VIEWS])


@pytest.mark.parametrize("path", PAGES)
def test_each_page_loads_its_own_script(sd_client, path):
    r = sd_client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    family, view = path.strip("/").split("/")
    script = f"/static/js/{'' if family == 'text' else family + '_'}{view}.js"
    assert f'src="{script}"' in r.text
    assert sd_client.get(script).status_code == 200
    assert f'href="{path}" aria-current="page"' in r.text
    assert set(re.findall(r'<li><a href="(/[a-z]+/[a-z]+)"', r.text)) == set(PAGES)  # the nav: every page


@pytest.mark.parametrize("family,what", [("text", "text"), ("vision", "ViT"), ("diffusion", "diffusion")])
def test_unknown_page_names_the_pages_there_are(sd_client, family, what):
    r = sd_client.get(f"/{family}/nope")
    assert r.status_code == 404
    assert f"the {what} pages are" in r.json()["detail"]


def test_home_lists_the_diffusion_model(sd_client):
    r = sd_client.get("/")
    assert r.status_code == 200
    assert "Stable Diffusion 1.x" in r.text and "/diffusion/generate" in r.text
