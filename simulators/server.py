"""What every HTTP simulator shares: serving its aiohttp app on a loopback port."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

#: what an aiohttp middleware is handed: the next handler
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SimulatorServer:
    """Mixin for a simulator with an ``app()``: ``start`` serves it, ``stop`` ends it."""

    _runner: web.AppRunner | None = None
    base_url: str | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 = a free port); returns the base URL."""
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.base_url = f"http://{host}:{self._runner.addresses[0][1]}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


__all__ = ["Handler", "SimulatorServer"]
