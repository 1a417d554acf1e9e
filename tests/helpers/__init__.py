"""Shared test helpers: CLI runs, process trees and kills, hand-made study folders."""
