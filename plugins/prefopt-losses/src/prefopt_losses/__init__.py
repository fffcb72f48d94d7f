"""prefopt-losses: extra preference losses for prefopt, installed as a separate plugin.

One module per loss, each with a config dataclass, the loss on per-pair ``(B,)`` tensors and
its ``AlgorithmSpec``; :mod:`prefopt_losses.plugin` hands them all to prefopt.
"""

__version__ = "0.1.0"
