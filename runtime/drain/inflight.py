"""In-flight counts read from the workload's own Prometheus endpoint (e.g. vLLM's running gauge)."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from spotstack.runtime.net import read_capped


class PrometheusGauge:
    name = "prometheus"

    def __init__(self, session: aiohttp.ClientSession, url: str, gauge: str) -> None:
        self._session, self.url, self.gauge = session, url, gauge

    async def count(self) -> int:
        async with self._session.get(self.url, timeout=aiohttp.ClientTimeout(total=2)) as r:
            r.raise_for_status()
            text = (await read_capped(r, 16 << 20)).decode("utf-8", errors="replace")  # a metrics page, bounded
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == self.gauge:
                    total += sample.value
        return int(total)
