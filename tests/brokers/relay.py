"""TCP stand-ins between a probe and a real broker, run on the test's event loop.

- :class:`Relay` forwards to a broker, counts request/response exchanges on the wire
  (an independent count of round trips), and can be cut and restored like an outage.
- :func:`silent_server` accepts connections and never answers (a hung broker).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from devenv import services
from devenv.controlplane import free_port


class Relay:
    """Forwards 127.0.0.1:``port`` to ``target`` on the services' host address."""

    def __init__(self, target: int) -> None:
        self.target, self.port = target, free_port()
        self.exchanges = 0
        """Bursts of client bytes each sent after the server's last reply: round trips."""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones, as a broker going down does."""
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _relay(self, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(services.HOST, self.target)
        self._writers |= {client_writer, server_writer}
        last = ["server"]

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       side: str) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    if side == "client" and last[0] == "server":
                        self.exchanges += 1
                    last[0] = side
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(pump(client_reader, server_writer, "client"),
                             pump(server_reader, client_writer, "server"))
        self._writers -= {client_writer, server_writer}


@contextlib.asynccontextmanager
async def relay(target: int) -> AsyncIterator[Relay]:
    found = Relay(target)
    await found.start()
    try:
        yield found
    finally:
        await found.stop()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A port that accepts connections and never sends a byte."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", free_port())
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()
