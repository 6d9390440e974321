"""rigstream.firmware: the Raspberry Pi side of a rig.

- :mod:`~rigstream.firmware.pins`: the pin backend interface (``PinBackend``), its simulated
  twin (``SimPins``, which records every edge and publishes it on a simulated line).
- :mod:`~rigstream.firmware.backends`: the table of pin backends by name and ``make_pins``,
  which picks the one the rig file names.
- :mod:`~rigstream.firmware.rpigpio` and :mod:`~rigstream.firmware.pigpio_pins`: the real
  drivers (RPi.GPIO, and the pigpio daemon), each imported only when chosen.
- :mod:`~rigstream.firmware.trigger`: the trigger daemon: the camera pulse train on absolute
  deadlines, the random-interval sync line to the neural recorder, TTL outputs, and the
  pulse stream and control socket over ZeroMQ.

Nothing here imports more than the rigstream core, numpy and pyzmq, so it installs on a Pi
with ``pip install rigstream[pi]`` (or ``[pigpio]``). Installing and running it on a Pi:
``firmware/README.md``.
"""
