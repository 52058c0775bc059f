"""Trainer verbs of the ``sightwire`` command, one module each (they need TensorFlow).

``device.cli`` finds every verb through the ``sightwire.verbs`` entry points in
pyproject.toml (name → module). Each module has ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``, and imports TensorFlow only inside ``run``. ``SUMMARIES`` holds the
one line ``sightwire --help`` shows for each verb of this package, so that listing the
verbs imports no verb module (and works on a Pi without the workstation extra).
"""

SUMMARIES = {
    "train": "fine-tune MobileNetV2 on a folder of photos → bundle",
    "export": "export a saved Keras model to a bundle",
    "evaluate": "evaluate a bundle on a labelled folder",
    "compile-edgetpu": "preflight/compile for Edge TPU",
    "doctor": "find shortcuts, leaks and label errors in a dataset",
}
