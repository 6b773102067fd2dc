"""PyTorch networks (residual policy/value net) and checkpoint I/O; imports nothing from play/ or learn/."""
