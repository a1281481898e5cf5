"""The agents people point at gateways, unchanged, against `qnp serve` with mock upstreams, each with one
tool round trip: OpenAI's Codex CLI (`codex exec`) and the OpenAI Agents SDK (`openai-agents`) through
QNP's `/v1/responses`, and Claude Code (`claude -p`) through `/v1/messages` with its betas. Versions are
pinned in tests/agents/package.json (the CLIs) and tests/run.sh (the SDK).

tests/run.sh installs the agents and sets $QNP_TEST_CODEX and $QNP_TEST_CLAUDE; run the suite through it."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from conftest import unique_email
from mock_anthropic import TOOL_COMMAND as CLAUDE_TOOL_COMMAND
from mock_openai_responses import TOOL_COMMAND

MODEL = "openai/gpt-4o-mini"


def agent_binary(variable: str) -> str:
    binary = os.environ.get(variable)
    if not binary or not Path(binary).is_file():
        pytest.fail(f"{variable} is not set: run the suite with tests/run.sh, which installs the agents", pytrace=False)
    return binary


def codex_config(base_url: str) -> str:
    """The config.toml the README gives Codex users."""
    return f"""model = "{MODEL}"
model_provider = "qnp"

[model_providers.qnp]
name = "QNP"
base_url = "{base_url}"
env_key = "QNP_API_KEY"
wire_api = "responses"
"""


def test_codex_exec_runs_a_tool_through_qnp(gateway, tmp_path):
    email = unique_email("codex")
    key = gateway.create_key(email)
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(codex_config(gateway.base_url))
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env.update({"HOME": str(home), "CODEX_HOME": str(home / ".codex"), "QNP_API_KEY": key, "NO_COLOR": "1"})
    mark = gateway.mock.mark()
    result = subprocess.run(
        [
            agent_binary("QNP_TEST_CODEX"),
            "exec",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            "run tool: print the greeting",
        ],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=180,
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, output
    # The mock asked for `echo qnp-tool-ok`; Codex ran it and sent the output back, and the mock's
    # answer to that is the last message Codex prints.
    assert "tool said:" in result.stdout.decode(), output
    assert "qnp-tool-ok" in result.stdout.decode(), output

    sent = [r for r in gateway.mock.requests_since(mark) if r["path"] == "/v1/responses"]
    assert len(sent) == 2, [r["path"] for r in gateway.mock.requests_since(mark)]
    first, second = (r["body"] for r in sent)
    assert first["stream"] is True and first["model"] == "gpt-4o-mini"
    assert first["store"] is False
    assert any(t.get("name") == "exec_command" for t in first["tools"])
    # Codex's default hosted web search goes to OpenAI, bounded: QNP reserved for these many calls.
    assert any(t.get("type") == "web_search" for t in first["tools"])
    assert first["max_tool_calls"] == 10
    outputs = [i for i in second["input"] if i.get("type") == "function_call_output"]
    assert outputs and "qnp-tool-ok" in str(outputs[-1]["output"])
    calls = [i for i in second["input"] if i.get("type") == "function_call"]
    assert calls and TOOL_COMMAND in calls[-1]["arguments"]

    rows = gateway.usage_rows(email, 2)
    assert len(rows) == 2
    assert all(r["endpoint"] == "/v1/responses" and r["status"] == "200" and r["streamed"] == "true" for r in rows), rows
    assert all(int(r["prompt_tokens"]) > 0 for r in rows)


@pytest.mark.parametrize("streamed", [False, True])
def test_the_agents_sdk_runs_a_tool_through_qnp(gateway, streamed):
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    email = unique_email("agents-sdk")
    key = gateway.create_key(email)

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    async def run() -> str:
        client = AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
        agent = Agent(
            name="weather",
            instructions="Answer with the tool's result.",
            model=OpenAIResponsesModel(model=MODEL, openai_client=client),
            tools=[get_weather],
        )
        if not streamed:
            result = await Runner.run(agent, "run tool for the weather")
            return result.final_output
        result = Runner.run_streamed(agent, "run tool for the weather")
        async for _ in result.stream_events():
            pass
        return result.final_output

    mark = gateway.mock.mark()
    final = asyncio.run(run())
    assert final == "tool said: sunny in qnp"
    sent = [r["body"] for r in gateway.mock.requests_since(mark) if r["path"] == "/v1/responses"]
    assert len(sent) == 2
    assert all(body.get("stream", False) is streamed for body in sent)
    assert sent[1]["input"][-1]["type"] == "function_call_output"
    rows = gateway.usage_rows(email, 2)
    assert [r["streamed"] for r in rows] == [str(streamed).lower()] * 2


def test_claude_code_runs_a_tool_through_qnp_with_its_betas(claude_gateway, tmp_path):
    gateway, upstream = claude_gateway
    email = unique_email("claude-code")
    key = gateway.create_key(email)
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    env.update(
        {
            "HOME": str(home),
            # The environment the README gives Claude Code users.
            "ANTHROPIC_BASE_URL": gateway.base_url.removesuffix("/v1"),
            "ANTHROPIC_API_KEY": key,
            "ANTHROPIC_MODEL": "anthropic/claude-sonnet-5-5",
            "ANTHROPIC_SMALL_FAST_MODEL": "anthropic/claude-haiku-4-5",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
        }
    )
    result = subprocess.run(
        [agent_binary("QNP_TEST_CLAUDE"), "-p", "run tool: print the greeting", "--allowedTools", "Bash(echo:*)"],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=180,
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, output
    assert "tool said: qnp-tool-ok" in result.stdout.decode(), output

    calls = [r for r in upstream.requests if r["path"] == "/v1/messages"]
    assert len(calls) >= 2, [r["path"] for r in upstream.requests]
    for call in calls:
        headers = {k.lower(): v for k, v in call["headers"].items()}
        assert "claude-code-20250219" in headers.get("anthropic-beta", ""), headers
        assert headers["x-api-key"] != key, "the client's key never goes upstream"
    results = [
        block
        for block in calls[-1]["body"]["messages"][-1]["content"]
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]
    assert results, calls[-1]["body"]["messages"][-1]
    uses = [
        block
        for message in calls[-1]["body"]["messages"]
        if message["role"] == "assistant"
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") == "tool_use"
    ]
    assert uses and uses[-1]["input"]["command"] == CLAUDE_TOOL_COMMAND

    rows = gateway.usage_rows(email, len(calls))
    messages_rows = [r for r in rows if r["endpoint"] == "/v1/messages"]
    assert len(messages_rows) == len(calls)
    assert all(r["status"] == "200" and r["model"].startswith("anthropic/") for r in messages_rows), rows
