"""Property-based fuzzing of every API operation from the app's own /openapi.json (schemathesis).

The app is built as tests/conftest.py builds it, with tiny random models (GPT-2, ViT and Stable
Diffusion), and called in-process through schemathesis' ASGI transport. Each operation gets a few
derandomized examples (valid and invalid); each answer must be
- no server error: no 5xx, except 503 "busy" that carries Retry-After;
- documented: its status code listed for the operation, its content type and body matching the schema;
- a 4xx for data the schema forbids (negative_data_rejection).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from app.settings import Settings

# At most 2 diffusion steps a request (more: 422), so every streamed run takes a fraction of a second.
LIMITS = {"max_diffusion_steps": 2, "upload_max_bytes": 2**20, "upload_max_pixels": 10**6}

# The operations are read at collection time from an app that is built but not started (the OpenAPI
# document does not depend on the models); the calls go to `fuzz_app`, the same app with models loaded.
# (schemathesis.pytest.from_fixture would do this in one step, but it relies on a pytest internal,
# Node._nodeid, that pytest 9.2 no longer has.)
DOC = create_app(Settings(**LIMITS)).openapi()
schema = schemathesis.openapi.from_dict(DOC)


@pytest.fixture(scope="module")
def fuzz_app(tiny_gpt2_dir, tiny_vit_dir, tiny_sd_dir):
    app = create_app(Settings(gpt2=str(tiny_gpt2_dir), vit=str(tiny_vit_dir), sd=str(tiny_sd_dir), **LIMITS))
    assert app.openapi() == DOC  # the document fuzzed is the one this app serves
    return app


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


# 25 examples an operation (plus schemathesis' boundary cases), the same ones every run; no deadline
# and no health checks: a call runs a model, and the schemas' patterns make Hypothesis filter a lot.
@schema.parametrize()
@settings(max_examples=25, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_api(case, fuzz_app):
    response = case.call(app=fuzz_app)
    checks = CHECKS
    if response.status_code == 503:  # busy is the one 5xx allowed, and only with a time to come back
        assert response.headers.get("Retry-After", "").isdigit(), response.headers
        checks = [c for c in CHECKS if c is not not_a_server_error]
    case.validate_response(response, checks=checks, transport_kwargs={"app": fuzz_app})
