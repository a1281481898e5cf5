"""The official `openai` SDK's Responses API (`responses.create`, `responses.stream`) against `qnp serve`:
`openai/` models passed through to a mock that speaks OpenAI's Responses wire format, `anthropic/` and
`google/` models translated to mocks speaking Anthropic's Messages and Gemini's formats, and the
stateless rules."""

from __future__ import annotations

import openai
import pytest

from conftest import unique_email
from mock_openai_responses import ENCRYPTED_REASONING

MODEL = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-sonnet-5-5"
GEMINI = "google/gemini-2.5-flash"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def test_responses_create_passes_through_and_is_metered(gateway):
    email = unique_email("responses")
    key = gateway.create_key(email)
    client = gateway.client(key)
    mark = gateway.mock.mark()

    response = client.responses.create(
        model=MODEL,
        instructions="Be brief.",
        input="hello responses api",
        include=["reasoning.encrypted_content"],
    )
    assert response.output_text == "echo: hello responses api"
    assert response.usage.input_tokens == 3 + 2 + 7
    reasoning = [item for item in response.output if item.type == "reasoning"]
    assert reasoning and reasoning[0].encrypted_content == ENCRYPTED_REASONING

    sent = gateway.mock.requests_since(mark)
    assert [r["path"] for r in sent] == ["/v1/responses"]
    assert sent[0]["body"]["model"] == "gpt-4o-mini"
    assert sent[0]["body"]["store"] is False, "QNP never lets the upstream store"

    rows = gateway.usage_rows(email, 1)
    assert rows[0]["endpoint"] == "/v1/responses"
    assert rows[0]["model"] == MODEL
    assert int(rows[0]["prompt_tokens"]) == 12
    assert int(rows[0]["completion_tokens"]) == 4


def test_responses_stream_and_a_function_call_round_trip(gateway):
    email = unique_email("responses-stream")
    key = gateway.create_key(email)
    client = gateway.client(key)

    with client.responses.stream(model=MODEL, input="run tool for the weather", tools=[WEATHER_TOOL]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in kinds
    call = next(item for item in final.output if item.type == "function_call")
    assert call.name == "get_weather" and call.arguments == '{"city":"qnp"}'

    # The reasoning the model returned and the call go back with the tool's output: the whole
    # history, since QNP keeps none.
    history = [
        {"role": "user", "content": "run tool for the weather"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": ENCRYPTED_REASONING},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny and 21C"},
    ]
    mark = gateway.mock.mark()
    with client.responses.stream(model=MODEL, input=history, tools=[WEATHER_TOOL]) as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
    assert text == "tool said: sunny and 21C"
    sent = gateway.mock.requests_since(mark)[0]["body"]
    assert sent["input"][1]["encrypted_content"] == ENCRYPTED_REASONING, "reasoning goes back to OpenAI as sent"

    rows = gateway.usage_rows(email, 2)
    assert all(r["endpoint"] == "/v1/responses" and r["streamed"] == "true" for r in rows), rows


def test_responses_on_an_anthropic_model_are_translated(claude_gateway):
    gateway, upstream = claude_gateway
    email = unique_email("responses-claude")
    key = gateway.create_key(email)
    client = gateway.client(key)

    response = client.responses.create(model=CLAUDE, instructions="Be brief.", input="hi from responses", max_output_tokens=64)
    assert response.output_text == "echo: hi from responses"
    assert response.model == CLAUDE
    assert response.status == "completed"
    sent = upstream.requests[-1]["body"]
    assert sent["max_tokens"] == 64
    assert sent["model"] == "claude-sonnet-5-5"

    with client.responses.stream(model=CLAUDE, input="stream from claude", max_output_tokens=64) as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == "echo: stream from claude"
    assert final.output_text == text
    assert final.usage.input_tokens > 0

    rows = gateway.usage_rows(email, 2)
    assert {r["model"] for r in rows} == {CLAUDE}
    assert all(r["endpoint"] == "/v1/responses" for r in rows)


def test_responses_on_a_google_model_are_translated(gemini_gateway):
    gateway, upstream = gemini_gateway
    email = unique_email("responses-gemini")
    key = gateway.create_key(email)
    client = gateway.client(key)

    response = client.responses.create(model=GEMINI, instructions="Be brief.", input="hi from responses")
    assert response.output_text == "echo: hi from responses"
    assert response.model == GEMINI
    sent = upstream.requests[-1]
    assert sent["path"].startswith("/v1beta/models/gemini-2.5-flash:generateContent")
    assert sent["body"]["systemInstruction"]["parts"][0]["text"] == "Be brief."

    with client.responses.stream(model=GEMINI, input="stream from gemini") as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == "echo: stream from gemini"
    assert final.status == "completed"
    assert final.usage.input_tokens == 3 + 5
    assert final.usage.output_tokens == 4

    rows = gateway.usage_rows(email, 2)
    assert {r["model"] for r in rows} == {GEMINI}
    assert all(r["endpoint"] == "/v1/responses" for r in rows)


def test_stateful_calls_get_a_clear_400(gateway):
    key = gateway.create_key(unique_email("responses-stateful"))
    client = gateway.client(key)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input="again", previous_response_id="resp_123")
    assert "no conversation state" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.retrieve("resp_123")
    assert "no conversation state" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input="look it up", tools=[{"type": "file_search", "vector_store_ids": ["vs_1"]}])
    assert err.value.body["param"] == "tools[0]"


def test_hosted_web_search_is_sent_with_a_bound_on_its_calls(gateway):
    key = gateway.create_key(unique_email("responses-search"))
    mark = gateway.mock.mark()
    response = gateway.client(key).responses.create(model=MODEL, input="hi", tools=[{"type": "web_search"}])
    assert response.output_text == "echo: hi"
    sent = gateway.mock.requests_since(mark)[0]["body"]
    assert sent["tools"] == [{"type": "web_search"}]
    assert sent["max_tool_calls"] == 10, "the searches QNP reserved for, at the model's per-call price"
