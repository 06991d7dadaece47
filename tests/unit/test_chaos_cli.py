"""`retail-sync chaos`: every scenario the CLI offers exists, and each one is documented."""

import pytest

from retail_sync import chaos
from retail_sync.cli import parser


def test_cli_offers_exactly_the_scenarios_there_are():
    args = parser().parse_args(["chaos", *chaos.SCENARIOS])
    assert args.scenarios == list(chaos.SCENARIOS)
    with pytest.raises(SystemExit):
        parser().parse_args(["chaos", "no-such-scenario"])


def test_every_scenario_is_documented():
    assert all(f"``{name}``" in chaos.__doc__ for name in chaos.SCENARIOS)
