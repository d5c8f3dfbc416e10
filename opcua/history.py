"""HistoryRead of events: every journaled result as a historical ResultReadyEvent (OPC 10000-11 §6.4.3).

A client that was away (its own restart, a network outage, the agent's restart while the server was
still starting) reads the ResultReadyEvents it missed with the standard HistoryRead service, on the
Server object (every line) or on a line's VisionSystem (that line), for a time range: no polling and
no vendor method. The history is the journal itself (`ResultStore.between`), so it holds every result
the journal keeps, including those journaled before the server listened.

- Events are in time order (the event's `Time` = the result's CreationTime, ties by journal seq);
  StartTime > EndTime, or only an EndTime, reads them newest first.
- At most `max_results_per_call` events per answer; a ContinuationPoint then says where the next call
  goes on (stateless: the (time, seq) of the last event sent).
- Fields are those of the live event (`VisionServer.publish`) except `EventId`, which is derived from
  the ResultId (the live one is random): deduplicate on `ResultId`.
- The event filter's SelectClauses pick the fields; its WhereClause may test the event type (OfType,
  InList or Equals on EventType, joined by And/Or/Not, as asyncua and UaExpert write it): it matches
  ResultReadyEventType. Any other clause: BadFilterOperatorUnsupported.

Example (what a MES does after reconnecting; `since` = the Time of the last event it processed)::

    details = ua.ReadEventDetails(StartTime=since, EndTime=datetime.now(timezone.utc), Filter=evfilter)
    (result,) = await client.uaclient.history_read(ua.HistoryReadParameters(
        HistoryReadDetails=details, ReleaseContinuationPoints=False,
        NodesToRead=[ua.HistoryReadValueId(NodeId=server_object_id)]))
"""

from __future__ import annotations

import logging
import struct
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from asyncua import ua
from asyncua.common.events import get_event_obj_from_type_node
from asyncua.common.node import Node
from asyncua.server.history import HistoryManager

from opcua import model
from opcua.states import classify

if TYPE_CHECKING:
    from opcua.server import VisionServer

logger = logging.getLogger(__name__)

_CONTINUATION = struct.Struct("<dq?")  # (timestamp, seq, newest first)
_EPOCH = datetime(1601, 1, 2, tzinfo=timezone.utc)  # before this: "not specified" (DateTime 0)


