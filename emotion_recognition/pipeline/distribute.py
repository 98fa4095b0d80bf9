"""Where training runs (``train.distribute``): one device, or every local device in step.

- ``one_device``: TensorFlow's default strategy (the whole CPU, or the first GPU).
- ``mirrored``: ``MirroredStrategy`` over every local GPU; on a machine without GPUs, over
  ``CPU_REPLICAS`` logical CPU devices (the same code path, so it is tested without a GPU).

``train.batch_size`` stays the global batch, so the plan (steps per epoch, learning-rate schedule)
is the same whatever the number of replicas. Several machines (MultiWorkerMirroredStrategy) are
not offered: Keras 3.15's ``fit`` fails under it (keras-team/keras#20585, docs/scaleout.md).
"""

from __future__ import annotations

from typing import Literal, get_args

Strategy = Literal["one_device", "mirrored"]  # train.distribute
CPU_REPLICAS = 2


def make_strategy(name: Strategy):
    """The tf.distribute strategy for ``train.distribute``; call before any other TensorFlow work
    (logical devices can only be configured before TensorFlow initialises them)."""
    import tensorflow as tf

    if name == "one_device":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * CPU_REPLICAS)
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    raise ValueError(f"train.distribute must be one of {', '.join(get_args(Strategy))}, not {name!r}")
