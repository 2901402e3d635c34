"""A database that is away loses no record: records wait in memory, then in the spill file, and are
written when it is back (or at the next start)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import orjson

from modelbroker.plugins.ledger import STORE_NAME
from modelbroker.plugins.ledger.options import LedgerOptions
from modelbroker.plugins.ledger.records import _blank, from_line, to_line
from modelbroker.plugins.ledger.spill import SpillFile
from modelbroker.plugins.ledger.writer import LedgerWriter
from modelbroker.plugins.storage.database import open_database

from .helpers import read_rows, record

WAIT_S = 10.0


def wait_for(condition, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up after {timeout} s waiting for {what}"
        time.sleep(0.02)


def send(gw, ids: list[str], workers: int = 8) -> None:
    """POST /generate once per id, ``workers`` at a time; every answer must be 200."""
    def one(rid: str) -> int:
        return gw.client.post("/generate", json={"prompt": "hi"}, headers={"x-request-id": rid}).status_code

    with ThreadPoolExecutor(workers) as pool:
        assert set(pool.map(one, ids)) == {200}


def messages(caplog, text: str, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage() and r.levelno >= level]


def test_past_the_bound_records_spill_and_are_loaded_at_the_next_start(gateway, provider, upstream, tmp_path,
                                                                       caplog):
    caplog.set_level(logging.WARNING, logger="modelbroker")
    database = tmp_path / "ledger.db"
    database.mkdir()  # a folder where the file should be: SQLite cannot open it, the database is "down"
    spill = tmp_path / "spill" / "ledger-spill.jsonl"
    # keys shares the database and refuses every request while it cannot read its table
    # (it cannot tell whether keys exist); this gateway uses none.
    settings = {"database_url": f"sqlite:///{database}", "ledger_spill_file": str(spill),
                "ledger_max_queue": 5, "ledger_flush_interval_s": 0.05, "disabled_plugins": ["keys"]}
    config = {"providers": [provider("a")]}
    ids = [f"spill-{n}" for n in range(20)]

    first = gateway(config, **settings)
    for rid in ids:
        assert first.generate({"prompt": "hi"}, headers={"x-request-id": rid}).status_code == 200
    wait_for(lambda: spill.exists() and spill.read_bytes().count(b"\n") >= 15, "15 records in the spill file")
    writer = first.gateway.pm.get_plugin(STORE_NAME).writer
    assert writer.outage is not None and len(writer.queue) <= 5
    first.stop()  # the 5 still in memory are spilled too
    assert sorted(from_line(line)["request_id"] for line in spill.read_bytes().splitlines()) == sorted(ids)
    (error,) = messages(caplog, "ledger:", logging.ERROR)  # once per outage, not per batch or retry
    assert "cannot reach" in error and "unable to open database file" in error

    database.rmdir()  # the database is back
    second = gateway(config, **settings)
    wait_for(lambda: not spill.exists(), "the spill file to be loaded and removed")
    second.stop()
    rows = read_rows(settings["database_url"])
    assert sorted(row["request_id"] for row in rows) == sorted(ids)
    assert {row["outcome"] for row in rows} == {"ok"}
    assert messages(caplog, "loaded 20 records from the spill file")


def test_postgres_stopped_mid_load_loses_no_record(gateway, provider, upstream, postgres, caplog):
    caplog.set_level(logging.WARNING, logger="modelbroker")
    gw = gateway({"providers": [provider("a")]}, database_url=postgres.url,
                 ledger_max_queue=40, ledger_flush_interval_s=0.05)
    writer = gw.gateway.pm.get_plugin(STORE_NAME).writer
    writer.retry_max_s = 0.2
    before, during, after = ([f"{phase}-{n}" for n in range(80)] for phase in ("before", "during", "after"))

    send(gw, before)
    wait_for(lambda: writer.written == 80, "the first 80 records to be written")
    postgres.stop()  # no new connection, the open ones ended
    try:
        send(gw, during)
        wait_for(lambda: writer.outage is not None and writer.spilled >= 40, "an outage with spilled records")
        assert len(writer.queue) <= 40
    finally:
        postgres.start()
    send(gw, after)
    wait_for(lambda: len(read_rows(postgres.url)) == 240 and not writer.spill.pending(),
             "all 240 records, the spilled ones included")
    gw.stop()

    rows = read_rows(postgres.url)
    assert sorted(row["request_id"] for row in rows) == sorted(before + during + after)
    (error,) = messages(caplog, "ledger:", logging.ERROR)
    assert "cannot write to" in error and "not currently accepting connections" in error
    (back,) = messages(caplog, "is back after")
    assert "spilled" in back


def test_shutdown_with_the_database_away_spills_what_is_queued(gateway, provider, upstream, postgres, tmp_path):
    spill = tmp_path / "spill.jsonl"
    gw = gateway({"providers": [provider("a")]}, database_url=postgres.url, ledger_spill_file=str(spill),
                 ledger_flush_interval_s=30)  # nothing is written before shutdown
    ids = [f"late-{n}" for n in range(5)]
    send(gw, ids)
    postgres.stop()
    try:
        gw.stop()
    finally:
        postgres.start()
    assert sorted(from_line(line)["request_id"] for line in spill.read_bytes().splitlines()) == sorted(ids)


# --- the spill file on its own ------------------------------------------------------------------


def test_appends_racing_a_loader_lose_no_line(tmp_path):
    """Writers append while a loader claims the file again and again: every line is read once."""
    spill = SpillFile(tmp_path / "ledger-spill.jsonl")
    seen: list[str] = []
    done = threading.Event()

    def load_all() -> None:
        for path in spill.claim():
            with path.open("rb") as file:
                while chunk := spill.read_chunk(file, 7):
                    seen.extend(r["request_id"] for r in chunk)
            path.unlink()

    def loader() -> None:
        while not done.is_set():
            load_all()

    def writer(name: str) -> None:
        for n in range(50):
            spill.append([record(f"{name}-{n}-{k}") for k in range(3)])

    loading = threading.Thread(target=loader)
    loading.start()
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(writer, ["w0", "w1", "w2"]))
    done.set()
    loading.join(10)
    load_all()
    assert sorted(seen) == sorted(f"w{w}-{n}-{k}" for w in range(3) for n in range(50) for k in range(3))
    assert not spill.pending()


def test_an_abandoned_claimed_file_is_loaded_and_a_torn_line_is_kept_aside(tmp_path):
    spill = SpillFile(tmp_path / "ledger-spill.jsonl")
    abandoned = tmp_path / "ledger-spill.jsonl.0123456789ab.claimed"  # its loader died
    abandoned.write_bytes(orjson.dumps(record("r1", time=record("x")["time"]), default=str) + b"\n"
                          + b'{"request_id": "torn", "attem')
    (claimed,) = spill.claim()
    with claimed.open("rb") as file:
        assert [r["request_id"] for r in spill.read_chunk(file, 10)] == ["r1"]
    assert (tmp_path / "ledger-spill.jsonl.bad").read_bytes() == b'{"request_id": "torn", "attem\n'


def test_spilled_lines_keep_their_request_uid_and_older_lines_get_their_request_id():
    """A line spilled before schema version 2 has no request_uid: it gets the request id, as the
    migration gave the rows already written, so loading it twice still makes one row."""
    line = to_line({**_blank("r-1", 2), "request_uid": "u-1", "time": datetime.now(timezone.utc)})
    assert (from_line(line)["request_uid"], from_line(line)["attempt"]) == ("u-1", 2)
    older = orjson.loads(line)
    del older["request_uid"]
    assert from_line(orjson.dumps(older))["request_uid"] == "r-1"


def test_the_spill_warning_names_the_memory_bound_not_what_waits_when_it_is_written(tmp_path, caplog):
    """A write that hangs (a frozen database, under the chaos run) holds its batch out of the
    queue; records past the bound overflow meanwhile, and are spilled once the write returns,
    when fewer may wait in memory. The warning told that number ("26 records wait in memory
    (MODELBROKER_LEDGER_MAX_QUEUE)" with a bound of 200); it names the bound."""
    caplog.set_level(logging.WARNING, logger="modelbroker")
    options = LedgerOptions(database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
                            spill_file=tmp_path / "ledger-spill.jsonl", max_queue=5)
    writer = LedgerWriter(open_database(options.database_url), SpillFile(options.spill_file), options)
    for n in range(3):
        writer.add(record(f"queued-{n}"))
    writer.overflow = [record(f"past-the-bound-{n}") for n in range(2)]
    asyncio.run(writer._spill_overflow())
    assert options.spill_file.read_bytes().count(b"\n") == 2
    (warning,) = messages(caplog, "ledger:")
    assert "(5 records, MODELBROKER_LEDGER_MAX_QUEUE)" in warning, warning
