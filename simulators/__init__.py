"""The fake outside world: one package per external system, mirroring ``connectors/``
(``shopify``, ``amazon``, ``walmart``, ``regional``, ``erpnext``, ``wms``).

Shared by all: ``server.SimulatorServer`` (serving an aiohttp app on a port, stopping it),
``bucket.Bucket`` (the one call-limit bucket: token bucket or Shopify's leaky bucket) and
``listings.Listings`` (what a marketplace was told it has in stock). A simulator stands in for a
system we do not own, so it imports nothing of ours outside ``simulators`` (.importlinter).
"""
