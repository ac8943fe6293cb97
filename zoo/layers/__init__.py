"""Reusable attention layers built on foveal.ops."""
from .neighborhood import NeighborhoodAttention1D, NeighborhoodAttention2D, NeighborhoodAttention3D  # noqa: F401
