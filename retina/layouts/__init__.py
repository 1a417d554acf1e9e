"""The dataset layouts `retina.manifest.read_manifest` reads, one reader per public layout:
`kaggle` (EyePACS) and `lab` (the course CSVs) in `retina.manifest`; `aptos`, `messidor2`,
`idrid` and `ddr` here, one module each (docs/data-layouts.md has the table)."""

from __future__ import annotations

from retina.layouts import aptos, ddr, idrid, messidor2

READERS = {m.NAME: m for m in (aptos, messidor2, idrid, ddr)}
LAYOUT_NAMES = ("kaggle", "lab", *READERS)  # what `data.layout` may force, beside "auto"
# The layouts that publish a train/test split `data.split: published` keeps (the lab's own
# split is always kept).
PUBLISHED = ("lab", *(name for name, m in READERS.items() if m.PUBLISHED))
SPLITS = ("patient", "published")
