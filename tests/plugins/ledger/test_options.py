"""plugins/ledger/options.py: where the ledger writes by default, from the process settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelbroker._config.settings import Settings
from modelbroker.plugins.ledger.options import LedgerOptions
from modelbroker.testing import GatewayStartupError


def options(**settings) -> LedgerOptions:
    """Options from these settings, the others at their defaults whatever the environment says."""
    defaults = {"log_file": "app.log", "database_url": "", "ledger_spill_file": ""}
    return LedgerOptions.from_settings(Settings(**{**defaults, **settings}))


def test_by_default_the_database_and_spill_file_are_beside_app_log():
    default = options()
    assert default.database_url == "sqlite:///./modelbroker.db"
    assert default.spill_file == Path("ledger-spill.jsonl")
    assert (default.max_queue, default.batch_size, default.flush_interval_s) == (100_000, 500, 0.5)
    beside = options(log_file="/var/log/modelbroker/app.log")
    assert beside.database_url == "sqlite:////var/log/modelbroker/modelbroker.db"
    assert beside.spill_file == Path("/var/log/modelbroker/ledger-spill.jsonl")
    assert options(log_file="").database_url == "sqlite:///./modelbroker.db"


def test_the_spill_file_is_beside_an_sqlite_database_else_beside_app_log():
    assert options(database_url="sqlite+aiosqlite:////data/ledger.db").spill_file == Path("/data/ledger-spill.jsonl")
    postgres = options(database_url="postgresql+asyncpg://u:pw@db/ledger", log_file="/logs/app.log")
    assert postgres.spill_file == Path("/logs/ledger-spill.jsonl")
    assert options(ledger_spill_file="/spill/here.jsonl").spill_file == Path("/spill/here.jsonl")


def test_the_password_never_shows():
    shown = options(database_url="postgresql+asyncpg://u:hunter2@db/ledger").safe_url
    assert "hunter2" not in shown and shown.startswith("postgresql+asyncpg://u:")


def test_numbers_are_kept_sane():
    clamped = options(ledger_max_queue=0, ledger_batch_size=-3, ledger_flush_interval_s=0)
    assert (clamped.max_queue, clamped.batch_size, clamped.flush_interval_s) == (1, 1, 0.01)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # uvicorn exits its thread
def test_a_spill_file_that_is_a_directory_stops_startup_and_says_which_setting(gateway, tmp_path, caplog, capfd):
    """Before, the gateway started and logged a traceback every half second, trying to load it."""
    (tmp_path / "spill-here").mkdir()
    with pytest.raises(GatewayStartupError) as caught:
        gateway("providers: []\n", ledger_spill_file=str(tmp_path / "spill-here"))
    expected = (f"the ledger's spill file {tmp_path / 'spill-here'} is a directory: set MODELBROKER_LEDGER_SPILL_FILE "
                "to the path of a file")
    assert str(caught.value) == f"modelbroker: cannot start: plugin 'ledger' failed in on_startup: OSError: {expected}"
    assert expected in caplog.text + capfd.readouterr().err  # uvicorn's own logger says it
