"""The OpenAPI document kept true: schemathesis fuzzes every operation from ``/api/v1/openapi.json`` against a
real ``steering controller`` on a real etcd, with agents reporting every region healthy so that the safety
rules bite. No answer may be a 5xx, and every answer must match the document: its status code, content type,
headers and JSON schema. Valid requests come first (they evacuate, restore, pin and plan for real), then
requests the document does not allow, which must be refused with a 4xx.

Bounded: ``EXAMPLES`` valid and ``NEGATIVE`` invalid requests per operation, no shrinking, no example
database: about 700 requests in 13 s here.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.core.result import Ok

from steering.etcdproc import EtcdCluster
from tests.support.http_api import serving

EXAMPLES = 50
NEGATIVE = 25
# How the API refuses a request its document does not allow (docs/rest-api.md, "Errors"); 413 too, which
# schemathesis does not expect by default.
REFUSED = ["400", "401", "403", "404", "405", "409", "413", "415", "422"]
CONFORMANCE = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
               checks.response_headers_conformance, checks.response_schema_conformance]


def _fuzz(base: str) -> tuple[dict[str, int], Counter[int], list[str]]:
    """Requests sent per operation, the statuses answered, and what went wrong (empty when the API kept to its
    document)."""
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json", config=schemathesis.Config.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": REFUSED}}}))
    sent: dict[str, int] = {}
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    with requests.Session() as session:
        def fuzz(op: Any, mode: GenerationMode, count: int, extra: list[Any]) -> None:
            label = f"{op.label} ({mode.value})"

            @hypothesis.settings(max_examples=count, deadline=None, database=None,
                                 phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @hypothesis.given(case=op.as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                sent[label] = sent.get(label, 0) + 1
                resp = case.call_and_validate(base_url=base, session=session, checks=[*CONFORMANCE, *extra],
                                              timeout=10)
                statuses[resp.status_code] += 1

            try:
                call()
            except Unsatisfiable:  # nothing to break: an operation without parameters or body
                assert mode == GenerationMode.NEGATIVE and not op.path_parameters and not op.query and not op.body
            except (Exception, BaseExceptionGroup) as exc:  # a failed check: collect them all, then fail once
                problems.append(f"{label}: {str(exc)[:1500]}")

        for result in schema.get_all_operations():
            if not isinstance(result, Ok):  # the document itself is wrong somewhere
                problems.append(f"invalid operation in the document: {result.err()}")
                continue
            op = result.ok()
            if op.path.endswith("/stream"):  # never ends: tests/test_http_console.py reads it
                continue
            fuzz(op, GenerationMode.POSITIVE, EXAMPLES, [])
            fuzz(op, GenerationMode.NEGATIVE, NEGATIVE, [checks.negative_data_rejection])
    return sent, statuses, problems


async def test_the_api_keeps_to_its_openapi_document(etcd: EtcdCluster, tmp_path: Path) -> None:
    async with serving(tmp_path, etcd) as s:
        started = time.monotonic()
        # schemathesis is synchronous (requests): in a thread, so the agents keep reporting on this loop
        sent, statuses, problems = await asyncio.to_thread(_fuzz, s.base)
        took = time.monotonic() - started
        print(f"fuzzed {sum(sent.values())} requests over {len(sent)} operation modes in {took:.1f}s; "
              f"statuses {dict(sorted(statuses.items()))}")
        assert len({label.rsplit(' (', 1)[0] for label in sent}) >= 15, sorted(sent)  # all but openapi.json
        assert {200, 201, 409, 422} <= set(statuses), "actions were applied and refused, not only malformed"
        assert not problems, "\n\n".join(problems)
        assert s.proc.proc.poll() is None, "the controller survived the fuzzing"
