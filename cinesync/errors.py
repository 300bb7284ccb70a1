"""Every error CineSync raises on purpose derives from :class:`CineSyncError`.

Each message is a sentence a user can act on: what was wrong, where (file, field, plugin), what to do.
The CLI prints these messages without a traceback.
"""

from __future__ import annotations


class CineSyncError(Exception):
    """Base class of the errors CineSync raises deliberately."""


class PluginLoadError(CineSyncError):
    """A plugin could not be imported or is not a valid component of its kind."""

    def __init__(
        self,
        *,
        kind: str,
        component: str,
        distribution: str,
        version: str,
        target: str,
        cause: str,
    ) -> None:
        self.kind = kind
        self.component = component
        self.distribution = distribution
        self.version = version
        self.target = target
        self.cause = cause
        super().__init__(
            f"could not load {kind} plugin {component!r} from distribution {distribution} {version} "
            f"(entry point target {target!r}): {cause}"
        )


class UnknownComponentError(CineSyncError, KeyError):
    """No installed plugin provides the requested component id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class AmbiguousComponentError(CineSyncError):
    """Two distributions claim the same component id."""


class ManifestError(CineSyncError):
    """A manifest file is unreadable or does not validate."""


class DataError(CineSyncError):
    """A dataset is missing, malformed or cannot satisfy what a component requires."""


class UnknownIdError(CineSyncError, KeyError):
    """A user or item id is not in the id map the model was trained with."""

    def __str__(self) -> str:
        return str(self.args[0])


class NotFittedError(CineSyncError):
    """A model was asked to score or save before it was fitted or loaded."""


class ArtifactError(CineSyncError):
    """An artifact directory is incomplete, corrupted or of an unknown format."""
