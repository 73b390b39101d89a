"""Figures the node-against-Orthanc benchmarks (ingest, stow) report alike."""

from __future__ import annotations

import statistics


def throughput(prefix: str, seconds: list[float], instances: int, megabytes: float) -> dict[str, object]:
    """One side's rounds: median seconds, instances/s and MB/s at the median, and every round."""
    median = statistics.median(seconds)
    return {f"{prefix}_median_s": round(median, 3), f"{prefix}_instances_per_s": round(instances / median, 1),
            f"{prefix}_MB_per_s": round(megabytes / median, 1), f"{prefix}_all_s": [round(s, 3) for s in seconds]}


def against_orthanc(suffix: str, node: list[float], orthanc: list[float]) -> dict[str, object]:
    """The node's time over Orthanc's: of the medians, and round by round (each round sends the same study
    to both back to back, so pairing them lets a slow stretch of a shared machine weigh on both alike)."""
    paired = [n / o for n, o in zip(node, orthanc, strict=True)]
    return {f"ratio_node_to_orthanc{suffix}": round(statistics.median(node) / statistics.median(orthanc), 3),
            f"paired_ratio{suffix}_median": round(statistics.median(paired), 3),
            f"paired_ratio{suffix}_all": [round(r, 3) for r in paired]}
