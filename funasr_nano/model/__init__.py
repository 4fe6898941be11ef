"""The network: pure MLX modules whose attribute names mirror the checkpoint keys (mlx-lm style)."""
