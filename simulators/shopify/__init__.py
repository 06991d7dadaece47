"""Shopify simulator: webhooks out, Admin REST in (``simulator``), its orders (``orders``)."""
