"""The boot disk type each GCE machine family takes. Pure.

A template without `disk_type` is sent as `pd-standard` by the provider, and the families our GPUs come in do not
all take it: G2 (L4) supports no Standard PD, and the newest families (A3 Ultra, A4, G4, and the C4/N4 general
families) boot from Hyperdisk only, so every VM creation in such a template failed while the template and its
group were created fine. From Google's per-family disk support tables (Compute Engine documentation, "Machine
series comparison" and each accelerator-optimized family's page).
"""

from __future__ import annotations

BALANCED, HYPERDISK = "pd-balanced", "hyperdisk-balanced"

SUPPORTED: dict[str, tuple[str, ...]] = {
    # family prefix -> boot disk types it takes (the first is ours)
    "n1-": (BALANCED, "pd-ssd", "pd-standard"),
    "a2-": (BALANCED, "pd-ssd", "pd-standard"),
    "g2-": (BALANCED, "pd-ssd"),
    "a3-highgpu-": (BALANCED, "pd-ssd", HYPERDISK),
    "a3-megagpu-": (BALANCED, "pd-ssd", HYPERDISK),
    "a3-edgegpu-": (BALANCED, "pd-ssd", HYPERDISK),
    "a3-ultragpu-": (HYPERDISK,),
    "a4-": (HYPERDISK,),
    "a4x-": (HYPERDISK,),
    "g4-": (HYPERDISK,),
    "c4-": (HYPERDISK,),
    "c4a-": (HYPERDISK,),
    "c4d-": (HYPERDISK,),
    "n4-": (HYPERDISK,),
    "n2-": (BALANCED, "pd-ssd", "pd-standard", HYPERDISK),
    "e2-": (BALANCED, "pd-ssd", "pd-standard"),
}


def _family(machine_type: str) -> str | None:
    matches = [p for p in SUPPORTED if machine_type.startswith(p)]
    return max(matches, key=len) if matches else None


def supported(machine_type: str) -> tuple[str, ...]:
    """The boot disk types `machine_type` takes; unknown families: Balanced PD (every current family with PD)."""
    family = _family(machine_type)
    return SUPPORTED[family] if family else (BALANCED,)


def boot_disk_type(machine_type: str) -> str:
    return supported(machine_type)[0]
