"""Placeholder until issue 5 lands: a service that starts, does nothing, stops."""

from __future__ import annotations

import asyncio

from doraforwarder.context import AppContext


class DeliveryPool:
    name = "delivery"

    def __init__(self, context: AppContext) -> None:
        self.context = context

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
