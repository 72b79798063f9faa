"""Seeded offline generators that write the official LRA raw layouts (ListOps, Pathfinder)."""
