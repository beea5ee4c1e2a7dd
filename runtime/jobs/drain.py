"""How a drain treats the queue worker: it leaves rotation with the node (takes no more tasks), its running
tasks count as in flight (a scale-in waits for them within the drain's timeout), and what still runs when the
wait ends is given back before the workload is signalled."""

from __future__ import annotations

from spotstack.runtime.drain.targets import Inflight, Workload
from spotstack.runtime.jobs.worker import Worker


class InflightWithTasks:
    name = "requests+tasks"

    def __init__(self, requests: Inflight | None, worker: Worker) -> None:
        self.requests, self.worker = requests, worker

    async def count(self) -> int:
        return (await self.requests.count() if self.requests is not None else 0) + await self.worker.count()


class GiveBackThenStop:
    def __init__(self, worker: Worker, workload: Workload, deadline: float) -> None:
        self.worker, self.workload, self.deadline = worker, workload, deadline
        self.name = workload.name

    async def stop(self) -> None:
        await self.worker.give_back_all(self.deadline, "the drain ended with the task running")
        await self.workload.stop()
