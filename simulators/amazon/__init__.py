"""Amazon SP-API simulator: Orders v0 (``simulator``, ``orders``), Listings Items and Feeds (``listings``)."""
