"""Portfolios from the YAML file and ``inflow workspaces projects add|list|remove``, seen by a running
``inflow gateway`` process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import requests

from tests.bulk_api.conftest import basic, gateway_env
from tests.bulk_api.test_processes import cli
from tests.support import wait_for

CUSTOMER = {"type": "customer", "customer_id": "cli-user"}
CONFIG = """
workspaces:
  - id: PORTY
    api_key: porty-key
    projects:
      - {code: EU, workspace: PORTY-EU, name: Europe}
  - id: PORTY-EU
"""


def status(url: str, query: str = "") -> int:
    headers = {"Authorization": basic("PORTY", "porty-key"), "Content-Type": "application/json"}
    resp = requests.post(f"{url}/v1/customer/PORTY{query}", json=CUSTOMER, headers=headers, timeout=60)
    return resp.status_code


def failing(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "inflow.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0, result.stdout
    return " ".join((result.stdout + result.stderr).split())  # the CLI wraps long errors


def test_projects_from_the_file_and_the_cli_route_a_running_gateways_calls(
    gateway_process, catalogue_topics, tmp_path: Path
) -> None:
    config = tmp_path / "inflow.yaml"
    config.write_text(CONFIG)
    env = gateway_env(catalogue_topics, tmp_path / "home", config)
    gw = gateway_process(env)
    listed = json.loads(cli(env, "workspaces", "projects", "list", "PORTY").stdout)
    assert listed == {
        "workspace_id": "PORTY",
        "projects": [{"code": "EU", "name": "Europe", "workspace_id": "PORTY-EU"}],
    }
    assert status(gw.url, "?project_code=EU") == 200
    assert status(gw.url) == 400  # a portfolio names its project

    cli(env, "workspaces", "create", "PORTY-US", "--key", "us-own-key")
    added = json.loads(
        cli(env, "workspaces", "projects", "add", "PORTY", "US", "--workspace", "PORTY-US").stdout
    )
    assert [p["code"] for p in added["projects"]] == ["EU", "US"]
    wait_for(lambda: status(gw.url, "?project_code=US") == 200, 30, what="the new project on the gateway")

    assert "workspace PORTY-NONE does not exist" in failing(
        env, "workspaces", "projects", "list", "PORTY-NONE"
    )
    assert "workspace GHOST does not exist; create it first" in failing(
        env, "workspaces", "projects", "add", "PORTY", "GH", "--workspace", "GHOST"
    )
    assert "portfolio PORTY already has a project US" in failing(
        env, "workspaces", "projects", "add", "PORTY", "US", "--workspace", "PORTY-EU"
    )
    assert "workspace PORTY-EU is a project of portfolio PORTY: portfolios do not nest" in failing(
        env, "workspaces", "projects", "add", "PORTY-EU", "X", "--workspace", "PORTY-US"
    )
    cli(env, "workspaces", "create", "OTHER-PORT", "--key", "k")
    assert "workspace PORTY-US is already a project of portfolio PORTY" in failing(
        env, "workspaces", "projects", "add", "OTHER-PORT", "X", "--workspace", "PORTY-US"
    )

    cli(env, "workspaces", "projects", "remove", "PORTY", "US")
    cli(env, "workspaces", "projects", "remove", "PORTY", "EU")
    assert "portfolio PORTY has no project EU" in failing(
        env, "workspaces", "projects", "remove", "PORTY", "EU"
    )
    # No projects left: an ordinary workspace again, and project_code is refused.
    wait_for(lambda: status(gw.url) == 200, 30, what="PORTY as an ordinary workspace")
    assert status(gw.url, "?project_code=EU") == 400
    assert gw.stop() == 0
