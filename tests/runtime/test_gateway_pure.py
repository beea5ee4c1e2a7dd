"""The gateway's decisions as tables: which replica, when to move a stream, what a continuation asks for."""

from __future__ import annotations

import pytest

from spotstack.runtime.gateway.route import ReplicaView, migrate_now, migrate_one_more, pick
from spotstack.runtime.gateway.splice import NotContinuable, Splice

NOW = 1000.0


def r(url: str, **kw: object) -> ReplicaView:
    return ReplicaView(url, ready=True, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("replicas", "need_s", "want"),
    [
        ([r("a", tokens=900), r("b", tokens=100)], 0.0, "b"),  # least generation left
        ([r("a", tokens=100, requests=3), r("b", tokens=100, requests=1)], 0.0, "b"),  # then fewest requests
        ([r("a"), r("b")], 0.0, "a"),  # then the listed order
        ([ReplicaView("a"), r("b", tokens=5000)], 0.0, "b"),  # never one not READY
        ([r("a", failures=1), r("b", tokens=5000)], 0.0, "b"),  # nor one that just failed
        ([r("a", leaving_at=NOW + 10), r("b", tokens=5000)], 30.0, "b"),  # nor one gone before the request ends
        ([r("a", leaving_at=NOW + 60), r("b", tokens=5000)], 30.0, "a"),  # one leaving after it ends serves
        ([ReplicaView("a")], 0.0, None),
    ],
)
def test_pick(replicas: list[ReplicaView], need_s: float, want: str | None) -> None:
    got = pick(replicas, NOW, frozenset(), need_s)
    assert (got.url if got else None) == want


@pytest.mark.parametrize(
    ("leaving_in", "tokens_left", "rate", "want"),
    [
        (None, 5000, 30.0, False),
        (30.0, 300, 30.0, False),  # 10 s of answer, 5 s margin: ends before the node goes
        (30.0, 900, 30.0, True),  # 30 s of answer: move it now
        (12.0, 240, 30.0, True),  # 8 s + 5 s margin > 12 s
    ],
)
def test_migrate_now(leaving_in: float | None, tokens_left: int, rate: float, want: bool) -> None:
    leaving_at = None if leaving_in is None else NOW + leaving_in
    assert migrate_now(leaving_at, NOW, tokens_left, rate, margin_s=5.0) is want


def sent(s: Splice, ids: list[int], text: str, prompt_ids: list[int] | None = None) -> None:
    """Feed the splice the events of a first attempt that sent these tokens."""
    s.next_request()
    for i, (tok, ch) in enumerate(zip(ids, text, strict=True)):
        choice: dict[str, object] = {"index": 0, "text": ch, "token_ids": [tok], "finish_reason": None}
        if i == 0 and prompt_ids is not None:
            choice["prompt_token_ids"] = prompt_ids
        if s.kind == "chat":
            choice = {"index": 0, "delta": {"content": ch}, "token_ids": [tok], "finish_reason": None}
        assert s.rewrite({"id": "x", "created": 1, "choices": [choice]}) is not None


def test_a_completion_continues_as_token_ids_with_max_tokens_reduced() -> None:
    s = Splice("completions", {"prompt": "hi", "max_tokens": 10, "temperature": 0.7, "seed": 3})
    sent(s, [5, 6, 7], "abc", prompt_ids=[40, 41])
    b = s.next_request()
    assert b["prompt"] == [40, 41, 5, 6, 7] and b["max_tokens"] == 7
    assert b["temperature"] == 0.7 and b["seed"] == 3 and b["stream"] is True and b["return_token_ids"] is True


def test_a_completion_continues_as_text_without_token_ids() -> None:
    s = Splice("completions", {"prompt": "hi", "max_tokens": 10}, form="text")
    sent(s, [5, 6], "ab")
    b = s.next_request()
    assert b["prompt"] == "hiab" and b["max_tokens"] == 8 and "return_token_ids" not in b


def test_a_chat_continues_its_final_assistant_message() -> None:
    msgs = [{"role": "user", "content": "q"}]
    s = Splice("chat", {"messages": msgs, "max_completion_tokens": 6})
    sent(s, [1, 2], "xy")
    b = s.next_request()
    assert b["messages"] == [*msgs, {"role": "assistant", "content": "xy"}]
    assert b["continue_final_message"] is True and b["add_generation_prompt"] is False and b["max_tokens"] == 4
    # A request that was itself a continuation extends its own final message.
    s2 = Splice("chat", {"messages": [*msgs, {"role": "assistant", "content": "pre"}], "continue_final_message": True})
    sent(s2, [1], "z")
    assert s2.next_request()["messages"][-1] == {"role": "assistant", "content": "prez"}


def test_usage_is_the_clients_prompt_and_every_token_sent() -> None:
    s = Splice("completions", {"prompt": "hi", "max_tokens": 10})
    sent(s, [5, 6, 7], "abc", prompt_ids=[40, 41])
    s.next_request()  # the continuation carries 3 tokens in its prompt
    s.rewrite({"id": "y", "choices": [{"index": 0, "text": "d", "token_ids": [8]}]})
    s.rewrite({"id": "y", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}})
    assert s.usage() == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}


@pytest.mark.parametrize("extra", [{"n": 2}, {"best_of": 3}, {"echo": True}])
def test_what_cannot_be_continued_is_refused(extra: dict[str, object]) -> None:
    with pytest.raises(NotContinuable):
        Splice("completions", {"prompt": "x", **extra})


@pytest.mark.parametrize(
    ("moving", "leaving_in", "want"),
    [
        (0, 30.0, True),  # none leaving yet: this one may
        (1, 30.0, True),  # one in flight, two allowed
        (2, 30.0, False),  # two in flight: wait for a first token elsewhere
        (2, 4.0, True),  # within the margin of the node's end: every stream goes
    ],
)
def test_migrate_one_more(moving: int, leaving_in: float, want: bool) -> None:
    assert migrate_one_more(moving, NOW + leaving_in, NOW, limit=2, urgent_s=5.0) is want
