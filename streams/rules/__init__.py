"""Pure domain rules: the order lifecycle, after-sale, stock (reservations, available-to-sell,
allocation). Functions of (state, event, policy values) -> outcome.

Nothing here imports Faust, ``retail_sync.settings`` / ``retail_sync.context`` or any other
wiring module, nor ``connectors``: the policies they apply come in as values
(``streams.rules.policies``), built from the settings once by the agents that call them."""
