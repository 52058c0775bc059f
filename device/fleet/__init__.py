"""The fleet side: every daemon on one broker seen as a table, and model rollouts to many.

Nothing here is a server of its own: the broker already knows every station (each one
keeps a retained ``status`` and ``state``, and sends ``stats``), and ``cmd/update`` already
installs a bundle safely. ``status`` reads those topics into a table, ``rollout`` sends
``cmd/update`` in canary and batches and reads the replies, ``serve`` lends the bundle zip
over HTTP for the duration. Runs on a workstation without TensorFlow.
"""
