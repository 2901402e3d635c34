"""Everything a chaos run starts, wired together, and stopped in the right order.

Started: Redis, PostgreSQL, one fake upstream per provider, then the gateway. Stopped:
the gateway first (SIGTERM, so requests in flight finish and the plugins flush), then
the readings that need the others (upstream call counts, the ledger), then the rest.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.chaos import config, faults
from bench.chaos.load import Load
from bench.chaos.services import FakeUpstream, Gateway, Postgres, Redis

#: Seconds the gateway may take to finish requests in flight at shutdown.
GRACE_S = 40.0
#: Ledger records held in memory while PostgreSQL is away (the default is 100,000): small, so a
#: restart of a few seconds fills it and the rest goes through the spill file, which is then loaded.
LEDGER_MAX_QUEUE = 200


class Rig:
    def __init__(self, work: Path, seed: int, disconnect_rate: float) -> None:
        self.work = work
        self.seed = seed
        self.base_disconnect_rate = disconnect_rate
        self.redis = Redis(work)
        self.postgres = Postgres(Path(tempfile.mkdtemp(prefix="modelbroker-chaos-pg-")))
        self.upstreams: dict[str, FakeUpstream] = {}
        self.gateway: Gateway | None = None
        self.config_path = work / "providers.yaml"
        self.load: Load | None = None

    @property
    def urls(self) -> dict[str, str]:
        return {name: upstream.url for name, upstream in self.upstreams.items()}

    def start(self) -> None:
        self.redis.start()
        self.postgres.init()
        self.postgres.start()
        for name in [*config.FAULTY, config.HEALTHY]:
            self.upstreams[name] = FakeUpstream(name, self.work)
        for upstream in self.upstreams.values():
            upstream.wait()
            upstream.behave("*", faults.BASELINE)
        config.write(self.config_path, self.urls)
        env = {"MODELBROKER_REDIS_URL": self.redis.url, "MODELBROKER_DATABASE_URL": self.postgres.url,
               "MODELBROKER_LEDGER_MAX_QUEUE": str(LEDGER_MAX_QUEUE)}
        self.gateway = Gateway(self.work, self.config_path, env, GRACE_S)
        self.gateway.wait()
        self.load = Load(self.gateway.url, self.seed, self.base_disconnect_rate)

    def reload(self, changed: bool) -> None:
        config.write(self.config_path, self.urls, changed)
        self.gateway.reload()

    def upstream_calls(self) -> dict[str, int]:
        """Upstream calls by model, over every fake upstream."""
        calls: dict[str, int] = {}
        for upstream in self.upstreams.values():
            for model, count in upstream.calls().items():
                calls[model] = calls.get(model, 0) + count
        return calls

    def stop(self) -> None:
        """Stop everything still running; safe to call twice, and after a failed start."""
        if self.gateway is not None:
            self.gateway.proc.stop()
        for upstream in self.upstreams.values():
            upstream.stop()
        self.redis.stop()
        self.postgres.remove()

    def remove(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
