"""sightwire device half: bundle loading, TFLite runtimes, camera sources, pipeline, MQTT.

Nothing here imports TensorFlow or the ``trainer`` package: a Raspberry Pi installs
``sightwire[device]`` only.
"""

__version__ = "0.1.0"
