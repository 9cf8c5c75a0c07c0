"""The served OpenAPI document is the API's contract: a property-based fuzzer (schemathesis) driven by it, against a
live front door on a real Serve instance (an acgan and a ugatit smoke model), must find no failure.

Bounded: a fixed seed, a fixed number of examples per operation and phase (about 1,000-1,500 requests in all, one to
two minutes here). The report (requests sent, failures) is printed with `pytest -s`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from gansvc import local
from tests.support.serve import deploy_config, front_door, model_app, serving, smoke_registry

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("stack")]
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"

# What the fuzzer checks: everything schemathesis has (status codes, content types, headers and bodies conform to the
# document; no 5xx; data that breaks the schema is refused with a 4xx; 405 with an Allow header for other methods),
# except:
# - positive_data_acceptance: it expects every schema-valid request to be accepted, but what a model accepts depends
#   on the model the path names (its task, max_n, label attributes and values, directions, heatmap), and some rules
#   join two fields (format png needs n = 1, a labels list has n items); the document states them in the operations'
#   descriptions and per model in GET /v1/models, and the server refuses a violation with a 4xx that names it.
#   The static bounds every model shares (n <= 4096, seed >= 0, truncation in [0.05, 10], the enums) are in the schema
#   and the negative checks hold the server to them.
# - ignored_auth, object_level_authorization: the API has no authentication (loopback; see serve/README.md).
EXCLUDED_CHECKS = "positive_data_acceptance,ignored_auth,object_level_authorization"
MAX_EXAMPLES = 400  # per operation in the fuzzing phase (6 operations), valid and invalid inputs


@pytest.fixture(scope="module")
def url(ray_stack: local.StackState) -> Any:
    registry = smoke_registry(ray_stack, "t-cserve")
    with serving(
        ray_stack,
        deploy_config(
            ray_stack,
            [
                front_door(max_request_bytes=256 * 1024, expect_models=["gen", "ugat"]),
                model_app("gen", registry, max_n=8),
                model_app("ugat", registry),
            ],
        ),
    ) as base:
        yield base


def _config(path: Path) -> Path:
    """schemathesis.toml: the path parameter `name` set to a served model of the operation's task (random names only
    reach 404 unknown_model, which the fuzz would then test and nothing else)."""
    path.write_text(
        "\n".join(
            [
                "[[operations]]",
                'include-path = "/v1/models/{name}/generate"',
                'parameters = { "path.name" = "gen" }',
                "",
                "[[operations]]",
                'include-path = "/v1/models/{name}/interpolate"',
                'parameters = { "path.name" = "gen" }',
                "",
                "[[operations]]",
                'include-path = "/v1/models/{name}/translate"',
                'parameters = { "path.name" = "ugat" }',
                "",
            ]
        )
    )
    return path


@pytest.mark.timeout(420)
def test_openapi_contract_fuzz(url: str, tmp_path: Path) -> None:
    assert requests.get(f"{url}/readyz", timeout=30).status_code == 200
    report = tmp_path / "requests.har"  # every request sent and its answer
    cmd = [
        str(SCHEMATHESIS),
        "--no-color",
        "--config-file",
        str(_config(tmp_path / "schemathesis.toml")),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        EXCLUDED_CHECKS,
        "--seed",
        "13",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "2",
        "--request-timeout",
        "60",
        # no "coverage" phase: under CPython 3.11.7 its negative-case generator intermittently dies inside the
        # interpreter (SystemError "AST constructor recursion depth mismatch", seen on a clean-clone CI run);
        # the fuzzing phase still generates invalid inputs (--mode all) against the same checks
        "--phases",
        "examples,fuzzing",
        "--mode",
        "all",
        "--report",
        "har",
        "--report-har-path",
        str(report),
        "--warnings",
        "off",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    entries = json.loads(report.read_text())["log"]["entries"] if report.exists() else []
    paths = Counter(urlsplit(e["request"]["url"]).path for e in entries)
    statuses = Counter(str(e["response"]["status"]) for e in entries)
    print(
        f"\nschemathesis: {len(entries)} requests; by path {dict(paths.most_common(8))}; by status {dict(statuses)}"
        f"\n{out.stdout[-2500:]}"
    )
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:]
    served = paths["/v1/models/gen/generate"] + paths["/v1/models/ugat/translate"]
    assert served > 500, f"the fuzz reached the models {served} times only: {dict(paths)}"
    assert not [s for s in statuses if s.startswith("5")], statuses
