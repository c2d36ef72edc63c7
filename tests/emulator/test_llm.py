"""LLM Gateway of the emulator: exact model IDs, EU providers, the documented deterministic
answer, usage, and `stream: true` as SSE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import assemblyai as aai
import pytest

from emulator.llm import MODELS, answer_for, count_tokens
from tests.emulator.conftest import Emu, inprocess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:assemblyai.*"),
]

TEXT = "We met today. Alice will send the report. Bob asked about budgets. The end."


def ask(emu: Emu, **body: Any) -> Any:
    body.setdefault("messages", [{"role": "user", "content": TEXT}])
    return emu.http.post("/v1/chat/completions", json=body, headers=emu.auth())


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_reference_model_answers(emu: Emu, model: str) -> None:
    response = ask(emu, model=model)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == model
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "model", ["claude-sonnet-4", "gpt-5", "gemini-2.5", "", None, "CLAUDE-OPUS-4-7"]
)
def test_inexact_model_ids_are_refused(emu: Emu, model: str | None) -> None:
    response = ask(emu, model=model)
    assert response.status_code == 400
    body = response.json()
    assert body["message"]
    assert body["metadata"]["errors"] == [body["message"]]


def test_bearer_is_refused(emu: Emu) -> None:
    response = emu.http.post(
        "/v1/chat/completions",
        json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {emu.key}"},
    )
    assert response.status_code == 401
    assert response.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        {"model": "gpt-4.1"},
        {"model": "gpt-4.1", "messages": []},
        {"model": "gpt-4.1", "messages": [{"content": "x"}]},
        {"model": "gpt-4.1", "messages": [{"role": "user"}]},
        {"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
        {"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
    ],
)
def test_malformed_requests(emu: Emu, body: dict[str, Any]) -> None:
    response = emu.http.post("/v1/chat/completions", json=body, headers=emu.auth())
    assert response.status_code == 400


def test_bullets_usage_and_record(emu: Emu) -> None:
    system = "Produce a 3-bullet summary of the transcript."
    messages = [{"role": "system", "content": system}, {"role": "user", "content": TEXT}]
    body = ask(emu, model="claude-sonnet-4-6", messages=messages).json()
    content = body["choices"][0]["message"]["content"]
    assert content == (
        "- We met today. Alice will send the report.\n- Bob asked about budgets.\n- The end."
    )
    usage = body["usage"]
    assert usage["completion_tokens"] == count_tokens(content)
    assert usage["prompt_tokens"] == count_tokens(system) + count_tokens(TEXT) + 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    calls = emu.http.get("/_emulator/llm").json()
    assert calls[-1]["model"] == "claude-sonnet-4-6"
    assert calls[-1]["request"]["messages"] == messages
    assert calls[-1]["response_text"] == content


def test_answer_function() -> None:
    def one(system: str, user: str) -> str:
        return answer_for(
            [{"role": "system", "content": system}, {"role": "user", "content": user}]
        )

    assert (
        one("exactly 5 bullet points", "a b c")
        == "- a\n- b\n- c\n- (nothing said)\n- (nothing said)"
    )
    assert one("2 bullets", "") == "- (nothing said)\n- (nothing said)"
    chapters = one("numbered chapters", "Chapter 1:\nHello there. More.\n\nChapter 2:\nBye now.")
    assert chapters == "1. Hello there. More. | Hello there.\n2. Bye now. | Bye now."
    assert one("List the action items", TEXT) == "- Alice will send the report."
    assert one("List the action items", "Nothing here.") == "None"
    assert one("Be brief.", "one two three") == "Summary: one two three"


def test_max_tokens_cuts_the_answer(emu: Emu) -> None:
    body = ask(emu, model="gpt-4.1", max_tokens=3).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == "Summary: We met"


def test_stream(emu: Emu) -> None:
    plain = ask(emu, model="gpt-5.2").json()
    with emu.http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "gpt-5.2", "stream": True, "messages": [{"role": "user", "content": TEXT}]},
        headers=emu.auth(),
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == plain["usage"]


def test_sdk_gateway_client(emu: Emu) -> None:
    aai.settings.api_key = emu.key
    aai.settings.llm_gateway_base_url = emu.url
    gateway = aai.LLMGateway()
    answer = gateway.chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": "hello"}]
    )
    assert answer.choices[0].message.content == "Summary: hello"
    with pytest.raises(aai.types.LLMGatewayError) as refused:
        gateway.chat.completions.create(
            model="claude-sonnet-4", messages=[{"role": "user", "content": "hello"}]
        )
    assert refused.value.status_code == 400
    chunks = list(
        gateway.chat.completions.create(
            model="gpt-5.2", messages=[{"role": "user", "content": "hello"}], stream=True
        )
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Summary: hello"
    )


async def test_eu_region_serves_anthropic_and_google_only(tmp_path: Path) -> None:
    async with inprocess(tmp_path, region="eu") as client:
        auth = {"Authorization": "emulator-test-key"}
        for model, provider in MODELS.items():
            body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
            response = await client.post("/v1/chat/completions", json=body, headers=auth)
            expected = 200 if provider in ("anthropic", "google") else 400
            assert response.status_code == expected, model


def test_eu_host_on_the_us_emulator(emu: Emu) -> None:
    body = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "x"}]}
    headers = {**emu.auth(), "Host": "llm-gateway.eu.assemblyai.com"}
    response = emu.http.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 400
    assert "EU" in response.json()["message"]
