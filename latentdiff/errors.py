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


class NotEnoughData(LatentDiffError):
    """The data cannot serve what the settings ask for (e.g. a training batch larger than the cache can fill)."""


class UnsafeCheckpoint(LatentDiffError):
    """A checkpoint that is not a plain tensor file (refused: unpickling it could run code) or is unreadable."""


class LabelIncomplete(LatentDiffError):
    """The label stage finished with latents whose judging failed (judge down, errors, junk answers): the
    stage is not done, and running it again retries exactly those latents. Exit code 3 (retry later)."""

    exit_code = 3


class CorruptFile(LatentDiffError):
    """A file of a run or an input (cache shard, manifest, crosscoder, finding, report, corpus) that cannot
    be read or parsed; the message names the file."""


class WriteFailed(LatentDiffError):
    """A write that failed for a reason outside latentdiff (disk full, read-only file system, permissions);
    the message names the file. An atomic write leaves the old file in place."""


class RunDirLocked(LatentDiffError):
    """Another process is writing the run directory (it holds the run's lock)."""
