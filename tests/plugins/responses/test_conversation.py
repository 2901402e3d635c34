"""``previous_response_id``: the stored conversation before the new input; retrieval and
deletion of stored responses; what is not stored, or not the caller's, is not found."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest
from client_keys import add_key

from modelbroker.plugins.responses import STORE_NAME
from modelbroker.plugins.storage.database import open_database

from .conftest import wait_for


def messages(upstream) -> list[dict]:
    return upstream.requests[-1]["json"]["messages"]


def test_two_and_three_turns_send_the_whole_conversation(start, provider, upstream, client):
    gw = start(provider("a"))
    sdk = client(gw)
    first = sdk.responses.create(model="a", instructions="Be kind.", input="My name is Ada.")
    second = sdk.responses.create(model="a", previous_response_id=first.id, input="What is my name?")
    assert messages(upstream) == [
        {"role": "user", "content": "My name is Ada."},  # instructions are not carried over
        {"role": "assistant", "content": "Fake reply from a: My name is Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    third = sdk.responses.create(model="a", previous_response_id=second.id, instructions="Be brief.",
                                 input=[{"role": "user", "content": [{"type": "input_text", "text": "Thanks!"}]}])
    assert messages(upstream) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Fake reply from a: My name is Ada."},
        {"role": "user", "content": "What is my name?"},
        {"role": "assistant", "content": "Fake reply from a: What is my name?"},
        {"role": "user", "content": "Thanks!"},
    ]
    assert third.previous_response_id == second.id and third.output_text == "Fake reply from a: Thanks!"

    branch = sdk.responses.create(model="a", previous_response_id=first.id, input="Another branch.")
    assert len(messages(upstream)) == 3 and branch.id not in (second.id, third.id)


def test_a_conversation_can_be_continued_streamed(start, provider, upstream, client):
    gw = start(provider("a"))
    sdk = client(gw)
    events = list(sdk.responses.create(model="a", input="Streamed first.", stream=True))
    first = events[-1].response
    with sdk.responses.stream(model="a", previous_response_id=first.id, input="Then this.") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Fake reply from a: Then this."
    assert [m["content"] for m in messages(upstream)] == [
        "Streamed first.", "Fake reply from a: Streamed first.", "Then this."]


def test_an_unknown_previous_response_is_not_found(start, provider, upstream, client):
    gw = start(provider("a"))
    with pytest.raises(openai.NotFoundError) as missing:
        client(gw).responses.create(model="a", previous_response_id="resp_nosuchthing", input="hi")
    error = missing.value.body
    assert error["param"] == "previous_response_id" and error["code"] == "previous_response_not_found"
    assert error["type"] == "invalid_request_error" and "resp_nosuchthing" in error["message"]
    with pytest.raises(openai.NotFoundError):
        client(gw).responses.retrieve("resp_nosuchthing")
    assert upstream.requests == []


def test_store_false_is_neither_kept_nor_continued(start, provider, upstream, client):
    gw = start(provider("a"))
    sdk = client(gw)
    unkept = sdk.responses.create(model="a", input="forget me", store=False)
    assert unkept.store is False
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(unkept.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="a", previous_response_id=unkept.id, input="hi")
    streamed = list(sdk.responses.create(model="a", input="forget me too", store=False, stream=True))
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(streamed[-1].response.id)


def test_retrieve_and_delete(start, provider, upstream, client):
    gw = start(provider("a"))
    sdk = client(gw)
    made = sdk.responses.create(model="a", input="keep me", metadata={"k": "v"})
    again = sdk.responses.retrieve(made.id)
    assert again == made
    assert gw.get(f"/responses/{made.id}").json()["id"] == made.id  # without /v1 too
    assert sdk.responses.delete(made.id) is None
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.delete(made.id)
    assert gw.get(f"/v1/responses/{made.id}", params={"stream": "true"}).status_code == 400


def test_a_response_is_found_before_its_batch_is_written_and_flushed_at_shutdown(start, provider, upstream, client):
    gw = start(provider("a"))
    url = gw.server.settings.database_url
    store = gw.gateway.pm.get_plugin(STORE_NAME)
    store.writer.flush_interval_s = 3600.0  # the writer sleeps through this test (after its current wait)
    time.sleep(0.3)
    sdk = client(gw)
    first = sdk.responses.create(model="a", input="not written yet")
    assert first.id in store.pending
    second = sdk.responses.create(model="a", previous_response_id=first.id, input="found anyway")
    assert messages(upstream)[1]["content"] == "Fake reply from a: not written yet"
    assert stored_ids(url) == set()
    gw.stop()
    assert stored_ids(url) == {first.id, second.id}


def stored_ids(url: str) -> set[str]:
    """The ids in the stored_responses table of the database at ``url``."""
    async def read():
        db = open_database(url)
        try:
            async with db.reading() as conn:
                if not await conn.has_table("stored_responses"):
                    return set()
                return {row[0] for row in await conn.fetch("SELECT id FROM stored_responses")}
        finally:
            await db.close()

    return asyncio.run(read())




def test_a_response_made_with_a_client_key_is_that_keys_alone(start, provider, upstream, client, tmp_path):
    url = f"sqlite:///{(tmp_path / 'keys.db').as_posix()}"
    alice, bob = add_key(url, "alice"), add_key(url, "bob")
    gw = start(provider("a"), database_url=url)
    made = client(gw, alice).responses.create(model="a", input="alice's secret")
    assert client(gw, alice).responses.retrieve(made.id).id == made.id
    with pytest.raises(openai.NotFoundError):
        client(gw, bob).responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client(gw, bob).responses.create(model="a", previous_response_id=made.id, input="tell me")
    with pytest.raises(openai.NotFoundError):
        client(gw, bob).responses.delete(made.id)
    wait_for(lambda: made.id in stored_ids(url), "the response to be written")
