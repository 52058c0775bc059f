"""Device verbs of the ``sightwire`` command, one module each; none needs TensorFlow.

``device.cli`` finds every verb through the ``sightwire.verbs`` entry points in
pyproject.toml (name → module). Each module has ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. ``SUMMARIES`` holds the one line ``sightwire --help`` shows for each
verb of this package, so that listing the verbs imports no verb module.
"""

SUMMARIES = {
    "run": "run the camera → model → MQTT daemon",
    "classify": "classify image files with a bundle",
    "bench": "benchmark the models of a bundle and the camera loop",
    "deploy": "copy a bundle to a Pi over SSH and reload it",
    "pull": "fetch kept frames from a Pi (or a folder) into an inbox",
    "review": "label kept frames in a local web page, into a dataset",
    "fleet": "see every station on a broker; roll a bundle out to many",
}
