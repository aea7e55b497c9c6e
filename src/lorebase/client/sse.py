"""Server-Sent Events, decoded line by line (the WHATWG rules that ``GET /pipelines/{id}/events``
needs: ``id``, ``event``, multi-line ``data``, ``retry``, comments), for both clients."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from lorebase.client.errors import ProtocolError
from lorebase.client.models import Event


@dataclass
class SseDecoder:
    """Feed it the stream's lines; it returns an :class:`Event` at each blank line that ends one."""

    #: the server's ``retry:`` advice, in seconds (how long to wait before reconnecting)
    retry: float | None = None
    _id: str | None = None
    _event: str = "message"
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the server's keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value) / 1000
        return None

    def _dispatch(self) -> Event | None:
        data, event, event_id = self._data, self._event, self._id
        self._data, self._event, self._id = [], "message", None
        if not data:
            return None
        try:
            payload = json.loads("\n".join(data))
            return Event(id=int(event_id or ""), event=event, data=payload)
        except ValueError as exc:
            raise ProtocolError(f"an event of the stream is not what the API sends: {exc}") from None
