"""Property-based requests from the service's own OpenAPI spec (``/docs.json``) against a real
``bentoml serve`` process: bodies that fit the spec and bodies that do not (wrong types, missing
fields, extra fields); none may get a 5xx. Bounded: a fixed number of derandomized examples per
operation and mode, so each run sends the same requests (a minute or two on 2 busy cores)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

pytestmark = pytest.mark.slow

EXAMPLES = 40  # per operation and generation mode


def test_no_generated_request_gets_a_server_error(live_server):
    schema = schemathesis.openapi.from_url(f"{live_server}/docs.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {"/analyze", "/analyze_frames", "/classify", "/video_timeline"} <= {op.path for op in operations}
    sent, server_errors = [], []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
            def check(case):
                response = case.call(base_url=live_server, timeout=60)
                sent.append(response.status_code)
                if response.status_code >= 500:
                    server_errors.append(f"{operation.method.upper()} {operation.path} ({mode.value}): "
                                         f"{response.status_code} {response.text[:200]}\n  {case.as_curl_command()}")

            try:
                check()
            except Unsatisfiable:  # no input that breaks the spec (e.g. GET /healthz in negative mode)
                assert mode == GenerationMode.NEGATIVE, operation.path
    assert len(sent) >= 10 * len(operations)
    assert not server_errors, "\n".join(server_errors[:10])
