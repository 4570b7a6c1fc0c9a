"""A fake OpenAI + Anthropic API on loopback, answering with the vendors' documented response shapes.

The official SDKs (and the instrumentations wrapping them) are the software under test here: they
parse these bodies, so the shapes must be exactly the documented ones (JSON bodies, and SSE event
streams for ``stream=True``). Each route answers with a canned document that a test chooses
(``FakeVendor.documents``); the usage in it is the ground truth the test asserts on.

A route's document may be a list: each request takes the next one, the last one repeats (an
agent's tool call, then its answer).

Routes: ``POST /v1/chat/completions`` (OpenAI Chat Completions, streams with
``stream_options.include_usage``), ``POST /v1/responses`` (OpenAI Responses), ``POST /v1/embeddings``,
``POST /v1/messages`` (Anthropic Messages), ``POST /v1beta/models/<model>:generateContent`` (Gemini).
Every request body is kept in ``requests``.
"""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def _chat_chunks(doc: dict[str, Any], include_usage: bool) -> Iterator[tuple[str | None, Any]]:
    """``chat.completion.chunk`` events: role, content, finish, then (asked for) a choices-less usage chunk."""
    base = {"id": doc["id"], "object": "chat.completion.chunk", "created": doc["created"], "model": doc["model"],
            "service_tier": doc.get("service_tier"), "system_fingerprint": doc.get("system_fingerprint")}
    text = doc["choices"][0]["message"]["content"]
    yield None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                      "logprobs": None, "finish_reason": None}]}
    for word in text.split(" "):
        yield None, {**base, "choices": [{"index": 0, "delta": {"content": word + " "}, "logprobs": None,
                                          "finish_reason": None}]}
    yield None, {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]}
    if include_usage:
        yield None, {**base, "choices": [], "usage": doc["usage"]}
    yield None, "[DONE]"


def _response_events(doc: dict[str, Any]) -> Iterator[tuple[str | None, Any]]:
    """Responses API stream as documented: created, in_progress, then for each output item
    output_item.added (its content parts and text deltas for a message) and output_item.done,
    then completed (the full response with its usage)."""
    seq = iter(range(10**6))
    started = {**doc, "status": "in_progress", "output": [], "usage": None}
    yield "response.created", {"type": "response.created", "sequence_number": next(seq), "response": started}
    yield "response.in_progress", {"type": "response.in_progress", "sequence_number": next(seq), "response": started}
    for index, item in enumerate(doc["output"]):
        empty = {**item, "content": [], "status": "in_progress"} if item["type"] == "message" else item
        yield "response.output_item.added", {"type": "response.output_item.added", "sequence_number": next(seq),
                                             "output_index": index, "item": empty}
        for part_index, part in enumerate(item.get("content", []) if item["type"] == "message" else []):
            where = {"item_id": item["id"], "output_index": index, "content_index": part_index}
            yield "response.content_part.added", {"type": "response.content_part.added", "sequence_number": next(seq),
                                                  **where, "part": {**part, "text": ""}}
            yield "response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": next(seq),
                                                 **where, "delta": part["text"], "logprobs": []}
            yield "response.output_text.done", {"type": "response.output_text.done", "sequence_number": next(seq),
                                                **where, "text": part["text"], "logprobs": []}
            yield "response.content_part.done", {"type": "response.content_part.done", "sequence_number": next(seq),
                                                 **where, "part": part}
        yield "response.output_item.done", {"type": "response.output_item.done", "sequence_number": next(seq),
                                            "output_index": index, "item": item}
    yield "response.completed", {"type": "response.completed", "sequence_number": next(seq), "response": doc}


def _message_events(doc: dict[str, Any]) -> Iterator[tuple[str | None, Any]]:
    """Anthropic Messages stream: message_start carries the input side of usage, message_delta the
    cumulative output side (as the API documents), then message_stop."""
    usage = doc["usage"]
    start_usage = {**usage, "output_tokens": 1}
    yield "message_start", {"type": "message_start", "message": {
        **{k: v for k, v in doc.items() if k not in ("content", "usage", "stop_reason", "stop_sequence")},
        "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}}
    for index, block in enumerate(doc["content"]):
        if block["type"] == "thinking":
            yield "content_block_start", {"type": "content_block_start", "index": index,
                                          "content_block": {"type": "thinking", "thinking": "", "signature": ""}}
            yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "thinking_delta", "thinking": block["thinking"]}}
            yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "signature_delta", "signature": block["signature"]}}
        else:
            yield "content_block_start", {"type": "content_block_start", "index": index,
                                          "content_block": {"type": "text", "text": ""}}
            yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "text_delta", "text": block["text"]}}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    delta_usage = {k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
                                         "output_tokens", "output_tokens_details") if k in usage}
    yield "message_delta", {"type": "message_delta", "usage": delta_usage,
                            "delta": {"stop_reason": doc["stop_reason"], "stop_sequence": None}}
    yield "message_stop", {"type": "message_stop"}


class FakeVendor:
    """``with FakeVendor() as vendor:`` serves on ``vendor.url`` (``http://127.0.0.1:<port>``) until exit."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any] | list[dict[str, Any]]] = {
            "/v1/chat/completions": fixture("openai_chat_completion.json"),
            "/v1/responses": fixture("openai_responses.json"),
            "/v1/embeddings": fixture("openai_embeddings.json"),
            "/v1/messages": fixture("anthropic_message.json"),
            ":generateContent": fixture("gemini_generate_content.json"),
        }
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._served = 0
        vendor = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
                vendor.requests.append((self.path, body))
                path = self.path.split("?", 1)[0]
                doc = vendor.next_document(":generateContent" if path.endswith(":generateContent") else path)
                if doc is None:
                    self._json(404, {"error": {"type": "not_found_error", "message": self.path}})
                elif not body.get("stream"):
                    self._json(200, doc)
                elif self.path.startswith("/v1/chat/completions"):
                    self._sse(_chat_chunks(doc, bool((body.get("stream_options") or {}).get("include_usage"))))
                elif self.path.startswith("/v1/responses"):
                    self._sse(_response_events(doc))
                else:
                    self._sse(_message_events(doc))

            def _json(self, status: int, doc: Any) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", "req_fake")
                self.end_headers()
                self.wfile.write(data)

            def _sse(self, events: Iterator[tuple[str | None, Any]]) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                for name, data in events:
                    payload = data if isinstance(data, str) else json.dumps(data)
                    self.wfile.write((f"event: {name}\n" if name else "").encode() + f"data: {payload}\n\n".encode())
                    self.wfile.flush()
                self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-vendor", daemon=True)

    def next_document(self, path: str) -> dict[str, Any] | None:
        with self._lock:
            docs = self.documents.get(path)
            if isinstance(docs, list):
                docs = docs.pop(0) if len(docs) > 1 else docs[0]
            doc = copy.deepcopy(docs)
            self._served += 1
            if doc is not None and "id" in doc:  # every response has its own id, as the vendors' do
                doc["id"] = f"{doc['id']}{self._served:04d}"
            return doc

    def __enter__(self) -> FakeVendor:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
