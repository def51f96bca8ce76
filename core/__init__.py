"""mindplug: a MindSpore vision toolbox whose every component arrives through a plugin."""
from __future__ import annotations

from ._hookspecs import hookimpl
from ._spec import KINDS, ComponentInfo, ComponentSpec, PluginFailure, PluginRecord, WeightsSpec

__version__ = "0.1.0"
#: The plugin API version; a plugin may require a range with ``MINDPLUG_API_REQUIRES``.
MINDPLUG_API = "1.0"
