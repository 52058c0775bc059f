"""Trainer verbs of the ``sightwire`` command, one module each (see ``device.cli``)."""
