"""In-process fakes of the systems around the daemon, for tests and ``doraforwarder demo``.

Each fake is a real HTTP server (aiohttp) on a free loopback port, running in a
background thread with its own event loop, so synchronous clients (the
official Kubernetes client) and asynchronous ones (httpx) talk to it over real
sockets. The fakes enforce the contracts in ``shared/reference/`` and fail on
demand (5xx, 429, 410 Gone, dropped connections, refused connections).
"""
