"""sightwire trainer half: dataset checks, transfer learning, export, evaluation.

Workstation only (TensorFlow). It imports ``device`` to evaluate exported models with
the very code the device runs.
"""

import os

from device import __version__

# TensorFlow's C++ start-up chatter (CPU flags, oneDNN notes) hides the progress bars.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["__version__"]
