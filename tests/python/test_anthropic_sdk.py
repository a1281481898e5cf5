"""The official `anthropic` SDK, unchanged, against QNP's `/v1/messages`, and the `openai` SDK against
an `anthropic/` model, with a mock Anthropic upstream speaking the real Messages wire format."""

from __future__ import annotations

import anthropic
import pytest

from conftest import UPSTREAM_KEY, unique_email


def sdk(gateway, key: str) -> anthropic.Anthropic:
    # The anthropic SDK's base URL has no /v1; QNP serves /v1/messages at the root.
    root = gateway.base_url.removesuffix("/v1")
    return anthropic.Anthropic(base_url=root, api_key=key, max_retries=0, timeout=30.0)


def test_messages_create_and_stream_through_the_anthropic_sdk(claude_gateway):
    gateway, upstream = claude_gateway
    email = unique_email("claude")
    key = gateway.create_key(email)
    client = sdk(gateway, key)

    message = client.messages.create(
        model="anthropic/claude-sonnet-5-5",
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello from the sdk"}],
    )
    assert message.content[0].text == "echo: hello from the sdk"
    assert message.usage.cache_read_input_tokens == 4
    assert upstream.requests[-1]["body"]["model"] == "claude-sonnet-5-5"
    assert upstream.requests[-1]["headers"]["x-api-key"] == UPSTREAM_KEY, "the client's key never goes upstream"

    with client.messages.stream(
        model="anthropic/claude-sonnet-5-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "stream this please"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: stream this please"
    assert final.usage.output_tokens == 4

    rows = gateway.usage_rows(email, 2)
    assert {r["endpoint"] for r in rows} == {"/v1/messages"}
    assert sorted(r["streamed"] for r in rows) == ["false", "true"]
    # prompt = input (reply words + 3) + cache read 4 + cache write 2, counted once:
    # "echo: stream this please" is 4 words, "echo: hello from the sdk" 5.
    assert sorted(int(r["prompt_tokens"]) for r in rows) == [4 + 3 + 6, 5 + 3 + 6]
    assert all(int(r["cached_tokens"]) == 4 and float(r["cost_usd"]) > 0 for r in rows)


def test_anthropic_sdk_errors_are_its_own_types(claude_gateway):
    gateway, _ = claude_gateway
    key = gateway.create_key(unique_email("claude-err"))
    with pytest.raises(anthropic.AuthenticationError):
        sdk(gateway, "qnp_wrong").messages.create(
            model="anthropic/claude-sonnet-5-5", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.NotFoundError) as bad:
        sdk(gateway, key).messages.create(
            model="anthropic/claude-imaginary", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert "/v1/models" in str(bad.value)


def test_openai_sdk_reaches_an_anthropic_model_by_translation(claude_gateway):
    gateway, upstream = claude_gateway
    email = unique_email("translate")
    client = gateway.client(gateway.create_key(email))
    completion = client.chat.completions.create(
        model="anthropic/claude-sonnet-5-5",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "translate me"}],
    )
    assert completion.choices[0].message.content == "echo: translate me"
    assert completion.usage.prompt_tokens_details.cached_tokens == 4
    sent = upstream.requests[-1]["body"]
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["max_tokens"] > 0
    chunks = list(
        client.chat.completions.create(
            model="anthropic/claude-sonnet-5-5",
            messages=[{"role": "user", "content": "and streamed"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: and streamed"
    assert chunks[-1].usage.completion_tokens == 3


def test_anthropic_sdk_reaches_an_openai_model_by_translation(claude_gateway):
    gateway, _ = claude_gateway
    email = unique_email("bridge")
    client = sdk(gateway, gateway.create_key(email))
    message = client.messages.create(
        model="openai/gpt-4o-mini",
        max_tokens=32,
        system="Be brief.",
        messages=[{"role": "user", "content": "bridge me"}],
    )
    assert message.content[0].text == "echo: bridge me"
    assert message.stop_reason == "end_turn"
    with client.messages.stream(
        model="openai/gpt-4o-mini", max_tokens=32, messages=[{"role": "user", "content": "bridge the stream"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: bridge the stream"
    assert final.usage.output_tokens > 0
    rows = gateway.usage_rows(email, 2)
    assert {(r["endpoint"], r["model"]) for r in rows} == {("/v1/messages", "openai/gpt-4o-mini")}
    assert all(int(r["completion_tokens"]) > 0 for r in rows)
