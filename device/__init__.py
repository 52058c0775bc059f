"""sightwire device half: bundle loading, TFLite runtimes, camera sources, pipeline, MQTT.

Nothing here imports TensorFlow or the ``trainer`` package: a Raspberry Pi installs
``sightwire[device]`` only.
"""

# The one place the version is written: pyproject.toml reads it from here (setuptools'
# dynamic version) and the trainer re-exports it, so a release changes one line.
__version__ = "0.1.0"
