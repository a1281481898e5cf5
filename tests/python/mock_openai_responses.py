"""The mock OpenAI upstream's Responses API (``POST /v1/responses``), in the real wire format.

Whole: a ``response`` object. Streamed: named SSE events with ``sequence_number`` from 0 --
``response.created``, ``response.in_progress``, per output item ``response.output_item.added``, its
deltas (``response.output_text.delta`` or ``response.function_call_arguments.delta``), done events and
``response.output_item.done``, then one ``response.completed`` with the whole output and ``usage``.

Behaviour, deterministic so tests can predict it:

* the last input item is a ``function_call_output``: the answer is ``"tool said: <output>"``;
* else, with function tools (top level or in a ``namespace``) and a last user text containing
  ``run tool``: a ``function_call`` to ``exec_command`` when there is one (Codex's shell tool, with
  ``{"cmd": "echo qnp-tool-ok"}``), else to the first function, with every required string
  parameter set to ``"qnp"``;
* else ``"echo: "`` + the last user text.
* ``include`` naming ``reasoning.encrypted_content`` adds a leading ``reasoning`` item whose
  ``encrypted_content`` is ``ENCRYPTED_REASONING`` (clients send it back on the next turn).
* usage: ``input_tokens`` = words in all input texts + 7, ``output_tokens`` = words of the answer
  (arguments: their length / 4 + 1), ``cached_tokens`` = min(4, input), ``reasoning_tokens`` = 0.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

PROMPT_OVERHEAD_TOKENS = 7
CACHED_TOKENS = 4
ENCRYPTED_REASONING = "enc-mock-reasoning-7f3a"
TOOL_COMMAND = "echo qnp-tool-ok"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def item_text(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body.get("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list):
        return [i for i in value if isinstance(i, dict)]
    return []


def output_text(item: dict[str, Any]) -> str:
    output = item.get("output")
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return " ".join(p.get("text", "") for p in output if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def functions(tools: Any) -> list[dict[str, Any]]:
    """The function tools, namespaces flattened, in order."""
    out: list[dict[str, Any]] = []
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "function":
            out.append(tool)
        elif tool.get("type") == "namespace":
            out.extend(functions(tool.get("tools")))
    return out


def answer(body: dict[str, Any]) -> tuple[str, Any]:
    """("text", text) or ("call", (name, arguments))."""
    items = input_items(body)
    if items and items[-1].get("type") == "function_call_output":
        return "text", " ".join(["tool", "said:"] + output_text(items[-1]).split())
    last_user = ""
    for item in items:
        if item.get("role") == "user":
            last_user = item_text(item)
    tools = functions(body.get("tools"))
    if tools and "run tool" in last_user:
        chosen = next((t for t in tools if t.get("name") == "exec_command"), tools[0])
        if chosen.get("name") == "exec_command":
            arguments = {"cmd": TOOL_COMMAND}
        else:
            params = chosen.get("parameters") or {}
            props = params.get("properties") or {}
            arguments = {
                name: "qnp" for name in params.get("required") or [] if (props.get(name) or {}).get("type") == "string"
            }
        return "call", (chosen.get("name"), json.dumps(arguments, separators=(",", ":")))
    return "text", " ".join(["echo:"] + last_user.split())


def usage(body: dict[str, Any], kind: str, value: Any) -> dict[str, Any]:
    words = 0
    for item in input_items(body):
        words += len(item_text(item).split()) + len(output_text(item).split())
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        words += len(instructions.split())
    prompt = words + PROMPT_OVERHEAD_TOKENS
    completion = len(value.split()) if kind == "text" else len(value[1]) // 4 + 1
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": min(CACHED_TOKENS, prompt)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def response_object(body: dict[str, Any], rid: str, status: str, output: list[Any], usage_value: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model"),
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage_value,
        "metadata": body.get("metadata") or {},
    }


def handle(handler: Any, body: dict[str, Any]) -> None:
    """Answers one ``POST /v1/responses`` on the mock's request handler."""
    if "input" not in body:
        handler._send_error(400, "Missing required parameter: 'input'.", "invalid_request_error", "missing_required_parameter", "input")
        return
    kind, value = answer(body)
    rid = "resp_" + uuid.uuid4().hex[:24]
    items: list[dict[str, Any]] = []
    include = body.get("include") if isinstance(body.get("include"), list) else []
    if "reasoning.encrypted_content" in include:
        items.append({"id": "rs_" + uuid.uuid4().hex[:16], "type": "reasoning", "summary": [], "encrypted_content": ENCRYPTED_REASONING})
    if kind == "text":
        items.append(
            {
                "id": "msg_" + uuid.uuid4().hex[:16],
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": value, "annotations": [], "logprobs": []}],
            }
        )
    else:
        name, arguments = value
        items.append(
            {
                "id": "fc_" + uuid.uuid4().hex[:16],
                "type": "function_call",
                "status": "completed",
                "call_id": "call_" + uuid.uuid4().hex[:16],
                "name": name,
                "arguments": arguments,
            }
        )
    usage_value = usage(body, kind, value)
    if body.get("stream") is not True:
        handler._send_json(200, response_object(body, rid, "completed", items, usage_value))
        return
    events: list[tuple[str, dict[str, Any]]] = []
    started = response_object(body, rid, "in_progress", [], None)
    events.append(("response.created", {"response": started}))
    events.append(("response.in_progress", {"response": started}))
    for index, item in enumerate(items):
        added = dict(item, status="in_progress")
        if item["type"] == "message":
            added["content"] = []
        elif item["type"] == "function_call":
            added["arguments"] = ""
        events.append(("response.output_item.added", {"output_index": index, "item": added}))
        if item["type"] == "message":
            text = item["content"][0]["text"]
            part = {"type": "output_text", "text": "", "annotations": []}
            events.append(("response.content_part.added", {"item_id": item["id"], "output_index": index, "content_index": 0, "part": part}))
            for i, word in enumerate(text.split()):
                delta = word if i == 0 else " " + word
                events.append(("response.output_text.delta", {"item_id": item["id"], "output_index": index, "content_index": 0, "delta": delta, "logprobs": []}))
            events.append(("response.output_text.done", {"item_id": item["id"], "output_index": index, "content_index": 0, "text": text, "logprobs": []}))
            events.append(("response.content_part.done", {"item_id": item["id"], "output_index": index, "content_index": 0, "part": dict(part, text=text)}))
        elif item["type"] == "function_call":
            events.append(("response.function_call_arguments.delta", {"item_id": item["id"], "output_index": index, "delta": item["arguments"]}))
            events.append(("response.function_call_arguments.done", {"item_id": item["id"], "output_index": index, "arguments": item["arguments"]}))
        events.append(("response.output_item.done", {"output_index": index, "item": item}))
    events.append(("response.completed", {"response": response_object(body, rid, "completed", items, usage_value)}))

    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
    handler.send_header("Cache-Control", "no-cache")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.send_header("x-request-id", "req_mock_" + uuid.uuid4().hex[:16])
    handler.end_headers()
    try:
        for sequence, (name, data) in enumerate(events):
            data = dict(type=name, sequence_number=sequence, **data)
            event = b"event: " + name.encode() + b"\ndata: " + _dumps(data) + b"\n\n"
            if sequence and handler.mock.stream_delay:
                time.sleep(handler.mock.stream_delay)
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
    except (BrokenPipeError, ConnectionResetError):
        handler.close_connection = True