def _given(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return None if value < _EPOCH else value


class ResultEventHistory(HistoryManager):
    """asyncua's HistoryManager, with the ResultReadyEvents of the Server object and of each
    VisionSystem read from the journal (everything else as asyncua does it)."""

    def __init__(self, iserver: Any, host: VisionServer) -> None:
        super().__init__(iserver)
        self.host = host
        self._sources: dict[ua.NodeId, str | None] = {ua.NodeId(ua.ObjectIds.Server): None}
        self._matching_types: set[ua.NodeId] = set()
        self._event: Any = None
        self.reads = 0
        self.events_read = 0

    async def add_line(self, line: str, system: Node) -> None:
        """Serve the line's results as the event history of its VisionSystem (and of Server)."""
        self._sources[system.nodeid] = line
        if self._event is None:
            assert self.host.types is not None
            etype = Node(self.iserver.isession, self.host.types.id("ResultReadyEventType"))
            self._event = await get_event_obj_from_type_node(etype)
            current: Node | None = etype
            while current is not None:  # ResultReadyEventType and its supertypes
                self._matching_types.add(current.nodeid)
                parents = await current.get_referenced_nodes(
                    ua.ObjectIds.HasSubtype, ua.BrowseDirection.Inverse
                )
                current = parents[0] if parents else None

    async def advertise(self) -> None:
        """EventNotifier HistoryRead on every source. After the event generators are made: asyncua's
        EventGenerator sets its node's EventNotifier to SubscribeToEvents alone."""
        for nodeid in self._sources:
            await Node(self.iserver.isession, nodeid).set_event_notifier(
                [ua.EventNotifier.SubscribeToEvents, ua.EventNotifier.HistoryRead]
            )

    async def read_history(self, params: ua.HistoryReadParameters) -> list[ua.HistoryReadResult]:
        details = params.HistoryReadDetails
        out = []
        for rv in params.NodesToRead:
            if params.ReleaseContinuationPoints:  # stateless continuation points: nothing to free
                out.append(ua.HistoryReadResult())
            elif isinstance(details, ua.ReadEventDetails) and rv.NodeId in self._sources:
                out.append(await self._read_results(self._sources[rv.NodeId], rv, details))
            else:
                out.append(await self._read_history(details, rv))
        return out

    def _matches(self, where: ua.ContentFilter | None) -> bool | None:
        """Whether a ResultReadyEvent passes the WhereClause; None for what is not supported. A clause
        about the event type only: OfType, InList/Equals on EventType, joined by And/Or/Not."""
        elements = list(where.Elements) if where is not None else []
        if not elements:
            return True
        etype = self.host.types.id("ResultReadyEventType") if self.host.types else None

        def literal(operand: Any) -> Any:
            return operand.Value.Value if isinstance(operand, ua.LiteralOperand) else None

        def is_event_type(operand: Any) -> bool:
            path = [q.Name for q in getattr(operand, "BrowsePath", [])]
            return isinstance(operand, ua.SimpleAttributeOperand) and path == ["EventType"]

        def evaluate(index: int) -> bool | None:
            element = elements[index]
            op, operands = element.FilterOperator, list(element.FilterOperands)
            if op == ua.FilterOperator.OfType:
                return literal(operands[0]) in self._matching_types
            if op in (ua.FilterOperator.InList, ua.FilterOperator.Equals) and is_event_type(operands[0]):
                return etype in [literal(o) for o in operands[1:]]
            if op in (ua.FilterOperator.And, ua.FilterOperator.Or, ua.FilterOperator.Not):
                values = [
                    evaluate(o.Index) if isinstance(o, ua.ElementOperand) and o.Index > index else None
                    for o in operands
                ]
                if None in values:
                    return None
                if op == ua.FilterOperator.Not:
                    return not values[0]
                return all(values) if op == ua.FilterOperator.And else any(values)
            return None

        return evaluate(0)

    async def _read_results(
        self, line: str | None, rv: ua.HistoryReadValueId, details: ua.ReadEventDetails
    ) -> ua.HistoryReadResult:
        self.reads += 1
        result = ua.HistoryReadResult(HistoryData=ua.HistoryEvent())
        evfilter = details.Filter
        matches = self._matches(evfilter.WhereClause if evfilter is not None else None)
        if matches is None:
            result.StatusCode = ua.StatusCode(ua.StatusCodes.BadFilterOperatorUnsupported)
            return result
        if evfilter is None or not evfilter.SelectClauses:
            result.StatusCode = ua.StatusCode(ua.StatusCodes.BadEventFilterInvalid)
            return result
        start, end = _given(details.StartTime), _given(details.EndTime)
        if start is None and end is None:
            result.StatusCode = ua.StatusCode(ua.StatusCodes.BadInvalidTimestampArgument)
            return result
        newest_first = start is None or (end is not None and start > end)
        after = None
        if rv.ContinuationPoint:
            try:
                ts, seq, newest_first = _CONTINUATION.unpack(rv.ContinuationPoint)
            except struct.error:
                result.StatusCode = ua.StatusCode(ua.StatusCodes.BadContinuationPointInvalid)
                return result
            after = (ts, seq)
        if not matches:
            return result
        times = sorted(t for t in (start, end) if t is not None)
        since, until = (times[0], times[-1]) if start and end else (start, None) if start else (None, end)
        wanted = int(details.NumValuesPerNode or 0)
        cap = self.host.config.max_results_per_call
        page = min(wanted, cap) if wanted else cap
        rows = await self.host.in_thread(
            self.host.store.between,
            line=line,
            since=since,
            until=until,
            after=after,
            limit=page + 1,
            newest_first=newest_first,
        )
        more = len(rows) > page
        rows = rows[:page]
        result.HistoryData.Events = [
            ua.HistoryEventFieldList(EventFields=self._fields(r, evfilter.SelectClauses)) for r in rows
        ]
        self.events_read += len(rows)
        if more and (not wanted or page < wanted):
            last = rows[-1]
            position = (last.timestamp.timestamp(), last.seq or 0, newest_first)
            result.ContinuationPoint = _CONTINUATION.pack(*position)
        return result

    def _fields(self, result: Any, select: list[ua.SimpleAttributeOperand]) -> list[ua.Variant]:
        """The select clauses' fields of the result's ResultReadyEvent (no await: one shared object)."""
        types = self.host.types
        assert types is not None
        value = model.result_to_ua(types, result)
        fields = model.result_field_variants(types, value)
        event = self._event
        served = self.host.lines.get(result.line)
        event.EventId = ua.Variant(f"result:{result.result_id}".encode(), ua.VariantType.ByteString)
        source = served.nodes.system.nodeid if served is not None else ua.NodeId(ua.ObjectIds.Server)
        event.SourceNode = source
        event.SourceName = result.line
        event.Time = event.ReceiveTime = value.CreationTime
        local = time.localtime(value.CreationTime.timestamp())  # as asyncua's EventGenerator does
        event.LocalTime = ua.uaprotocol_auto.TimeZoneDataType(
            Offset=local.tm_gmtoff // 60, DaylightSavingInOffset=local.tm_isdst != -1
        )
        message, event.Severity = model.result_event_text(result)
        event.Message = ua.LocalizedText(message)
        classify(event)
        for name in model.EVENT_FIELDS:
            event.add_property(name, fields[name].Value, fields[name].VariantType)
        return event.to_event_fields(select)
