"""Amazon SP-API simulator: Orders v0 (``simulator``, ``orders``), Listings Items and Feeds
(``listings``, the HTTP side; ``documents``, the patches, feeds and reports it reads and writes)."""
