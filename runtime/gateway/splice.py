"""One client response built from one or more upstream streams: what was sent, the continuation request that
picks up after it, and each upstream event rewritten into the client's stream. Pure: documents in and out.

The client sees one response id, one assistant role, every token once, one finish and one usage (summed). A
continuation is the original request with the tokens already sent appended to the prompt — as token ids where the
engine returned them (`return_token_ids`, vLLM), else as text (completions: the prompt plus the text; chat: a final
assistant message with `continue_final_message`) — and `max_tokens` reduced by what was sent, sampling
parameters and seed unchanged.
"""

from __future__ import annotations

import copy
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["completions", "chat"]
Form = Literal["token_ids", "text"]


class NotContinuable(ValueError):
    """The request cannot be continued elsewhere (n > 1, best_of, logprobs over a prompt...)."""


@dataclass
class Splice:
    kind: Kind
    body: dict[str, Any]
    form: Form = "token_ids"
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    ids: list[int] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    prompt_ids: list[int] | None = None
    prompt_tokens: int | None = None
    sent: int = 0
    """Tokens sent to the client so far (all attempts)."""
    carried: int = 0
    """Tokens the current attempt was given in its prompt (sent before it started)."""
    role_sent: bool = False
    finish: str | None = None
    attempts: int = 0
    last_tokens: int = 0
    """Tokens the last rewritten event carried (0: a role or finish event)."""

    def __post_init__(self) -> None:
        if not self.id:
            self.id = ("chatcmpl-" if self.kind == "chat" else "cmpl-") + uuid.uuid4().hex
        n = self.body.get("n", 1)
        if n not in (None, 1) or self.body.get("best_of") not in (None, 1) or self.body.get("echo"):
            raise NotContinuable("n, best_of and echo are not supported through the gateway")

    @property
    def max_tokens(self) -> int | None:
        v = self.body.get("max_tokens", self.body.get("max_completion_tokens"))
        return v if isinstance(v, int) else None

    @property
    def tokens_left(self) -> int:
        m = self.max_tokens
        return max(0, (m if m is not None else 1024) - self.sent)

    @property
    def client_wants_ids(self) -> bool:
        return bool(self.body.get("return_token_ids"))

    @property
    def client_wants_usage(self) -> bool:
        opts = self.body.get("stream_options")
        return not self.body.get("stream") or bool(isinstance(opts, dict) and opts.get("include_usage"))

    @property
    def text(self) -> str:
        return "".join(self.parts)

    # -- the request for the next attempt ------------------------------------------------------------------
    def next_request(self) -> dict[str, Any]:
        """The body for the next upstream attempt: the original on the first, a continuation after."""
        self.attempts += 1
        self.carried = self.sent
        b = copy.deepcopy(self.body)
        b["stream"] = True
        b["stream_options"] = {"include_usage": True}
        if self.form == "token_ids":
            b["return_token_ids"] = True
        if self.sent == 0:
            return b
        if self.max_tokens is not None:
            b["max_tokens"] = self.max_tokens - self.sent
            b.pop("max_completion_tokens", None)
        if self.kind == "completions":
            if self.form == "token_ids" and self.prompt_ids is not None and len(self.ids) == self.sent:
                b["prompt"] = self.prompt_ids + self.ids
            else:
                prompt = b.get("prompt", "")
                if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                    prompt = prompt[0]
                if not isinstance(prompt, str):
                    raise NotContinuable("a token-id prompt whose engine returns no token ids")
                b["prompt"] = prompt + self.text
        else:
            messages = list(b.get("messages") or [])
            if b.get("continue_final_message") and messages and messages[-1].get("role") == "assistant":
                last = dict(messages[-1])
                last["content"] = str(last.get("content", "")) + self.text
                messages[-1] = last
            else:
                messages.append({"role": "assistant", "content": self.text})
            b["messages"] = messages
            b["continue_final_message"] = True
            b["add_generation_prompt"] = False
        return b

    # -- upstream events into the client's stream ---------------------------------------------------------
    def rewrite(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """An upstream event as the client sees it, or None when it carries nothing for the client (a repeated
        role, the upstream's own usage). Records the tokens it carries."""
        choices = doc.get("choices") or []
        if not choices:
            usage = doc.get("usage")
            # The attempt's prompt held the tokens it was carried with: the client's prompt is the rest.
            if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int) and self.prompt_tokens is None:
                self.prompt_tokens = usage["prompt_tokens"] - self.carried
            return None
        choice = dict(choices[0])
        if self.prompt_ids is None and isinstance(choice.get("prompt_token_ids"), list):
            self.prompt_ids = list(choice["prompt_token_ids"])
        if self.kind == "chat":
            delta = dict(choice.get("delta") or {})
            if "role" in delta:
                if self.role_sent:
                    delta.pop("role")
                self.role_sent = True
            content = delta.get("content") or ""
            if not delta or (not content and "role" not in delta and not choice.get("finish_reason")):
                return None
            choice["delta"] = delta
        else:
            content = choice.get("text") or ""
        ids = choice.get("token_ids")
        before = self.sent
        if isinstance(ids, list):
            self.ids.extend(int(i) for i in ids)
            self.sent += len(ids)
        elif content:
            self.sent += 1  # one token per event, as the engines stream them (text form only)
        self.last_tokens = self.sent - before
        if content:
            self.parts.append(content)
        if choice.get("finish_reason"):
            self.finish = str(choice["finish_reason"])
        if not self.client_wants_ids:
            choice.pop("token_ids", None)
            choice.pop("prompt_token_ids", None)
        out = dict(doc)
        out["id"], out["created"], out["choices"] = self.id, self.created, [choice]
        return out

    def usage(self) -> dict[str, int]:
        prompt = self.prompt_tokens if self.prompt_tokens is not None else len(self.prompt_ids or [])
        return {"prompt_tokens": prompt, "completion_tokens": self.sent, "total_tokens": prompt + self.sent}

    def usage_event(self, model: str) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": model,
            "choices": [],
            "usage": self.usage(),
        }

    def whole(self, model: str) -> dict[str, Any]:
        """The non-streaming answer, from what the streams carried."""
        choice: dict[str, Any] = {"index": 0, "finish_reason": self.finish or "length", "logprobs": None}
        if self.kind == "chat":
            choice["message"] = {"role": "assistant", "content": self.text}
        else:
            choice["text"] = self.text
        if self.client_wants_ids:
            choice["token_ids"] = list(self.ids)
        obj = "chat.completion" if self.kind == "chat" else "text_completion"
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": model,
            "choices": [choice],
            "usage": self.usage(),
        }
