"""Data: procedural scenes, importers of foreign formats, and the on-disk dataset."""
