"""schemathesis against the catalog on uvicorn over loopback, with a curator token: for
every operation of ``/openapi.json``, a bounded number of generated requests, valid and
invalid ones; no answer is a 5xx and every one conforms to the schema (status codes,
content types, bodies, headers), including the JSON error of the codes it documents.

schemathesis is driven through its Python API (``schemathesis.openapi.from_url``, each
operation's Hypothesis strategy, ``Case.call_and_validate``) in a plain test: the suite
runs with hypothesis' pytest plugin off (see ``addopts`` in pyproject.toml).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.api.conftest import auth
from tests.reliability.conftest import Figures, Served

EXAMPLES = int(os.environ.get("FLEETMINE_SCHEMATHESIS_EXAMPLES", "20"))
"""Generated requests per operation and generation mode (valid, invalid)."""


# A request of valid shape may name what the lake lacks: a cursor it did not mint, a model it has
# not registered. Those answer 400 (documented), which the schema cannot tell apart in advance.
ACCEPTED = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}},
        # An upload the schema calls valid (``format: binary``) may still be no photo: bytes
        # that are not a JPEG or PNG (415), or one that is blank or too small to embed (422).
        "operations": [
            {
                "include-path": "/v1/search/similar",
                "include-method": "POST",
                "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "415", "422"]}},
            }
        ],
    }
)


def test_every_operation_answers_generated_requests_by_its_schema(served: Served, figures: Figures) -> None:
    schema = schemathesis.openapi.from_url(f"{served.base}/openapi.json", config=CONFIG)
    headers = auth(served.tokens["curator"])
    statuses: Counter[int] = Counter()
    failures: dict[str, str] = {}
    operations = 0
    t0 = time.monotonic()
    for result in schema.get_all_operations():
        op = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,  # the same requests every run: a failure reproduces
                phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is reported
                suppress_health_check=list(HealthCheck),
            )
            @given(case=op.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                response = case.call(headers=headers, timeout=30)
                statuses[response.status_code] += 1
                case.validate_response(response, headers=headers, transport_kwargs={"headers": headers})

            try:
                check()
            except Unsatisfiable:  # no parameter or body to make invalid (GET /v1/health)
                continue
            except (AssertionError, BaseExceptionGroup) as exc:  # a failed check: report them all
                failures[f"{op.label} ({mode.value})"] = str(exc)[:3000]
    seconds = time.monotonic() - t0
    five = sum(n for s, n in statuses.items() if s >= 500)
    figures(
        group="API under attack",
        fault=f"schemathesis: {operations} operations x {EXAMPLES} valid + {EXAMPLES} invalid "
        "generated requests, curator token; every check (no 5xx, status, content type, body and "
        "headers by the schema)",
        cases=sum(statuses.values()),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{len(failures)} operations failing a check; {five} answers 5xx; statuses "
        f"{dict(sorted(statuses.items()))}; {seconds:.0f} s",
    )
    if failures:
        pytest.fail("\n\n".join(f"{k}:\n{v}" for k, v in failures.items()))
    assert operations >= 15 and sum(statuses.values()) >= operations * 2


def test_what_schemathesis_found_stays_fixed(served: Served, figures: Figures) -> None:
    """Its findings, replayed: times past what the engine's nanosecond timestamps hold
    answered 500 (the query failed to plan); a vector component past float32 overflowed."""
    reader = auth(served.tokens["reader"])
    curator = auth(served.tokens["curator"])
    n_clips = served.lake.read("clips", columns=["clip_id"]).num_rows
    with httpx.Client(base_url=served.base, timeout=60) as http:
        wide = http.get(
            "/v1/clips",
            params={"since": "0001-01-01T00:00:00+05:00", "until": "9999-12-31T23:00:00-05:00", "limit": 500},
            headers=reader,
        )
        late = http.get("/v1/clips", params={"since": "4215-01-22T20:31:17.782+12:05"}, headers=reader)
        dataset = http.post(
            "/v1/datasets",
            json={"name": "far-future", "query": {"until": "4527-11-02T05:21:00Z"}, "export": False},
            headers=curator,
        )
        dim = len(served.lake.read("embeddings", columns=["vector"]).column(0)[0].as_py())
        huge = http.post("/v1/search/similar", json={"vector": [1e39] * dim, "k": 3}, headers=reader)
    got = [wide.status_code, late.status_code, dataset.status_code, huge.status_code]
    figures(
        group="API under attack",
        fault="schemathesis' findings replayed: since/until before 1677 or after 2262 in a clip list "
        "and a dataset query; a search vector past float32",
        cases=len(got),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"answered {got} (were 500, 500, 500 and a 400 after an overflow warning; the vector is "
        "now refused by its schema bound, 422)",
    )
    assert wide.status_code == 200 and wide.json()["count"] == n_clips, wide.text
    assert late.status_code == 200 and late.json()["count"] == 0, late.text
    assert dataset.status_code == 201 and dataset.json()["clip_count"] == n_clips, dataset.text
    # the schema bounds each component to float32 (storage.bounds): 422 before anything runs
    assert huge.status_code == 422 and "vector" in huge.json()["error"]["message"], huge.text
