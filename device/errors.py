"""One exception type for every failure a user can fix.

The CLI prints ``SightwireError`` as one line on stderr and exits non-zero; anything
else is a bug and keeps its traceback.
"""


class SightwireError(Exception):
    """A failure caused by input or environment, explained in one line."""


class BundleError(SightwireError):
    """A model bundle, model file or labels file that cannot be used."""


class RuntimeMissing(SightwireError):
    """No TFLite runtime, or no Edge TPU, where one is needed."""


class ImageError(SightwireError):
    """An image file that cannot be decoded."""
