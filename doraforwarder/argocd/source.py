"""Placeholder until issue 3 lands: a service that starts, does nothing, stops."""

from __future__ import annotations

import asyncio

from doraforwarder.context import AppContext


class ArgoCDSource:
    name = "argocd"

    def __init__(self, context: AppContext) -> None:
        self.context = context

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
