"""The agent over mTLS with a bearer token, against a real TLS grpc.aio controller."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from agents.agent import Agent
from agents.config import parse_agent_config
from tests.support import eventually
from tests.support.agent_targets import FakeController, TcpTarget
from tests.support.pki import make_pki


async def test_mtls_and_token(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, {"agent": ()})  # ca.pem, server.pem/.key, agent.pem/.key
    (tmp_path / "token").write_text("s3cret\n")

    credentials = grpc.ssl_server_credentials([(pki["server_key"].read_bytes(), pki["server_cert"].read_bytes())],
                                              root_certificates=pki["ca"].read_bytes(), require_client_auth=True)
    controller = await FakeController("tls", credentials=credentials).start()
    tcp = TcpTarget()
    try:
        cfg = parse_agent_config({
            "site": "us-east-1", "region": "us-east-1", "controllers": [controller.endpoint],
            "interval_seconds": 0.1, "capacity": 1,
            "probes": [{"name": "db", "kind": "tcp", "address": tcp.address}],
            "tls": {"ca": "ca.pem", "cert": "agent.pem", "key": "agent.key"},
            "token_file": "token",
        }, base_dir=tmp_path)
        agent = Agent(cfg)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await eventually(lambda: len(controller.reports) >= 2, what="reports over mTLS")
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
        assert controller.service.metadata[0]["authorization"] == "Bearer s3cret"
    finally:
        tcp.close()
        await controller.stop()
