"""The PLC handshake: plain tags under `app:PLC` for PLCs that cannot call methods (docs/opcua.md).

PLC sets `Trigger` -> server sets `Busy`, clears `Ready` -> result: the server writes the result
tags, then sets `ResultReady`, then clears `Busy` -> PLC reads, sets `ResultAck` -> server clears
`ResultReady` and sets `Ready` again. Only rising edges count; a rising `Trigger` while busy, while
a result is unacknowledged or while the line is not Ready is refused and counted.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from asyncua import ua

from contract import InspectionResult
from opcua.served import ServedLine

if TYPE_CHECKING:
    from opcua.server import VisionServer

logger = logging.getLogger(__name__)


class PlcHandshake:
    def __init__(self, host: VisionServer) -> None:
        self.host = host
        self._index: dict[ua.NodeId, tuple[ServedLine, str]] = {}

    def add_line(self, served: ServedLine) -> None:
        for tag in ("Trigger", "ResultAck"):
            self._index[served.nodes.plc[tag].nodeid] = (served, tag)

    async def on_client_write(self, event: Any, dispatcher: Any) -> None:
        """asyncua PostWrite callback: react to the PLC's writes of Trigger and ResultAck."""
        for item, status in zip(event.request_params.NodesToWrite, event.response_params, strict=False):
            target = self._index.get(item.NodeId)
            if target is None or not status.is_good():
                continue
            served, tag = target
            await self._edge(served, tag, bool(item.Value.Value.Value))

    @staticmethod
    def ready(served: ServedLine) -> bool:
        plc = served.plc
        return (
            not plc.busy
            and not plc.result_ready
            and served.backend.mode == "triggered"
            and served.state.states == ("Operational", "Ready")
        )

    async def write_ready(self, served: ServedLine) -> None:
        ready = self.ready(served)
        if ready != served.plc.ready_written:  # the 0.5 s state poll must not spam PLC subscriptions
            served.plc.ready_written = ready
            await self.host.write(served.nodes.plc["Ready"], ready, ua.VariantType.Boolean)

    async def _edge(self, served: ServedLine, tag: str, value: bool) -> None:
        plc, tags = served.plc, served.nodes.plc
        rising = value and not plc.last[tag]
        plc.last[tag] = value
        if not rising:
            return
        if tag == "ResultAck":
            if plc.result_ready:
                plc.result_ready = False
                await self.host.write(tags["ResultReady"], False, ua.VariantType.Boolean)
                await self.write_ready(served)
            return
        if not self.ready(served):
            plc.refused += 1
            logger.warning(
                "opcua: PLC trigger on %s refused (busy=%s, result not acknowledged=%s, state=%s)",
                served.backend.name,
                plc.busy,
                plc.result_ready,
                served.state.states,
            )
            await self.host.write(tags["TriggersRefused"], plc.refused, ua.VariantType.UInt32)
            return
        plc.busy = True
        await self.host.write(tags["Busy"], True, ua.VariantType.Boolean)
        await self.write_ready(served)
        job_id = f"plc-{uuid.uuid4().hex}"
        try:
            future = served.backend.trigger(None, job_id=job_id)
        except Exception:
            logger.exception("opcua: PLC trigger on %s refused by the line", served.backend.name)
            await self._failed(served)
            return
        served.state.current_job = job_id
        served.state.started_jobs.add(job_id)
        await self.host.refresh(served.backend.name)
        future.add_done_callback(lambda f: self.host.from_thread(self._schedule_done, served, f))

    def _schedule_done(self, served: ServedLine, future: Future[InspectionResult]) -> None:
        self.host.spawn(self._done(served, future))

    async def _done(self, served: ServedLine, future: Future[InspectionResult]) -> None:
        if future.exception() is not None:
            logger.error(
                "opcua: PLC-triggered inspection on %s failed: %s", served.backend.name, future.exception()
            )
            await self._failed(served)
            return
        result = future.result()
        tags, write = served.nodes.plc, self.host.write
        timings = result.timings_ms
        # data first, then ResultReady, then Busy low: a PLC that sees ResultReady reads consistent data
        await write(tags["Verdict"], result.verdict, ua.VariantType.String)
        await write(
            tags["DefectCount"], sum(d.counts_for_verdict for d in result.defects), ua.VariantType.UInt32
        )
        await write(tags["PartId"], result.part_id, ua.VariantType.String)
        await write(tags["ResultSeq"], result.seq or 0, ua.VariantType.Int64)
        await write(tags["ModelVersion"], result.model.version, ua.VariantType.String)
        await write(
            tags["InferenceMs"],
            float(timings.get("inference", timings.get("total", 0.0))),
            ua.VariantType.Double,
        )
        served.plc.result_ready = True
        await write(tags["ResultReady"], True, ua.VariantType.Boolean)
        served.plc.busy = False
        await write(tags["Busy"], False, ua.VariantType.Boolean)
        await self.host.refresh(served.backend.name)

    async def _failed(self, served: ServedLine) -> None:
        served.plc.errors += 1
        served.plc.busy = False
        await self.host.write(served.nodes.plc["TriggerErrors"], served.plc.errors, ua.VariantType.UInt32)
        await self.host.write(served.nodes.plc["Busy"], False, ua.VariantType.Boolean)
        await self.host.refresh(served.backend.name)
