"""User-facing errors: the CLI prints their message on one line and exits 2, never a traceback."""


class LatentDiffError(Exception):
    """A problem with the user's input or environment (bad config, missing model, ...)."""

    exit_code = 2


class ConfigError(LatentDiffError):
    """A malformed or inconsistent configuration."""


class ModelLoadError(LatentDiffError):
    """A model or tokenizer could not be loaded or is incompatible."""


class StageNotAvailable(LatentDiffError):
    """A pipeline stage that this version does not provide yet."""


class StageNotDone(LatentDiffError):
    """A stage's result was asked for before the stage ran (with the run's current settings)."""


class NotARunDirectory(LatentDiffError):
    """A path that is not a latentdiff run directory (no config.yaml)."""
