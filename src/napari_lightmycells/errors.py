"""Exceptions with messages meant for users (CLI prints them, the GUI shows them as notifications)."""


class LightMyCellsError(Exception):
    """Base class: anything a user can fix (bad input, missing file, wrong model)."""


class DataError(LightMyCellsError):
    """An image, study or folder cannot be used as given."""


class ModelError(LightMyCellsError):
    """A model or checkpoint cannot be built, loaded or run."""


class CheckpointError(ModelError):
    """A checkpoint file is missing, corrupt or of an unknown format."""


class StopRequested(Exception):
    """Raised inside long work when the user asked it to stop (not an error)."""
