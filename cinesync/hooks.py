"""Cross-cutting hooks, carried by pluggy.

Plugins register hook implementations through the ``cinesync.hooks`` entry-point group (the value is a module
or object with ``@hookimpl``-decorated functions). The plugin manager is created, and hook plugins imported,
only when a hook is first called, so commands that fire no hook never import plugin code. A hook plugin that
fails to import is reported as a warning and skipped: it never breaks anything else.
"""

from __future__ import annotations

import warnings
from typing import Any

import pluggy

PROJECT = "cinesync"
HOOK_GROUP = "cinesync.hooks"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class HookSpecs:
    """The hooks a plugin may implement (each is optional)."""

    @hookspec
    def cinesync_register_commands(self, cli: Any) -> None:
        """Add commands to the ``cinesync`` click group ``cli`` (e.g. ``cli.add_command(my_command)``)."""

    @hookspec
    def cinesync_evaluation_end(self, model_name: str, dataset: str, metrics: dict[str, float]) -> None:
        """Called after a model has been evaluated on a test split, with its metric values."""

    @hookspec
    def cinesync_train_epoch_end(self, model_name: str, epoch: int, logs: dict[str, float]) -> None:
        """Called by the trainer after each epoch, with the epoch's loss, metric and timing."""


_manager: pluggy.PluginManager | None = None


def plugin_manager() -> pluggy.PluginManager:
    """The hook manager, loading ``cinesync.hooks`` entry points on first use."""
    global _manager
    if _manager is None:
        from importlib import metadata

        from cinesync.registry import _distribution_allowed

        manager = pluggy.PluginManager(PROJECT)
        manager.add_hookspecs(HookSpecs)
        for entry_point in metadata.entry_points(group=HOOK_GROUP):
            dist = getattr(entry_point, "dist", None)
            if dist is not None and not _distribution_allowed(dist.name):
                continue
            try:
                manager.register(entry_point.load(), name=entry_point.name)
            except Exception as error:  # a broken hook plugin must not break the host
                warnings.warn(
                    f"cinesync hook plugin {entry_point.name!r} ({entry_point.value}) could not be loaded: "
                    f"{type(error).__name__}: {error}",
                    stacklevel=2,
                )
        _manager = manager
    return _manager


def reset_plugin_manager() -> None:
    """Forget the loaded hook plugins (tests; after installing a plugin in the same process)."""
    global _manager
    _manager = None
