"""sightwire trainer half: dataset checks, transfer learning, export, evaluation.

Workstation only (TensorFlow). It imports ``device`` to evaluate exported models with
the very code the device runs.
"""

__version__ = "0.1.0"
