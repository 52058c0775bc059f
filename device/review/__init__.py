"""Reviewing kept frames on the workstation: the inbox reader, the labelling actions,
the page and its local server (``sightwire review``), the reader shared with
``sightwire pull``. No TensorFlow: runs wherever the device half is installed."""
