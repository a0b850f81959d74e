"""kdzoo's exception classes, alone in a module that imports nothing, so that every helper module can raise
them (helper/distributed.py included) while helper/errors.py, which shows them to the user, imports those
modules in turn. Import them from ``helper.errors`` as everyone does; this module exists to keep the import
map free of circles."""


class KDZooError(Exception):
    """An error the user can fix; its message is shown as one line."""


class DatasetError(KDZooError):
    """The data set is missing, incomplete or unreadable."""


class CheckpointError(KDZooError):
    """A checkpoint is missing, corrupt, or does not fit the model."""


class NonFiniteLossError(KDZooError):
    """The loss became NaN or infinite; training stopped."""


class DiskFullError(KDZooError):
    """A file did not fit on its disk (no space left, or the quota is used up); the previous one is intact."""
    exit_status = 1
