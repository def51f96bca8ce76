"""The plugin's own check: every component is created and checked against its kind's contract."""
import mindplug.testing


def test_every_component_keeps_its_contract():
    mindplug.testing.check_plugin("example")
